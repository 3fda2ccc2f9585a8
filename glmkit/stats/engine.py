"""The permutation engine: the model partition, blocks of permutations as GEMMs, kernels.

:func:`partition` splits a design into the tested space (``x``, residualised on the
nuisance and orthonormal: a vector for a t test, a matrix for an F test) and the nuisance
basis ``Z``. :func:`observed_fit` residualises the data on ``Z`` and normalises every
voxel, chunk by chunk of voxels (``Y`` is never copied whole), so that for permuted data
``Y* = S P R`` the statistic of a block of ``B`` permutations comes from one GEMM
``A (B, n) @ R (n, V)``: ``t = x'Y* / sqrt((1 - (x'Y*)^2 - ||Z'Y*||^2) / dof)``, or
``sqrt(F)`` from the ``q`` projections of an F test.

:func:`permute_blocks` runs the blocks (joblib; every block with single-threaded BLAS, so the
result never depends on ``n_jobs``) and reduces each to per-voxel counts and per-statistic
maxima as it comes, so memory does not grow with ``n_perm``. Each block draws its own
permutations from the stream (:class:`glmkit.stats.resample.Stream`, counter-based).

- Voxel statistics (max-T, max-F): :func:`voxel_block` multiplies ``TILE`` voxels at a
  time, ``(TILE, n) @ (n, B)``, into a buffer that stays in cache and is reduced at once
  (:func:`reduce_num_t`, :func:`reduce_stat_t`): the arithmetic is the GEMM's. A float64
  voxel statistic (``MIXED_MAX_N`` subjects at most, ``MIXED_STAT_MAX_N`` with confounds
  or an F test) runs float32 GEMMs and re-checks in float64 each entry that lies within
  the float32 error bound of a count's threshold or of a running maximum
  (:func:`reduce_num_mixed` when the permutations cancel the confounds,
  :func:`reduce_stat_mixed` for ANCOVA and F tests): float64 counts and maxima at about
  float32's cost. When the residuals would not fit in memory
  (:func:`resident`: a numpy memmap, or more than ``RESIDENT_BYTES``) they are not kept:
  each block reads its voxels again and residualises them chunk by chunk, so memory is
  bounded by the chunk and tile sizes.
- Spatial statistics (clusters, TFCE) need whole maps: :func:`run_block` forms the ``B``
  statistic maps of a block and hands them to the registry's ``null_max`` kernels.

Used by :func:`glmkit.stats.permutation.permutation_test`, which validates the inputs and
assembles the result.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import linalg
from scipy.linalg import blas

from glmkit._util import logger
from glmkit.errors import ContrastError, ParameterError
from glmkit.stats.glm import zero_residual_variance, zero_variance_level
from glmkit.stats.pvalues import tie_level

__all__ = ["Model", "Observed", "partition", "observed_fit", "fit_chunk", "resident",
           "permute_blocks", "t_from_num", "BLOCK_BYTES", "MAX_BLOCK", "TILE"]

def orthonormal(M, tol=1e-10) -> np.ndarray:
    if M.shape[1] == 0:
        return M
    U, s, _ = linalg.svd(M, full_matrices=False)
    return U[:, s > tol * max(1.0, s.max())]


@dataclass(frozen=True)
class Model:
    x: np.ndarray  # tested space, residualised on Z, orthonormal: (n,) for t, (n, q) for F
    z_all: np.ndarray  # orthonormal basis of Z (intercept direction first when present)
    has_const: bool  # z_all[:, 0] is the constant direction
    sign_flip: bool  # the tested regressor is constant (one-sample): flip signs
    dof: int
    q: int = 1  # rows of the contrast (F test: x is 2-D even when q is 1)
    rows: np.ndarray | None = None  # design rows [x, Z] that permutations rearrange

    @property
    def stat_type(self) -> str:
        return "F" if self.x.ndim == 2 else "t"


def partition(X, c) -> Model:
    """Tested space ``x = X pinv(C)`` and nuisance ``Z = X null(C)``, orthonormalised.

    A 1-D ``c`` is a t test; a 2-D ``c`` (q rows, q >= 1) an F test.
    """
    n, p = X.shape
    f_test = np.ndim(c) == 2
    C = np.atleast_2d(c)
    q = C.shape[0]
    if q > 1 and np.linalg.matrix_rank(C) < q:
        raise ContrastError(
            f"the F contrast's {q} rows are linearly dependent (rank "
            f"{np.linalg.matrix_rank(C)}): drop the rows that are combinations of the others")
    x = X @ C[0] / (C[0] @ C[0]) if not f_test else X @ np.linalg.pinv(C)
    Z = X @ linalg.null_space(C) if p > q else np.empty((n, 0))
    ones = np.ones(n) / math.sqrt(n)
    has_const = False
    if Z.shape[1]:
        Zo = orthonormal(Z)
        if np.linalg.norm(ones - Zo @ (Zo.T @ ones)) < 1e-8:
            rest = Z - np.outer(ones, ones @ Z)
            Zo = np.column_stack([ones, orthonormal(rest)])[:, : Z.shape[1]]
            has_const = True
    else:
        Zo = Z
    xr = x - Zo @ (Zo.T @ x)
    xr = orthonormal(xr) if f_test else xr / np.linalg.norm(xr)
    sign_flip = q == 1 and bool(np.ptp(x) <= 1e-12 * max(1.0, np.abs(x).max()))
    return Model(x=xr, z_all=Zo, has_const=has_const, sign_flip=sign_flip, dof=n - p, q=q,
                  rows=np.column_stack([x, Z]))


def scatter(vecs, perms, signs, dtype):
    """Rows ``a_k`` with ``a_k[perm_k[i]] = v[i] * sign_k[i]`` for each column v of ``vecs``.

    Returns (n_vecs * B, n): all B rows of the first vector, then the second, ...
    """
    n = vecs.shape[0]
    B = perms.shape[0] if perms is not None else signs.shape[0]
    out = np.zeros((vecs.shape[1], B, n), dtype=dtype)
    for j in range(vecs.shape[1]):
        v = vecs[:, j]
        if signs is not None:
            vals = v[None, :] * signs
        else:
            vals = np.broadcast_to(v, (B, n))
        if perms is None:
            out[j] = vals
        else:
            np.put_along_axis(out[j], perms.astype(np.intp), vals, axis=1)
    return out.reshape(vecs.shape[1] * B, n)


# ----------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True, fastmath=True)
def reduce_fast(num, thr, two_sided, counts, out_max):
    """Row max of num (|num| two-sided) and per-voxel counts of num >= thr.

    Branch-free so that it vectorises (inputs are finite: no inf/NaN under fastmath).
    """
    B, V = num.shape
    for b in range(B):
        out_max[b] = -1e308
    for v0 in range(0, V, 2048):  # voxel chunks keep counts/thr in L1 across rows
        v1 = min(V, v0 + 2048)
        for b in range(B):
            row = num[b]
            m = out_max[b]
            if two_sided:
                for v in range(v0, v1):
                    a = abs(row[v])
                    m = max(m, a)
                    counts[v] += a >= thr[v]
            else:
                for v in range(v0, v1):
                    a = row[v]
                    m = max(m, a)
                    counts[v] += a >= thr[v]
            out_max[b] = m


@njit(cache=True, nogil=True, fastmath=True)
def tmaps(num, conf, n_conf, ss, dof, out):
    """t = num * sqrt(dof / (ss - num^2 - sum_j conf_j^2)); 0 where ss == 0."""
    B, V = num.shape
    for b in range(B):
        for v in range(V):
            if ss[v] <= 0.0:
                out[b, v] = 0.0
                continue
            a = num[b, v]
            rss = ss[v] - a * a
            for j in range(n_conf):
                c = conf[j * B + b, v]
                rss -= c * c
            if rss < 1e-300:
                rss = 1e-300
            out[b, v] = a * np.sqrt(dof / rss)


@njit(cache=True, nogil=True, fastmath=True)
def gmaps(num, q, conf, n_conf, ss, dof, out):
    """sqrt(F) with F = (sum_j num_j^2 / q) / ((ss - sum_j num_j^2 - sum_k conf_k^2) / dof).

    ``num`` holds the ``q`` projections of each of the ``B`` permutations (all B rows of the
    first tested direction, then the second, ...), ``conf`` likewise the confounds'.
    """
    B = out.shape[0]
    V = out.shape[1]
    for b in range(B):
        for v in range(V):
            if ss[v] <= 0.0:
                out[b, v] = 0.0
                continue
            a2 = 0.0
            for j in range(q):
                a = num[j * B + b, v]
                a2 += a * a
            rss = ss[v] - a2
            for j in range(n_conf):
                c = conf[j * B + b, v]
                rss -= c * c
            if rss < 1e-300:
                rss = 1e-300
            out[b, v] = np.sqrt(a2 / q * dof / rss)


def g_from_num2(a2, q, dof, rss):
    """sqrt(F) from the squared norm ``a2`` of the tested projections of unit-norm residuals
    and the full model's residual sum of squares ``rss`` (``1 - a2`` up to rounding)."""
    return np.sqrt(a2 / q * dof / np.maximum(rss, 1e-300))


