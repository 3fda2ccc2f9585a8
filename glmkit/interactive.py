"""The analysis notebook run by hand: a run folder of its own under the project's ``reports/``.

``glmkit run`` tells the notebook where to write (``output_dir``: a temporary folder that it
renames to ``reports/<run_name>/`` once the run is complete). Run by hand in JupyterLab, the
notebook is given no ``output_dir``; :func:`interactive_settings` then names the run
``<run_name>-notebook-<UTC time>`` and puts it in the ``reports/`` folder of the project the
notebook belongs to, not in a ``reports/`` beside the notebook: Run All never overwrites a
complete run (``reports/demo`` of ``make demo`` included) and never fails because one exists.
The executed copy ``reports/<run>/notebook.ipynb`` still names the temporary folder it was
written into (``reports/.<run>.tmp-...``, gone since the run completed); run again by hand, it
too gets a run folder of its own instead of bringing that temporary folder back.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from glmkit._util import temporary_prefix
from glmkit.settings import RunSettings

__all__ = ["interactive_settings", "project_root", "PROJECT_MARKERS"]

#: a folder holding one of these is a project root (a glmkit checkout, or the user's project)
PROJECT_MARKERS = ("pyproject.toml", ".git")
#: the part of the run name kept before ``-notebook-<time>`` (run names stay short)
_NAME_KEPT = 60


def project_root(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest folder from ``start`` (default: the current folder) up that holds
    ``pyproject.toml`` or ``.git``; None when there is none.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "pyproject.toml").write_text("")
    >>> (root / "notebooks").mkdir()
    >>> project_root(root / "notebooks") == root
    True
    """
    here = Path(start if start is not None else os.getcwd()).absolute()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
    return None


def interactive_settings(settings: RunSettings, *, cwd: str | os.PathLike | None = None,
                         now: datetime | None = None) -> RunSettings:
    """The settings of a notebook run: unchanged under ``glmkit run``, a new run folder by hand.

    When ``settings.output_dir`` is set (``glmkit run`` sets it) the settings are returned as
    they are. Otherwise the run is named ``<run_name>-notebook-<UTC time>`` (``-2``, ``-3``,
    ... if that folder exists) and a relative ``reports_dir`` is taken from the project root
    (:func:`project_root` of ``cwd``, the kernel's folder, i.e. the notebook's), else from
    ``cwd``; ``settings.resolved_output_dir()`` is then a folder that does not exist yet.
    An ``output_dir`` that is the temporary folder of a run completed since (it no longer
    exists: the executed copy of that run, run again) counts as unset, and the new run goes
    into the reports folder that temporary folder was in.

    Parameters
    ----------
    settings : RunSettings
        As the notebook's settings cell builds them.
    cwd : path-like, optional
        The folder relative paths are taken from (default: the current folder).
    now : datetime, optional
        The time in the run name (default: now, UTC).

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / ".git").mkdir(); (root / "notebooks").mkdir()
    >>> (root / "reports" / "demo").mkdir(parents=True)  # a complete run: left alone
    >>> when = datetime(2026, 11, 29, 12, 30, 5, tzinfo=timezone.utc)
    >>> s = interactive_settings(RunSettings(), cwd=root / "notebooks", now=when)
    >>> s.run_name, s.resolved_output_dir() == root / "reports" / s.run_name
    ('demo-notebook-20261129-123005', True)
    >>> interactive_settings(RunSettings(output_dir="out")) == RunSettings(output_dir="out")
    True
    >>> stale = RunSettings(output_dir=str(root / "reports" / ".demo.tmp-k2x9q0ab"))
    >>> s = interactive_settings(stale, cwd=root / "reports" / "demo", now=when)
    >>> s.run_name, s.resolved_output_dir() == root / "reports" / s.run_name
    ('demo-notebook-20261129-123005', True)
    """
    stale = settings.output_dir is not None and _completed_temporary(settings)
    if settings.output_dir is not None and not stale:
        return settings
    cwd = Path(cwd if cwd is not None else os.getcwd()).absolute()
    reports = Path(settings.reports_dir).expanduser()
    if stale:
        reports = (cwd / Path(settings.output_dir).expanduser()).parent
    elif not reports.is_absolute():
        reports = (project_root(cwd) or cwd) / reports
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    base = f"{settings.run_name[:_NAME_KEPT]}-notebook-{stamp:%Y%m%d-%H%M%S}"
    name, number = base, 1
    while (reports / name).exists() or any(reports.glob(f"{temporary_prefix(name)}*")):
        number += 1
        name = f"{base}-{number}"
    return settings.replace(run_name=name, reports_dir=str(reports), output_dir=None)


def _completed_temporary(settings: RunSettings) -> bool:
    """Whether ``settings.output_dir`` is the temporary folder ``glmkit run`` wrote this run
    into and has renamed since (the run completed), as in the executed copy of a run."""
    folder = Path(settings.output_dir).expanduser()
    return folder.name.startswith(temporary_prefix(settings.run_name)) and not folder.exists()
