"""Permutation inference for one contrast of a mass-univariate GLM.

:func:`permutation_test` returns family-wise error (FWER) corrected -log10 p-values for
voxel max-T, cluster size, cluster mass and TFCE, from one batched engine:

Model
    The design ``X`` (n_subjects, p) and contrast ``c`` are partitioned into the tested
    regressor ``x = X c / (c'c)`` and confounds ``Z = X N`` (``N`` spans the null space of
    ``c'``), so the coefficient of ``x`` is ``c'beta`` and ``[x, Z]`` spans ``X``. ``x`` is
    residualised against ``Z`` and normalised (``x_r``); ``Q = [Z_o, x_r]`` is then an
    orthonormal basis of the model.

Schemes (Winkler et al. 2014, NeuroImage 92:381, table 2)
    ``"freedman_lane"`` (the default) permutes the residuals of the reduced model ``R_Z Y``;
    this is what nilearn's ``permuted_ols`` does (it permutes ``x_r`` and ``Z_o`` jointly
    against ``R_Z Y``, the same statistic with the inverse permutation), and with the same
    permutations the two give the same null maxima. ``"ter_braak"`` permutes the residuals
    of the full model ``R_X Y``. When the tested regressor is constant (one-sample test) the
    rows' signs are flipped instead of permuted (errors assumed symmetric). ``groups=``
    restricts permutations to exchangeability blocks.

Engine
    For permuted data ``Y* = S P R`` (``S`` signs, ``P`` a permutation, ``R`` the normalised
    residuals) the statistic is ``t = x_r'Y* / sqrt((||R||^2 - (x_r'Y*)^2 - ||Z_o'Y*||^2) /
    df)``. ``x_r'Y*`` for a block of ``B`` permutations is one GEMM ``A (B, n) @ R (n, V)``
    where row ``k`` of ``A`` is ``x_r`` scattered by permutation ``k``; the confound term is
    one more GEMM (it vanishes, and is skipped, for the intercept under permutations).
    Without a confound term ``t`` is monotonic in ``x_r'Y*`` with the same function at every
    voxel, so max-T and the per-voxel counts are taken on the GEMM output directly. Maxima
    and counts are reduced per block, so memory does not grow with ``n_perm``.

Reproducibility
    Every permutation (or sign vector) is drawn in the calling process from
    ``numpy.random.default_rng(random_state)`` before any work is split; fixed-size blocks
    (their size depends on the data size only) are then handed to joblib (threads unless
    ``joblib.parallel_config`` picks a backend), and every block runs with single-threaded
    BLAS (OpenBLAS rounds differently with 1 and 2 threads), so ``n_jobs=1``, ``n_jobs=2``
    and a Dask cluster (``joblib.parallel_config(backend="dask")``) give bit-identical
    results. Parallelism therefore comes from ``n_jobs`` alone.

p-values
    Every statistic uses ``p = (1 + #{k : M_k >= m}) / (1 + n_perm)`` where ``M_k`` is the
    statistic of permutation ``k`` (its maximum over voxels for FWER) and ``m`` the observed
    value: the observed data count as one permutation, so ``p`` is never 0. ``null_max``
    stores the observed maximum first, then the ``n_perm`` permutation maxima, so
    ``p = mean(null_max >= m)`` exactly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, stats
from scipy.linalg import blas

from glmkit.stats import cluster as _cluster
from glmkit.stats.contrast import parse_contrast
from glmkit.stats.pvalues import logp_from_p
from glmkit._util import logger
from glmkit.errors import DesignError, ParameterError
from glmkit.settings import SCHEMES, STATISTICS  # declared once, with the run parameters

__all__ = ["PermutationResult", "permutation_test", "STATISTICS", "SCHEMES", "STAT_MAP_NAMES"]

_SPATIAL = {"cluster_size", "cluster_mass", "tfce"}
_TFCE_DEFAULTS = {"E": 0.5, "H": 2.0, "dh": "auto"}
#: statistic -> name of its FWER -log10 p map (``to_frame`` column, ``maps/<name>.nii.gz``)
STAT_MAP_NAMES = {
    "voxel": "logp_maxt",
    "cluster_size": "logp_cluster_size",
    "cluster_mass": "logp_cluster_mass",
    "tfce": "logp_tfce",
}
#: memory budget (bytes) of one block's GEMM output; sets the block size.
BLOCK_BYTES = 64 * 2**20
_MAX_BLOCK = 256


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class PermutationResult:
    """Outcome of :func:`permutation_test` (all maps are 1-D, one value per voxel).

    Attributes
    ----------
    t : ndarray (n_voxels,)
        Observed t statistic of the contrast.
    logp_uncorrected : ndarray (n_voxels,)
        -log10 of the per-voxel permutation p-value (of ``t``, or ``|t|`` two-sided).
    logp_fwer : dict[str, ndarray]
        Statistic name -> -log10 FWER-corrected p per voxel (0 outside clusters).
    null_max : dict[str, ndarray]
        Statistic name -> ``n_perm + 1`` maxima: the observed maximum first, then one
        per permutation. ``p = mean(null_max[s] >= value)``.
    observed : dict[str, ndarray]
        Statistic name -> the observed per-voxel value (t, cluster size, cluster mass, TFCE).
    random_state : int
        Seed from which every permutation was drawn (drawn from entropy if None was given).
    n_perm, two_sided, statistics, scheme
        As passed; ``method`` is ``"permutation"`` or ``"sign_flip"``.
    dof : int
        Residual degrees of freedom, ``n_subjects - rank(X)``.
    cluster_forming_t : float or None
        t threshold of the clusters (from ``cluster_threshold``).
    tfce_params : dict or None
        ``E``, ``H``, ``dh`` and ``connectivity`` used for TFCE.
    """

    t: np.ndarray
    logp_uncorrected: np.ndarray
    logp_fwer: dict
    null_max: dict
    observed: dict
    random_state: int
    n_perm: int
    two_sided: bool
    statistics: tuple
    scheme: str
    method: str
    dof: int
    contrast: str
    cluster_forming_t: float | None = None
    cluster_threshold: float | None = None
    connectivity: int = 6
    tfce_params: dict | None = None
    elapsed: float = 0.0
    info: dict = field(default_factory=dict)

    def critical_value(self, stat: str = "voxel", alpha: float = 0.05) -> float:
        """Value a voxel's (or cluster's) statistic must exceed for FWER p <= ``alpha``.

        ``p <= alpha`` exactly when the value is strictly greater than the returned
        critical value (``inf`` when ``alpha`` is below the smallest attainable p,
        ``1 / (n_perm + 1)``).
        """
        _check_stat_in(stat, self.statistics)
        if not 0 < alpha < 1:
            raise ParameterError(f"alpha must be in (0, 1); got {alpha!r}.")
        perm = np.sort(self.null_max[stat][1:])[::-1]
        k = math.floor(alpha * (self.n_perm + 1) + 1e-9) - 1  # max allowed count
        if k < 0:
            return float("inf")
        if k >= perm.size:
            return float("-inf")
        return float(perm[k])

    def to_frame(self) -> pd.DataFrame:
        """One row per voxel: ``t``, ``logp_uncorrected``, then ``logp_<statistic>``."""
        cols = {"t": self.t, "logp_uncorrected": self.logp_uncorrected}
        for s in self.statistics:
            if s != "voxel":
                cols[s] = self.observed[s]
            cols[STAT_MAP_NAMES[s]] = self.logp_fwer[s]
        frame = pd.DataFrame(cols)
        frame.index.name = "voxel"
        return frame

    def summary(self) -> str:
        """Short text: scheme, seed, and per statistic the critical value and hits."""
        side = "two-sided" if self.two_sided else "one-sided (positive)"
        lines = [
            f"Permutation test of '{self.contrast}': {self.n_perm} {self.method.replace('_', '-')}s"
            f" ({self.scheme}, {side}), dof={self.dof}, random_state={self.random_state},"
            f" {self.t.size} voxels, {self.elapsed:.2f} s",
            "p = (1 + #{perm >= observed}) / (1 + n_perm); FWER from the maximum over voxels.",
        ]
        if self.cluster_forming_t is not None:
            lines.append(
                f"cluster-forming threshold p<{self.cluster_threshold:g} -> t > "
                f"{self.cluster_forming_t:.3f} ({self.connectivity}-connectivity)"
            )
        for s in self.statistics:
            n_sig = int(np.sum(self.logp_fwer[s] >= -np.log10(0.05) - 1e-12))
            lines.append(
                f"  {s:<13} critical value (FWER 0.05) = {self.critical_value(s, 0.05):.4g};"
                f" {n_sig} voxels with FWER p <= 0.05"
            )
        return "\n".join(lines)


# ----------------------------------------------------------------------------- checks
def _check_stat_in(stat, known):
    if stat not in known:
        raise ParameterError(
            f"statistic {stat!r} is not available; expected one of {tuple(known)}."
        )


def _as_statistics(statistics, tfce) -> tuple[str, ...]:
    if isinstance(statistics, str):
        statistics = (statistics,)
    stats_ = tuple(dict.fromkeys(statistics))
    for s in stats_:
        if s not in STATISTICS:
            raise ParameterError(
                f"statistics: unknown statistic {s!r}; known statistics are {STATISTICS}."
            )
    if not stats_:
        raise ParameterError(f"statistics is empty; pick from {STATISTICS}.")
    if tfce not in (None, False) and "tfce" not in stats_:
        stats_ = stats_ + ("tfce",)
    return stats_


def _tfce_params(tfce) -> dict:
    params = dict(_TFCE_DEFAULTS)
    if tfce in (None, True, False):
        return params
    if not isinstance(tfce, Mapping):
        raise ParameterError(
            f"tfce must be None, True or a mapping with keys {tuple(_TFCE_DEFAULTS)}; "
            f"got {tfce!r}."
        )
    unknown = set(tfce) - set(_TFCE_DEFAULTS)
    if unknown:
        raise ParameterError(
            f"tfce: unknown keys {sorted(unknown)}; known keys are {tuple(_TFCE_DEFAULTS)}."
        )
    params.update(tfce)
    for key in ("E", "H"):
        if not float(params[key]) > 0:
            raise ParameterError(f"tfce[{key!r}] must be > 0; got {params[key]!r}.")
    if params["dh"] != "auto" and not float(params["dh"]) > 0:
        raise ParameterError(f"tfce['dh'] must be 'auto' or > 0; got {params['dh']!r}.")
    return params


def _as_mask(mask_img, n_voxels) -> np.ndarray:
    if isinstance(mask_img, np.ndarray):
        mask = mask_img
    elif hasattr(mask_img, "get_fdata"):
        mask = np.asanyarray(mask_img.dataobj)
    else:
        import nibabel

        mask = np.asanyarray(nibabel.load(mask_img).dataobj)
    mask = np.asarray(mask)
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise ParameterError(f"mask_img must be 3-D; got shape {mask.shape}.")
    mask = mask != 0
    if int(mask.sum()) != n_voxels:
        raise ParameterError(
            f"mask_img has {int(mask.sum())} in-mask voxels but Y has {n_voxels} columns; "
            "pass the mask that produced Y (e.g. the masker's mask_img_)."
        )
    return mask


def _design_matrix(design, contrast, n) -> tuple[np.ndarray, np.ndarray, str]:
    if hasattr(design, "matrix") and isinstance(design.matrix, pd.DataFrame):
        design = design.matrix  # glmkit.stats.design.Design
    columns = None
    if isinstance(design, pd.DataFrame):
        columns = [str(c) for c in design.columns]
        X = design.to_numpy(dtype=float)
    else:
        X = np.asarray(design, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
    if X.ndim != 2:
        raise DesignError(f"design must be 2-D (n_subjects, n_regressors); got shape {X.shape}.")
    if X.shape[0] != n:
        raise DesignError(
            f"design has {X.shape[0]} rows but Y has {n} rows (subjects); "
            "pass one design row per map, in the same order."
        )
    if not np.all(np.isfinite(X)):
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise DesignError(f"design has non-finite values in {bad} rows; drop or impute them.")
    p = X.shape[1]
    parsed = parse_contrast(contrast)  # the one contrast parser (glmkit.stats.contrast)
    c, name = parsed.vector(columns, X), parsed.name
    rank = np.linalg.matrix_rank(X)
    if rank < p:
        raise DesignError(
            f"design is rank deficient: rank {rank} < {p} columns"
            + (f" {columns}" if columns else "")
            + "; remove collinear or constant duplicate regressors."
        )
    if n - p < 1:
        raise DesignError(f"design has {p} columns for {n} subjects; no degrees of freedom left.")
    return X, c, name


def _orthonormal(M, tol=1e-10) -> np.ndarray:
    if M.shape[1] == 0:
        return M
    U, s, _ = linalg.svd(M, full_matrices=False)
    return U[:, s > tol * max(1.0, s.max())]


@dataclass(frozen=True)
class _Model:
    x: np.ndarray  # normalised tested regressor, residualised on Z
    z_all: np.ndarray  # orthonormal basis of Z (intercept direction first when present)
    has_const: bool  # z_all[:, 0] is the constant direction
    sign_flip: bool
    dof: int


def _partition(X, c) -> _Model:
    n, p = X.shape
    x = X @ c / (c @ c)
    Z = X @ linalg.null_space(c[None, :]) if p > 1 else np.empty((n, 0))
    ones = np.ones(n) / math.sqrt(n)
    has_const = False
    if Z.shape[1]:
        Zo = _orthonormal(Z)
        if np.linalg.norm(ones - Zo @ (Zo.T @ ones)) < 1e-8:
            rest = Z - np.outer(ones, ones @ Z)
            Zo = np.column_stack([ones, _orthonormal(rest)])[:, : Z.shape[1]]
            has_const = True
    else:
        Zo = Z
    xr = x - Zo @ (Zo.T @ x)
    xr = xr / np.linalg.norm(xr)
    sign_flip = bool(np.ptp(x) <= 1e-12 * max(1.0, np.abs(x).max()))
    return _Model(x=xr, z_all=Zo, has_const=has_const, sign_flip=sign_flip, dof=n - p)


# ----------------------------------------------------------------------------- draws
def _draw(rng, n_perm, n, sign_flip, groups):
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


def _scatter(vecs, perms, signs, dtype):
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
from numba import njit  # noqa: E402


@njit(cache=True, nogil=True, fastmath=True)
def _reduce_fast(num, thr, two_sided, counts, out_max):
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
def _tmaps(num, conf, n_conf, ss, dof, out):
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


def _t_from_num(num, dof):
    num = np.clip(num, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        return num * np.sqrt(dof / np.maximum(1.0 - num * num, 1e-300))


# ----------------------------------------------------------------------------- engine
def _single_blas_thread(parent_pid):
    """Make BLAS single-threaded in a worker *process* (OpenBLAS rounds differently with
    1 and 2 threads, and results must not depend on how the work was split). In the
    calling process the limit is already set, and restored, by :func:`permutation_test`."""
    if os.getpid() == parent_pid:
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    if any(i.get("num_threads", 1) > 1 for i in threadpool_info() if i["user_api"] == "blas"):
        threadpool_limits(1, user_api="blas")


def _run_block(R, xvec, zconf, ss, perms, signs, cfg):
    """Null maxima (dict) and per-voxel counts for one block of permutations."""
    _single_blas_thread(cfg["parent_pid"])
    R = np.asarray(R)  # a joblib memmap would make every product a memmap subclass
    dtype = R.dtype
    B = perms.shape[0] if perms is not None else signs.shape[0]
    num = _scatter(xvec[:, None], perms, signs, dtype) @ R
    counts = np.zeros(R.shape[1], np.int64)
    out: dict[str, np.ndarray] = {}
    two = cfg["two_sided"]
    if zconf.shape[1] == 0 and not cfg["spatial"]:
        mx = np.empty(B)
        _reduce_fast(num, cfg["thr_num"].astype(dtype), two, counts, mx)
        out["voxel"] = _t_from_num(mx, cfg["dof"])
        return out, counts
    conf = _scatter(zconf, perms, signs, dtype) @ R if zconf.shape[1] else num[:0]
    tm = np.empty((B, R.shape[1]), dtype=dtype)
    _tmaps(num, conf, zconf.shape[1], ss.astype(dtype), float(cfg["dof"]), tm)
    del num, conf
    mx = np.empty(B)
    _reduce_fast(tm, cfg["t_obs"].astype(dtype), two, counts, mx)
    out["voxel"] = mx
    nbr = np.array(cfg["nbr"]) if cfg["nbr"] is not None else None  # writable (numba types)
    if cfg["cluster"]:
        size = np.empty(B, np.int64)
        mass = np.empty(B)
        _cluster.cluster_max(tm, cfg["cluster_t"], nbr, two, size, mass)
        out["cluster_size"] = size.astype(float)
        out["cluster_mass"] = mass
    if cfg["tfce"]:
        tf = np.empty(B)
        p = cfg["tfce_params"]
        _cluster.tfce_max(tm, nbr, two, p["E"], p["H"], p["dh"], tf)
        out["tfce"] = tf
    return out, counts


def _block_size(n_vox, n_rows_per_perm, itemsize, n_perm):
    b = BLOCK_BYTES // max(1, n_vox * n_rows_per_perm * itemsize)
    return int(min(max(b, 1), _MAX_BLOCK, n_perm))


def _p_from_null(null, values):
    """(1 + #{null_perm >= v}) / (1 + n_perm) with null = [observed max, perms...]."""
    perm = np.sort(null[1:])
    count = perm.size - np.searchsorted(perm, values, side="left")
    return (1.0 + count) / (1.0 + perm.size)


def permutation_test(
    Y,
    design,
    contrast,
    *,
    n_perm: int = 10000,
    two_sided: bool = False,
    statistics=("voxel",),
    mask_img=None,
    cluster_threshold: float = 0.001,
    tfce=None,
    connectivity: int = 6,
    scheme: str = "freedman_lane",
    groups=None,
    random_state: int | None = None,
    n_jobs: int = 1,
    dtype: str = "float64",
    verbose: bool = True,
    _permutations: np.ndarray | None = None,
    _signs: np.ndarray | None = None,
) -> PermutationResult:
    """Permutation (or sign-flip) test of one contrast with FWER control.

    Parameters
    ----------
    Y : array-like, shape (n_subjects, n_voxels)
        Masked data, one row per subject (no NaN).
    design : DataFrame, glmkit Design, or array of shape (n_subjects, p)
        Full-rank design matrix (include the intercept column yourself).
    contrast : str or array-like of length p
        Column name (DataFrame design) or contrast vector.
    n_perm : int, default 10000
        Number of permutations (the observed data count as one more).
    two_sided : bool, default False
        Test ``|t|`` (two-sided clusters/TFCE take positive and negative parts separately).
    statistics : str or sequence of {"voxel", "cluster_size", "cluster_mass", "tfce"}
        Statistics whose FWER-corrected p-values are computed.
    mask_img : Nifti1Image, path or 3-D array, optional
        The mask that produced ``Y`` (columns in C order of the mask); needed for
        cluster and TFCE statistics.
    cluster_threshold : float, default 0.001
        Cluster-forming threshold as an uncorrected parametric p (two-sided: p/2 per
        tail), converted to t with ``dof`` degrees of freedom, as nilearn does.
    tfce : None, True or mapping
        TFCE parameters ``{"E": 0.5, "H": 2, "dh": "auto"}`` (``"auto"`` = 100 steps up to
        the map's maximum, as nilearn and fslmaths). Passing it adds ``"tfce"`` to
        ``statistics``.
    connectivity : {6, 18, 26}, default 6
        Neighbourhood of clusters and TFCE (6 = faces, as nilearn).
    scheme : {"freedman_lane", "ter_braak"}, default "freedman_lane"
        Which residuals are permuted: those of the reduced model (Freedman-Lane: the scheme
        of nilearn's ``permuted_ols``, FSL randomise and PALM, and the one Winkler et al.
        2014 recommend) or those of the full model (ter Braak). The two coincide when the
        design has no nuisance regressor besides what the contrast leaves out.
    groups : array-like of length n_subjects, optional
        Exchangeability blocks: permutations stay within blocks (sign flips are per subject).
    random_state : int or None
        Seed of every permutation; ``None`` draws one from entropy and records it.
    n_jobs : int, default 1
        joblib workers (threads by default; ``joblib.parallel_config(backend="dask")`` etc.
        is honoured). The result does not depend on it: BLAS is single-threaded inside each
        block, so ``n_jobs=1`` uses one core.
    dtype : {"float64", "float32"}
        Precision of the permutation GEMMs (observed statistics are always float64).
    verbose : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    PermutationResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.standard_normal((20, 50)); Y[:, :5] += 1.5
    >>> res = permutation_test(Y, np.ones((20, 1)), [1.0], n_perm=199, random_state=0,
    ...                        verbose=False)
    >>> res.method, res.null_max["voxel"].shape
    ('sign_flip', (200,))
    >>> bool((res.logp_fwer["voxel"][:5] > 1.3).all())
    True
    """
    t_start = time.perf_counter()
    # ---------------------------------------------------------------- validate
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ParameterError(f"n_perm must be an integer >= 1; got {n_perm!r}.")
    n_perm = int(n_perm)
    if scheme not in SCHEMES:
        raise ParameterError(f"scheme must be one of {SCHEMES}; got {scheme!r}.")
    if dtype not in ("float64", "float32"):
        raise ParameterError(f"dtype must be 'float64' or 'float32'; got {dtype!r}.")
    if connectivity not in _cluster._MAX_DIST:
        raise ParameterError(f"connectivity must be 6, 18 or 26; got {connectivity!r}.")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ParameterError(
            f"n_jobs must be a non-zero integer (joblib convention); got {n_jobs!r}."
        )
    stats_ = _as_statistics(statistics, tfce)
    tparams = _tfce_params(tfce)
    if not (0 < float(cluster_threshold) < 1):
        raise ParameterError(
            f"cluster_threshold is a p-value in (0, 1); got {cluster_threshold!r}."
        )
    if random_state is None:
        random_state = int(np.random.SeedSequence().entropy % (2**63))
    elif isinstance(random_state, (bool, np.bool_)) or not isinstance(
        random_state, (int, np.integer)
    ):
        raise ParameterError(
            "random_state must be an int or None (it is recorded); "
            f"got {type(random_state).__name__}."
        )
    random_state = int(random_state)

    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ParameterError(f"Y must be 2-D (n_subjects, n_voxels); got shape {Y.shape}.")
    n, V = Y.shape
    Y = Y.astype(np.float64, copy=False)
    if not np.isfinite(Y.sum()):  # cheap test first; exact count only on failure
        finite = np.isfinite(Y)
        if not finite.all():
            bad_v = int((~finite).any(axis=0).sum())
            bad_s = int((~finite).any(axis=1).sum())
            raise ParameterError(
                f"Y has NaN or infinite values in {bad_v} voxels across {bad_s} subjects; "
                "mask those voxels out or drop/impute those subjects before permuting."
            )
    X, c, cname = _design_matrix(design, contrast, n)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.ndim != 1 or groups.shape[0] != n:
            raise ParameterError(
                f"groups must have one label per subject ({n}); got shape {groups.shape}."
            )
    spatial = _SPATIAL.intersection(stats_)
    mask = None
    if spatial:
        if mask_img is None:
            raise ParameterError(
                f"statistics {sorted(spatial)} need mask_img (the 3-D mask that produced Y) "
                "to define voxel neighbours; pass mask_img=."
            )
        mask = _as_mask(mask_img, V)

    model = _partition(X, c)
    dof = model.dof
    n_perm_given = None
    if _permutations is not None or _signs is not None:
        given = _permutations if _permutations is not None else _signs
        n_perm_given = np.asarray(given).shape[0]
        if n_perm_given != n_perm:
            raise ParameterError(f"_permutations/_signs have {n_perm_given} rows, n_perm={n_perm}.")

    # ---------------------------------------------------------------- observed
    Zo = model.z_all
    Yrz = Y.copy()
    if Zo.shape[1]:  # Yrz -= Zo (Zo'Y), in place (Fortran view of the C array)
        blas.dgemm(-1.0, Yrz.T @ Zo, Zo.T, beta=1.0, c=Yrz.T, overwrite_c=True)
    ss = np.einsum("ij,ij->j", Yrz, Yrz)
    ss_y = np.einsum("ij,ij->j", Y, Y)
    valid = ss > 1e-24 * np.maximum(ss_y, np.finfo(float).tiny)
    Yrz /= np.where(valid, np.sqrt(ss), 1.0)
    Yrz[:, ~valid] = 0.0
    Rz = Yrz
    num0 = model.x @ Rz
    t_obs = np.where(valid, _t_from_num(num0, dof), 0.0)
    if scheme == "freedman_lane":
        R = Rz
    else:
        R = Rz  # full-model residuals: R -= x num0', in place
        blas.dger(-1.0, num0, model.x, a=R.T, overwrite_a=True)
        ssm = np.einsum("ij,ij->j", R, R)
        valid = valid & (ssm > 1e-24)
        R /= np.where(valid, np.sqrt(ssm), 1.0)
        R[:, ~valid] = 0.0
    ss_unit = valid.astype(np.float64)
    t_cmp = np.abs(t_obs) if two_sided else t_obs
    # threshold on num (fast path): t(num) >= t_obs  <=>  num >= t_obs / sqrt(dof + t_obs^2);
    # |num| <= 1, so 2.0 marks "never" (finite: the kernels use fastmath)
    thr_num = np.where(valid, t_cmp / np.sqrt(dof + t_cmp**2), 2.0)
    t_cmp_slow = np.where(valid, t_cmp, 1e300)

    # confound columns that permutations do not cancel
    sign_flip = model.sign_flip or _signs is not None
    zconf = Zo[:, 1:] if (model.has_const and not sign_flip) else Zo
    cluster_t = None
    nbr = None
    observed: dict[str, np.ndarray] = {"voxel": t_obs}
    obs_max: dict[str, float] = {"voxel": float(np.max(t_cmp))}
    obs_cluster = None
    if spatial:
        nbr = _cluster.neighbors(mask, connectivity)
        dh = 0.0 if tparams["dh"] == "auto" else float(tparams["dh"])
        tparams = {"E": float(tparams["E"]), "H": float(tparams["H"]), "dh": dh}
        if {"cluster_size", "cluster_mass"} & spatial:
            q = cluster_threshold / 2 if two_sided else cluster_threshold
            cluster_t = float(stats.t.isf(q, dof))
            obs_cluster = _observed_clusters(t_obs, cluster_t, nbr, two_sided)
            for s in ("cluster_size", "cluster_mass"):
                observed[s] = obs_cluster[s]
                obs_max[s] = float(observed[s].max(initial=0.0))
        if "tfce" in spatial:
            observed["tfce"] = _cluster.tfce_map(
                t_obs, nbr, two_sided, tparams["E"], tparams["H"], tparams["dh"]
            )
            obs_max["tfce"] = float(np.abs(observed["tfce"]).max(initial=0.0))

    # ---------------------------------------------------------------- draws
    rng = np.random.default_rng(random_state)
    if _permutations is not None:
        perms, signs = np.asarray(_permutations, dtype=np.int32), None
        sign_flip = False
    elif _signs is not None:
        perms, signs = None, np.asarray(_signs, dtype=np.int8)
    else:
        perms, signs = _draw(rng, n_perm, n, model.sign_flip, groups)
    method = "sign_flip" if sign_flip else "permutation"

    npdtype = np.dtype(dtype)
    rows = 1 + zconf.shape[1] + (1 if (spatial or zconf.shape[1]) else 0)
    B = _block_size(V, rows, npdtype.itemsize, n_perm)
    starts = list(range(0, n_perm, B))
    cfg = {
        "two_sided": bool(two_sided),
        "spatial": bool(spatial),
        "dof": dof,
        "thr_num": thr_num,
        "t_obs": t_cmp_slow,
        "cluster": bool({"cluster_size", "cluster_mass"} & spatial),
        "cluster_t": cluster_t,
        "tfce": "tfce" in spatial,
        "tfce_params": tparams,
        "nbr": nbr,
        "parent_pid": os.getpid(),
    }
    R_ = np.ascontiguousarray(R, dtype=npdtype)
    xvec = model.x.astype(npdtype)
    zc = np.ascontiguousarray(zconf, dtype=npdtype)
    ss_ = ss_unit

    import joblib
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    tasks = (
        joblib.delayed(_run_block)(
            R_,
            xvec,
            zc,
            ss_,
            None if perms is None else perms[s : s + B],
            None if signs is None else signs[s : s + B],
            cfg,
        )
        for s in starts
    )
    logger.info(
        "permutation_test: %d %ss in %d blocks of <= %d, %d voxels, n_jobs=%s",
        n_perm, method, len(starts), B, V, n_jobs,
    )
    counts = np.zeros(V, np.int64)
    null_parts: dict[str, list] = {s: [] for s in stats_}
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
            for st in stats_:
                null_parts[st].append(maxima[st])
            bar.update(min(B, n_perm - s))

    null_max = {
        st: np.concatenate([[obs_max[st]], *null_parts[st]]).astype(np.float64) for st in stats_
    }
    p_unc = np.where(valid, (1.0 + counts) / (1.0 + n_perm), 1.0)
    logp_fwer: dict[str, np.ndarray] = {}
    for st in stats_:
        if st == "voxel":
            p = _p_from_null(null_max[st], t_cmp)
        elif st == "tfce":
            p = _p_from_null(null_max[st], np.abs(observed["tfce"]))
            p = np.where(observed["tfce"] != 0, p, 1.0)
        else:
            p = _p_from_null(null_max[st], observed[st])
            p = np.where(observed[st] > 0, p, 1.0)
        logp_fwer[st] = logp_from_p(p)
    return PermutationResult(
        t=t_obs,
        logp_uncorrected=logp_from_p(p_unc),
        logp_fwer=logp_fwer,
        null_max=null_max,
        observed=observed,
        random_state=random_state,
        n_perm=n_perm,
        two_sided=bool(two_sided),
        statistics=stats_,
        scheme=scheme,
        method=method,
        dof=dof,
        contrast=cname,
        cluster_forming_t=cluster_t,
        cluster_threshold=float(cluster_threshold) if cluster_t is not None else None,
        connectivity=int(connectivity),
        tfce_params=(dict(tparams, connectivity=connectivity) if "tfce" in stats_ else None),
        elapsed=time.perf_counter() - t_start,
        info={"block_size": B, "n_blocks": len(starts), "dtype": dtype,
              "n_valid_voxels": int(valid.sum()),
              "exchangeability_blocks": None if groups is None else int(len(pd.unique(groups)))},
    )


def _observed_clusters(t, thr, nbr, two_sided) -> dict[str, np.ndarray]:
    """Per-voxel size and mass of the observed cluster containing each voxel (0 outside)."""
    size = np.zeros(t.size)
    mass = np.zeros(t.size)
    for sign in (1.0, -1.0) if two_sided else (1.0,):
        u = sign * t
        lab = _cluster.cluster_labels(u, thr, nbr)
        inside = lab >= 0
        if not inside.any():
            continue
        roots, inv = np.unique(lab[inside], return_inverse=True)
        sz = np.bincount(inv).astype(float)
        ms = np.bincount(inv, weights=u[inside] - thr)
        size[inside] = sz[inv]
        mass[inside] = ms[inv]
    return {"cluster_size": size, "cluster_mass": mass}