def t_from_num(num, dof, rss=None):
    """t from ``x'R`` of unit-norm residuals and the full model's residual sum of squares
    ``rss`` (by default ``1 - num^2``, with ``num`` clipped to [-1, 1])."""
    if rss is None:
        num = np.clip(num, -1.0, 1.0)
        rss = 1.0 - num * num
    return num * np.sqrt(dof / np.maximum(rss, 1e-300))


@njit(cache=True, nogil=True, fastmath=True)
def reduce_num_t(out, B, thr, two_sided, counts, out_max):
    """Fast path on a transposed tile ``out`` (w voxels, >= B): column ``b`` holds ``x'Y*``
    of permutation ``b``. Running max per permutation and per-voxel counts of num >= thr.

    Eight voxels at a time: the running maxima are read and written once per eight rows,
    and eight rows are read at once (more reads in flight: the tile comes from L3)."""
    w = out.shape[0]
    v = 0
    while v + 8 <= w:
        r0, r1, r2, r3 = out[v], out[v + 1], out[v + 2], out[v + 3]
        r4, r5, r6, r7 = out[v + 4], out[v + 5], out[v + 6], out[v + 7]
        t0, t1, t2, t3 = thr[v], thr[v + 1], thr[v + 2], thr[v + 3]
        t4, t5, t6, t7 = thr[v + 4], thr[v + 5], thr[v + 6], thr[v + 7]
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.int32(0)
        for b in range(B):  # two_sided is hoisted out of the loop: it vectorises
            a0, a1, a2, a3 = r0[b], r1[b], r2[b], r3[b]
            a4, a5, a6, a7 = r4[b], r5[b], r6[b], r7[b]
            if two_sided:
                a0, a1, a2, a3 = abs(a0), abs(a1), abs(a2), abs(a3)
                a4, a5, a6, a7 = abs(a4), abs(a5), abs(a6), abs(a7)
            out_max[b] = max(out_max[b], max(max(max(a0, a1), max(a2, a3)),
                                             max(max(a4, a5), max(a6, a7))))
            c0 += np.int32(a0 >= t0)
            c1 += np.int32(a1 >= t1)
            c2 += np.int32(a2 >= t2)
            c3 += np.int32(a3 >= t3)
            c4 += np.int32(a4 >= t4)
            c5 += np.int32(a5 >= t5)
            c6 += np.int32(a6 >= t6)
            c7 += np.int32(a7 >= t7)
        counts[v] += c0
        counts[v + 1] += c1
        counts[v + 2] += c2
        counts[v + 3] += c3
        counts[v + 4] += c4
        counts[v + 5] += c5
        counts[v + 6] += c6
        counts[v + 7] += c7
        v += 8
    for v in range(v, w):
        t = thr[v]
        c = np.int32(0)
        row = out[v]
        for b in range(B):
            a = abs(row[b]) if two_sided else row[b]
            out_max[b] = max(out_max[b], a)
            c += np.int32(a >= t)
        counts[v] += c


@njit(cache=True, nogil=True)
def exact_dot(r, a):
    """``r . a`` in float64, summed in order (no fastmath, no vectorised reordering): the
    same bits for a given ``r`` and ``a`` whatever tile or block they came in."""
    s = 0.0
    for i in range(r.shape[0]):
        s += r[i] * a[i]
    return s


@njit(cache=True, nogil=True, fastmath=True)
def reduce_num_mixed(out, B, thr, lo32, hi32, eps, two_sided, counts, out_max, floor, Rt, A):
    """Exact float64 reduction of a float32 tile ``out`` (w voxels, >= B) of ``x'Y*``.

    ``out[v, b]`` is within ``eps / 2`` of the exact ``Rt[v] . A[b]`` (float64 residuals
    ``Rt`` (w, n), permuted regressors ``A`` (B, n)); see :func:`float32_error_bound`. A
    count ``num >= thr[v]`` is decided in float32 when ``out`` lies outside ``(lo32,
    hi32) = thr -+ eps`` and recomputed in float64 (:func:`exact_dot`) otherwise; an entry
    is recomputed for the maximum when it lies above ``floor[b] = out_max[b] - eps``
    (float32), the only entries that can beat the running exact maximum ``out_max[b]``.
    Counts and maxima are therefore those of float64 arithmetic, whatever the float32 GEMM
    summed first. Returns the number of entries recomputed.
    """
    n_exact = 0
    for v in range(out.shape[0]):
        lo = lo32[v]
        hi = hi32[v]
        c = np.int32(0)
        above_lo = np.int32(0)
        over = np.int32(0)
        row = out[v]
        if two_sided:  # the branch-free loops vectorise
            for b in range(B):
                a = abs(row[b])
                c += np.int32(a >= hi)
                above_lo += np.int32(a > lo)
                over += np.int32(a > floor[b])
        else:
            for b in range(B):
                a = row[b]
                c += np.int32(a >= hi)
                above_lo += np.int32(a > lo)
                over += np.int32(a > floor[b])
        if above_lo != c or over:  # some entry is near the threshold or a maximum
            t = thr[v]
            for b0 in range(0, B, MIXED_RUN):  # found a stretch at a time (vectorised)
                b1 = min(B, b0 + MIXED_RUN)
                hits = np.int32(0)
                for b in range(b0, b1):
                    a = abs(row[b]) if two_sided else row[b]
                    hits += np.int32(a > lo) - np.int32(a >= hi) + np.int32(a > floor[b])
                if hits == 0:
                    continue
                for b in range(b0, b1):
                    a = abs(row[b]) if two_sided else row[b]
                    near = a > lo and a < hi
                    if near or a > floor[b]:
                        e = exact_dot(Rt[v], A[b])
                        n_exact += 1
                        if two_sided:
                            e = abs(e)
                        if near:
                            c += e >= t
                        if e > out_max[b]:
                            out_max[b] = e
                            floor[b] = np.float32(e - eps)
        counts[v] += c
    return n_exact


#: permutations a row of :func:`reduce_num_mixed` is gone over at once for its entries near
#: a decision (a row of 1000 branch by branch cost twice the row's vectorised pass)
MIXED_RUN = 64


#: relative margin for float64 rounding in :func:`reduce_stat_mixed`'s division-free
#: comparisons (the statistic itself is exact to a few ulps)
REL_MARGIN = 1e-10


