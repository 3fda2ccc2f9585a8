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
    Permutation ``k`` (or sign vector ``k``) is drawn from ``random_state`` and ``k`` alone
    (counter-based: chunk ``k // 256`` of the stream has its own generator,
    ``numpy.random.SeedSequence(random_state, spawn_key=(chunk,))``;
    :mod:`glmkit.stats.resample`), so every block of work draws its own permutations where
    it runs and memory does not grow with ``n_perm``. Blocks go to joblib (threads unless
    ``joblib.parallel_config`` picks a backend), and every block runs with single-threaded
    BLAS (OpenBLAS rounds differently with 1 and 2 threads); for voxel statistics every GEMM
    covers 256 permutations at fixed places of the stream and 512 voxels at fixed places of
    the map, so ``n_jobs=1``, ``n_jobs=2``, a Dask cluster
    (``joblib.parallel_config(backend="dask")``), the block size and streaming a memmap give
    bit-identical results. (Spatial statistics use blocks whose size depends on the data's
    size only.) This stream replaced, in this version, one generator drawing every
    permutation up front: the same seed now gives other permutations than before.

p-values
    Every statistic uses ``p = (1 + #{k : M_k >= m}) / (1 + n_perm)`` where ``M_k`` is the
    statistic of permutation ``k`` (its maximum over voxels for FWER) and ``m`` the observed
    value: the observed data count as one permutation, so ``p`` is never 0. ``null_max``
    stores the observed maximum first, then the ``n_perm`` permutation maxima, so
    ``p = mean(null_max >= m)`` exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from glmkit.errors import DesignError, ParameterError, checked_arguments
from glmkit.stats.contrast import parse_contrast
from glmkit.stats.engine import observed_fit, partition, permute_blocks, resident
from glmkit.stats.pvalues import logp_from_p, tie_level
from glmkit.stats.choices import ACCELERATIONS
from glmkit.stats.resample import Stream, n_arrangements
from glmkit.stats.source import VoxelSource
from glmkit.stats.tail import TAIL_THRESHOLD, TailFit, tail_pvalues
from glmkit.stats.statistics import (SCHEMES, TFCE_DEFAULTS, StatContext, StatisticSpec,
                                     get_statistic)

__all__ = ["PermutationResult", "permutation_test", "check_tfce"]

#: neighbourhoods of clusters and TFCE (faces, + edges, + corners)
CONNECTIVITIES = (6, 18, 26)


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class PermutationResult:
    """Outcome of :func:`permutation_test` (all maps are 1-D, one value per voxel).

    Attributes
    ----------
    t : ndarray (n_voxels,)
        Observed statistic of the contrast: t, or F for an F test (``stat_type``; also
        available as ``stat``).
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
    stat_type : {"t", "F"}
        ``"F"`` for a contrast given as rows (a matrix or a list): the voxel statistic is F
        (max-F, the same p-values as two-sided max-T for one row); cluster and TFCE
        statistics are computed on sqrt(F) maps (sign-less clusters).
    exact : bool
        Every distinct permutation (or sign flip) was enumerated, since they numbered at most
        the ``n_perm`` asked for; ``n_perm`` is then their number minus the observed one and
        the p-values are exact.
    accel : {None, "tail"}
        ``"tail"``: FWER p-values below 0.1 come from a generalised Pareto fit to the upper
        tail of each statistic's null maxima (Winkler et al. 2016; :mod:`glmkit.stats.tail`)
        and can be below ``1 / (n_perm + 1)``. ``info["tail"]`` holds each statistic's fit
        (``None`` where no fit passed the goodness-of-fit test and the permutation p-values
        were kept) and how many voxels it refined. Uncorrected p-values are never
        accelerated (the engine keeps counts, not each voxel's null distribution).
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
    stat_type: str = "t"
    exact: bool = False
    accel: str | None = None

    @property
    def stat(self) -> np.ndarray:
        """The observed statistic per voxel (``t``, or F for an F test)."""
        return self.t

    def critical_value(self, stat: str = "voxel", alpha: float = 0.05) -> float:
        """Value a voxel's (or cluster's) statistic must exceed for FWER p <= ``alpha``.

        ``p <= alpha`` exactly when the value is strictly greater than the returned
        critical value (``inf`` when ``alpha`` is below the smallest attainable p,
        ``1 / (n_perm + 1)``).
        """
        _check_stat_in(stat, self.statistics)
        if not 0 < alpha < 1:
            raise ParameterError(f"alpha must be in (0, 1); got {alpha!r}.")
        fit = self.tail_fit(stat)
        if fit is not None and alpha < TAIL_THRESHOLD and alpha <= fit.tail_fraction:
            return fit.isf(alpha)
        perm = np.sort(self.null_max[stat][1:])[::-1]
        k = _largest_count(alpha, perm.size)
        return float("inf") if k < 0 else float(perm[k])

    def tail_fit(self, stat: str = "voxel") -> TailFit | None:
        """The generalised Pareto fit of ``stat``'s null tail (``accel="tail"``), or None
        (not accelerated, or no fit passed the goodness-of-fit test)."""
        _check_stat_in(stat, self.statistics)
        fit = self.info.get("tail", {}).get(stat, {}).get("fit")
        return None if fit is None else TailFit(**fit)

    def to_frame(self) -> pd.DataFrame:
        """One row per voxel: ``t``, ``logp_uncorrected``, then ``logp_<statistic>``."""
        cols = {"t": self.t, "logp_uncorrected": self.logp_uncorrected}
        for s in self.statistics:
            if s != "voxel":
                cols[s] = self.observed[s]
            cols[get_statistic(s).map_name] = self.logp_fwer[s]
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
        if self.accel == "tail":
            lines.append(_tail_summary(self))
        for s in self.statistics:
            n_sig = int(np.sum(self.logp_fwer[s] >= -np.log10(0.05) - 1e-12))
            lines.append(
                f"  {s:<13} critical value (FWER 0.05) = {self.critical_value(s, 0.05):.4g};"
                f" {n_sig} voxels with FWER p <= 0.05"
            )
        return "\n".join(lines)


def _tail_summary(result: PermutationResult) -> str:
    """The summary's line on tail acceleration: what was fitted, per statistic."""
    parts = []
    for s in result.statistics:
        fit = result.tail_fit(s)
        if fit is None:
            parts.append(f"{s}: no acceptable fit, permutation p kept")
        else:
            parts.append(f"{s}: top {fit.tail_fraction:.1%} of the null, shape "
                         f"{fit.shape:.3g}, {result.info['tail'][s]['n_refined']} voxels")
    return (f"tail acceleration (Winkler et al. 2016): FWER p < {TAIL_THRESHOLD:g} from a "
            "generalised Pareto fit to the null's upper tail, so p can be below "
            f"1/(n_perm + 1) = {1 / (result.n_perm + 1):.2g} (" + "; ".join(parts) + ")")


