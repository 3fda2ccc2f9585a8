"""Closed forms of the generalised Pareto tail (glmkit.stats.tail), written here: survival
``tf * exp(-y / a)`` (shape 0) and ``tf * (1 - k y / a)^(1/k)`` (shape k < 0), their inverses,
and the critical value of an accelerated permutation test read from them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from glmkit.stats import tail
from glmkit.stats.permutation import permutation_test


def _fit(shape):
    return tail.TailFit(location=2.5, scale=0.7, shape=shape, tail_fraction=0.2, quantile=0.8,
                        gof_pvalue=0.5, n_tail=40)


def _sf(y, a, k, tf):
    return tf * (math.exp(-y / a) if k == 0 else (1 - k * y / a) ** (1 / k))


def _isf(p, u, a, k, tf):
    s = p / tf
    return u - a * math.log(s) if k == 0 else u + a / k * (1 - s**k)


@pytest.mark.parametrize("shape", [0.0, -0.2, -0.45])
@pytest.mark.parametrize("p", [0.15, 0.05, 1e-3, 1e-6])
def test_survival_and_its_inverse_equal_the_closed_forms(shape, p):
    fit = _fit(shape)
    value = fit.isf(p)
    assert value == pytest.approx(_isf(p, 2.5, 0.7, shape, 0.2), rel=1e-12)
    assert value > fit.location  # p below the tail fraction: beyond the threshold
    assert float(fit.sf(value)) == pytest.approx(p, rel=1e-10)
    for y in (0.1, 1.0, 4.0):
        assert float(fit.sf(2.5 + y)) == pytest.approx(_sf(y, 0.7, shape, 0.2), rel=1e-12)


def test_accelerated_critical_value_is_the_fitted_quantile():
    """Below the tail fraction, ``critical_value`` is where the fitted survival equals alpha
    (the closed form of the fit the result records); the refined p of that value is alpha."""
    rng = np.random.default_rng(3)
    n = 20
    X = np.column_stack([rng.standard_normal(n), np.ones(n)])
    res = permutation_test(rng.standard_normal((n, 300)), X, [1.0, 0.0], n_perm=999,
                           accel="tail", random_state=5, verbose=False)
    fit = res.tail_fit("voxel")
    assert fit is not None
    for alpha in (0.01, 0.001, 1e-5):
        assert alpha <= fit.tail_fraction
        crit = res.critical_value("voxel", alpha)
        assert crit == pytest.approx(_isf(alpha, fit.location, fit.scale, fit.shape,
                                          fit.tail_fraction), rel=1e-12)
        assert crit > fit.location
        y = crit - fit.location
        assert _sf(y, fit.scale, fit.shape, fit.tail_fraction) == pytest.approx(alpha,
                                                                                rel=1e-9)


#: Choulakian & Stephens (2001), table 2, the row of shape 0: critical A^2 for upper-tail
#: probabilities 0.5 ... 0.001 (typed here from the paper)
_A2_K0 = [0.397, 0.569, 0.796, 0.974, 1.158, 1.409, 1.603, 2.064]
_P = [0.5, 0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001]


def _a2_pvalue_k0(z):
    """Anderson-Darling A^2 of survival values z, and its p read off the shape-0 row by
    linear interpolation, extrapolated on the first or last segment, clipped to [0, 1]."""
    z = sorted(z)
    n = len(z)
    a2 = -n - sum((2 * j - 1) * (math.log(z[j - 1]) + math.log(1 - z[n - j]))
                  for j in range(1, n + 1)) / n
    i = 0 if a2 <= _A2_K0[0] else 6 if a2 >= _A2_K0[-1] else next(
        j for j in range(7) if _A2_K0[j] <= a2 < _A2_K0[j + 1])
    p = _P[i] + (a2 - _A2_K0[i]) * (_P[i + 1] - _P[i]) / (_A2_K0[i + 1] - _A2_K0[i])
    return a2, min(max(p, 0.0), 1.0)


@pytest.mark.parametrize("seed", range(6))
def test_goodness_of_fit_pvalue_of_an_exponential_tail_equals_the_table(seed):
    """Survival values of an exponential sample under its fitted exponential tail: small A^2
    (extrapolated beyond the table's first column), mid-table, and a poor fit (large A^2)."""
    rng = np.random.default_rng(seed)
    y = rng.exponential(1.3, size=60)
    if seed >= 4:  # a poor fit: a two-point mixture
        y = np.r_[rng.exponential(0.1, 40), rng.exponential(5.0, 20)]
    z = np.exp(-y / y.mean())
    a2, expected = _a2_pvalue_k0(z)
    assert tail._ad_pvalue(z, 0.0) == pytest.approx(expected, rel=1e-9, abs=1e-12), a2
