"""The permutation stream (glmkit.stats.resample) against brute force written here: exact
sign flips one-sided (the observed sign vector left out, the all-flipped one kept), counts of
distinct arrangements against binomial coefficients at the edge where a test becomes exact.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

import glmkit
from glmkit.stats import resample


def test_stream_of_exact_sign_flips_is_every_vector_but_the_identity():
    n = 5
    stream = resample.Stream("signs", 2**n - 1, n, True)
    _, signs = stream.block(0, 2**n - 1)
    got = [tuple(int(v) for v in s) for s in signs]
    assert len(got) == len(set(got)) == 2**n - 1
    assert set(got) == set(itertools.product([1, -1], repeat=n)) - {(1,) * n}
    # any range is the same rows as the whole
    np.testing.assert_array_equal(stream.block(7, 19)[1], signs[7:19])


def test_exact_one_sided_sign_flips_equal_brute_force():
    """One-sided, so that the identity (t) and the all-flipped vector (-t) differ: the null
    holds every sign vector but the identity, p = #{>= observed} / 2^n with the observed."""
    rng = np.random.default_rng(21)
    n = 7
    Y = rng.gamma(1.5, size=(n, 12)) - 0.9
    Y[:, :3] += 0.8
    res = glmkit.permutation_test(Y, np.ones((n, 1)), [1.0], n_perm=500, verbose=False)
    assert res.exact and res.n_perm == 2**n - 1 and not res.two_sided
    t_obs = stats.ttest_1samp(Y, 0.0).statistic
    null, counts = [], np.zeros(Y.shape[1])
    for s in itertools.product([1, -1], repeat=n):
        if s == (1,) * n:
            continue
        t = stats.ttest_1samp(np.array(s)[:, None] * Y, 0.0).statistic
        null.append(t.max())
        counts += t >= t_obs - 1e-9
    np.testing.assert_allclose(np.sort(res.null_max["voxel"][1:]), np.sort(null), rtol=1e-9)
    np.testing.assert_allclose(10 ** -res.logp_uncorrected, (1 + counts) / 2**n, rtol=1e-9)
    p_fwer = [(1 + sum(m >= v - 1e-9 for m in null)) / 2**n for v in t_obs]
    np.testing.assert_allclose(10 ** -res.logp_fwer["voxel"], p_fwer, rtol=1e-9)


@pytest.mark.parametrize(("labels", "groups"), [
    ([0, 0, 0, 1, 1, 1], None),  # C(6, 3) = 20
    ([0, 0, 1, 1, 2, 2, 2], None),  # 7! / (2! 2! 3!) = 210
    ([0, 1, 1, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]),  # C(4, 2) * C(4, 1) = 24
    ([0] * 12 + [1] * 12, None),  # C(24, 12) = 2,704,156: log(total + 1) - log(total) < 1e-6
])
def test_number_of_arrangements_at_every_bound_near_it(labels, groups):
    labels = np.asarray(labels)
    rows = np.column_stack([labels, np.ones(labels.size)]).astype(float)
    groups = None if groups is None else np.asarray(groups)
    total = 1
    for block in ([labels] if groups is None else [labels[groups == g] for g in (0, 1)]):
        _, counts = np.unique(block, return_counts=True)
        total *= math.factorial(int(counts.sum())) // math.prod(
            math.factorial(int(c)) for c in counts)
    assert resample.n_arrangements(rows, groups) == total
    for at_most in range(max(total - 4, 1), total + 4):
        got = resample.n_arrangements(rows, groups, at_most=at_most)
        # the exact number up to at_most + 1; above, the exact number or at_most + 1 (the
        # log-gamma bound, which keeps a 1e-6 slack), either of them above at_most
        assert got == total if total <= at_most + 1 else got in (total, at_most + 1), at_most


@pytest.mark.parametrize("n_perm", [18, 19, 20])
def test_a_two_group_test_is_exact_from_n_perm_equal_to_arrangements_minus_one(n_perm):
    """C(6, 3) = 20 labellings: n_perm = 19 enumerates the 19 others (exact), 18 draws."""
    rng = np.random.default_rng(4)
    g = np.array([0, 0, 0, 1, 1, 1], float)
    X = np.column_stack([g, np.ones(6)])
    Y = rng.standard_normal((6, 5))
    res = glmkit.permutation_test(Y, X, [1.0, 0.0], n_perm=n_perm, random_state=0,
                                  verbose=False)
    assert res.exact == (n_perm >= 19)
    if res.exact:
        assert res.n_perm == 19
        null = []
        for group1 in itertools.combinations(range(6), 3):
            lab = np.zeros(6, bool)
            lab[list(group1)] = True
            if np.array_equal(lab, g == 1):
                continue
            null.append(stats.ttest_ind(Y[lab], Y[~lab]).statistic.max())
        np.testing.assert_allclose(np.sort(res.null_max["voxel"][1:]), np.sort(null),
                                   rtol=1e-9)
    else:
        assert res.n_perm == n_perm
