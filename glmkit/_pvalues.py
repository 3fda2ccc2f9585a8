"""p-values at the edge of the float range: the floor and ``-log10 p``.

Shared by :mod:`glmkit.glm` (parametric maps), :mod:`glmkit.permutation` (permutation
p-values) and :mod:`glmkit.threshold` (Bonferroni), so that every ``-log10 p`` map is finite
and computed the same way.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["P_FLOOR", "logp_from_p", "logp_from_log"]

#: smallest p-value stored (smallest positive normal float); ``-log10`` of it is 307.65
P_FLOOR = float(np.finfo(float).tiny)


def logp_from_p(p: ArrayLike) -> np.ndarray:
    """``-log10 p`` with ``p`` clipped to ``[P_FLOOR, 1]``: finite also for ``p = 0``.

    Parameters
    ----------
    p : array_like
        p-values (values outside ``[0, 1]`` are clipped, not checked).

    Returns
    -------
    ndarray
        ``-log10(clip(p, P_FLOOR, 1))``, at most ``-log10(P_FLOOR)``; ``p = 1`` gives ``-0.0``.

    Examples
    --------
    >>> logp_from_p([0.01, 1e-300, 0.0]).round(2).tolist()
    [2.0, 300.0, 307.65]
    """
    return -np.log10(np.clip(p, P_FLOOR, 1.0))


def logp_from_log(log_p: ArrayLike) -> np.ndarray:
    """``-log10 p`` from the natural log ``log p``, exact also where ``p`` underflows.

    Parameters
    ----------
    log_p : array_like
        Natural log of p-values (``-inf`` allowed: gives ``inf``).

    Returns
    -------
    ndarray
        ``max(-log_p / log(10), 0)``; not capped at ``-log10(P_FLOOR)``.

    Examples
    --------
    >>> logp_from_log([np.log(0.01), -1000 * np.log(10.0), 0.0]).round(6).tolist()
    [2.0, 1000.0, 0.0]
    """
    return np.maximum(-np.asarray(log_p) / np.log(10.0), 0.0)