@njit(cache=True, nogil=True)
def _exact_stat(rv, A, b, B, q, n_conf, ssv, dof, two_sided):
    """The statistic of permutation ``b`` (t, or sqrt(F) for ``q`` rows) at the voxel whose
    residuals are ``rv``, from float64 dot products (:func:`exact_dot`) with the permuted
    vectors ``A[j * B + b]``: the tested ones first, then the ``n_conf`` confounds'."""
    nq = max(q, 1)
    a2 = 0.0
    for j in range(nq):
        a = exact_dot(rv, A[j * B + b])
        a2 += a * a
    c2 = 0.0
    for j in range(nq, nq + n_conf):
        a = exact_dot(rv, A[j * B + b])
        c2 += a * a
    rss = max(ssv - a2 - c2, 1e-300)
    if q == 0:
        s = exact_dot(rv, A[b]) * np.sqrt(dof / rss)
        return abs(s) if two_sided else s
    return np.sqrt(a2 / q * dof / rss)


@njit(cache=True, nogil=True, inline="always")
def _decide(a0, S, r, dS, dR, dof, e, unsigned, T2, tpos, m2, mpos):
    """Division-free decisions on one float32 entry (see :func:`reduce_stat_mixed`): whether
    ``s >= T`` (valid unless ``near``), whether the entry is ``near`` that threshold, and
    whether it is a candidate for the running maximum ``m`` (``m2 = q m^2``)."""
    pos = (a0 >= 0.0) | unsigned
    doubt = ((abs(a0) <= e) & (not unsigned)) | (r - dR < 1e-300)
    Sd = S * dof
    g = Sd - T2 * r
    near = (abs(g) <= dof * dS + T2 * dR + REL_MARGIN * (Sd + T2 * abs(r))) | doubt
    yes = (pos & ((not tpos) | (g >= 0.0))) | ((pos ^ True) & (not tpos) & (g <= 0.0))
    gm = Sd - m2 * r
    reach = gm >= -(dof * dS + m2 * dR + REL_MARGIN * (Sd + m2 * abs(r)))
    cand = (mpos ^ True) | (pos & reach) | doubt
    return yes, near, cand


@njit(cache=True, nogil=True)
def reduce_stat_mixed(out, B, q, n_conf, ss, dof, thr, two_sided, counts, out_max, work,
                      e, Rt, A):
    """Exact float64 reduction of a float32 tile ``out`` of t (``q == 0``) or sqrt(F) with
    confounds (the layout of :func:`reduce_stat_t`).

    Every entry of ``out`` is within ``e`` of its float64 dot product (unit-norm vectors
    and residuals, :func:`float32_error_bound`), so a projection ``a`` (at most 1 in size)
    has ``|a^2 - a*^2| <= e (2 |a| + e)``, or ``e (2 + e)``. With ``S`` the tested
    projections' sum of squares and ``r = ss - S - sum c^2`` the residual, ``s >= k`` is
    ``S dof >= q k^2 r`` (same signs): decided from the float32 values, without a division,
    unless those error bounds of ``S`` and ``r`` put it in doubt; then, and for every entry
    that could reach a permutation's running maximum, the statistic is formed from float64
    dot products (:func:`_exact_stat`). Counts and maxima are those of float64 arithmetic.
    ``work`` is (3, B) scratch.
    """
    nq = max(q, 1)
    qf = float(nq)
    unsigned = not (q == 0 and not two_sided)
    S, r, m2 = work[0], work[1], work[2]
    rv = np.empty(Rt.shape[1])
    flag = np.empty(B, np.bool_)  # entries to form again in float64
    # error bounds of S and r: 2|a| e + e^2 for the t test's one projection (|a| from its
    # float32 value), e (2 + e) for each of an F test's and each confound's
    w1 = 2.0 * e if q == 0 else 0.0
    w0 = e * e if q == 0 else nq * e * (2.0 + e)
    wc = n_conf * e * (2.0 + e)
    for b in range(B):
        m2[b] = min(out_max[b] * out_max[b] * qf, 1e300)
    for v in range(out.shape[0]):
        ssv = ss[v]
        T = thr[v]
        row = out[v]
        if ssv <= 0.0:  # no variance: statistic 0
            c = 0
            for b in range(B):
                if 0.0 > out_max[b]:
                    out_max[b] = 0.0
                    m2[b] = 0.0
                c += 0.0 >= T
            counts[v] += c
            continue
        T2 = min(T * T * qf, 1e300)
        tpos = T > 0.0
        for b in range(B):
            a = np.float64(row[b])
            S[b] = 0.0 + a * a
        for j in range(1, nq):
            x = row[j * B: (j + 1) * B]
            for b in range(B):
                a = np.float64(x[b])
                S[b] += a * a
        for b in range(B):
            r[b] = ssv - S[b]
        for j in range(nq, nq + n_conf):
            x = row[j * B: (j + 1) * B]
            for b in range(B):
                a = np.float64(x[b])
                r[b] -= a * a
        c = np.int32(0)
        doubt = False
        for b in range(B):
            a0 = np.float64(row[b])
            dS = w1 * abs(a0) + w0
            yes, near, cand = _decide(a0, S[b], r[b], dS, dS + wc, dof, e, unsigned, T2, tpos,
                                      m2[b], out_max[b] > 0.0)
            c += np.int32(yes & (near ^ True))
            flag[b] = near | cand
            doubt |= near | cand
        if doubt:  # the flagged entries again, one by one, with float64
            rv[:] = Rt[v]  # one strided read of the voxel's residuals, not one per product
            for b in range(B):
                if not flag[b]:
                    continue
                a0 = np.float64(row[b])
                dS = w1 * abs(a0) + w0
                yes, near, cand = _decide(a0, S[b], r[b], dS, dS + wc, dof, e, unsigned, T2,
                                          tpos, m2[b], out_max[b] > 0.0)
                if near or cand:
                    s = _exact_stat(rv, A, b, B, q, n_conf, ssv, dof, two_sided)
                    if near:
                        c += np.int32(s >= T)
                    if s > out_max[b]:
                        out_max[b] = s
                        m2[b] = min(s * s * qf, 1e300)
        counts[v] += c


def float32_error_bound(n: int, xnorm: float) -> float:
    """Twice the worst-case error of a float32 dot product of ``n`` terms whose float64
    inputs are rounded to float32, for unit-norm residuals and a regressor of norm
    ``xnorm``: ``|fl32(r . a) - r . a| <= gamma_(n+2) sum|r_i a_i| <= gamma_(n+2) ||a||``
    with ``gamma_k = k u / (1 - k u)``, ``u = 2^-24`` (Higham, *Accuracy and Stability of
    Numerical Algorithms*, 2002, sec. 3.1), whatever the order of summation. The factor 2
    leaves room for float64 rounding and the float32 thresholds."""
    ku = (n + 2) * 2.0**-24
    return 2.0 * ku / (1.0 - ku) * xnorm


@njit(cache=True, nogil=True, fastmath=True)
def reduce_stat_t(out, B, q, n_conf, ss, dof, thr, two_sided, counts, out_max, work):
    """t (``q == 0``) or sqrt(F) (``q`` rows) on a transposed tile, reduced as it is formed.

    ``out`` (w, (max(q, 1) + n_conf) * B): the tested projections first (``q`` groups of B
    columns; one for t), then the ``n_conf`` confounds'. ``work`` is (2, B) scratch.
    Statistic 0 where ``ss <= 0``. Running max per permutation and per-voxel counts of
    statistic >= thr (float64).
    """
    nq = max(q, 1)
    a2 = work[0]
    c2 = work[1]
    for v in range(out.shape[0]):
        c = 0
        if ss[v] <= 0.0:
            for b in range(B):
                out_max[b] = max(out_max[b], 0.0)
                c += 0.0 >= thr[v]
            counts[v] += c
            continue
        for b in range(B):
            a2[b] = 0.0
            c2[b] = 0.0
        for j in range(nq):
            for b in range(B):
                a = np.float64(out[v, j * B + b])
                a2[b] += a * a
        for j in range(nq, nq + n_conf):
            for b in range(B):
                a = np.float64(out[v, j * B + b])
                c2[b] += a * a
        for b in range(B):
            rss = max(ss[v] - a2[b] - c2[b], 1e-300)
            if q == 0:
                s = np.float64(out[v, b]) * np.sqrt(dof / rss)
                if two_sided:
                    s = abs(s)
            else:
                s = np.sqrt(a2[b] / q * dof / rss)
            out_max[b] = max(out_max[b], s)
            c += s >= thr[v]
        counts[v] += c


