"""p-values at the edge of the float range: the floor, ``-log10 p``, exact tails and z.

The floor and ``-log10 p`` are shared by :mod:`glmkit.stats.glm` (parametric maps),
:mod:`glmkit.stats.permutation` (permutation p-values) and :mod:`glmkit.stats.threshold`
(Bonferroni), so that every ``-log10 p`` map is finite and computed the same way.

The t and F tails and z scores serve :func:`glmkit.stats.glm.compute_contrast`: where the upper
tail underflows (p < 1e-300) ``log p`` is computed from the incomplete-beta continued
fraction and z by inverting the normal tail in log space, so z and ``-log10 p`` stay finite
and strictly monotone in the statistic (nilearn saturates at z = 37.04 there).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

__all__ = ["P_FLOOR", "logp_from_p", "logp_from_log", "log_sf_t", "log_sf_f", "z_scores",
           "tie_level"]

#: smallest p-value stored (smallest positive normal float); ``-log10`` of it is 307.65
P_FLOOR = float(np.finfo(float).tiny)
#: below this tail probability z is computed from the exact log p
_LOG_TAIL = 1e-300


def tie_level(values: ArrayLike, rtol: float) -> np.ndarray:
    """The level at or above which a permuted statistic ties with ``values``:
    ``values - rtol * max(|values|, 1)``, relative above 1 and absolute below, so that a
    statistic that is 0 in exact arithmetic (rounding either side of it) ties with the
    permuted statistics that are 0 too. The rule of every permutation p-value.

    Examples
    --------
    >>> tie_level([2.0, 1e-16, -3.0], 1e-10).tolist()
    [1.9999999998, -9.99999e-11, -3.0000000003]
    """
    values = np.asarray(values, dtype=np.float64)
    return values - rtol * np.maximum(np.abs(values), 1.0)


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


def _log_betainc_small(a: np.ndarray, b: np.ndarray, x: np.ndarray, *,
                       log_x: np.ndarray | None = None,
                       log1m_x: np.ndarray | None = None) -> np.ndarray:
    """``log I_x(a, b)`` for small x (far tail): prefactor in logs, Lentz's continued fraction.

    ``log_x`` and ``log1m_x`` (``log x`` and ``log(1 - x)``), when given, replace the logs
    computed from ``x``: they stay finite where ``x`` itself underflows to 0.
    """
    a, b, x = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, b, x)))
    log_x = np.log(x) if log_x is None else log_x
    log1m_x = np.log1p(-x) if log1m_x is None else log1m_x
    log_front = a * log_x + b * log1m_x - np.log(a) - special.betaln(a, b)
    tiny = 1e-300
    c = np.ones_like(x)
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = np.where(np.abs(d) < tiny, tiny, d)
    d = 1.0 / d
    h = d.copy()
    for m in range(1, 301):
        m2 = 2 * m
        aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        delta = d * c
        h *= delta
        if np.all(np.abs(delta - 1.0) < 1e-15):
            break
    return log_front + np.log(h)


def log_sf_t(t: np.ndarray, dof: float) -> np.ndarray:
    """Natural log of the Student-t upper tail, exact also where ``sf`` underflows."""
    t = np.asarray(t, dtype=float)
    sf = stats.t.sf(t, dof)
    with np.errstate(divide="ignore"):
        out = np.log(sf)
    far = (t > 0) & (sf < _LOG_TAIL)
    if np.any(far):
        # x = dof / (dof + t^2) = s^2 / (1 + s^2) with s = sqrt(dof) / t, in logs so that
        # neither t * t overflows nor x underflows for huge t
        s = np.sqrt(dof) / t[far]
        log1p_s2 = np.log1p(s * s)
        x = s * s / (1.0 + s * s)
        out[far] = np.log(0.5) + _log_betainc_small(
            dof / 2.0, 0.5, x, log_x=2.0 * np.log(s) - log1p_s2, log1m_x=-log1p_s2)
    return out


def log_sf_f(f: np.ndarray, dfn: float, dfd: float) -> np.ndarray:
    """Natural log of the F upper tail, exact also where ``sf`` underflows."""
    f = np.asarray(f, dtype=float)
    sf = stats.f.sf(f, dfn, dfd)
    with np.errstate(divide="ignore"):
        out = np.log(sf)
    far = (f > 0) & (sf < _LOG_TAIL)
    if np.any(far):
        x = dfd / (dfd + dfn * f[far])
        out[far] = _log_betainc_small(dfd / 2.0, dfn / 2.0, x)
    return out


def _z_from_log_sf(log_p: np.ndarray) -> np.ndarray:
    """z with ``log(norm.sf(z)) == log_p`` for tiny p (Newton on ``norm.logsf``)."""
    log_p = np.asarray(log_p, dtype=float)
    z = np.sqrt(-2.0 * log_p)
    for _ in range(60):
        f = stats.norm.logsf(z) - log_p
        slope = -np.exp(stats.norm.logpdf(z) - stats.norm.logsf(z))
        step = f / slope
        z = z - step
        if np.all(np.abs(step) < 1e-13 * np.maximum(1.0, np.abs(z))):
            break
    return z


def z_scores(
    p_upper: np.ndarray, p_lower: np.ndarray, log_upper: np.ndarray, log_lower: np.ndarray
) -> np.ndarray:
    """z from the two tail probabilities: nilearn's formula, exact-log in the far tails."""
    z = np.empty(p_upper.shape)
    upper = p_upper <= 0.5
    z[upper] = stats.norm.isf(np.clip(p_upper[upper], 1e-300, 1 - 1e-16))
    lower = ~upper
    z[lower] = stats.norm.ppf(np.clip(p_lower[lower], 1e-300, 1 - 1e-16))
    far_up = upper & (p_upper < _LOG_TAIL)
    if np.any(far_up):
        z[far_up] = _z_from_log_sf(log_upper[far_up])
    # (an F of exactly 0 has log_lower = -inf: it keeps nilearn's clipped value, z = -37.05)
    far_low = lower & (p_lower < _LOG_TAIL) & np.isfinite(log_lower)
    if np.any(far_low):
        z[far_low] = -_z_from_log_sf(log_lower[far_low])
    return z