# ----------------------------------------------------------------------------- checks
def _check_stat_in(stat, known):
    if stat not in known:
        raise ParameterError(
            f"statistic {stat!r} is not available; expected one of {tuple(known)}."
        )


def _as_statistics(statistics, tfce) -> tuple[StatisticSpec, ...]:
    """The registry specs of ``statistics`` (``tfce`` given adds TFCE), in the order given."""
    if isinstance(statistics, str):
        statistics = (statistics,)
    names = tuple(dict.fromkeys(statistics))
    if not names:
        from glmkit.stats.statistics import statistic_names

        raise ParameterError(f"statistics is empty; pick from {statistic_names()}.")
    if tfce not in (None, False) and "tfce" not in names:
        names = names + ("tfce",)
    return tuple(get_statistic(name) for name in names)


def check_tfce(tfce) -> dict:
    """TFCE options (None, True or a mapping of ``E``, ``H``, ``dh``) checked, with defaults."""
    params = dict(TFCE_DEFAULTS)
    if tfce in (None, True, False):
        return params
    if not isinstance(tfce, Mapping):
        raise ParameterError(
            f"tfce must be None, True or a mapping with keys {tuple(TFCE_DEFAULTS)}; "
            f"got {tfce!r}."
        )
    unknown = set(tfce) - set(TFCE_DEFAULTS)
    if unknown:
        raise ParameterError(
            f"tfce: unknown keys {sorted(unknown)}; use the keys {tuple(TFCE_DEFAULTS)}."
        )
    params.update(tfce)
    for key in ("E", "H", "dh"):
        value = params[key]
        if key == "dh" and value == "auto":
            continue
        try:
            positive = float(value) > 0 and not isinstance(value, bool)
        except (TypeError, ValueError):
            positive = False
        if not positive:
            raise ParameterError(f"tfce[{key!r}] must be a number > 0"
                                 f"{' or auto' if key == 'dh' else ''}; got {value!r}.")
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
    columns, levels = None, {}
    if isinstance(design, pd.DataFrame):
        columns = [str(c) for c in design.columns]
        levels = design.attrs.get("levels", {})  # categorical factors (make_design)
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
    W = parsed.matrix(columns, X, levels=levels)
    c, name = (W if parsed.is_list else W[0]), parsed.name
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