# ----------------------------------------------------------------------------- blocks
#: memory budget (bytes) of one block's statistic maps (spatial statistics); sets its size
BLOCK_BYTES = 64 * 2**20
#: most permutations in one block (one task) of spatial statistics' large maps
MAX_BLOCK = 512
#: small maps: blocks of up to this many statistics (and permutation indices)
BLOCK_ITEMS = 2**20
#: voxels per tile: a tile's GEMM output (TILE x COLS) is reduced while it is in cache
TILE = 512
#: permutations per GEMM of a voxel statistic (at multiples of COLS in the stream; blocks
#: are whole multiples, at least one). Wide GEMMs pack each tile of residuals once for
#: about 1000 permutations: on the demo (89 x 67,402, float32, one core) 1000 permutations
#: took 1.06x one whole product in GEMMs of 256 and 1.02x in GEMMs of 1000. Not a power of
#: two: with 1024 a tile's rows lie 4 KiB apart and share cache sets (1.26x at 10,000)
COLS = 1008
#: float64 bytes of one chunk of Y residualised at once (n_subjects x chunk voxels)
CHUNK_BYTES = 4 * 2**20
#: residuals bigger than this are not held whole (voxel statistics): read again per block
RESIDENT_BYTES = 512 * 2**20
#: Y bytes (float32) of the voxel range of one streamed task
SLAB_BYTES = 1024 * 2**20
#: float64 max-T with at most this many subjects runs its GEMMs in float32 and re-checks in
#: float64 every entry within the float32 error of a decision (:func:`reduce_num_mixed`,
#: :func:`reduce_stat_mixed`):
#: the same counts and maxima at about the cost of float32. The error bound, and with it
#: the share of entries re-checked, grows with n: on null data (20,000 voxels, 1000
#: permutations) mixed took 0.64-0.76x the float64 time up to 1024 subjects, 0.86x at
#: 2048 and 1.8x at 4096.
MIXED_MAX_N = 2048
#: the same for ANCOVA and F tests (:func:`reduce_stat_mixed`), whose error band also
#: carries the confounds' projections and widens faster with n: on null data (20,000
#: voxels, 500 permutations, two confounds, one core) mixed took 0.65x the float64 time at
#: 100 subjects, 0.72x at 500, 0.86x at 1024, 1.09x at 1536 and 1.24x at 2048.
MIXED_STAT_MAX_N = 1024


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finds the loaded BLAS libraries once (~4 ms)


