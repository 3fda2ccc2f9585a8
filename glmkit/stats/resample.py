"""Resampling: random permutations and sign flips, and exhaustive enumeration.

Data-side convention: permuted data row ``i`` is row ``perm[i]`` of the residuals, and sign
``s[i]`` multiplies row ``i``. :func:`draw` draws any range of the random stream of a seed
(within exchangeability blocks when ``groups`` is given), counter-based: permutation ``k``
depends only on the seed and ``k``, so blocks can be drawn where they are used, in any order,
by any worker. :func:`all_sign_flips` and :func:`all_arrangements` enumerate every distinct
one but the observed, for exact tests; :func:`sign_flips` and :func:`arrangements` give any
range of those enumerations without the rest. :class:`Stream` is what the engine hands to
its workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["CHUNK", "Stream", "draw", "sign_flips", "all_sign_flips", "arrangements",
           "n_arrangements", "all_arrangements"]


#: permutations per chunk of the random stream: chunk ``c`` is drawn from its own generator,
#: seeded by ``SeedSequence(random_state, spawn_key=(c,))``, so permutation ``k`` depends on
#: ``random_state`` and ``k`` only (not on blocks, workers or machines)
CHUNK = 256


def _draw_chunk(random_state, chunk, n, sign_flip, groups):
    """The ``CHUNK`` permutations (or sign vectors) of chunk number ``chunk``."""
    rng = np.random.default_rng(np.random.SeedSequence(random_state, spawn_key=(chunk,)))
    if sign_flip:
        return (rng.integers(0, 2, size=(CHUNK, n), dtype=np.int8) * 2 - 1).astype(np.int8)
    if groups is None:
        return rng.permuted(np.tile(np.arange(n, dtype=np.int32), (CHUNK, 1)), axis=1)
    perms = np.tile(np.arange(n, dtype=np.int32), (CHUNK, 1))
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g).astype(np.int32)
        if idx.size > 1:
            perms[:, idx] = idx[rng.permuted(np.tile(np.arange(idx.size), (CHUNK, 1)), axis=1)]
    return perms


def draw(random_state, start, stop, n, sign_flip, groups):
    """Permutations ``start`` to ``stop - 1`` of the stream of ``random_state``.

    Returns data-side permutations ``(stop - start, n)`` int32 and ``None``, or ``None`` and
    signs ``(stop - start, n)`` int8. Permutation ``k`` is row ``k % CHUNK`` of chunk
    ``k // CHUNK`` (see :data:`CHUNK`): the same whatever range it is drawn in.

    Examples
    --------
    >>> a, _ = draw(7, 0, 100, 5, False, None)
    >>> b, _ = draw(7, 60, 70, 5, False, None)
    >>> bool((a[60:70] == b).all()), a.shape
    (True, (100, 5))
    """
    first, last = start // CHUNK, (stop - 1) // CHUNK
    rows = np.concatenate([_draw_chunk(random_state, c, n, sign_flip, groups)
                           for c in range(first, last + 1)])
    out = rows[start - first * CHUNK: stop - first * CHUNK]
    return (None, out) if sign_flip else (out, None)


@dataclass(frozen=True, eq=False)
class Stream:
    """The permutations of one test, drawn block by block where they are used.

    ``kind`` is ``"random"`` (:func:`draw` from ``random_state``), ``"given"`` (the rows of
    ``given``), ``"signs"`` (every sign vector but the identity, in the order of
    :func:`all_sign_flips`) or ``"arrangements"`` (every distinct arrangement of the design
    rows but the observed one, in the order of :func:`all_arrangements`). Only ``given``
    holds ``n_perm`` rows; the others are ``O(n)`` however many permutations they stand for,
    so memory does not grow with ``n_perm``.
    """

    kind: str
    n_perm: int
    n: int
    sign_flip: bool
    random_state: int | None = None
    groups: np.ndarray | None = None
    given: np.ndarray | None = None
    rows: np.ndarray | None = None  # design rows (arrangements)

    def part(self, start: int, stop: int) -> tuple[Stream, int, int]:
        """What a worker needs for permutations ``start`` to ``stop - 1``: ``(stream, start,
        stop)`` to call :meth:`block` with (given rows are sliced, not sent whole)."""
        if self.kind != "given":
            return self, start, stop
        part = Stream("given", stop - start, self.n, self.sign_flip,
                      given=self.given[start:stop])
        return part, 0, stop - start

    def block(self, start: int, stop: int):
        """``(perms, signs)`` of permutations ``start`` to ``stop - 1`` (one of them None)."""
        if self.kind == "random":
            return draw(self.random_state, start, stop, self.n, self.sign_flip, self.groups)
        if self.kind == "given":
            part = self.given[start:stop]
            return (None, part) if self.sign_flip else (part, None)
        if self.kind == "signs":
            return None, sign_flips(self.n, start + 1, stop + 1)
        return arrangements(self.rows, self.groups, start, stop), None


def sign_flips(n, start, stop) -> np.ndarray:
    """Sign vectors number ``start`` to ``stop - 1`` (bit ``i`` of the number flips row
    ``i``), ``(stop - start, n)`` int8."""
    codes = np.arange(start, stop, dtype=np.int64)
    bits = (codes[:, None] >> np.arange(n, dtype=np.int64)[None, :]) & 1
    return (1 - 2 * bits).astype(np.int8)


def all_sign_flips(n) -> np.ndarray:
    """Every sign vector but the identity, (2**n - 1, n) int8."""
    return sign_flips(n, 1, 2**n)


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


def _multinomial(counts) -> int:
    """Number of distinct orderings of a multiset with these label counts."""
    out = math.factorial(sum(counts))
    for c in counts:
        out //= math.factorial(c)
    return out


def _unrank(values, counts, r) -> list:
    """The ``r``-th distinct ordering (lexicographic) of the multiset ``values`` x ``counts``."""
    counts = list(counts)
    seq = []
    for _ in range(sum(counts)):
        for j, value in enumerate(values):
            if not counts[j]:
                continue
            counts[j] -= 1
            m = _multinomial(counts)
            if r < m:
                seq.append(value)
                break
            r -= m
            counts[j] += 1
    return seq


def _rank(seq, values, counts) -> int:
    """Inverse of :func:`_unrank`: the lexicographic rank of the ordering ``seq``."""
    counts = list(counts)
    r = 0
    for item in seq:
        for j, value in enumerate(values):
            if not counts[j]:
                continue
            if value == item:
                counts[j] -= 1
                break
            counts[j] -= 1
            r += _multinomial(counts)
            counts[j] += 1
    return r


def arrangements(rows, groups, start, stop) -> np.ndarray:
    """Arrangements number ``start`` to ``stop - 1`` of :func:`all_arrangements`, without
    enumerating the others (each is unranked from its number).

    Arrangement ``k`` is the ``k``-th in the product (last block fastest) of every block's
    distinct label orderings in lexicographic order, the observed combination left out.
    """
    labels = row_classes(rows)
    n = labels.size
    blocks = blocks_of(groups, n)
    spec = []
    r_obs = 0
    for idx in blocks:
        values, counts = np.unique(labels[idx], return_counts=True)
        values, counts = values.tolist(), counts.tolist()
        total = _multinomial(counts)
        spec.append((idx, values, counts, total))
        r_obs = r_obs * total + _rank(labels[idx].tolist(), values, counts)
    out = np.empty((max(stop - start, 0), n), dtype=np.int32)
    for row, k in enumerate(range(start, stop)):
        r = k + (k >= r_obs)
        inv = np.empty(n, dtype=np.int64)
        for idx, values, counts, total in reversed(spec):
            r, digit = divmod(r, total)
            seq = _unrank(values, counts, digit)
            queues = {lab: list(idx[labels[idx] == lab]) for lab in values}
            for j, lab in zip(idx, seq):
                inv[j] = queues[lab].pop(0)
        out[row] = np.argsort(inv)
    return out


def all_arrangements(rows, groups) -> np.ndarray:
    """Data-side permutations giving every distinct arrangement of the design rows but the
    observed one: permuted data row ``i`` is row ``perm[i]``, so the design row facing data
    row ``j`` is ``inv[j]`` with ``inv = argsort(perm)``."""
    return arrangements(rows, groups, 0, n_arrangements(rows, groups) - 1)