# ----------------------------------------------------------------------------- draws
#: relative tolerance of ties between a permuted and the observed statistic, by GEMM precision
TIE_RTOL = {"float64": 1e-10, "float32": 1e-5}


def _largest_count(alpha: float, n_perm: int) -> int:
    """The largest count ``c`` of null values at or above a value whose p-value
    ``(1 + c) / (1 + n_perm)`` is at most ``alpha`` (-1 when even ``c = 0`` is above it).

    ``p`` is compared exactly as it is reported: the float division of two integers, which
    is correctly rounded and so monotonic in ``c``. ``alpha * (n_perm + 1)`` only gives the
    starting point (its own rounding may put it one off either way, e.g. 0.29 * 100 is
    28.999999999999996 while 29 / 100 == 0.29); the two loops then step to the exact answer.
    """
    c = min(math.floor(alpha * (n_perm + 1)), n_perm) - 1
    while c + 1 < n_perm and (c + 2.0) / (n_perm + 1.0) <= alpha:
        c += 1
    while c >= 0 and (c + 1.0) / (n_perm + 1.0) > alpha:
        c -= 1
    return c


def _p_from_null(null, values, rtol=0.0):
    """(1 + #{null_perm >= v}) / (1 + n_perm) with null = [observed max, perms...]; a null
    value at or above :func:`~glmkit.stats.pvalues.tie_level` of ``v`` is a tie and counts."""
    perm = np.sort(null[1:])
    count = perm.size - np.searchsorted(perm, tie_level(values, rtol), side="left")
    return (1.0 + count) / (1.0 + perm.size)


# ----------------------------------------------------------------------------- validation
def _check_int(value, *, low=None, nonzero=False) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or (low is not None and value < low) or (nonzero and value == 0):
        return False
    return True


def _check_options(*, n_perm, scheme, dtype, connectivity, n_jobs, cluster_threshold,
                   random_state, accel=None) -> tuple[int, int]:
    """Check the scalar options; return ``(n_perm, random_state)`` (drawn when None)."""
    if accel is not None and accel not in ACCELERATIONS:
        raise ParameterError(f"accel must be None or one of {ACCELERATIONS}; got {accel!r}.")
    if not _check_int(n_perm, low=1):
        raise ParameterError(f"n_perm must be an integer >= 1; got {n_perm!r}.")
    if scheme not in SCHEMES:
        raise ParameterError(f"scheme must be one of {SCHEMES}; got {scheme!r}.")
    if dtype not in ("float64", "float32"):
        raise ParameterError(f"dtype must be 'float64' or 'float32'; got {dtype!r}.")
    if connectivity not in CONNECTIVITIES:
        raise ParameterError(f"connectivity must be 6, 18 or 26; got {connectivity!r}.")
    if not _check_int(n_jobs, nonzero=True):
        raise ParameterError(
            f"n_jobs must be a non-zero integer (joblib convention); got {n_jobs!r}."
        )
    if not (0 < float(cluster_threshold) < 1):
        raise ParameterError(
            f"cluster_threshold is a p-value in (0, 1); got {cluster_threshold!r}."
        )
    if random_state is None:
        random_state = int(np.random.SeedSequence().entropy % (2**63))
    elif not _check_int(random_state, low=0):
        raise ParameterError(
            "random_state must be an int >= 0 or None (it is recorded); "
            f"got {random_state!r}."
        )
    return int(n_perm), int(random_state)


def _check_data(Y) -> VoxelSource:
    """``Y`` (n_subjects, n_voxels) as a source read by voxel ranges: never copied whole (a
    numpy memmap stays on disk). Non-finite values are found, and named, by the fit."""
    return VoxelSource(Y)


def _check_groups(groups, n):
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.shape[0] != n:
        raise ParameterError(
            f"groups must have one label per subject ({n}); got shape {groups.shape}."
        )
    return groups


