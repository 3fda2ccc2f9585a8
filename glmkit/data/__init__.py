"""Data in: the built-in datasets, folder and table readers, and quality control.

:mod:`~glmkit.data.datasets` (demo, Localizer, and the dispatcher), :mod:`~glmkit.data.local`
(folders, globs, lists, BIDS roots, images), :mod:`~glmkit.data.dataset` (the
:class:`~glmkit.data.dataset.Dataset`), :mod:`~glmkit.data.demo` (the simulated cohort),
:mod:`~glmkit.data.folder` (readers), :mod:`~glmkit.data.bids` (entities and filters),
:mod:`~glmkit.data.nifti` (the headers of result maps) and :mod:`~glmkit.data.qc`.
This layer may use :mod:`glmkit.stats`; it never imports the report or run layers.
"""
