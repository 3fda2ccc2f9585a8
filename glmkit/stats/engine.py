"""The permutation engine: the model partition, blocks of permutations as GEMMs, kernels.

:func:`partition` splits a design into the tested space (``x``, residualised on the
nuisance and orthonormal: a vector for a t test, a matrix for an F test) and the nuisance
basis ``Z``. :func:`observed_fit` residualises the data on ``Z`` and normalises every
voxel, so that for permuted data ``Y* = S P R`` the statistic of a block of ``B``
permutations comes from one GEMM ``A (B, n) @ R (n, V)``: ``t = x'Y* / sqrt((1 - (x'Y*)^2 -
||Z'Y*||^2) / dof)``, or ``sqrt(F)`` from the ``q`` projections of an F test.
:func:`permute_blocks` runs the blocks (joblib; every block with single-threaded BLAS, so the
result never depends on ``n_jobs``) and reduces each to per-voxel counts and per-statistic
maxima as it comes, so memory does not grow with ``n_perm``.

Used by :func:`glmkit.stats.permutation.permutation_test`, which validates the inputs and
assembles the result.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import linalg
from scipy.linalg import blas

from glmkit._util import logger
from glmkit.errors import ContrastError

__all__ = ["Model", "Observed", "partition", "observed_fit", "permute_blocks", "t_from_num",
           "BLOCK_BYTES", "MAX_BLOCK"]

#: memory budget (bytes) of one block's GEMM output; sets the block size.
BLOCK_BYTES = 64 * 2**20
MAX_BLOCK = 256


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


def g_from_num2(a2, q, dof):
    """sqrt(F) from the squared norm of the tested projections (unit-norm residuals)."""
    with np.errstate(divide="ignore"):
        return np.sqrt(a2 / q * dof / np.maximum(1.0 - a2, 1e-300))


def t_from_num(num, dof):
    num = np.clip(num, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        return num * np.sqrt(dof / np.maximum(1.0 - num * num, 1e-300))


# ----------------------------------------------------------------------------- engine
def single_blas_thread(parent_pid):
    """Make BLAS single-threaded in a worker *process* (OpenBLAS rounds differently with
    1 and 2 threads, and results must not depend on how the work was split). In the
    calling process the limit is already set, and restored, by :func:`permutation_test`."""
    if os.getpid() == parent_pid:
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    if any(i.get("num_threads", 1) > 1 for i in threadpool_info() if i["user_api"] == "blas"):
        threadpool_limits(1, user_api="blas")


def run_block(R, xvec, zconf, ss, perms, signs, cfg):
    """Null maxima (dict: statistic -> (B,)) and per-voxel counts for one block."""
    single_blas_thread(cfg["parent_pid"])
    R = np.asarray(R)  # a joblib memmap would make every product a memmap subclass
    dtype = R.dtype
    B = perms.shape[0] if perms is not None else signs.shape[0]
    f_test = xvec.ndim == 2
    q = xvec.shape[1] if f_test else 1
    num = scatter(xvec.reshape(xvec.shape[0], q), perms, signs, dtype) @ R
    counts = np.zeros(R.shape[1], np.int64)
    out: dict[str, np.ndarray] = {}
    two = cfg["two_sided"]
    mx = np.empty(B)
    if not f_test and zconf.shape[1] == 0 and not cfg["needs_maps"]:
        reduce_fast(num, cfg["thr_num"].astype(dtype), two, counts, mx)
        out["voxel"] = t_from_num(mx, cfg["dof"])
        return out, counts
    conf = scatter(zconf, perms, signs, dtype) @ R if zconf.shape[1] else num[:0]
    tm = np.empty((B, R.shape[1]), dtype=dtype)
    if not f_test:
        tmaps(num, conf, zconf.shape[1], ss.astype(dtype), float(cfg["dof"]), tm)
    else:
        gmaps(num, q, conf, zconf.shape[1], ss.astype(dtype), float(cfg["dof"]), tm)
    del num, conf
    reduce_fast(tm, cfg["t_obs"].astype(dtype), two, counts, mx)
    out["voxel"] = mx
    cache: dict = {}
    for spec in cfg["specs"]:
        if spec.null_max is not None:
            out[spec.name] = np.asarray(spec.null_max(tm, cfg["ctx"], cache), dtype=np.float64)
    return out, counts


def block_size(n_vox, n_rows_per_perm, itemsize, n_perm):
    b = BLOCK_BYTES // max(1, n_vox * n_rows_per_perm * itemsize)
    return int(min(max(b, 1), MAX_BLOCK, n_perm))


# ----------------------------------------------------------------------------- observed
@dataclass(frozen=True, eq=False)
class Observed:
    """The observed fit: what is permuted, and what permuted statistics are compared with."""

    R: np.ndarray  # normalised residuals that are permuted (n, V)
    ss_unit: np.ndarray  # 1.0 where the voxel has variance, else 0.0
    valid: np.ndarray  # voxels with variance left after the confounds
    t: np.ndarray  # observed t
    thr_num: np.ndarray  # fast path: num >= thr_num  <=>  t >= observed (2.0: never)
    t_cmp_slow: np.ndarray  # slow path: observed |t| or t (1e300 where invalid)


def observed_fit(Y, model: Model, scheme: str, two_sided: bool, tie_rtol: float = 0.0
                 ) -> Observed:
    """Residualise on the confounds, normalise, and compute the observed statistic (t, or
    sqrt(F) for an F test) in place on a copy of ``Y``.

    A permuted statistic within ``tie_rtol`` (relative) below the observed one counts as
    reaching it: a permutation that reproduces the observed statistic (the all-flipped signs
    of a two-sided test, a relabelling that leaves the design unchanged) is a tie, not a
    rounding error apart.
    """
    Zo = model.z_all
    dof = model.dof
    Yrz = Y.copy()
    if Zo.shape[1]:  # Yrz -= Zo (Zo'Y), in place (Fortran view of the C array)
        blas.dgemm(-1.0, Yrz.T @ Zo, Zo.T, beta=1.0, c=Yrz.T, overwrite_c=True)
    ss = np.einsum("ij,ij->j", Yrz, Yrz)
    ss_y = np.einsum("ij,ij->j", Y, Y)
    valid = ss > 1e-24 * np.maximum(ss_y, np.finfo(float).tiny)
    Yrz /= np.where(valid, np.sqrt(ss), 1.0)
    Yrz[:, ~valid] = 0.0
    R = Yrz
    num0 = model.x.T @ R  # (V,) for t, (q, V) for F
    if model.stat_type == "t":
        stat = np.where(valid, t_from_num(num0, dof), 0.0)
    else:
        stat = np.where(valid, g_from_num2(np.einsum("qv,qv->v", num0, num0), model.q, dof),
                        0.0)
    if scheme == "ter_braak":  # full-model residuals: R -= x num0', in place
        if model.stat_type == "t":
            blas.dger(-1.0, num0, model.x, a=R.T, overwrite_a=True)
        else:
            R -= model.x @ num0
        ssm = np.einsum("ij,ij->j", R, R)
        valid = valid & (ssm > 1e-24)
        R /= np.where(valid, np.sqrt(ssm), 1.0)
        R[:, ~valid] = 0.0
    t_cmp = np.abs(stat) if two_sided else stat
    t_cmp = t_cmp - tie_rtol * np.abs(t_cmp)
    # threshold on num (fast path, t only): t(num) >= t_obs <=> num >= t_obs/sqrt(dof + t_obs^2);
    # |num| <= 1, so 2.0 marks "never" (finite: the kernels use fastmath)
    return Observed(
        R=R, ss_unit=valid.astype(np.float64), valid=valid, t=stat,
        thr_num=np.where(valid, t_cmp / np.sqrt(dof + t_cmp**2), 2.0),
        t_cmp_slow=np.where(valid, t_cmp, 1e300),
    )


# ----------------------------------------------------------------------------- blocks
def permute_blocks(fit: Observed, model: Model, zconf, specs, ctx, perms, signs, *,
                    n_perm, dtype, n_jobs, verbose):
    """Run every block of permutations; return per-voxel counts, null maxima and blocking."""
    import joblib
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    needs_maps = any(spec.null_max is not None for spec in specs)
    npdtype = np.dtype(dtype)
    V = fit.R.shape[1]
    f_test = model.stat_type == "F"
    rows = model.q + zconf.shape[1] + (1 if (needs_maps or zconf.shape[1] or f_test) else 0)
    B = block_size(V, rows, npdtype.itemsize, n_perm)
    starts = list(range(0, n_perm, B))
    cfg = {"two_sided": ctx.two_sided, "needs_maps": needs_maps, "dof": model.dof,
           "thr_num": fit.thr_num, "t_obs": fit.t_cmp_slow, "specs": specs, "ctx": ctx,
           "parent_pid": os.getpid()}
    R_ = np.ascontiguousarray(fit.R, dtype=npdtype)
    xvec = model.x.astype(npdtype)
    zc = np.ascontiguousarray(zconf, dtype=npdtype)
    tasks = (
        joblib.delayed(run_block)(
            R_, xvec, zc, fit.ss_unit,
            None if perms is None else perms[s : s + B],
            None if signs is None else signs[s : s + B], cfg)
        for s in starts
    )
    logger.info(
        "permutation_test: %d %ss in %d blocks of <= %d, %d voxels, n_jobs=%s", n_perm,
        "sign_flip" if perms is None else "permutation", len(starts), B, V, n_jobs,
    )
    counts = np.zeros(V, np.int64)
    null_parts: dict[str, list] = {spec.name: [] for spec in specs}
    # Every block runs with single-threaded BLAS, whoever runs it, so that n_jobs (and the
    # joblib backend) never change a bit of the result; parallelism comes from n_jobs.
    # Threads by default (GEMM and the numba kernels release the GIL; no copies, no worker
    # start-up); joblib.parallel_config(backend=...) overrides this, e.g. "dask".
    with tqdm(total=n_perm, disable=not verbose, desc="permutations", unit="perm") as bar, \
            threadpool_limits(1, user_api="blas"):
        # never more workers than blocks (does not change the result, saves start-up)
        jobs = min(int(n_jobs), len(starts)) if n_jobs > 0 else int(n_jobs)
        parallel = joblib.Parallel(n_jobs=jobs, prefer="threads", return_as="generator")
        for s, (maxima, cnt) in zip(starts, parallel(tasks)):
            counts += cnt
            for spec in specs:
                part = maxima[spec.name] if spec.null_max is not None else maxima["voxel"]
                null_parts[spec.name].append(part)
            bar.update(min(B, n_perm - s))
    return counts, null_parts, {"block_size": B, "n_blocks": len(starts)}