def _spatial_mask(specs, mask_img, n_voxels):
    """The 3-D mask when a statistic needs voxel neighbours (else None)."""
    spatial = [spec.name for spec in specs if spec.needs_mask]
    if not spatial:
        return None
    if mask_img is None:
        raise ParameterError(
            f"statistics {sorted(spatial)} need mask_img (the 3-D mask that produced Y) "
            "to define voxel neighbours; pass mask_img=."
        )
    return _as_mask(mask_img, n_voxels)


def _check_given(given, n_perm):
    if given is not None and np.asarray(given).shape[0] != n_perm:
        raise ParameterError(
            f"_permutations/_signs have {np.asarray(given).shape[0]} rows, n_perm={n_perm}.")


# ----------------------------------------------------------------------------- observed
def _score(value: np.ndarray, two_sided: bool) -> np.ndarray:
    """What a statistic's null maxima are compared with: ``|value|`` two-sided."""
    return np.abs(value) if two_sided else value


def _observed_statistics(specs, t_obs, ctx: StatContext) -> tuple[dict, dict]:
    """Observed per-voxel statistic and its maximum, per statistic (``voxel`` always)."""
    cache: dict = {}
    observed: dict[str, np.ndarray] = {"voxel": t_obs}
    obs_max: dict[str, float] = {}
    for spec in specs:
        value = np.asarray(spec.observed(t_obs, ctx, cache), dtype=np.float64)
        observed[spec.name] = value
        score = _score(value, ctx.two_sided)
        obs_max[spec.name] = float(score.max(initial=0.0) if spec.nonzero_only else score.max())
    return observed, obs_max


def _fwer_logp(specs, observed, null_max, two_sided, rtol, accel=None
               ) -> tuple[dict[str, np.ndarray], dict]:
    """-log10 FWER p per voxel and statistic (p = 1 where a ``nonzero_only`` statistic is 0),
    and, with ``accel="tail"``, each statistic's tail fit (:func:`tail_pvalues`)."""
    out, tails = {}, {}
    for spec in specs:
        value = observed[spec.name]
        score = _score(value, two_sided)
        p = _p_from_null(null_max[spec.name], score, rtol)
        if accel == "tail":
            # fitted to the permutation maxima only (glmkit.stats.tail: not the observed one)
            p, fit, n_refined = tail_pvalues(score, null_max[spec.name][1:], p)
            tails[spec.name] = {"fit": None if fit is None else fit.as_dict(),
                                "n_refined": n_refined}
        if spec.nonzero_only:
            p = np.where(value != 0, p, 1.0)
        out[spec.name] = logp_from_p(p)
    return out, tails


# ----------------------------------------------------------------------------- permutations
def _draws(random_state, n_perm, n, model, scheme, groups, given_perms, given_signs
           ) -> tuple[Stream, bool]:
    """The permutations or sign flips: given ones, all of them (exact test) when they number at
    most ``n_perm``, or ``n_perm`` drawn from ``random_state``; as a :class:`Stream` that
    every block of work draws its own from. Returns ``(stream, exact)``."""
    if given_perms is not None:
        given = np.asarray(given_perms, dtype=np.int32)
        return Stream("given", given.shape[0], n, False, given=given), False
    if given_signs is not None:
        given = np.asarray(given_signs, dtype=np.int8)
        return Stream("given", given.shape[0], n, True, given=given), False
    sign_flip = model.sign_flip or scheme == "sign_flip"
    if sign_flip:
        if n < 63 and 2**n - 1 <= n_perm:
            return Stream("signs", 2**n - 1, n, True), True
    else:
        total = n_arrangements(model.rows, groups, at_most=n_perm + 1)
        if total - 1 <= n_perm:
            return Stream("arrangements", total - 1, n, False, groups=groups,
                          rows=model.rows), True
    return Stream("random", n_perm, n, sign_flip, random_state=random_state,
                  groups=groups), False


def _partitioned(X, c, cname, two_sided):
    """The design split for the contrast (:func:`partition`); an F test is never two-sided."""
    model = partition(X, c)
    if model.stat_type == "F" and two_sided:
        raise ParameterError(
            f"two_sided=True has no meaning for the F test of {cname!r}: F grows with effects "
            "of either sign already; leave two_sided false")
    return model


def _uncancelled_confounds(model, sign_flip: bool) -> np.ndarray:
    """The confound columns that the permutations do not cancel (a permutation leaves the
    constant direction of the residuals at zero; a sign flip does not)."""
    return model.z_all[:, 1:] if (model.has_const and not sign_flip) else model.z_all