def one_blas_thread():
    """Context manager: BLAS single-threaded in this process (restored on exit)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def single_blas_thread(parent_pid):
    """Make BLAS single-threaded in a worker *process* (OpenBLAS rounds differently with
    1 and 2 threads, and results must not depend on how the work was split). In the
    calling process the limit is already set, and restored, by :func:`permute_blocks`."""
    if os.getpid() == parent_pid:
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    if any(i.get("num_threads", 1) > 1 for i in threadpool_info() if i["user_api"] == "blas"):
        threadpool_limits(1, user_api="blas")


def split(total: int, most: int, unit: int = 1) -> list[tuple[int, int]]:
    """``[0, total)`` in ``ceil(total / most)`` ranges of (nearly) equal size, a multiple of
    ``unit`` (all but the last)."""
    pieces = max(1, -(-total // max(1, most)))
    size = -(-total // pieces)
    size = -(-size // unit) * unit
    return [(s, min(s + size, total)) for s in range(0, total, size)]


def chunks(n_subjects: int, v0: int, v1: int) -> list[tuple[int, int]]:
    """Voxel chunks of ``[v0, v1)`` residualised at once: whole tiles, within CHUNK_BYTES."""
    width = max(TILE, CHUNK_BYTES // (8 * n_subjects) // TILE * TILE)
    return [(c, min(c + width, v1)) for c in range(v0, v1, width)]


def run_block(R, xvec, zconf, ss, stream, start, stop, cfg):
    """Statistic maps of permutations ``start`` to ``stop - 1`` (spatial statistics): null
    maxima (dict: statistic -> (B,)) and per-voxel counts of the voxel statistic."""
    single_blas_thread(cfg["parent_pid"])
    perms, signs = stream.block(start, stop)
    R = np.asarray(R)  # a joblib memmap would make every product a memmap subclass
    dtype = R.dtype
    B = perms.shape[0] if perms is not None else signs.shape[0]
    f_test = xvec.ndim == 2
    q = xvec.shape[1] if f_test else 1
    num = scatter(xvec.reshape(xvec.shape[0], q), perms, signs, dtype) @ R
    counts = np.zeros(R.shape[1], np.int64)
    out: dict[str, np.ndarray] = {}
    mx = np.empty(B)
    conf = scatter(zconf, perms, signs, dtype) @ R if zconf.shape[1] else num[:0]
    tm = np.empty((B, R.shape[1]), dtype=dtype)
    if not f_test:
        tmaps(num, conf, zconf.shape[1], ss.astype(dtype), float(cfg["dof"]), tm)
    else:
        gmaps(num, q, conf, zconf.shape[1], ss.astype(dtype), float(cfg["dof"]), tm)
    del num, conf
    reduce_fast(tm, cfg["t_obs"].astype(dtype), cfg["two_sided"], counts, mx)
    out["voxel"] = mx
    cache: dict = {}
    for spec in cfg["specs"]:
        if spec.null_max is not None:
            out[spec.name] = np.asarray(spec.null_max(tm, cfg["ctx"], cache), dtype=np.float64)
    return out, counts


def voxel_block(data, v0, v1, stream, start, stop, cfg):
    """Voxel statistic of permutations ``start`` to ``stop - 1`` on voxels ``v0`` to
    ``v1 - 1``: per-permutation maxima over those voxels and per-voxel counts.

    Every chunk of residuals (held, or read and residualised here) is multiplied tile by
    tile: ``(TILE, n) @ (n, rows)`` into a buffer that stays in cache, reduced at once.
    ``v0`` and ``v1`` are multiples of ``TILE`` (or ``V``), as chunks start: the tiles are
    the same however the voxels are split.
    """
    single_blas_thread(cfg["parent_pid"])
    dtype = np.dtype(cfg["dtype"])
    perms, signs = stream.block(start, stop)
    B = stop - start
    xvec, zconf = cfg["xvec"], cfg["zconf"]
    q = xvec.shape[1] if xvec.ndim == 2 else 0
    vecs = np.column_stack([xvec.reshape(xvec.shape[0], max(q, 1)), zconf])
    # GEMMs of COLS permutations at fixed places of the stream (a permutation's column in
    # its GEMM does not depend on the block size): the same bits however blocks are cut
    edges = sorted({start, stop, *range(start - start % COLS + COLS, stop, COLS)})
    groups = list(zip(edges[:-1], edges[1:]))
    At = [scatter(vecs, None if perms is None else perms[g0 - start:g1 - start],
                  None if signs is None else signs[g0 - start:g1 - start], dtype).T
          for g0, g1 in groups]
    fast, mixed = cfg["fast"], cfg["mixed"]
    rows = At  # mixed: float32 GEMMs of float64 rows, kept for the exact re-checks
    At = [np.ascontiguousarray(A, dtype=np.float32 if mixed else dtype) for A in rows]
    if mixed and fast:
        lo32, hi32, eps = cfg["lo32"], cfg["hi32"], cfg["eps"]
        floor = np.full(B, -3e38, dtype=np.float32)
    thr = cfg["thr_num"].astype(dtype) if fast else cfg["t_obs"]
    counts = np.zeros(v1 - v0, np.int64)
    mx = np.full(B, -1e300 if mixed else -np.inf, dtype=dtype if fast else np.float64)
    # flat: a tile's product is C-contiguous whatever its width (the last group of
    # permutations is narrower), so that the kernels see unit strides and vectorise
    widest = max(g1 - g0 for g0, g1 in groups)
    buf = np.empty(TILE * vecs.shape[1] * widest, dtype=np.float32 if mixed else dtype)
    work = np.empty((3, widest))
    for c0, c1 in data.chunks(v0, v1):
        R = data.residuals(c0, c1)
        for t0 in range(max(c0, v0), min(c1, v1), TILE):
            t1 = min(c1, v1, t0 + TILE)
            Rt = R[:, t0 - c0: t1 - c0].T
            Rg = Rt.astype(np.float32) if mixed else Rt
            cnt = counts[t0 - v0: t1 - v0]
            for i, ((g0, g1), A) in enumerate(zip(groups, At)):
                out = buf[: (t1 - t0) * A.shape[1]].reshape(t1 - t0, A.shape[1])
                np.matmul(Rg, A, out=out)
                m = mx[g0 - start: g1 - start]
                if mixed and fast:
                    reduce_num_mixed(out, g1 - g0, thr[t0:t1], lo32[t0:t1], hi32[t0:t1], eps,
                                     cfg["two_sided"], cnt, m, floor[g0 - start: g1 - start],
                                     Rt, rows[i].T)
                elif mixed:
                    reduce_stat_mixed(out, g1 - g0, q, zconf.shape[1], data.ss_unit[t0:t1],
                                      float(cfg["dof"]), thr[t0:t1], cfg["two_sided"], cnt, m,
                                      work, cfg["eps"], Rt, rows[i].T)
                elif fast:
                    reduce_num_t(out, g1 - g0, thr[t0:t1], cfg["two_sided"], cnt, m)
                else:
                    reduce_stat_t(out, g1 - g0, q, zconf.shape[1], data.ss_unit[t0:t1],
                                  float(cfg["dof"]), thr[t0:t1], cfg["two_sided"], cnt, m,
                                  work)
    if fast:  # the largest x'Y* gives the largest t (the same function at every voxel)
        return t_from_num(mx.astype(np.float64), cfg["dof"]), counts
    return mx.astype(np.float64), counts


class Resident:
    """Residuals held in memory as the observed fit formed them, chunk by chunk (no copy into
    one array), or as one (n, V) part for spatial statistics: ``parts`` maps a part's first
    voxel to ``(last voxel + 1, (n, width) array)`` in the GEMM precision."""

    def __init__(self, parts: dict, ss_unit):
        self.parts = dict(sorted(parts.items()))
        self.ss_unit = ss_unit

    def chunks(self, v0, v1):
        return [(c0, c1) for c0, (c1, _) in self.parts.items() if c0 < v1 and c1 > v0]

    def residuals(self, c0, c1):
        return self.parts[c0][1]

    def whole(self) -> np.ndarray:
        """All residuals (n, V) in one array (spatial statistics need whole maps)."""
        if len(self.parts) == 1:  # kept whole by the fit
            return next(iter(self.parts.values()))[1]
        return np.concatenate([R for _, R in self.parts.values()], axis=1)


class Streamed:
    """Residuals formed chunk by chunk from the data when a block needs them."""

    def __init__(self, source, model, scheme, dtype, ss_unit):
        self.source, self.model, self.scheme, self.dtype = source, model, scheme, dtype
        self.ss_unit = ss_unit

    def chunks(self, v0, v1):
        return chunks(self.source.shape[0], v0, v1)

    def residuals(self, c0, c1):
        Y = self.source.read(c0, c1)
        R = Y if self.dtype == "float64" else np.empty(Y.shape, self.dtype)
        fit_chunk(Y, 0, c1 - c0, self.model, self.scheme, out=R)
        return R


# ----------------------------------------------------------------------------- observed
@dataclass(frozen=True, eq=False)
class Observed:
    """The observed fit: what is permuted, and what permuted statistics are compared with."""

    R: Resident | None  # normalised residuals that are permuted (n, V); None: streamed
    ss_unit: np.ndarray  # 1.0 where the voxel has variance, else 0.0
    valid: np.ndarray  # voxels with variance left after the confounds
    t: np.ndarray  # observed t (sqrt(F) for an F test)
    thr_num: np.ndarray  # fast path: num >= thr_num  <=>  t >= observed (2.0: never)
    t_cmp_slow: np.ndarray  # slow path: observed |t| or t (1e300 where invalid)


class NonFinite(ValueError):
    """A chunk of ``Y`` holds NaN or infinite values (see :func:`_nonfinite_error`)."""


# The fit's kernels go over voxels s0 to s1 of S four rows (subjects) at a time, a voxel per
# lane, in float64 without fastmath: every voxel's sums are formed in subject order,
# multiplication and addition rounded apart, so that a voxel's bits do not depend on the
# chunk it is in, nor on whether S is the data itself (float32 or float64, read in place)
# or a float64 copy of it. Four rows at a time, a voxel's running sums are read and written
# once per four subjects (the sums of a chunk's voxels do not fit in L1: per subject they
# cost more than the data). ``Zo`` has at least one column (a zero column when there is no
# confound): the first confound's share is formed in the same loop as the rest of the
# rows' work, the others in loops of their own.
@njit(cache=True, nogil=True, inline="always")
def _add_rows(o, A, i, k, r0, r1, r2, r3):
    """``o += A[i, k] r0 + A[i + 1, k] r1 + A[i + 2, k] r2 + A[i + 3, k] r3``, in that
    order: subjects ``i`` to ``i + 3``'s share of column ``k`` of ``A'Y``."""
    a0, a1, a2, a3 = A[i, k], A[i + 1, k], A[i + 2, k], A[i + 3, k]
    for j in range(o.shape[0]):
        s = o[j] + a0 * r0[j]
        s += a1 * r1[j]
        s += a2 * r2[j]
        o[j] = s + a3 * r3[j]


@njit(cache=True, nogil=True, inline="always")
def _add_outer(A, i, row, out, first=0):
    """``out[k] += A[i, k] row`` for columns ``k >= first`` of ``A``: subject ``i``'s share
    of ``A'Y``."""
    for k in range(first, A.shape[1]):
        a = A[i, k]
        o = out[k]
        for j in range(row.shape[0]):
            o[j] += a * row[j]


@njit(cache=True, nogil=True, inline="always")
def _residual_row(row, Zo, i, C, r):
    """``r = row - Zo[i] C``: subject ``i``'s residuals on the confounds, subtracted in
    order."""
    z, c = Zo[i, 0], C[0]
    for j in range(r.shape[0]):
        r[j] = row[j] - z * c[j]
    for k in range(1, Zo.shape[1]):
        z, c = Zo[i, k], C[k]
        for j in range(r.shape[0]):
            r[j] -= z * c[j]


@njit(cache=True, nogil=True)
def _fit_moments(S, s0, s1, Zo, scale, C):
    """One pass: ``scale = max |Y|`` per voxel and ``C = Zo'Y``."""
    n, w = S.shape[0], s1 - s0
    scale[:] = 0.0
    C[:] = 0.0
    c = C[0]
    i = 0
    while i + 4 <= n:
        r0, r1, r2, r3 = S[i, s0:s1], S[i + 1, s0:s1], S[i + 2, s0:s1], S[i + 3, s0:s1]
        z0, z1, z2, z3 = Zo[i, 0], Zo[i + 1, 0], Zo[i + 2, 0], Zo[i + 3, 0]
        for j in range(w):
            y0, y1 = np.float64(r0[j]), np.float64(r1[j])
            y2, y3 = np.float64(r2[j]), np.float64(r3[j])
            scale[j] = max(max(scale[j], abs(y0)), max(max(abs(y1), abs(y2)), abs(y3)))
            s = c[j] + z0 * y0
            s += z1 * y1
            s += z2 * y2
            c[j] = s + z3 * y3
        for k in range(1, Zo.shape[1]):
            _add_rows(C[k], Zo, i, k, r0, r1, r2, r3)
        i += 4
    for i in range(i, n):  # the last rows one by one
        row = S[i, s0:s1]
        z = Zo[i, 0]
        for j in range(w):
            y = np.float64(row[j])
            scale[j] = max(scale[j], abs(y))
            c[j] += z * y
        _add_outer(Zo, i, row, C, 1)


