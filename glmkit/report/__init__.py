"""Results out: the self-contained HTML report, its sections, figures and viewer.

:func:`write_report` and :func:`recovery` live in :mod:`~glmkit.report.page`; the sections in
:mod:`~glmkit.report.sections`, figures in :mod:`~glmkit.report.figures`, the map logic shared
with the widgets (thresholds by method, clusters, the cut) in :mod:`~glmkit.report.maps`, the
kernel-free viewer's HTML/JS encoder in :mod:`~glmkit.report.viewer`. Markup comes only from
the autoescaping jinja2 templates in ``templates/`` (:mod:`~glmkit.report.templates`).
This layer reads the results of :mod:`glmkit.stats` and :mod:`glmkit.data`; it never imports
the run layer (settings, pipeline, run, cli, widgets).
"""

from glmkit.report.page import recovery, write_report

__all__ = ["write_report", "recovery"]
