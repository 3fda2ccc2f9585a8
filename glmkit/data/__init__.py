"""Data in: the built-in datasets, folder and table readers, and quality control.

:mod:`~glmkit.data.datasets` (demo, Localizer, and the dispatcher), :mod:`~glmkit.data.local`
(folders, globs, lists, BIDS roots, images), :mod:`~glmkit.data.dataset` (the
:class:`~glmkit.data.dataset.Dataset`), :mod:`~glmkit.data.demo` (the simulated cohort),
:mod:`~glmkit.data.folder` (readers), :mod:`~glmkit.data.bids` (entities and filters),
:mod:`~glmkit.data.nifti` (the headers of result maps) and :mod:`~glmkit.data.qc`.
This layer may use :mod:`glmkit.stats`; it never imports the report or run layers.
"""

#: The figures' cut (x, y, z mm) of the reference analysis (nilearn's association example),
#: where the demo plants its effect; the default ``cut_coords`` of runs, reports and viewers.
#: Defined here, not in :mod:`~glmkit.data.demo`, so that the settings can read it without
#: importing numpy, pandas and nibabel.
DEFAULT_CUT_COORDS = (38.0, -17.0, -3.0)
