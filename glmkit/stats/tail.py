"""Tail acceleration: p-values below ``1 / n_perm`` from a generalised Pareto fit to the upper
tail of a permutation null distribution (Winkler et al. 2016, PALM's ``-accel tail``).

What PALM's ``palm_pareto.m`` does, and what :func:`tail_pvalues` does the same way:

- Only p-values below ``threshold`` (PALM's default 0.10) are refined; the others keep their
  permutation value.
- The tail is every null value whose empirical cdf (``#{null <= value} / n``) is at least
  ``q``, for ``q`` = 0.751, 0.761, ... 0.971 in turn; the threshold ``u`` is the midpoint
  between the tail's smallest value and the value below it. The generalised Pareto
  distribution of the excesses ``y = value - u`` is fitted by the method of moments (Hosking
  & Wallis 1987): with mean ``m`` and sample variance ``s2``, scale ``a = m (m^2/s2 + 1) / 2``
  and shape ``k = (m^2/s2 - 1) / 2``; survival ``(1 - k y / a)^(1/k)`` (``exp(-y/a)`` for
  ``k = 0``; 0 beyond ``a / k`` for ``k > 0``).
- The fit is kept when the Anderson-Darling test of Choulakian & Stephens (2001, table 2,
  parameters estimated) does not reject it at 0.05; otherwise the next, higher ``q`` is
  tried. When no ``q`` gives an acceptable fit the permutation p-values are kept (and the
  fit is reported as not used).
- A refined p-value is ``(n_tail / n) * survival(value - u)``, for values above ``u``.

Three differences:

- The tail is fitted to the permutation statistics only, without the unpermuted one (PALM's
  ``G1out`` option; its default keeps it): :func:`~glmkit.stats.permutation.permutation_test`
  passes ``null_max[1:]``. Under an effect the observed maximum is an outlier of the null,
  and one value far out among a few hundred fattens the fitted tail: in the tests' planted
  cohorts PALM's default made the p-values of 500 permutations 2 to 6 times too large at
  1e-4..1e-2 against 50,000 permutations; without it they agree within Monte Carlo error.
  (The plain permutation p-value still counts the observed statistic.)

- When the moments give a bounded tail (``k > 0``: no null value above ``u + a / k``), glmkit
  fits the exponential tail instead (``k = 0``, ``a = m``) and tests that fit. A bounded fit
  makes the p-value of any value beyond its endpoint exactly 0, which no finite number of
  permutations can support; with PALM's fit this happens to a sizeable share of max-T nulls
  (light, Gumbel-like tails, whose moment estimate of ``k`` scatters around 0), so
  accelerated p-values of strong effects would be 0 (-log10 p = 308) at random. The
  exponential tail is the Gumbel domain's own limit; it is conservative for lighter tails.
- PALM clamps the shape with ``max(0.5, k)`` before reading the Anderson-Darling table,
  which looks like a typo for the table's range; glmkit clips the shape to the table's rows
  (-0.5 to 0.9), as Choulakian & Stephens prescribe, and interpolates between them.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> null = rng.gumbel(size=2000)
>>> fit = fit_tail(null)
>>> fit is not None and 0.7 < fit.quantile < 1
True
>>> p = tail_pvalues(np.array([0.0, 7.0, 9.0]), null)[0]
>>> bool(p[0] > 0.3), bool(1e-4 < p[1] < 5e-3), bool(p[2] < 1e-3)
(True, True, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["TAIL_THRESHOLD", "QUANTILES", "TailFit", "fit_tail", "tail_pvalues"]

#: p-values below this are refined (PALM ``opts.accel.tail_thr``)
TAIL_THRESHOLD = 0.10
#: tail quantiles tried in turn (PALM: (751:10:999)/1000, all but the last two)
QUANTILES = tuple(q / 1000 for q in range(751, 980, 10))
#: Anderson-Darling p-value below which a fit is rejected
GOF_ALPHA = 0.05

# Choulakian & Stephens (2001), table 2: critical values of A^2 (rows: shape k; columns:
# upper-tail probability), parameters estimated
_AD_K = np.array([0.9, 0.5, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5])
_AD_P = np.array([0.5, 0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001])
_AD_A2 = np.array([
    [0.3390, 0.4710, 0.6410, 0.7710, 0.9050, 1.0860, 1.2260, 1.5590],
    [0.3560, 0.4990, 0.6850, 0.8300, 0.9780, 1.1800, 1.3360, 1.7070],
    [0.3760, 0.5340, 0.7410, 0.9030, 1.0690, 1.2960, 1.4710, 1.8930],
    [0.3860, 0.5500, 0.7660, 0.9350, 1.1100, 1.3480, 1.5320, 1.9660],
    [0.3970, 0.5690, 0.7960, 0.9740, 1.1580, 1.4090, 1.6030, 2.0640],
    [0.4100, 0.5910, 0.8310, 1.0200, 1.2150, 1.4810, 1.6870, 2.1760],
    [0.4260, 0.6170, 0.8730, 1.0740, 1.2830, 1.5670, 1.7880, 2.3140],
    [0.4450, 0.6490, 0.9240, 1.1400, 1.3650, 1.6720, 1.9090, 2.4750],
    [0.4680, 0.6880, 0.9850, 1.2210, 1.4650, 1.7990, 2.0580, 2.6740],
    [0.4960, 0.7350, 1.0610, 1.3210, 1.5900, 1.9580, 2.2430, 2.9220],
])


@dataclass(frozen=True)
class TailFit:
    """A generalised Pareto fit to the upper tail of a null distribution.

    Attributes
    ----------
    location : float
        Threshold ``u``: excesses ``y = value - u`` of the tail values are fitted.
    scale, shape : float
        ``a`` and ``k`` of the survival function ``(1 - k y / a)^(1/k)``.
    tail_fraction : float
        Share of the null in the tail (``n_tail / n``): a refined p is this times the
        survival.
    quantile : float
        The tail quantile that gave the accepted fit.
    gof_pvalue : float
        Anderson-Darling p-value of the accepted fit (> 0.05).
    n_tail : int
        Null values in the tail.
    """

    location: float
    scale: float
    shape: float
    tail_fraction: float
    quantile: float
    gof_pvalue: float
    n_tail: int

    def sf(self, values) -> np.ndarray:
        """``tail_fraction * survival(values - location)`` (meaningful above ``location``)."""
        y = np.asarray(values, dtype=np.float64) - self.location
        return self.tail_fraction * _survival(y, self.scale, self.shape)

    def isf(self, p: float) -> float:
        """The value whose refined p-value is ``p`` (``p <= tail_fraction``)."""
        s = p / self.tail_fraction
        a, k = self.scale, self.shape
        y = -a * np.log(s) if abs(k) < np.finfo(float).eps else a / k * (1.0 - s**k)
        return float(self.location + y)

    def as_dict(self) -> dict:
        return {key: float(v) if key != "n_tail" else int(v) for key, v in asdict(self).items()}


def _survival(y, a, k) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if abs(k) < np.finfo(float).eps:
        return np.exp(-y / a)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        base = 1.0 - k * y / a
        p = np.where(base > 0, np.abs(base) ** (1.0 / k), 0.0)
    return p


def _ad_pvalue(z: np.ndarray, k: float) -> float:
    """Anderson-Darling p-value of the survival values ``z`` (any order) of a GPD fit with
    estimated parameters, from Choulakian & Stephens' table (linear inter/extrapolation)."""
    z = np.sort(z)
    n = z.size
    j = np.arange(1, n + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a2 = -n - np.sum((2 * j - 1) * (np.log(z) + np.log1p(-z[::-1]))) / n
    if not np.isfinite(a2):
        return 0.0
    k = min(max(k, _AD_K[-1]), _AD_K[0])
    row = np.array([np.interp(k, _AD_K[::-1], _AD_A2[::-1, c]) for c in range(_AD_P.size)])
    if a2 <= row[0]:  # extrapolate on the first (or last) segment, as interp1 'extrap'
        lo = 0
    elif a2 >= row[-1]:
        lo = row.size - 2
    else:
        lo = int(np.searchsorted(row, a2)) - 1
    p = _AD_P[lo] + (a2 - row[lo]) * (_AD_P[lo + 1] - _AD_P[lo]) / (row[lo + 1] - row[lo])
    return float(min(max(p, 0.0), 1.0))


def fit_tail(null, quantiles=QUANTILES) -> TailFit | None:
    """Generalised Pareto fit to the upper tail of ``null`` (see the module docstring), or
    None when no tail quantile gives a fit the goodness-of-fit test accepts."""
    null = np.sort(np.asarray(null, dtype=np.float64))
    n = null.size
    cdf = np.searchsorted(null, null, side="right") / n  # #{null <= value} / n
    for q in quantiles:
        qi = int(np.argmax(cdf >= q)) if (cdf >= q).any() else n
        if qi == 0 or n - qi < 3:
            continue
        u = 0.5 * (null[qi - 1] + null[qi])
        y = null[qi:] - u
        m, s2 = y.mean(), y.var(ddof=1)
        if not (s2 > 0 and m > 0):
            continue
        a = m * (m * m / s2 + 1.0) / 2.0
        k = (m * m / s2 - 1.0) / 2.0
        if k > 0:  # a bounded tail: fit the exponential tail instead (module docstring)
            a, k = m, 0.0
        gof = _ad_pvalue(_survival(y, a, k), k)
        if gof > GOF_ALPHA:
            return TailFit(location=float(u), scale=float(a), shape=float(k),
                           tail_fraction=(n - qi) / n, quantile=float(q),
                           gof_pvalue=gof, n_tail=n - qi)
    return None


def tail_pvalues(values, null, p_perm=None, threshold: float = TAIL_THRESHOLD
                 ) -> tuple[np.ndarray, TailFit | None, int]:
    """p-values of ``values`` against ``null``, those below ``threshold`` refined by the tail
    fit. Returns ``(p, fit, n_refined)``; ``fit`` is None (and ``p`` the permutation
    p-values) when no fit was accepted.

    ``p_perm`` are the permutation p-values of ``values`` (computed as ``mean(null >=
    value)`` when not given).
    """
    values = np.asarray(values, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    if p_perm is None:
        srt = np.sort(null)
        p_perm = (srt.size - np.searchsorted(srt, values, side="left")) / srt.size
    p = np.array(p_perm, dtype=np.float64, copy=True)
    refine = p < threshold
    if not refine.any():
        return p, None, 0
    fit = fit_tail(null)
    if fit is None:
        return p, None, 0
    where = refine & (values > fit.location)
    p[where] = fit.sf(values[where])
    return p, fit, int(where.sum())
