"""Exchangeability blocks (``groups=``): draws stay inside blocks, every block is shuffled,
and within a block every arrangement is equally likely, independently of the other blocks.

The draws are read from ``glmkit.stats.permutation._draw(rng, n_perm, n, sign_flip, groups)``
(data-side permutations: permuted row ``i`` is original row ``perm[i]``) and, end to end,
from ``permutation_test``'s null distribution, which must vary when only one block's
rearrangements can change the statistic.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import glmkit
from glmkit.stats.permutation import _draw

#: interleaved, unequal blocks (sizes 3, 4, 2, 3, 1) with labels of mixed order
GROUPS = np.array(["s1", "s2", "s1", "s3", "s2", "s4", "s1", "s2", "s3", "s4", "s2", "s5",
                   "s4"])
N_DRAWS = 7200
#: smallest p-value accepted from a chi-square test (seeds are fixed: deterministic)
P_MIN = 1e-4


@pytest.fixture(scope="module")
def draws():
    perms, signs = _draw(2026, N_DRAWS, GROUPS.size, False, GROUPS)
    assert signs is None
    return np.asarray(perms)


def _blocks(groups):
    return {g: np.flatnonzero(groups == g) for g in pd.unique(groups)}


def _arrangements(perms, idx):
    """Each draw's arrangement of one block, as a tuple of original row numbers."""
    return [tuple(row) for row in perms[:, idx]]


def test_rows_never_cross_blocks_and_each_draw_is_a_permutation(draws):
    assert draws.shape == (N_DRAWS, GROUPS.size)
    for perm in draws:
        assert sorted(perm.tolist()) == list(range(GROUPS.size))
        np.testing.assert_array_equal(GROUPS[perm], GROUPS)


@pytest.mark.parametrize("label", ["s1", "s2", "s3", "s4"])
def test_every_block_is_permuted_uniformly(draws, label):
    """Every arrangement of the block's rows occurs, with equal frequency (chi-square)."""
    idx = _blocks(GROUPS)[label]
    counts = Counter(_arrangements(draws, idx))
    expected = set(itertools.permutations(idx.tolist()))
    assert set(counts) == expected
    assert len(expected) == math.factorial(idx.size)
    freq = np.array([counts[a] for a in sorted(expected)])
    assert stats.chisquare(freq).pvalue > P_MIN, freq.tolist()


def test_singleton_block_stays_in_place(draws):
    (i,) = _blocks(GROUPS)["s5"]
    assert np.all(draws[:, i] == i)


def test_blocks_are_shuffled_independently(draws):
    """Two blocks of the same size (s1, s4): the joint arrangement is uniform over 6 x 6."""
    b = _blocks(GROUPS)
    a1 = _arrangements(draws, b["s1"])
    a4 = _arrangements(draws, b["s4"])
    labels1 = {a: k for k, a in enumerate(sorted(set(a1)))}
    labels4 = {a: k for k, a in enumerate(sorted(set(a4)))}
    table = np.zeros((6, 6))
    for x, y in zip(a1, a4):
        table[labels1[x], labels4[y]] += 1
    assert stats.chisquare(table.ravel()).pvalue > P_MIN, table.tolist()
    # and the same draw index does not mean the same shuffle pattern in both blocks
    pattern1 = [tuple(np.argsort(a)) for a in a1]
    pattern4 = [tuple(np.argsort(a)) for a in a4]
    same = np.mean([p == q for p, q in zip(pattern1, pattern4)])
    assert abs(same - 1 / 6) < 0.03


@pytest.mark.parametrize("groups", [
    np.repeat([0, 1, 2], 4),                        # contiguous integer labels
    np.array([2.5, 1.0, 2.5, 1.0, 1.0, 2.5, 7.0, 7.0]),  # float labels, interleaved
])
def test_other_label_types(groups):
    perms, _ = _draw(0, 400, groups.size, False, groups)
    for label, idx in _blocks(groups).items():
        arrangements = set(_arrangements(perms, idx))
        assert len(arrangements) == math.factorial(idx.size), label
    for perm in perms:
        np.testing.assert_array_equal(groups[perm], groups)


def test_without_groups_all_rows_are_exchanged():
    n = 5
    perms, signs = _draw(1, 6000, n, False, None)
    assert signs is None
    counts = Counter(tuple(p) for p in perms)
    assert len(counts) == math.factorial(n)
    assert stats.chisquare(np.array(list(counts.values()))).pvalue > P_MIN


def test_sign_flips_are_per_subject_and_fair_with_or_without_groups():
    n = 6
    for groups in (None, np.repeat(["a", "b"], 3)):
        perms, signs = _draw(3, 6400, n, True, groups)
        assert perms is None
        signs = np.asarray(signs)
        assert set(np.unique(signs).tolist()) == {-1, 1}
        codes = ((signs > 0) * (2 ** np.arange(n))).sum(axis=1)  # the 64 sign patterns
        freq = np.bincount(codes, minlength=2**n)
        assert stats.chisquare(freq).pvalue > P_MIN


# ----------------------------------------------------------------------------- end to end
# (a block of two under ter Braak is left out: the full model's residuals of its two rows are
# equal there, since they are orthogonal to x, so swapping them changes nothing)
@pytest.mark.parametrize(("label", "scheme"), [
    (label, scheme) for label in ("s1", "s2", "s3", "s4")
    for scheme in ("freedman_lane", "ter_braak") if (label, scheme) != ("s3", "ter_braak")])
def test_each_block_is_permuted_by_permutation_test(rng, scheme, label):
    """The tested regressor varies only inside one block (and the rest of the data is
    constant per block), so only that block's rearrangements change the statistic: the null
    is degenerate if that block is never shuffled."""
    n = GROUPS.size
    idx = _blocks(GROUPS)[label]
    x = np.zeros(n)
    x[idx] = np.arange(idx.size) - (idx.size - 1) / 2
    block_effect = pd.get_dummies(GROUPS).to_numpy(float)
    X = np.column_stack([x, block_effect])  # block means as nuisance regressors
    Y = rng.standard_normal((n, 40)) + block_effect @ rng.standard_normal((5, 40)) * 5
    res = glmkit.permutation_test(Y, X, np.r_[1.0, np.zeros(5)], n_perm=60, groups=GROUPS,
                                  scheme=scheme, random_state=4, verbose=False)
    null = np.round(res.null_max["voxel"], 10)
    # unshuffled, every null maximum would be the same number (the observed one for
    # Freedman-Lane, that of the unpermuted residuals for ter Braak)
    values, counts = np.unique(null, return_counts=True)
    if res.exact:  # x differs only inside the block: its idx.size! arrangements, each once
        assert null.size == math.factorial(idx.size)
    else:
        null = null[1:]
    assert values.size >= 2 and counts.max() <= 0.8 * null.size, dict(zip(values, counts))
    assert res.info["exchangeability_blocks"] == 5
