"""Choice lists and defaults owned by the data layer, in a module that imports nothing heavy.

They are facts of :mod:`glmkit.data.qc`, :mod:`glmkit.data.datasets` and
:mod:`glmkit.data.bids` (which use them); they live here so that the run layer's settings and
the CLI's help read them without importing numpy or nibabel.
"""

from __future__ import annotations

from types import MappingProxyType

from glmkit.data import DEFAULT_CUT_COORDS

__all__ = ["GRID_ACTIONS", "ON_MISSING", "BUILTIN_DATASETS", "BUILTIN_DEFAULTS",
           "BIDS_DESCRIPTION", "BIDS_TABLE", "BIDS_SUBJECT_COLUMN", "FOLDER_SUBJECT_COLUMN",
           "EXPORT_FORMATS", "POLICY_KEYS"]

#: What quality control does with a map on another grid than the first map's
#: (``QCPolicy.on_grid_mismatch``, ``RunSettings.on_grid_mismatch``).
GRID_ACTIONS = ("error", "resample")

#: Keys of the ``qc`` run parameter (:meth:`glmkit.data.qc.QCPolicy.from_mapping`).
POLICY_KEYS = ("exclude", "flag", "keep", "min_coverage", "scale_z_max", "unit_ratio",
               "min_subjects")

#: What loading does with maps without a table row and rows without a map
#: (``load_folder(on_missing=...)``, ``RunSettings.on_missing``).
ON_MISSING = ("error", "drop")

#: Datasets known by name (``load_dataset``, ``RunSettings.dataset``).
BUILTIN_DATASETS = ("demo", "demo-null", "localizer")

#: The analysis the built-in datasets stand for: nilearn's example (``pseudo`` renamed
#: ``fluency``, tested, figures cut at the planted region). Run parameters left unset take
#: these for a built-in dataset only; a folder of maps has no default design.
_REFERENCE = MappingProxyType({
    "covariates": ("pseudo",),
    "rename": MappingProxyType({"pseudo": "fluency"}),
    "contrast": "fluency",
    "cut_coords": DEFAULT_CUT_COORDS,
})
BUILTIN_DEFAULTS = MappingProxyType({name: _REFERENCE for name in BUILTIN_DATASETS})

#: The file that makes a folder a BIDS (derivatives) dataset root.
BIDS_DESCRIPTION = "dataset_description.json"
#: The subject table of a BIDS root, and its subject-id column.
BIDS_TABLE = "participants.tsv"
BIDS_SUBJECT_COLUMN = "participant_id"
#: The subject-id column of another folder's table when none is named.
FOLDER_SUBJECT_COLUMN = "subject"

#: Export formats a run folder can hold beside its own files (``RunSettings.export``; written
#: by :mod:`glmkit.report.export`): ``bids`` is a BIDS-derivatives tree in ``bids/``.
EXPORT_FORMATS = ("bids",)