def _draw(random_state, n_perm, n, sign_flip, groups):
    """The ``n_perm`` permutations (or signs) :func:`permutation_test` draws from
    ``random_state`` (the tests' hook): ``(perms, None)`` or ``(None, signs)``."""
    return Stream("random", n_perm, n, sign_flip, random_state=random_state,
                  groups=groups).block(0, n_perm)


def _assemble(specs, model, fit, ctx, observed, obs_max, counts, null, blocking, *,
              cname, n_perm, two_sided, scheme, sign_flip, exact, random_state,
              cluster_threshold, connectivity, dtype, groups, elapsed, accel
              ) -> PermutationResult:
    """p-values from the null maxima and counts, and the result object."""
    null_max = {spec.name: np.concatenate([[obs_max[spec.name]], null[spec.name]]).astype(
        np.float64, copy=False) for spec in specs}
    logp_fwer, tails = _fwer_logp(specs, observed, null_max, two_sided, TIE_RTOL[dtype], accel)
    if model.stat_type == "F":  # sqrt(F) -> F for the voxel statistic (monotonic: p unchanged)
        observed["voxel"] = observed["voxel"] ** 2
        null_max = {k: v**2 if k == "voxel" else v for k, v in null_max.items()}
    used = ctx.used()
    return PermutationResult(
        t=observed["voxel"],
        logp_uncorrected=logp_from_p(np.where(fit.valid, (1.0 + counts) / (1.0 + n_perm), 1.0)),
        logp_fwer=logp_fwer, null_max=null_max, observed=observed, random_state=random_state,
        n_perm=n_perm,
        two_sided=bool(two_sided), statistics=tuple(spec.name for spec in specs),
        scheme=scheme, method="sign_flip" if sign_flip else "permutation", dof=model.dof,
        contrast=cname, cluster_forming_t=used.get("cluster_t"),
        cluster_threshold=float(cluster_threshold) if "cluster_t" in used else None,
        connectivity=int(connectivity),
        tfce_params=dict(used["tfce"], connectivity=connectivity) if "tfce" in used else None,
        elapsed=elapsed,
        stat_type=model.stat_type, exact=exact, accel=accel,
        info={**blocking, "dtype": dtype, "n_valid_voxels": int(fit.valid.sum()),
              "exchangeability_blocks": None if groups is None else int(len(pd.unique(groups))),
              **({"tail": tails} if accel else {})},
    )


def _observed_fit(source, model, scheme, two_sided, specs, dtype, n_jobs=1):
    """The observed fit, its residuals kept whole for spatial statistics, in chunks for voxel
    statistics, or not kept (streamed: see :func:`glmkit.stats.engine.resident`)."""
    return observed_fit(source, model, scheme, two_sided, TIE_RTOL[dtype], dtype=dtype,
                        keep=resident(source, specs, dtype),
                        whole=any(spec.null_max is not None for spec in specs), n_jobs=n_jobs)


# ----------------------------------------------------------------------------- entry point
@checked_arguments(Y="array", design="design", statistics="names", cluster_threshold="number",
                   two_sided="flag", verbose="flag")