@njit(cache=True, nogil=True)
def _fit_sums(S, s0, s1, Zo, C, X, ss, N, r):
    """One pass: the residuals on the confounds (not kept), ``ss`` their sum of squares per
    voxel and ``N = X'R`` (X: the tested directions); ``r``: scratch, (4, >= s1 - s0)."""
    n, w = S.shape[0], s1 - s0
    ss[:] = 0.0
    N[:] = 0.0
    c, nx = C[0], N[0]
    simple = Zo.shape[1] == 1 and X.shape[1] == 1  # one confound (or none), a t test
    e0, e1, e2, e3 = r[0, :w], r[1, :w], r[2, :w], r[3, :w]
    i = 0
    while i + 4 <= n:
        if simple:  # one loop
            r0, r1, r2, r3 = S[i, s0:s1], S[i + 1, s0:s1], S[i + 2, s0:s1], S[i + 3, s0:s1]
            z0, z1, z2, z3 = Zo[i, 0], Zo[i + 1, 0], Zo[i + 2, 0], Zo[i + 3, 0]
            x0, x1, x2, x3 = X[i, 0], X[i + 1, 0], X[i + 2, 0], X[i + 3, 0]
            for j in range(w):
                cj = c[j]
                a0, a1 = r0[j] - z0 * cj, r1[j] - z1 * cj
                a2, a3 = r2[j] - z2 * cj, r3[j] - z3 * cj
                s = ss[j] + a0 * a0
                s += a1 * a1
                s += a2 * a2
                ss[j] = s + a3 * a3
                t = nx[j] + x0 * a0
                t += x1 * a1
                t += x2 * a2
                nx[j] = t + x3 * a3
        else:
            _residual_row(S[i, s0:s1], Zo, i, C, e0)
            _residual_row(S[i + 1, s0:s1], Zo, i + 1, C, e1)
            _residual_row(S[i + 2, s0:s1], Zo, i + 2, C, e2)
            _residual_row(S[i + 3, s0:s1], Zo, i + 3, C, e3)
            for j in range(w):
                s = ss[j] + e0[j] * e0[j]
                s += e1[j] * e1[j]
                s += e2[j] * e2[j]
                ss[j] = s + e3[j] * e3[j]
            for k in range(X.shape[1]):
                _add_rows(N[k], X, i, k, e0, e1, e2, e3)
        i += 4
    for i in range(i, n):  # the last rows one by one
        _residual_row(S[i, s0:s1], Zo, i, C, e0)
        for j in range(w):
            ss[j] += e0[j] * e0[j]
        _add_outer(X, i, e0, N)


@njit(cache=True, nogil=True)
def _residuals_into(S, s0, s1, Zo, C, inv, out, r):
    """``out = (Y - Zo C) * inv`` (voxel by voxel), in ``out``'s precision; ``r``: scratch,
    (>= 1, >= s1 - s0)."""
    n, w = S.shape[0], s1 - s0
    c = C[0]
    e = r[0, :w]
    i = 0
    if Zo.shape[1] == 1:  # four rows at a time: C and inv read once for them
        while i + 4 <= n:
            r0, r1, r2, r3 = S[i, s0:s1], S[i + 1, s0:s1], S[i + 2, s0:s1], S[i + 3, s0:s1]
            o0, o1, o2, o3 = out[i], out[i + 1], out[i + 2], out[i + 3]
            z0, z1, z2, z3 = Zo[i, 0], Zo[i + 1, 0], Zo[i + 2, 0], Zo[i + 3, 0]
            for j in range(w):
                cj, v = c[j], inv[j]
                o0[j] = (r0[j] - z0 * cj) * v
                o1[j] = (r1[j] - z1 * cj) * v
                o2[j] = (r2[j] - z2 * cj) * v
                o3[j] = (r3[j] - z3 * cj) * v
            i += 4
    for i in range(i, n):
        _residual_row(S[i, s0:s1], Zo, i, C, e)
        o = out[i]
        for j in range(w):
            o[j] = e[j] * inv[j]


@njit(cache=True, nogil=True)
def _scale_into(Y, inv, out):
    """``out = Y * inv`` (voxel by voxel), in ``out``'s precision."""
    for i in range(Y.shape[0]):
        y = Y[i]
        row = out[i]
        for j in range(Y.shape[1]):
            row[j] = y[j] * inv[j]


#: the full-model residual sum of squares of a normalised voxel is ``1 - |x'R|^2``; within
#: this (absolute) margin of the zero-variance threshold it is formed from the residuals
#: instead, where rounding in ``1 - |x'R|^2`` (about n eps) could decide
SSM_MARGIN = 1e-9


def _remove_tested(R, num0, model: Model):
    """``R -= x num0`` in place (C-contiguous ``R``): the full model's residuals."""
    if model.stat_type == "t":
        blas.dger(-1.0, num0, model.x, a=R.T, overwrite_a=True)
    else:
        R -= model.x @ num0


def fit_chunk(S, s0: int, s1: int, model: Model, scheme: str, out=None):
    """Residualise voxels ``s0`` to ``s1 - 1`` of ``S`` on the confounds and normalise every
    voxel, into ``out``; returns ``(valid, stat)`` (t, or sqrt(F) for an F test).

    ``S`` (n, >= s1) is the data itself or a float64 copy of some of it: float32 or float64
    with C-contiguous rows, never written unless it is ``out``. ``out`` is C-contiguous
    (n, s1 - s0), float64 or float32; ``None``: the statistics only. Three passes over the
    voxels (:func:`_fit_moments`, :func:`_fit_sums`, :func:`_residuals_into`); the residuals
    are formed in each pass rather than kept. Raises :class:`NonFinite` when the voxels hold
    NaN or infinite values, or squares beyond float64's range (the first two passes
    tell).

    A voxel is valid when the full model leaves residual variance beyond rounding (the
    criterion of the GLM, :func:`glmkit.stats.glm.zero_residual_variance`): data constant
    across subjects and data fitted exactly by the design are not. An invalid voxel has
    statistic 0 and residuals 0, so its permuted statistics are 0 as well.
    """
    n, w = S.shape[0], s1 - s0
    Zo = np.ascontiguousarray(model.z_all)
    if Zo.shape[1] == 0:  # the kernels form a first confound's share: a zero one
        Zo = np.zeros((n, 1))
    X = np.ascontiguousarray(model.x.reshape(n, -1))
    scale, C, r = np.empty(w), np.empty((Zo.shape[1], w)), np.empty((4, w))
    _fit_moments(S, s0, s1, Zo, scale, C)
    ss, N = np.empty(w), np.empty((X.shape[1], w))
    _fit_sums(S, s0, s1, Zo, C, X, ss, N, r)
    # a NaN or infinite value makes its voxel's C, and so all its residuals and ss, NaN or
    # infinite (0 * inf is NaN: Zo has a column); so do squares beyond float64's range
    if not np.isfinite(ss).all():
        raise NonFinite
    inv = 1.0 / np.sqrt(np.where(ss > 0.0, ss, 1.0))  # ss == 0: the residuals are 0
    num0 = N[0] * inv if model.stat_type == "t" else N * inv  # x'R: (w,) for t, (q, w)
    num2 = num0 * num0 if model.stat_type == "t" else np.einsum("qv,qv->v", num0, num0)
    # the full model's residual sum of squares of a normalised voxel: 1 - |x'R|^2, formed
    # from the residuals themselves near the zero-variance threshold (rounding decides; and
    # where ss == 0, whose residuals are 0)
    ssm = 1.0 - num2
    near = ss * ssm <= zero_variance_level(scale, n) + SSM_MARGIN * ss
    if scheme == "ter_braak":  # permutes the full model's residuals: formed for all
        full = np.empty((n, w))
        _residuals_into(S, s0, s1, Zo, C, inv, full, r)
        _remove_tested(full, num0, model)
        full_ss = np.einsum("ij,ij->j", full, full)
        ssm[near] = full_ss[near]
    elif near.any():
        idx = np.flatnonzero(near)
        full = np.empty((n, idx.size))
        _residuals_into(np.ascontiguousarray(S[:, s0 + idx]), 0, idx.size, Zo,
                        np.ascontiguousarray(C[:, idx]), inv[idx], full, r)
        _remove_tested(full, num0[..., idx], model)
        ssm[idx] = np.einsum("ij,ij->j", full, full)
    valid = ~zero_residual_variance(ss * ssm, scale, n)
    if model.stat_type == "t":  # with the exact rss near the threshold
        stat = np.where(valid, t_from_num(num0, model.dof, ssm), 0.0)
    else:
        stat = np.where(valid, g_from_num2(num2, model.q, model.dof, ssm), 0.0)
    if out is not None:
        if scheme == "ter_braak":
            _scale_into(full, 1.0 / np.sqrt(np.where(valid, full_ss, 1.0)), out)
        else:
            _residuals_into(S, s0, s1, Zo, C, inv, out, r)
        if not valid.all():  # invalid: zero
            out[:, ~valid] = 0.0
    return valid, stat


