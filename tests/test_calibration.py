"""Calibration of glmkit.permutation_test on null data, one stratum at a time.

Each stratum (scheme x one- or two-sided) runs its own null datasets, and every statistic is
checked in every stratum, so a two-sided FWER of 0.11 cannot hide behind a one-sided 0.03.
``n_perm = 19`` throughout: p takes the values ``k / 20`` and, for an exact test,
``P(p <= 0.05) = 1/20`` exactly; an off-by-one in the count or the denominator moves that
rate to 0 or 2/20, and the support of p off the ``k / 20`` grid.

Regression strata carry a strong nuisance effect correlated with the tested regressor (so
permuting the raw data instead of residuals would show); the sign-flip stratum is a
one-sample test on symmetric noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

import glmkit

N_DATASETS, N_PERM, N_SUBJ = 500, 19, 12
SHAPE = (6, 6, 4)
ALL = ("voxel", "cluster_size", "cluster_mass", "tfce")
ALPHA = 0.05
#: acceptance half-width of a rate, in binomial standard errors (seeds are fixed, so the
#: test is deterministic; 3.5 SE keeps a reseeded run's false alarm rate near 1e-3 per check)
N_SE = 3.5

STRATA = [(scheme, two_sided) for scheme in ("freedman_lane", "ter_braak", "sign_flip")
          for two_sided in (False, True)]


def _null_dataset(rng, scheme):
    vols = ndimage.gaussian_filter(rng.standard_normal((N_SUBJ, *SHAPE)), (0, 1, 1, 1))
    Y = vols.reshape(N_SUBJ, -1) * 10
    if scheme == "sign_flip":
        return Y, np.ones((N_SUBJ, 1)), [1.0]
    age = rng.standard_normal(N_SUBJ)
    x = 0.6 * age + 0.8 * rng.standard_normal(N_SUBJ)
    Y = Y + 20.0 * age[:, None] + 3.0  # strong nuisance effect, no effect of x
    return Y, np.column_stack([x, age, np.ones(N_SUBJ)]), [1.0, 0.0, 0.0]


def _rate_bounds(p0, n):
    se = np.sqrt(p0 * (1 - p0) / n)
    return p0 - N_SE * se, p0 + N_SE * se


def _run_stratum(scheme, two_sided):
    """Per dataset: the smallest FWER p of each statistic, and one voxel's uncorrected p."""
    rng = np.random.default_rng([20261129, STRATA.index((scheme, two_sided))])
    mask = np.ones(SHAPE, bool)
    fwer = {s: np.empty(N_DATASETS) for s in ALL}
    unc = np.empty(N_DATASETS)
    for i in range(N_DATASETS):
        Y, X, c = _null_dataset(rng, scheme)
        res = glmkit.permutation_test(
            Y, X, c, n_perm=N_PERM, two_sided=two_sided, statistics=ALL, mask_img=mask,
            cluster_threshold=0.05, random_state=i, verbose=False,
            scheme="freedman_lane" if scheme == "sign_flip" else scheme)
        assert res.method == ("sign_flip" if scheme == "sign_flip" else "permutation")
        for s in ALL:
            fwer[s][i] = 10 ** -res.logp_fwer[s].max()
        unc[i] = 10 ** -res.logp_uncorrected[i % Y.shape[1]]
    return fwer, unc


def _on_grid(p):
    """p * (n_perm + 1) as integers, checking they are integers in 1 .. n_perm + 1."""
    k = p * (N_PERM + 1)
    assert np.allclose(k, np.round(k), atol=1e-9), "p is off the k / (n_perm + 1) grid"
    k = np.round(k).astype(int)
    assert k.min() >= 1 and k.max() <= N_PERM + 1
    return k


@pytest.mark.slow
@pytest.mark.parametrize(("scheme", "two_sided"), STRATA,
                         ids=[f"{s}-{'two' if t else 'one'}_sided" for s, t in STRATA])
def test_fwer_and_uncorrected_calibrated_per_stratum(scheme, two_sided):
    fwer, unc = _run_stratum(scheme, two_sided)
    lo, hi = _rate_bounds(ALPHA, N_DATASETS)
    rates = {s: float(np.mean(fwer[s] <= ALPHA + 1e-12)) for s in ALL}
    rates["uncorrected"] = float(np.mean(unc <= ALPHA + 1e-12))
    print(f"{scheme} two_sided={two_sided}: rejection rates at {ALPHA}: {rates}")
    for s in ("voxel", "cluster_mass", "tfce", "uncorrected"):
        assert lo <= rates[s] <= hi, (s, rates)
    # cluster sizes are integers: ties with the null make the test conservative, never liberal
    assert 0.5 * lo <= rates["cluster_size"] <= hi, rates
    # the whole distribution: the observed statistic's rank among n_perm + 1 is uniform
    for name, p in (("voxel", fwer["voxel"]), ("uncorrected", unc)):
        k = _on_grid(p)
        counts = np.bincount(k, minlength=N_PERM + 2)[1:]
        chi2 = stats.chisquare(counts)
        assert chi2.pvalue > 1e-3, (name, counts.tolist())
    for s in ALL:
        _on_grid(fwer[s])
