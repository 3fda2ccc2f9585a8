"""Choice lists owned by the statistics layer, in a module that imports nothing heavy.

They are facts of the statistics modules (:mod:`glmkit.stats.threshold` validates against
:data:`HEIGHT_CONTROLS`); they live here so that the run layer's settings and the CLI's help
read them without importing numpy or scipy.
"""

from __future__ import annotations

__all__ = ["HEIGHT_CONTROLS", "ACCELERATIONS"]

#: Height controls of :func:`glmkit.stats.threshold.threshold_map` (``None``: an explicit
#: threshold), in the order help and messages list them.
HEIGHT_CONTROLS = ("fdr", "bonferroni", "fpr", None)

#: Accelerations of :func:`glmkit.stats.permutation.permutation_test` (``accel=``): ``"tail"``
#: fits a generalised Pareto distribution to the null's tail (:mod:`glmkit.stats.tail`)
ACCELERATIONS = ("tail",)
