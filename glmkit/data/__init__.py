"""Data in: the built-in datasets, folder and table readers, and quality control.

:mod:`~glmkit.data.datasets` (demo, Localizer, folders of maps), :mod:`~glmkit.data.demo`
(the simulated cohort), :mod:`~glmkit.data.folder` (readers) and :mod:`~glmkit.data.qc`.
This layer may use :mod:`glmkit.stats`; it never imports the report or run layers.
"""
