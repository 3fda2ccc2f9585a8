"""Choice lists owned by the data layer, in a module that imports nothing heavy.

They are facts of :mod:`glmkit.data.qc` (which validates against them); they live here so
that the run layer's settings and the CLI's help read them without importing numpy or
nibabel.
"""

from __future__ import annotations

__all__ = ["GRID_ACTIONS", "POLICY_KEYS"]

#: What quality control does with a map on another grid than the first map's
#: (``QCPolicy.on_grid_mismatch``, ``RunSettings.on_grid_mismatch``).
GRID_ACTIONS = ("error", "resample")

#: Keys of the ``qc`` run parameter (:meth:`glmkit.data.qc.QCPolicy.from_mapping`).
POLICY_KEYS = ("exclude", "flag", "keep", "min_coverage", "scale_z_max", "unit_ratio",
               "min_subjects")