def permutation_test(
    Y, design, contrast, *, n_perm: int = 10000, two_sided: bool = False,
    statistics=("voxel",), mask_img=None, cluster_threshold: float = 0.001, tfce=None,
    connectivity: int = 6, scheme: str = "freedman_lane", groups=None,
    random_state: int | None = None, n_jobs: int = 1, dtype: str = "float64",
    accel: str | None = None, verbose: bool = True, _permutations: np.ndarray | None = None,
    _signs: np.ndarray | None = None,
) -> PermutationResult:
    """Permutation (or sign-flip) test of one contrast with FWER control.

    Parameters
    ----------
    Y : array-like or numpy memmap, shape (n_subjects, n_voxels)
        Masked data, one row per subject (no NaN), any real dtype. Never copied whole: it is
        residualised chunk by chunk of voxels; a memmap (``np.load(path, mmap_mode="r")``)
        is read from its file block by block, and with voxel statistics only (max-T, max-F)
        its residuals are not held in memory either, so memory stays bounded whatever the
        cohort's size.
    design : DataFrame, glmkit Design, or array of shape (n_subjects, p)
        Full-rank design matrix (include the intercept column yourself).
    contrast : str, array-like of length p, or (q, p) matrix
        Column name or expression (DataFrame design), contrast vector, or several rows for an
        F test (max-F; spatial statistics on sqrt(F)).
    n_perm : int, default 10000
        Number of permutations (the observed data count as one more). When all distinct
        permutations or sign flips number at most ``n_perm``, all are enumerated instead (an
        exact test; ``result.exact``).
    two_sided : bool, default False
        Test ``|t|`` (two-sided clusters/TFCE take positive and negative parts separately).
    statistics : str or sequence of str
        Statistics whose FWER-corrected p-values are computed: names registered in
        :mod:`glmkit.stats.statistics` (built in: ``"voxel"``, ``"cluster_size"``,
        ``"cluster_mass"``, ``"tfce"``).
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
    scheme : {"freedman_lane", "ter_braak", "sign_flip"}, default "freedman_lane"
        Which residuals are permuted: those of the reduced model (Freedman-Lane: the scheme
        of nilearn's ``permuted_ols``, FSL randomise and PALM, and the one Winkler et al.
        2014 recommend) or those of the full model (ter Braak). The two coincide when the
        design has no nuisance regressor besides what the contrast leaves out.
        ``"sign_flip"`` flips the signs of the reduced model's residuals instead of
        permuting them (independent symmetric errors, PALM's ``-ise``); one-sample tests
        always sign-flip.
    groups : array-like of length n_subjects, optional
        Exchangeability blocks: permutations stay within blocks (sign flips are per subject).
    random_state : int or None
        Seed of every permutation; ``None`` draws one from entropy and records it.
    n_jobs : int, default 1
        joblib workers (threads by default; ``joblib.parallel_config(backend="dask")`` etc.
        is honoured). The result does not depend on it: BLAS is single-threaded inside each
        block, so ``n_jobs=1`` uses one core.
    dtype : {"float64", "float32"}
        Precision of the permuted statistics (observed ones are always float64); float64
        max-T may run float32 GEMMs re-checked in float64 (``result.info["gemm"]``).
    accel : {None, "tail"}
        ``"tail"``: tail acceleration (Winkler et al. 2016, PALM's ``-accel tail``): FWER
        p-values below 0.1 come from a generalised Pareto fit to the upper tail of each
        statistic's null maxima, so few permutations give p-values below ``1 / (n_perm +
        1)``; see :mod:`glmkit.stats.tail` and ``result.info["tail"]``.
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
    n_perm, random_state = _check_options(
        n_perm=n_perm, scheme=scheme, dtype=dtype, connectivity=connectivity, n_jobs=n_jobs,
        cluster_threshold=cluster_threshold, random_state=random_state, accel=accel)
    specs = _as_statistics(statistics, tfce)
    tfce_params = check_tfce(tfce)
    source = _check_data(Y)
    n, V = source.shape
    X, c, cname = _design_matrix(design, contrast, n)
    groups = _check_groups(groups, n)
    mask = _spatial_mask(specs, mask_img, V)
    _check_given(_permutations if _permutations is not None else _signs, n_perm)

    model = _partitioned(X, c, cname, two_sided)
    fit = _observed_fit(source, model, scheme, two_sided, specs, dtype, n_jobs)
    ctx = StatContext(dof=model.dof, two_sided=two_sided, mask=mask, connectivity=connectivity,
                      cluster_threshold=cluster_threshold, tfce_params=tfce_params,
                      stat_type=model.stat_type, df1=model.q)
    observed, obs_max = _observed_statistics(specs, fit.t, ctx)

    stream, exact = _draws(random_state, n_perm, n, model, scheme, groups, _permutations,
                           _signs)
    sign_flip, n_perm = stream.sign_flip, stream.n_perm
    counts, null, blocking = permute_blocks(
        fit, model, _uncancelled_confounds(model, sign_flip), specs, ctx, stream,
        source=source, scheme=scheme, dtype=dtype, n_jobs=n_jobs, verbose=verbose)

    return _assemble(specs, model, fit, ctx, observed, obs_max, counts, null, blocking,
                     cname=cname, n_perm=n_perm, two_sided=two_sided, scheme=scheme,
                     sign_flip=sign_flip, exact=exact, random_state=random_state,
                     cluster_threshold=cluster_threshold, connectivity=connectivity,
                     dtype=dtype, groups=groups, elapsed=time.perf_counter() - t_start,
                     accel=accel)

