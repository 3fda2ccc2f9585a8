"""Resampling: random permutations and sign flips, and exhaustive enumeration.

Data-side convention: permuted data row ``i`` is row ``perm[i]`` of the residuals, and sign
``s[i]`` multiplies row ``i``. :func:`draw` draws ``n_perm`` of them from a generator
(within exchangeability blocks when ``groups`` is given); :func:`all_sign_flips` and
:func:`all_arrangements` enumerate every distinct one but the observed, for exact tests.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

__all__ = ["draw", "all_sign_flips", "n_arrangements", "all_arrangements",
           "multiset_permutations"]


def draw(rng, n_perm, n, sign_flip, groups):
    """Data-side permutations (n_perm, n) int32 and signs (n_perm, n) int8 or None."""
    if sign_flip:
        signs = (rng.integers(0, 2, size=(n_perm, n), dtype=np.int8) * 2 - 1).astype(np.int8)
        return None, signs
    if groups is None:
        perms = rng.permuted(np.tile(np.arange(n, dtype=np.int32), (n_perm, 1)), axis=1)
        return perms, None
    perms = np.tile(np.arange(n, dtype=np.int32), (n_perm, 1))
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g).astype(np.int32)
        if idx.size > 1:
            perms[:, idx] = idx[rng.permuted(np.tile(np.arange(idx.size), (n_perm, 1)), axis=1)]
    return perms, None


def all_sign_flips(n) -> np.ndarray:
    """Every sign vector but the identity, (2**n - 1, n) int8."""
    codes = np.arange(1, 2**n, dtype=np.int64)
    bits = (codes[:, None] >> np.arange(n, dtype=np.int64)[None, :]) & 1
    return (1 - 2 * bits).astype(np.int8)


def row_classes(rows) -> np.ndarray:
    """Class label of each design row (identical rows share a class)."""
    scale = max(1.0, float(np.abs(rows).max(initial=0.0)))
    return np.unique(np.round(rows / scale, 10), axis=0, return_inverse=True)[1].ravel()


def blocks_of(groups, n) -> list[np.ndarray]:
    if groups is None:
        return [np.arange(n)]
    return [np.flatnonzero(groups == g) for g in pd.unique(groups)]


def n_arrangements(rows, groups, *, at_most: int | None = None) -> int:
    """Number of distinct rearrangements of the design rows (within blocks).

    With ``at_most``, any number above it may be returned as ``at_most + 1`` (a cheap
    log-gamma bound first, so large cohorts never compute huge factorials).
    """
    labels = row_classes(rows)
    blocks = [np.unique(labels[idx], return_counts=True)[1] for idx in blocks_of(groups,
                                                                                labels.size)]
    if at_most is not None:
        log_total = sum(math.lgamma(c.sum() + 1) - sum(math.lgamma(k + 1) for k in c)
                        for c in blocks)
        if log_total > math.log(at_most + 1) + 1e-6:
            return at_most + 1
    total = 1
    for counts in blocks:
        total *= math.factorial(int(counts.sum())) // math.prod(
            math.factorial(int(k)) for k in counts)
    return total


def multiset_permutations(items):
    """Distinct orderings of ``items`` in lexicographic order (Narayana's algorithm)."""
    a = sorted(items)
    while True:
        yield list(a)
        i = len(a) - 2
        while i >= 0 and a[i] >= a[i + 1]:
            i -= 1
        if i < 0:
            return
        j = len(a) - 1
        while a[j] <= a[i]:
            j -= 1
        a[i], a[j] = a[j], a[i]
        a[i + 1:] = reversed(a[i + 1:])


def all_arrangements(rows, groups) -> np.ndarray:
    """Data-side permutations giving every distinct arrangement of the design rows but the
    observed one: permuted data row ``i`` is row ``perm[i]``, so the design row facing data
    row ``j`` is ``inv[j]`` with ``inv = argsort(perm)``."""
    labels = row_classes(rows)
    n = labels.size
    blocks = blocks_of(groups, n)
    per_block = [list(multiset_permutations(labels[idx].tolist())) for idx in blocks]
    observed = [labels[idx].tolist() for idx in blocks]
    out = []
    for combo in itertools.product(*per_block):
        if all(seq == obs for seq, obs in zip(combo, observed)):
            continue
        inv = np.empty(n, dtype=np.int64)
        for idx, seq in zip(blocks, combo):
            queues = {lab: list(idx[labels[idx] == lab]) for lab in set(seq)}
            for j, lab in zip(idx, seq):
                inv[j] = queues[lab].pop(0)
        out.append(np.argsort(inv))
    return np.asarray(out, dtype=np.int32).reshape(len(out), n)
