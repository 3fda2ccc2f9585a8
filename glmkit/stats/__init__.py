"""The statistics core: arrays in, frozen results out.

GLM fitting and contrasts (:mod:`~glmkit.stats.glm`, :mod:`~glmkit.stats.contrast`),
p-values (:mod:`~glmkit.stats.pvalues`), design matrices (:mod:`~glmkit.stats.design`),
thresholds and cluster tables (:mod:`~glmkit.stats.threshold`), and the permutation engine
(:mod:`~glmkit.stats.permutation`) with its registry of statistics
(:mod:`~glmkit.stats.statistics`) and cluster/TFCE kernels (:mod:`~glmkit.stats.cluster`).

Nothing here imports the data, report or run layers of glmkit (``tests/test_layers.py``
checks it); only :mod:`glmkit.errors` and :mod:`glmkit._util` lie below.
"""