def _threads(n_jobs: int) -> int:
    """Threads for ``n_jobs`` in joblib's convention (-1: all cores, -2: all but one)."""
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def _nonfinite_error(source) -> ParameterError:
    """What made a chunk's sums of squares NaN or infinite: NaN or infinite values, or
    values whose squares exceed float64's range."""
    bad_v, bad_s, largest = 0, np.zeros(source.shape[0], bool), 0.0
    for c0, c1 in chunks(source.shape[0], 0, source.shape[1]):
        Y = source.read(c0, c1)
        bad = ~np.isfinite(Y)
        bad_v += int(bad.any(axis=0).sum())
        bad_s |= bad.any(axis=1)
        largest = max(largest, float(np.abs(Y[~bad]).max(initial=0.0)))
    if bad_v == 0:
        return ParameterError(
            f"Y's values are too large for float64 sums of squares (largest |Y| = "
            f"{largest:.3g}); rescale the maps (divide Y by a power of 10) before permuting.")
    return ParameterError(
        f"Y has NaN or infinite values in {bad_v} voxels across {int(bad_s.sum())} subjects; "
        "mask those voxels out or drop/impute those subjects before permuting.")


def observed_fit(source, model: Model, scheme: str, two_sided: bool, tie_rtol: float = 0.0,
                 *, dtype="float64", keep: bool = True, whole: bool = False,
                 n_jobs: int = 1) -> Observed:
    """Residualise on the confounds, normalise, and compute the observed statistic (t, or
    sqrt(F) for an F test), chunk by chunk of voxels: ``Y`` is never copied whole.

    ``source`` is a :class:`~glmkit.stats.source.VoxelSource` (or an array). With ``keep`` the
    residuals are kept, in ``dtype``, as ``R`` (a :class:`Resident`: the chunks as formed);
    without, only the per-voxel results (the permutations then form the residuals again,
    block by block). With ``whole`` (spatial statistics, which need whole maps) they are
    kept in one (n, V) array instead.

    A permuted statistic within ``tie_rtol`` (relative) below the observed one counts as
    reaching it: a permutation that reproduces the observed statistic (the all-flipped signs
    of a two-sided test, a relabelling that leaves the design unchanged) is a tie, not a
    rounding error apart. Below ``|t| = 1`` the tolerance is ``tie_rtol`` itself (absolute,
    :func:`~glmkit.stats.pvalues.tie_level`): a statistic that is 0 in exact arithmetic is
    ``1e-16`` or so either side, and the permuted statistics that are 0 tie with it however
    the GEMM rounded them.
    """
    from glmkit.stats.source import VoxelSource

    if not isinstance(source, VoxelSource):
        source = VoxelSource(source)
    n, V = source.shape
    parts: dict | None = {} if keep else None
    # kept residuals live in one allocation (large enough for numpy to ask for huge pages:
    # far fewer page faults than one allocation per chunk), a C-contiguous part per chunk
    flat = np.empty(n * V, dtype=dtype) if keep and not whole else None
    R = np.empty((n, V), dtype=dtype) if keep and whole else None
    valid = np.empty(V, bool)
    stat = np.empty(V)

    direct = source.direct  # the data itself, read in place by the kernels (or None)
    local = threading.local()  # each thread's buffers, allocated (page-faulted) once

    def buffer(name, w, dt):
        """This thread's (n, w) array ``name`` of ``dt``, cut from one for the widest chunk."""
        if getattr(local, name, None) is None:
            setattr(local, name, np.empty(n * (spans[0][1] - spans[0][0]), dtype=dt))
        return getattr(local, name)[: n * w].reshape(n, w)

    def one(c0, c1):
        w = c1 - c0
        part = None if flat is None else flat[n * c0: n * c1].reshape(n, w)
        if direct is not None:
            S, s0, s1 = direct, c0, c1
        elif part is not None and part.dtype == np.float64:  # read, and fitted in place
            S, s0, s1 = source.read(c0, c1, out=part), 0, w
        else:
            S, s0, s1 = source.read(c0, c1, out=buffer("data", w, np.float64)), 0, w
        out = part if R is None else buffer("out", w, R.dtype)
        try:
            valid[c0:c1], stat[c0:c1] = fit_chunk(S, s0, s1, model, scheme, out)
        except NonFinite:
            return False
        if part is not None:
            parts[c0] = (c1, part)
        elif R is not None:
            R[:, c0:c1] = out
        return True

    # chunks on n_jobs threads of this process, whatever joblib backend the permutations
    # use (each chunk's BLAS on one thread: the same bits however many)
    spans = chunks(n, 0, V)
    jobs = min(len(spans), _threads(n_jobs))
    with one_blas_thread():
        if jobs == 1:
            ok = [one(c0, c1) for c0, c1 in spans]
        else:
            with ThreadPoolExecutor(jobs) as pool:
                ok = list(pool.map(lambda span: one(*span), spans))
    if not all(ok):
        raise _nonfinite_error(source)
    if R is not None:  # one part: the whole (n, V) array
        parts = {0: (V, R)}
    t_cmp = np.abs(stat) if two_sided else stat
    t_cmp = tie_level(t_cmp, tie_rtol)
    # threshold on num (fast path, t only): t(num) >= t_obs <=> num >= t_obs/sqrt(dof + t_obs^2);
    # |num| <= 1, so 2.0 marks "never" (finite: the kernels use fastmath)
    dof = model.dof
    ss_unit = valid.astype(np.float64)
    return Observed(
        R=None if parts is None else Resident(parts, ss_unit), ss_unit=ss_unit, valid=valid,
        t=stat,
        thr_num=np.where(valid, t_cmp / np.sqrt(dof + t_cmp**2), 2.0),
        t_cmp_slow=np.where(valid, t_cmp, 1e300),
    )


def resident(source, specs, dtype) -> bool:
    """Whether the residuals are held whole: spatial statistics need whole maps; voxel
    statistics stream memmapped data, and data whose residuals exceed RESIDENT_BYTES."""
    if any(spec.null_max is not None for spec in specs):
        return True
    n, V = source.shape
    return not source.streamed and n * V * np.dtype(dtype).itemsize <= RESIDENT_BYTES


