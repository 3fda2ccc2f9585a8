"""Mass-univariate second-level GLM: OLS on arrays, images only at the edges.

The statistics (:func:`ols_fit`, contrasts, t/F, p, z) are plain NumPy/SciPy on
``(n_subjects, n_voxels)`` arrays. :func:`fit_second_level` is the image edge: it
masks and smooths the subject maps exactly as nilearn's ``SecondLevelModel``
does (a :class:`~nilearn.maskers.NiftiMasker` fitted on the mean of the maps,
with nilearn's default ``"background"`` mask strategy, smoothing applied by the
masker), so glmkit's maps equal nilearn's to floating-point precision.

Numerical conventions (same as nilearn unless stated):

- ``dof = n_subjects - rank(X)``; ``beta = pinv(X) @ Y``;
  ``sigma2 = RSS / dof``.
- t contrast ``c``: ``effect = c @ beta``, ``variance = c (X'X)^+ c' * sigma2``,
  ``t = effect / sqrt(max(variance, 1e-50))`` (nilearn's floor). A voxel whose
  residuals are at rounding level (constant across subjects) has ``sigma2 = 0``
  and the test is undefined: glmkit reports stat 0 (t: z 0, p 0.5; F: p 1 and
  nilearn's z for F = 0, -37.05) and logs how many such voxels there are;
  nilearn returns rounding noise there.
- ``p`` is one-sided (upper tail), as nilearn's ``p_value``; ``p_two_sided``
  is also provided. Both are clipped below at ``np.finfo(float).tiny`` so
  ``-log10 p`` is finite.
- ``z`` is the standard-normal quantile of the same tail probability: where
  ``p >= 1e-300`` it equals nilearn's value; beyond (where nilearn saturates at
  z = 37.04) glmkit computes ``log p`` exactly from the incomplete-beta continued
  fraction and inverts the normal tail in log space, so z stays finite and
  strictly monotone in t. ``logp`` (``-log10 p``) uses the same exact log.

Contrast specifications are parsed in :mod:`glmkit.stats.contrast` (:func:`contrast_vector` is
re-exported here) and the exact tails and z scores live in :mod:`glmkit.stats.pvalues`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, stats

from glmkit.stats.contrast import contrast_vector, parse_contrast
from glmkit.stats.pvalues import P_FLOOR, log_sf_f, log_sf_t, logp_from_log, z_scores
from glmkit._util import logger, map_header_problem
from glmkit.errors import checked_arguments
from glmkit.errors import (
    ContrastError,
    DataFileNotFoundError,
    DatasetError,
    DesignError,
    ImageError,
    ParameterError,
)

__all__ = [
    "OLSFit",
    "ContrastResult",
    "SecondLevelResult",
    "ols_fit",
    "compute_contrast",
    "contrast_vector",
    "fit_second_level",
]

#: floor of the contrast variance (nilearn's ``DEF_TINY``)
VARIANCE_FLOOR = 1e-50

MAP_KINDS = ("stat", "z", "p", "p_two_sided", "effect", "variance", "logp")


# --------------------------------------------------------------------------- OLS
def zero_residual_variance(rss, scale, n: int) -> np.ndarray:
    """Voxels whose residual sum of squares ``rss`` is at rounding level for data of
    magnitude ``scale`` (``max |Y|`` per voxel) and ``n`` subjects: data constant across
    subjects, or fitted exactly by the design. Their variance is 0 and the test undefined;
    contrasts (and :func:`glmkit.stats.permutation.permutation_test`) report stat 0 there."""
    return np.asarray(rss) <= zero_variance_level(scale, n)


def zero_variance_level(scale, n: int):
    """The residual sum of squares at or below which :func:`zero_residual_variance` holds."""
    return n * (64 * np.finfo(float).eps * np.asarray(scale)) ** 2


@dataclass(frozen=True, eq=False)
class OLSFit:
    """Ordinary least squares fit of every voxel.

    Attributes
    ----------
    beta : ndarray, shape (p, n_voxels)
        Parameter estimates.
    sigma2 : ndarray, shape (n_voxels,)
        Residual variance ``RSS / dof``.
    dof : int
        Residual degrees of freedom ``n - rank(X)``.
    rank : int
        Rank of the design.
    X : ndarray, shape (n, p)
        The design.
    cov_unscaled : ndarray, shape (p, p)
        ``pinv(X) pinv(X)'`` = ``(X'X)^+``.
    columns : tuple of str
        Column names of the design (``x0, x1, ...`` when not given).
    zero_variance : ndarray of bool, shape (n_voxels,)
        Voxels whose residuals are at rounding level (``sigma2`` set to 0);
        every contrast reports stat 0 there (see the module notes).
    levels : dict
        Categorical factors of the design (factor -> {level: column or None}), so that
        contrasts may name levels (:attr:`glmkit.stats.design.Design.levels`).
    """

    beta: np.ndarray
    sigma2: np.ndarray
    dof: int
    rank: int
    X: np.ndarray
    cov_unscaled: np.ndarray
    columns: tuple[str, ...]
    zero_variance: np.ndarray
    levels: dict = field(default_factory=dict)

    @property
    def n_voxels(self) -> int:
        return int(self.beta.shape[1])

    def summary(self) -> str:
        n, p = self.X.shape
        return (
            f"OLS fit: {n} subjects x {p} regressors ({', '.join(self.columns)}), "
            f"rank {self.rank}, dof {self.dof}, {self.n_voxels} voxels"
        )


@checked_arguments(Y="array", X="array", columns="names?")
def ols_fit(Y: Any, X: Any, *, columns: Sequence[str] | None = None) -> OLSFit:
    """Fit ``Y = X beta + e`` by ordinary least squares, one column of Y per voxel.

    Parameters
    ----------
    Y : array-like, shape (n_subjects, n_voxels)
        Data (a 1-D array is one voxel).
    X : array-like or DataFrame, shape (n_subjects, p)
        Design; a DataFrame gives the column names.
    columns : sequence of str, optional
        Column names (default: DataFrame columns or ``x0, x1, ...``).

    Returns
    -------
    OLSFit

    Examples
    --------
    >>> import numpy as np
    >>> X = np.c_[np.arange(5.0), np.ones(5)]
    >>> fit = ols_fit(2 * X[:, :1] + 1, X)
    >>> np.round(fit.beta.ravel(), 6).tolist(), fit.dof
    ([2.0, 1.0], 3)
    """
    X_frame = X
    if isinstance(X, pd.DataFrame):
        columns = tuple(str(c) for c in X.columns) if columns is None else columns
        X = X.to_numpy(dtype=float)
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or Y.ndim != 2:
        raise DesignError(
            f"ols_fit expects Y (n_subjects, n_voxels) and X (n_subjects, p); "
            f"got Y {Y.shape} and X {X.shape}."
        )
    if X.shape[0] != Y.shape[0]:
        raise DesignError(
            f"design X has {X.shape[0]} rows but Y has {Y.shape[0]} subjects; "
            "they must match (one design row per subject map)."
        )
    if not np.all(np.isfinite(X)):
        raise DesignError("design X holds NaN or infinite values; drop or impute them first.")
    if not np.all(np.isfinite(Y)):
        raise ImageError("data Y holds NaN or infinite values; remove them first (run QC, or "
                         "mask them out).")
    columns = tuple(columns) if columns is not None else tuple(f"x{i}" for i in range(X.shape[1]))
    if len(columns) != X.shape[1]:
        raise DesignError(
            f"{len(columns)} column names given for a design with {X.shape[1]} columns."
        )
    n = X.shape[0]
    pinv = linalg.pinv(X)
    eps = np.abs(X).sum() * np.finfo(np.float64).eps  # nilearn's rank tolerance
    rank = int(np.linalg.matrix_rank(X, eps))
    dof = n - rank
    if dof < 1:
        raise DesignError(
            f"design has rank {rank} with {n} subjects: no residual degrees of freedom; "
            "use fewer regressors or more subjects."
        )
    beta = pinv @ Y
    resid = Y - X @ beta
    rss = np.sum(resid**2, axis=0)
    zero_variance = zero_residual_variance(rss, np.max(np.abs(Y), axis=0), n)
    if np.any(zero_variance):
        logger.warning(
            "%d voxel(s) have zero residual variance (e.g. constant across subjects); "
            "their statistics are set to 0",
            int(zero_variance.sum()),
        )
    sigma2 = np.where(zero_variance, 0.0, rss / dof)
    return OLSFit(
        beta=beta,
        sigma2=sigma2,
        dof=dof,
        rank=rank,
        X=X,
        cov_unscaled=pinv @ pinv.T,
        columns=columns,
        zero_variance=zero_variance,
        levels=dict(getattr(X_frame, "attrs", {}).get("levels", {})),
    )


# ------------------------------------------------------------- contrast result
@dataclass(frozen=True, eq=False)
class ContrastResult:
    """A t or F contrast on every voxel (1-D arrays over the mask).

    Attributes
    ----------
    name : str
        The contrast as given (column name, expression) or its weights.
    stat_type : {"t", "F"}
    contrast : ndarray
        Weights, shape (p,) for t and (q, p) for F.
    stat, z, p, p_two_sided, logp : ndarray, shape (n_voxels,)
        Statistic, z score, one-sided (upper-tail) p as nilearn, two-sided p
        (equals p for F), and exact ``-log10 p`` (one-sided). p never 0, no NaN.
    effect : ndarray
        ``c @ beta``: shape (n_voxels,) for t, (q, n_voxels) for F.
    variance : ndarray, shape (n_voxels,)
        For t, the variance of the effect; for F, the residual variance
        (nilearn's convention for both).
    dof : int
        Residual degrees of freedom.
    masker : NiftiMasker or None
        Used by :meth:`to_nifti`.
    """

    name: str
    stat_type: str
    contrast: np.ndarray
    stat: np.ndarray
    z: np.ndarray
    p: np.ndarray
    p_two_sided: np.ndarray
    logp: np.ndarray
    effect: np.ndarray
    variance: np.ndarray
    dof: int
    masker: Any = field(default=None, repr=False)

    @property
    def mask_img(self):
        return None if self.masker is None else self.masker.mask_img_

    def get(self, kind: str) -> np.ndarray:
        """The 1-D array of ``kind`` (one of ``MAP_KINDS``)."""
        if kind not in MAP_KINDS:
            raise ParameterError(f"kind must be one of {list(MAP_KINDS)}; got {kind!r}.")
        return getattr(self, kind)

    def to_nifti(self, kind: str = "z"):
        """The map ``kind`` (stat, z, p, p_two_sided, effect, variance, logp) as a NIfTI image."""
        arr = self.get(kind)
        if self.masker is None:
            raise ParameterError(
                "this ContrastResult has no masker (computed from arrays); unmask the arrays "
                "yourself "
                "or use fit_second_level."
            )
        return self.masker.inverse_transform(arr)

    def to_frame(self) -> pd.DataFrame:
        """One row per voxel: stat, z, p, p_two_sided, logp, effect (t only), variance."""
        data = {k: getattr(self, k) for k in ("stat", "z", "p", "p_two_sided", "logp", "variance")}
        if self.effect.ndim == 1:
            data["effect"] = self.effect
        return pd.DataFrame(data)

    def summary(self) -> str:
        i = int(np.argmax(self.z))
        return (
            f"{self.stat_type} contrast {self.name!r}: {self.stat.size} voxels, dof {self.dof}; "
            f"max z {self.z[i]:.3f} (p = {self.p[i]:.3g}); "
            f"{int(np.sum(self.p < 0.001))} voxels with p < 0.001 (uncorrected, one-sided)"
        )


@checked_arguments(stat_type="text", name="text?")
def compute_contrast(
    fit: OLSFit, contrast: Any, *, stat_type: str = "t", masker: Any = None, name: str | None = None
) -> ContrastResult:
    """t or F contrast on an :class:`OLSFit` (arrays only).

    Parameters
    ----------
    fit : OLSFit
    contrast : str, vector, matrix or list of str
        See :func:`contrast_vector`.
    stat_type : {"t", "F"}
    masker : fitted NiftiMasker, optional
        Stored for :meth:`ContrastResult.to_nifti`.
    name : str, optional
        Name of the contrast (default: the string given, or the weights).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.c_[rng.normal(size=20), np.ones(20)]
    >>> fit = ols_fit(rng.normal(size=(20, 3)), X, columns=["a", "intercept"])
    >>> t = compute_contrast(fit, "a")
    >>> f = compute_contrast(fit, [[1, 0]], stat_type="F")
    >>> bool(np.allclose(t.stat**2, f.stat))
    True
    """
    if stat_type not in ("t", "F"):
        raise ParameterError(f"stat_type must be 't' or 'F'; got {stat_type!r}.")
    if not isinstance(fit, OLSFit):
        raise ParameterError(f"fit must be an OLSFit (from ols_fit, or a SecondLevelResult's "
                             f".fit); found {type(fit).__name__}")
    parsed = parse_contrast(contrast)
    # estimable with fit.X (level names allowed), or an error
    con = contrast_vector(parsed, fit.columns, X=fit.X, levels=fit.levels)
    name = parsed.name if name is None else name
    if stat_type == "t" and con.ndim == 2:
        raise ContrastError(
            f"contrast {name!r} has {con.shape[0]} rows: a t contrast takes one row; "
            "pass stat_type='F' for a multi-row contrast."
        )
    C = np.atleast_2d(con)
    dof = fit.dof
    if stat_type == "t":
        effect = (C @ fit.beta)[0]
        variance = float(C[0] @ fit.cov_unscaled @ C[0]) * fit.sigma2
        stat = effect / np.sqrt(np.maximum(variance, VARIANCE_FLOOR))
        stat[fit.zero_variance] = 0.0
        stat = np.clip(stat, -np.finfo(float).max, np.finfo(float).max)
        p_upper = stats.t.sf(stat, dof)
        p_lower = stats.t.cdf(stat, dof)
        log_upper = log_sf_t(stat, dof)
        log_lower = log_sf_t(-stat, dof)
    else:
        q = C.shape[0]
        V = C @ fit.cov_unscaled @ C.T
        if np.linalg.matrix_rank(V) < q:
            raise ContrastError(
                f"F contrast {name!r} has linearly dependent rows (rank "
                f"{np.linalg.matrix_rank(V)} < {q}); "
                "drop the redundant rows."
            )
        effect = C @ fit.beta
        variance = fit.sigma2
        quad = np.sum(effect * np.linalg.solve(V, effect), axis=0)
        stat = quad / q / np.maximum(variance, VARIANCE_FLOOR)
        stat[fit.zero_variance] = 0.0
        stat = np.minimum(stat, np.finfo(float).max)
        p_upper = stats.f.sf(stat, q, dof)
        p_lower = stats.f.cdf(stat, q, dof)
        log_upper = log_sf_f(stat, q, dof)
        with np.errstate(divide="ignore"):
            log_lower = np.log(p_lower)
    z = z_scores(p_upper, p_lower, log_upper, log_lower)
    p = np.maximum(p_upper, P_FLOOR)
    if stat_type == "t":
        log_two = np.log(2.0) + np.minimum(log_upper, log_lower)
        p_two = np.clip(np.exp(log_two), P_FLOOR, 1.0)
    else:
        p_two = p
    logp = logp_from_log(log_upper)
    return ContrastResult(
        name=str(name),
        stat_type=stat_type,
        contrast=con,
        stat=stat,
        z=z,
        p=p,
        p_two_sided=p_two,
        logp=logp,
        effect=effect,
        variance=variance,
        dof=int(dof),
        masker=masker,
    )


# ------------------------------------------------------------------ image edge
def _design_matrix(design: Any) -> pd.DataFrame:
    matrix = getattr(design, "matrix", design)
    if isinstance(matrix, np.ndarray):
        matrix = pd.DataFrame(
            matrix, columns=[f"x{i}" for i in range(np.atleast_2d(matrix).shape[1])]
        )
    if not isinstance(matrix, pd.DataFrame):
        raise DesignError(
            "design must be a glmkit Design (make_design) or a pandas DataFrame; got "
            f"{type(design).__name__}."
        )
    if matrix.shape[1] == 0 or matrix.shape[0] == 0:
        raise DesignError(f"design matrix is empty (shape {matrix.shape}).")
    bad = [c for c in matrix.columns if not pd.api.types.is_numeric_dtype(matrix[c])]
    if bad:
        raise DesignError(
            f"design columns {bad} are not numeric; encode them (make_design does) first."
        )
    values = matrix.to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        rows = matrix.index[~np.isfinite(values).all(axis=1)].tolist()
        raise DesignError(
            f"design has missing or infinite values in rows {rows[:10]}; drop those subjects or "
            "impute."
        )
    return matrix.astype(float)


def _map_list(maps: Any, matrix: pd.DataFrame) -> tuple[list, tuple[str, ...] | None]:
    """The maps in design row order (aligned by subject id when maps is a Dataset)."""
    subjects = None
    if hasattr(maps, "maps") and hasattr(maps, "table"):  # a glmkit Dataset
        ds_subjects = [str(s) for s in maps.table["subject"]]
        paths = list(maps.maps)
        index = [str(s) for s in matrix.index]
        if set(index) <= set(ds_subjects) and len(set(index)) == len(index):
            lookup = dict(zip(ds_subjects, paths, strict=True))
            return [lookup[s] for s in index], tuple(index)
        if len(paths) == len(index):
            logger.warning(
                "design index does not hold the dataset's subject ids; maps are taken in dataset "
                "order."
            )
            return paths, tuple(ds_subjects)
        missing = [s for s in index if s not in set(ds_subjects)]
        raise DatasetError(
            f"design has {len(index)} rows but the dataset has {len(paths)} maps, and design "
            "subjects "
            f"{missing[:5]} are not in the dataset; build the design from the same (QC-kept) "
            "dataset."
        )
    if isinstance(maps, (str, os.PathLike)) or not isinstance(maps, Sequence):
        raise ImageError(
            f"maps must be a list of 3-D images or paths (one per design row) or a Dataset; "
            f"got {type(maps).__name__}."
        )
    maps = list(maps)
    if len(maps) != matrix.shape[0]:
        raise DatasetError(
            f"design has {matrix.shape[0]} rows but {len(maps)} maps were given; "
            "pass one design row per map, in the same order."
        )
    return maps, subjects


def _load_images(maps: list) -> list:
    """Check every map (exists, 3-D, one grid) and load it once into memory.

    nilearn re-reads path inputs several times (mean image, then masking);
    loading once makes the fit several times faster and changes no value.
    """
    import nibabel as nib

    loaded = []
    grids: dict = {}
    for i, m in enumerate(maps):
        if isinstance(m, (str, os.PathLike)):
            if not os.path.exists(m):
                raise DataFileNotFoundError(
                    f"map {i} ({m}) does not exist; check the dataset folder."
                )
            try:
                img = nib.load(m)
            except Exception as exc:  # nibabel raises several types
                raise ImageError(f"map {i} ({m}) cannot be read as an image: {exc}") from None
        elif isinstance(m, nib.spatialimages.SpatialImage):
            img = m
        else:
            raise ImageError(f"map {i} is a {type(m).__name__}; expected a NIfTI image or a path.")
        problem = map_header_problem(img)
        if problem:
            raise ImageError(f"map {i} ({m if isinstance(m, (str, os.PathLike)) else 'image'}): "
                             f"{problem}.")
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise ImageError(f"map {i} has shape {img.shape}; expected one 3-D image per subject.")
        grids.setdefault("first", (tuple(shape), img.affine))
        ref_shape, ref_affine = grids["first"]
        if tuple(shape) != ref_shape or not np.allclose(img.affine, ref_affine, atol=1e-4):
            raise ImageError(
                f"maps are not all on the same grid (shape/affine of map {i} differ from map 0); "
                "resample them to one grid with nilearn.image.resample_to_img, or run with "
                "on_grid_mismatch='resample'."
            )
        # one affine for all (they agree within 1e-4 mm, rounding of different exporters)
        if not isinstance(img, nib.Nifti1Image):  # Analyze: nilearn's maskers take NIfTI only
            img = nib.Nifti1Image(np.asarray(img.dataobj), ref_affine)
        elif isinstance(m, (str, os.PathLike)) or not np.array_equal(img.affine, ref_affine):
            img = img.__class__(np.asarray(img.dataobj), ref_affine, img.header)
        loaded.append(img)
    return loaded


@dataclass(frozen=True, eq=False)
class SecondLevelResult:
    """A fitted second-level model.

    Attributes
    ----------
    Y : ndarray, shape (n_subjects, n_voxels)
        Masked (and smoothed) data.
    design : Design or DataFrame
        The design as given.
    design_matrix : DataFrame
        Its matrix (rows = subjects, in ``Y`` order).
    mask_img : Nifti1Image
        The analysis mask.
    masker : NiftiMasker
        The fitted masker (same parameters as nilearn's ``SecondLevelModel``).
    smoothing_fwhm : float or None
    fit : OLSFit
    subjects : tuple of str or None
        Subject ids in row order when known.
    """

    Y: np.ndarray
    design: Any
    design_matrix: pd.DataFrame
    mask_img: Any
    masker: Any
    smoothing_fwhm: float | None
    fit: OLSFit
    subjects: tuple[str, ...] | None = None

    def compute_contrast(
        self, contrast: Any, *, stat_type: str = "t", name: str | None = None
    ) -> ContrastResult:
        """t or F contrast by column name, expression, vector or matrix (see "
        ":func:`contrast_vector`)."""
        return compute_contrast(
            self.fit, contrast, stat_type=stat_type, masker=self.masker, name=name
        )

    def unmask(self, array: Any):
        """A 1-D (n_voxels,) or 2-D (k, n_voxels) array as a NIfTI image on the mask's grid."""
        arr = np.asarray(array)
        if arr.shape[-1] != self.Y.shape[1]:
            raise ParameterError(
                f"array has {arr.shape[-1]} values per map but the mask has {self.Y.shape[1]} "
                "voxels."
            )
        return self.masker.inverse_transform(arr)

    def summary(self) -> str:
        sm = (
            "no smoothing"
            if not self.smoothing_fwhm
            else f"smoothing {self.smoothing_fwhm} mm FWHM"
        )
        return (
            f"Second-level model: {self.Y.shape[0]} maps, {self.Y.shape[1]} voxels in mask, {sm}. "
            + self.fit.summary()
        )


@checked_arguments(mask_img="image?")
def fit_second_level(
    maps: Any,
    design: Any,
    *,
    mask_img: Any = None,
    smoothing_fwhm: float | None = None,
) -> SecondLevelResult:
    """Mask, smooth and fit the subject maps, as nilearn's ``SecondLevelModel``.

    Parameters
    ----------
    maps : list of paths or 3-D images, or Dataset
        One map per design row, in design row order. A glmkit ``Dataset`` is
        aligned by subject id when the design's index holds the subject ids.
    design : Design or DataFrame
        The design (``Design.matrix`` is used).
    mask_img : Nifti1Image or path, optional
        Analysis mask. Default: computed from the mean of the maps with
        nilearn's ``NiftiMasker`` default strategy ("background"), as
        ``SecondLevelModel`` does.
    smoothing_fwhm : float, optional
        Gaussian smoothing (mm FWHM), applied by the masker to every map.

    Returns
    -------
    SecondLevelResult

    Examples
    --------
    >>> import numpy as np, nibabel as nib, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=12)
    >>> maps = [nib.Nifti1Image(rng.normal(size=(6, 6, 6)) + v, np.eye(4)) for v in x]
    >>> design = pd.DataFrame({"x": x, "intercept": 1.0})
    >>> model = fit_second_level(maps, design)
    >>> res = model.compute_contrast("x")
    >>> res.dof, res.to_nifti("z").shape
    (10, (6, 6, 6))
    """
    if smoothing_fwhm is not None:
        if (
            isinstance(smoothing_fwhm, bool)
            or not isinstance(smoothing_fwhm, (int, float, np.number))
            or not (np.isfinite(smoothing_fwhm) and smoothing_fwhm >= 0)
        ):
            raise ParameterError(
                f"smoothing_fwhm must be None or a finite number >= 0 (mm); got {smoothing_fwhm!r}."
            )
        smoothing_fwhm = float(smoothing_fwhm)
    matrix = _design_matrix(design)
    maps, subjects = _map_list(maps, matrix)
    if subjects is None and not pd.api.types.is_numeric_dtype(matrix.index):
        subjects = tuple(str(s) for s in matrix.index)
    if matrix.shape[0] <= np.linalg.matrix_rank(matrix.to_numpy()):
        raise DesignError(
            f"design has {matrix.shape[0]} rows and rank "
            f"{np.linalg.matrix_rank(matrix.to_numpy())}: "
            "no residual degrees of freedom; use more subjects or fewer columns."
        )
    maps = _load_images(maps)
    if (
        mask_img is not None
        and isinstance(mask_img, (str, os.PathLike))
        and not os.path.exists(mask_img)
    ):
        raise DataFileNotFoundError(f"mask_img {mask_img} does not exist.")

    from nilearn.image import mean_img
    from nilearn.maskers import NiftiMasker

    logger.info("fitting second-level model on %d maps", len(maps))
    sample_map = mean_img(maps)
    masker = NiftiMasker(
        mask_img=mask_img, smoothing_fwhm=smoothing_fwhm, standardize=None, reports=False
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Generation of a mask.*")
        masker.fit(sample_map)
    Y = masker.transform(maps)
    if Y.shape[1] == 0:
        raise ImageError(
            "the mask is empty: no voxel to analyse; check mask_img or the maps' values."
        )
    bad = ~np.all(np.isfinite(Y), axis=1)
    if np.any(bad):
        who = [subjects[i] if subjects else i for i in np.flatnonzero(bad)]
        raise ImageError(
            f"maps {who[:10]} have NaN or infinite values inside the mask; run QC first."
        )
    fit = ols_fit(Y, matrix)
    return SecondLevelResult(
        Y=Y,
        design=design,
        design_matrix=matrix,
        mask_img=masker.mask_img_,
        masker=masker,
        smoothing_fwhm=smoothing_fwhm,
        fit=fit,
        subjects=subjects,
    )