# ----------------------------------------------------------------------------- blocks
def _tasks(fit, model, zconf, specs, ctx, stream, source, scheme, dtype, n_jobs):
    """The blocks of work: ``(perm range, voxel range, delayed call)``, and the blocking."""
    import joblib

    npdtype = np.dtype(dtype)
    n, V = source.shape
    parent = os.getpid()
    if any(spec.null_max is not None for spec in specs):  # whole maps per permutation
        rows = model.q + zconf.shape[1] + 1
        most = min(MAX_BLOCK, max(1, BLOCK_BYTES // max(1, V * rows * npdtype.itemsize)))
        perm_blocks = split(stream.n_perm, most)
        cfg = {"two_sided": ctx.two_sided, "dof": model.dof, "t_obs": fit.t_cmp_slow,
               "specs": specs, "ctx": ctx, "parent_pid": parent}
        R = np.ascontiguousarray(fit.R.whole(), dtype=npdtype)
        xvec = model.x.astype(npdtype)
        zc = np.ascontiguousarray(zconf, dtype=npdtype)
        tasks = [((s, e), (0, V), joblib.delayed(run_block)(
            R, xvec, zc, fit.ss_unit, *stream.part(s, e), cfg)) for s, e in perm_blocks]
        return tasks, {"block_size": perm_blocks[0][1], "n_blocks": len(perm_blocks),
                       "voxel_blocks": 1, "streamed": False, "gemm": npdtype.name}
    fast = model.stat_type == "t" and zconf.shape[1] == 0
    mixed = npdtype == np.float64 and n <= (MIXED_MAX_N if fast else MIXED_STAT_MAX_N)
    cfg = {"two_sided": ctx.two_sided, "dof": model.dof, "fast": fast, "dtype": npdtype.name,
           "thr_num": fit.thr_num, "t_obs": fit.t_cmp_slow, "parent_pid": parent,
           "xvec": model.x, "zconf": np.ascontiguousarray(zconf), "mixed": mixed}
    if mixed:  # every permuted vector (tested, confound) has the norm of its column
        norms = np.linalg.norm(np.column_stack([model.x, zconf]), axis=0)
        eps = float32_error_bound(n, float(norms.max()))
        cfg.update(eps=eps)
        if fast:  # reduce_num_mixed's float32 band around each voxel's threshold
            cfg.update(lo32=(fit.thr_num - eps).astype(np.float32),
                       hi32=(fit.thr_num + eps).astype(np.float32))
    # blocks do not change a bit of the result here. Permutations: as many blocks as
    # workers, of at least COLS (one GEMM wide), larger when the maps are small (less
    # overhead per permutation), within BLOCK_ITEMS statistics and permutation indices.
    # Voxels: streamed data in slabs of SLAB_BYTES at most; and split further until the
    # tasks share evenly among the workers (1000 permutations on two workers: each takes
    # half of the voxels, in GEMMs of all 1000 permutations)
    workers = max(1, joblib.effective_n_jobs(n_jobs))
    most = max(COLS, min(BLOCK_ITEMS // max(V, 1), BLOCK_ITEMS // n))
    perm_blocks = split(stream.n_perm, min(most, -(-stream.n_perm // workers)), COLS)
    if fit.R is not None:
        data, width = fit.R, V
    else:
        data = Streamed(source, model, scheme, npdtype.name, fit.ss_unit)
        width = max(TILE, SLAB_BYTES // (4 * n) // TILE * TILE)
    slabs = -(-V // width)
    parts = workers // math.gcd(len(perm_blocks), workers)  # voxel blocks: a multiple
    n_voxel_blocks = -(-slabs // parts) * parts
    voxel_blocks = split(V, -(-V // n_voxel_blocks), TILE)
    tasks = [((s, e), (v0, v1), joblib.delayed(voxel_block)(data, v0, v1, *stream.part(s, e), cfg))
        for v0, v1 in voxel_blocks for s, e in perm_blocks]
    return tasks, {"block_size": perm_blocks[0][1], "n_blocks": len(perm_blocks),
                   "voxel_blocks": len(voxel_blocks), "streamed": fit.R is None,
                   "gemm": "float32, re-checked in float64" if mixed else npdtype.name}


def _results(calls, n_jobs):
    """The results of joblib ``delayed`` calls, in order, as they come.

    By default on threads of this process, the caller waiting on each result: joblib's own
    loop polls every 10 ms, which cost about 8 ms at the end of a 90 ms run, and a faster
    poll takes a core from the workers. Any other joblib backend the caller configured
    (``joblib.parallel_config(backend="dask")``) runs them through joblib.
    """
    import joblib
    from joblib.parallel import SequentialBackend, ThreadingBackend

    backend, _ = joblib.parallel.get_active_backend(prefer="threads")
    if not isinstance(backend, (ThreadingBackend, SequentialBackend)):
        # never more workers than blocks (does not change the result, saves start-up)
        jobs = min(int(n_jobs), len(calls)) if n_jobs > 0 else int(n_jobs)
        yield from joblib.Parallel(n_jobs=jobs, prefer="threads", return_as="generator")(calls)
        return
    jobs = min(_threads(n_jobs), len(calls))
    if jobs <= 1:
        for func, args, kwargs in calls:
            yield func(*args, **kwargs)
        return
    pool = ThreadPoolExecutor(jobs)
    try:
        futures = [pool.submit(func, *args, **kwargs) for func, args, kwargs in calls]
        for future in futures:
            yield future.result()
    finally:  # an error (or a generator closed early): drop the blocks not yet started
        pool.shutdown(wait=True, cancel_futures=True)


def permute_blocks(fit: Observed, model: Model, zconf, specs, ctx, stream, *, source=None,
                   scheme="freedman_lane", dtype="float64", n_jobs=1, verbose=False):
    """Run every block of permutations; return per-voxel counts, null maxima and blocking.

    Blocks are ranges of permutations (and, when the residuals are streamed, of voxels);
    their sizes depend on the data's and the test's sizes only, and every permutation is
    drawn from ``stream`` where it is used, so the result is the same whoever runs them.
    """
    import joblib
    from tqdm.auto import tqdm

    V = fit.t.shape[0]
    n_perm = stream.n_perm
    tasks, blocking = _tasks(fit, model, zconf, specs, ctx, stream, source, scheme, dtype,
                             n_jobs)
    logger.info(
        "permutation_test: %d %ss in %d blocks of <= %d x %d voxel block(s), %d voxels%s, "
        "n_jobs=%s", n_perm, "sign_flip" if stream.sign_flip else "permutation",
        blocking["n_blocks"], blocking["block_size"], blocking["voxel_blocks"], V,
        " (streamed)" if blocking["streamed"] else "", n_jobs)
    counts = np.zeros(V, np.int64)
    null = {spec.name: np.full(n_perm, -np.inf) for spec in specs}
    # Every block runs with single-threaded BLAS, whoever runs it, so that n_jobs (and the
    # joblib backend) never change a bit of the result; parallelism comes from n_jobs.
    # Threads by default (GEMM and the numba kernels release the GIL; no copies, no worker
    # start-up); joblib.parallel_config(backend=...) overrides this, e.g. "dask".
    share = 1.0 / blocking["voxel_blocks"]
    done = 0.0
    with tqdm(total=n_perm, disable=not verbose, desc="permutations", unit="perm") as bar, \
            one_blas_thread():
        results = _results([call for _, _, call in tasks], n_jobs)
        for ((s, e), (v0, v1), _), (maxima, cnt) in zip(tasks, results):
            counts[v0:v1] += cnt
            if not isinstance(maxima, dict):
                maxima = {"voxel": maxima}
            for spec in specs:
                part = maxima[spec.name] if spec.null_max is not None else maxima["voxel"]
                np.maximum(null[spec.name][s:e], part, out=null[spec.name][s:e])
            done += (e - s) * share  # whole permutations shown: "50/50", not "50.0/50"
            bar.update(round(done) - bar.n)
    return counts, null, blocking
