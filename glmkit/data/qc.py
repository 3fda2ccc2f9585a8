"""Quality control of a second-level dataset: every exclusion explained, nothing dropped silently.

:func:`run_qc` checks the subject table and every subject map, one image at a time (memory
stays flat in the number of subjects), and returns a :class:`QCResult`: one row per
(subject, check) with a value, a verdict (``"pass"``, ``"flag"`` or ``"exclude"``) and a
reason in plain words. A :class:`QCPolicy` says which failed checks exclude a subject and
which only flag it.

Checks
------
``missing_value``
    A variable the design uses is missing (NaN / ``n/a``) for the subject.
``non_finite``
    The map holds +/-inf values inside the analysis mask. NaN is *not* a failure: SPM-style
    maps hold NaN outside (and at the edge of) the brain, so NaN is read as "no data" and
    counted by ``coverage``; inf outside the mask is reported but ignored.
``empty_map``
    No finite non-zero value inside the analysis mask.
``constant_map``
    All in-mask voxels with data share one value (a mask or placeholder, not a contrast).
``grid``
    Shape or affine differs from the first map's. An error by default; with
    ``on_grid_mismatch="resample"`` the map is resampled to the first map's grid and flagged.
``unit_change``
    The map's scale (median absolute in-mask value) is ``unit_ratio`` (default 4) times the
    cohort median or more, or as many times less: almost surely another unit (x10, x100,
    x1000, percent signal change). Excludes by default. The rule is set by simulation
    (``tests/test_qc.py``): with subject scales log-normal of SD 0.5 it excludes under 1 % of
    real subjects, and catches every x10, x100 and x1000 unit error of a subject within one
    SD of the typical scale (98 % within two SDs; x100 and x1000 always).
``scale_outlier``
    Robust z of the map's log scale against the cohort (median and MAD) above
    ``scale_z_max``: an unusual but plausible amplitude (real cohorts hold subjects at 3x
    the median, robust z above 6). Flags by default.
``coverage``
    Fraction of analysis-mask voxels where the map has finite, non-zero data.

Integer maps are read through their ``scl_slope``/``scl_inter``; with an intercept, 0 is not
representable and is stored as a tiny value (different in each file), which QC reads as 0.

The ``value`` column holds, per check: the number of missing variables, the number of
in-mask inf voxels, the number of in-mask voxels with data, the in-mask SD, 0/1 (grid differs),
the robust z, and the covered fraction.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from glmkit._util import logger, map_header_problem
from glmkit.errors import checked_arguments
from glmkit.errors import (
    DataFileNotFoundError,
    DatasetError,
    ImageError,
    ParameterError,
    QCError,
)
from glmkit.data.choices import GRID_ACTIONS, POLICY_KEYS

__all__ = [
    "CHECKS",
    "GRID_ACTIONS",
    "QCPolicy",
    "QCResult",
    "run_qc",
    "same_grid",
    "resample_to_grid",
    "scale_checks",
    "DEFAULT_EXCLUDE",
    "POLICY_KEYS",
]

CHECKS = (
    "missing_value",
    "non_finite",
    "empty_map",
    "constant_map",
    "grid",
    "unit_change",
    "scale_outlier",
    "coverage",
)
#: checks that exclude by default: what is almost surely an error; the rest only flag
DEFAULT_EXCLUDE = frozenset(
    {"missing_value", "non_finite", "empty_map", "constant_map", "unit_change"})

_MIN_LOG_SCALE_SD = 0.1  # floor of the cohort's robust SD of log(scale): ~x1.65 at z=5
_MIN_MAPS_FOR_SCALE = 5
_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class QCPolicy:
    """What quality control excludes and what it only flags.

    Parameters
    ----------
    exclude : iterable of str
        Checks whose failure excludes the subject; failures of other checks are flagged
        (reported, subject kept). Default :data:`DEFAULT_EXCLUDE`: what is almost surely an
        error (missing design variables, inf, empty or constant maps, a unit change);
        ``scale_outlier`` and ``coverage`` only flag (a grid mismatch is an error, or a flag
        when resampling is asked for).
    keep : iterable of str
        Subjects kept whatever the map checks say (their failures are flagged "kept by
        request"); a subject missing a design variable cannot be kept.
    scale_z_max : float
        Robust z of log map scale above which (in absolute value) a map is a scale outlier.
    unit_ratio : float
        Ratio of a map's scale to the cohort median (or its inverse) from which the map is
        taken to be in other units (``unit_change``), > 1.
    min_coverage : float
        Fraction (0-1] of the analysis mask a map should cover with finite non-zero data;
        below it ``coverage`` fails (flags by default).
    on_grid_mismatch : {"error", "resample"}
        What to do with a map whose shape/affine differs from the first map's.
    min_subjects : int or None
        Fewest subjects QC may keep; ``None`` means number of design columns
        (variables + intercept) + 2.

    Examples
    --------
    >>> QCPolicy(exclude={"missing_value", "coverage"}).exclude == {"missing_value", "coverage"}
    True
    >>> sorted(QCPolicy.from_mapping({"flag": ["unit_change"], "keep": ["S12"]}).exclude)
    ['constant_map', 'empty_map', 'missing_value', 'non_finite']
    >>> QCPolicy(exclude={"scale"})
    Traceback (most recent call last):
    ...
    glmkit.errors.ParameterError: QCPolicy.exclude: unknown check(s) ['scale']; known checks: ...
    """

    exclude: frozenset[str] = DEFAULT_EXCLUDE
    scale_z_max: float = 5.0
    unit_ratio: float = 4.0
    min_coverage: float = 0.8
    on_grid_mismatch: str = "error"
    min_subjects: int | None = None
    keep: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        exclude = self.exclude
        if isinstance(exclude, str):
            exclude = (exclude,)
        try:
            exclude = frozenset(exclude)
        except TypeError:
            raise ParameterError(
                f"QCPolicy.exclude: expected a set of check names, found {self.exclude!r}"
            ) from None
        unknown = sorted(str(c) for c in exclude - set(CHECKS))
        if unknown:
            raise ParameterError(
                f"QCPolicy.exclude: unknown check(s) {unknown}; known checks: {list(CHECKS)}"
            )
        object.__setattr__(self, "exclude", exclude)
        keep = (self.keep,) if isinstance(self.keep, str) else self.keep
        try:
            keep = frozenset(str(k) for k in keep)
        except TypeError:
            raise ParameterError(
                f"QCPolicy.keep: expected a list of subject ids, found {self.keep!r}"
            ) from None
        object.__setattr__(self, "keep", keep)
        r = self.unit_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (np.isfinite(r) and r > 1):
            raise ParameterError(
                f"QCPolicy.unit_ratio: expected a number > 1 (e.g. 5: a map 5x the cohort "
                f"median or 1/5 of it is in other units), found {r!r}"
            )
        z = self.scale_z_max
        if isinstance(z, bool) or not isinstance(z, (int, float)) or not (np.isfinite(z) and z > 0):
            raise ParameterError(
                f"QCPolicy.scale_z_max: expected a positive finite number (e.g. 5), found {z!r}"
            )
        c = self.min_coverage
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not (0.0 <= c <= 1.0):
            raise ParameterError(
                f"QCPolicy.min_coverage: expected a fraction between 0 and 1 (e.g. 0.9), "
                f"found {c!r}"
            )
        if self.on_grid_mismatch not in GRID_ACTIONS:
            raise ParameterError(
                f"QCPolicy.on_grid_mismatch: expected one of {list(GRID_ACTIONS)}, "
                f"found {self.on_grid_mismatch!r}"
            )
        m = self.min_subjects
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1):
            raise ParameterError(
                f"QCPolicy.min_subjects: expected None or a positive integer, found {m!r}"
            )

    @classmethod
    def from_mapping(cls, mapping=None, **overrides: Any) -> QCPolicy:
        """The policy from the ``qc`` run parameter, e.g. ``{exclude: [missing_value,
        coverage], keep: [S12], min_coverage: 0.7}``.

        ``exclude`` replaces the default list of excluding checks; ``flag`` removes checks
        from it (they only flag); the other keys are the policy's fields. Unknown keys or
        checks raise a ParameterError listing the known ones.
        """
        given = dict(mapping or {})
        unknown = sorted(str(k) for k in given if k not in POLICY_KEYS)
        if unknown:
            raise ParameterError(
                f"qc: unknown key(s) {unknown}; known keys: {list(POLICY_KEYS)} (e.g. "
                "{exclude: [missing_value, coverage], keep: [S12], min_coverage: 0.8})")
        exclude = given.pop("exclude", None)
        flag = given.pop("flag", None)
        checks = set(DEFAULT_EXCLUDE if exclude is None else _names("qc.exclude", exclude))
        if flag is not None:
            flag = _names("qc.flag", flag)
            both = sorted(checks & set(flag)) if exclude is not None else []
            if both:
                raise ParameterError(f"qc: {both} are both in exclude and in flag; name each "
                                     "check in one of them")
            checks -= set(flag)
            unknown = sorted(set(flag) - set(CHECKS))
            if unknown:
                raise ParameterError(f"qc.flag: unknown check(s) {unknown}; known checks: "
                                     f"{list(CHECKS)}")
        if "keep" in given:
            given["keep"] = _names("qc.keep", given["keep"])
        return cls(exclude=frozenset(checks), **given, **overrides)


def _names(key: str, value) -> tuple[str, ...]:
    """A list of names from YAML/CLI (a single name is a list of one)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in value)
    raise ParameterError(f"{key}: expected a list of names, found {value!r}")


@dataclass(frozen=True, eq=False)
class QCResult:
    """Outcome of :func:`run_qc`.

    Attributes
    ----------
    table : pandas.DataFrame
        Columns ``subject, check, value, verdict, reason``: one row per subject and check
        that could be evaluated (the map checks are skipped for an empty map, whose
        ``empty_map`` row says why).
    kept, excluded : tuple of str
        Subject ids, in dataset order.
    policy : QCPolicy
        The policy applied.
    mask_img : nibabel.Nifti1Image or None
        The analysis mask the map checks used (on the first map's grid).
    mask_source : str
        How that mask was chosen.
    resampled : tuple of str
        Subjects whose map was resampled to the reference grid (``on_grid_mismatch="resample"``).
    kept_by_request : tuple of str
        Subjects that an excluding check failed but ``policy.keep`` kept.
    """

    table: pd.DataFrame
    kept: tuple[str, ...]
    excluded: tuple[str, ...]
    policy: QCPolicy
    mask_img: Any = None
    mask_source: str = ""
    resampled: tuple[str, ...] = ()
    kept_by_request: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """A copy of the full QC table (e.g. to save as ``qc.csv``)."""
        return self.table.copy()

    def exclusions(self) -> pd.DataFrame:
        """One row per excluded subject: ``subject``, ``checks`` and ``reasons`` (joined)."""
        rows = self.table[self.table["verdict"] == "exclude"]
        out = (
            rows.groupby("subject", sort=False)
            .agg(checks=("check", ", ".join), reasons=("reason", "; ".join))
            .reset_index()
        )
        order = {s: i for i, s in enumerate(self.excluded)}
        return out.sort_values("subject", key=lambda s: s.map(order)).reset_index(drop=True)

    def flags(self) -> pd.DataFrame:
        """Rows with verdict ``"flag"`` (reported, subject kept)."""
        return self.table[self.table["verdict"] == "flag"].reset_index(drop=True)

    def summary(self) -> str:
        """A few lines: counts, then each excluded and flagged subject with its reasons."""
        n = len(self.kept) + len(self.excluded)
        lines = [f"QC: {n} subjects, kept {len(self.kept)}, excluded {len(self.excluded)}"]
        if self.mask_source:
            lines.append(f"  analysis mask: {self.mask_source}")
        for row in self.exclusions().itertuples(index=False):
            lines.append(f"  excluded {row.subject}: {row.reasons}")
        for row in self.flags().itertuples(index=False):
            lines.append(f"  flagged {row.subject} ({row.check}): {row.reason}")
        if self.kept_by_request:
            lines.append(f"  kept by request (qc keep): {', '.join(self.kept_by_request)}")
        return "\n".join(lines)

    def apply(self, dataset):
        """The dataset restricted to the kept subjects (dataset order kept)."""
        return dataset.subset(self.kept)

    def __repr__(self) -> str:
        return (
            f"QCResult(kept={len(self.kept)}, excluded={list(self.excluded)}, "
            f"checks={sorted(set(self.table['check']))})"
        )


# --------------------------------------------------------------------------- helpers


def _fmt_affine(affine: np.ndarray) -> str:
    rows = ["[" + " ".join(f"{v:8.3f}" for v in row) + "]" for row in np.asarray(affine)[:3]]
    return "\n      ".join(rows)


def load_header(path: str, subject: str):
    """Open a map lazily (header only) and check it holds one 3-D volume."""
    if not os.path.exists(path):
        raise DataFileNotFoundError(
            f"map of subject {subject!r} not found: {path}; check the dataset's maps "
            "(was the file moved or deleted?)"
        )
    try:
        img = nib.load(path)
    except Exception as exc:
        raise ImageError(
            f"map of subject {subject!r} cannot be read as a NIfTI/Analyze image: {path} "
            f"({type(exc).__name__}: {exc}); re-export or replace the file"
        ) from exc
    problem = map_header_problem(img)
    if problem:
        raise ImageError(f"map of subject {subject!r} ({path}): {problem}")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ImageError(
            f"map of subject {subject!r} ({path}) has shape {img.shape}; expected one 3-D "
            "map per subject. Split 4-D files into one volume per subject (e.g. "
            "nilearn.image.index_img, or load_folder, which splits them)"
        )
    return img, tuple(int(s) for s in shape)


def _zero_step(img) -> float:
    """Half the quantisation step of an integer map with ``scl_slope``/``scl_inter``, else 0.

    With an intercept, 0 is not representable: a map written as int16 stores its zeros
    (outside the brain, say) as ``inter + slope * round(-inter / slope)``, a tiny value
    that differs from file to file. Values within half a step of 0 are those zeros.
    """
    dataobj = getattr(img, "dataobj", None)
    if not np.issubdtype(img.get_data_dtype(), np.integer) or dataobj is None:
        return 0.0
    slope, inter = getattr(dataobj, "slope", 1.0), getattr(dataobj, "inter", 0.0)
    if slope is None or inter is None or not np.isfinite(slope) or float(inter) == 0.0:
        return 0.0
    return abs(float(slope)) / 2.0


def _read_data(img) -> np.ndarray:
    try:
        data = img.get_fdata(dtype=np.float64, caching="unchanged")
    except Exception as exc:
        raise ImageError(
            f"image data cannot be read from {img.get_filename()} ({type(exc).__name__}: "
            f"{exc}); the file is probably truncated or corrupt: re-export it"
        ) from exc
    data = data.reshape(data.shape[:3])
    step = _zero_step(img)
    if step:  # the stored zeros of a scaled integer map are zeros
        data[np.abs(data) <= step * (1 + 1e-6)] = 0.0
    return data


@checked_arguments(shape_a="shape", affine_a="affine", shape_b="shape", affine_b="affine")
def same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    """Whether two grids are the same: equal shapes, affines equal within 1e-4 mm."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=1e-4)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _grid_difference(shape, affine, ref_shape, ref_affine) -> str:
    parts = []
    if tuple(shape) != tuple(ref_shape):
        parts.append(f"shape {tuple(shape)} vs {tuple(ref_shape)}")
    diff = float(np.abs(np.asarray(affine) - np.asarray(ref_affine)).max())
    if diff > 1e-4:
        parts.append(f"affines differ by up to {diff:.3g} mm")
    return ", ".join(parts)


def _mni_mask_on_grid(shape, affine) -> np.ndarray | None:
    """MNI152 brain mask resampled (nearest) to the grid, or None if the grid is not MNI-like.

    The grid is MNI-like when its voxels are 1-4 mm and its field of view holds at least
    95% of the MNI brain volume.
    """
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    if not np.all((zooms >= 0.9) & (zooms <= 4.1)):
        return None
    if np.prod(np.asarray(shape) * zooms) < 1.5e6:  # field of view < 1.5 L: cannot hold a brain
        return None
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    mni = load_mni152_brain_mask(resolution=2)
    mni_ml = float((np.asarray(mni.dataobj) > 0).sum()) * 8.0  # 2 mm voxels
    res = resample_img(mni, target_affine=affine, target_shape=shape,
                       interpolation="nearest", force_resample=True, copy_header=True)
    mask = np.asarray(res.dataobj) > 0
    vox_ml = float(np.prod(zooms))
    if mask.sum() * vox_ml < 0.95 * mni_ml:
        return None
    return mask


#: nilearn's interpolations: "continuous" for maps, "nearest" for masks
INTERPOLATIONS = ("continuous", "linear", "nearest")


@checked_arguments(img="image", ref_shape="shape", ref_affine="affine", interpolation="text")
def resample_to_grid(img, ref_shape, ref_affine, *, interpolation: str):
    """``img`` resampled onto the grid ``(ref_shape, ref_affine)`` (nilearn's resample_img).

    ``interpolation`` is ``"continuous"`` for maps (as QC and the fit do) or ``"nearest"``
    for masks.
    """
    from nilearn.image import resample_img

    if interpolation not in INTERPOLATIONS:
        raise ParameterError(f"resample_to_grid(): interpolation={interpolation!r}; use one of "
                             f"{list(INTERPOLATIONS)}")
    with warnings.catch_warnings():
        # SPM-style maps hold NaN outside the brain; nilearn resamples them correctly
        warnings.filterwarnings("ignore", message="NaNs or infinite values are present")
        return resample_img(img, target_affine=ref_affine, target_shape=ref_shape,
                            interpolation=interpolation, force_resample=True, copy_header=True)


def _largest_gap(missing: np.ndarray, affine: np.ndarray) -> tuple[int, np.ndarray]:
    labels, n = ndimage.label(missing)
    if n == 0:
        return 0, np.zeros(3)
    sizes = np.bincount(labels.ravel())[1:]
    big = int(np.argmax(sizes)) + 1
    centre = np.array(ndimage.center_of_mass(missing, labels, big))
    return int(sizes[big - 1]), nib.affines.apply_affine(affine, centre)


# --------------------------------------------------------------------------- run_qc


@checked_arguments(variables="names")
def run_qc(
    dataset,
    *,
    variables: Sequence[str] | str = (),
    mask_img=None,
    policy: QCPolicy | None = None,
) -> QCResult:
    """Check a dataset's table and maps; say who is kept, who is excluded and why.

    Parameters
    ----------
    dataset : Dataset
        Needs ``maps`` (paths, one 3-D map per subject) and ``table`` (column
        ``subject`` plus the variables), in the same order.
    variables : list of str
        Table columns the design will use; a subject missing any of them is reported
        (``missing_value``). They are validated before any image is read.
    mask_img : str, path or Nifti1Image, optional
        The analysis (brain) mask for the map checks; resampled (nearest) to the first
        map's grid if needed. If None, the mask is derived in one extra streaming pass:
        the voxels where at least half of the maps have finite non-zero data (the
        "majority support": unlike the union of supports, one map with data everywhere
        cannot inflate it; unlike the intersection, one map with a missing block cannot
        shrink it, so that map's gap shows up as low coverage). When the grid is MNI-like
        (1-4 mm voxels, field of view containing the MNI brain), this is further
        restricted to the MNI152 brain mask resampled to the grid, so data outside the
        brain (unmasked maps) do not count and, because voxels where the cohort
        systematically has no data (signal dropout, cropped field of view) are left out,
        coverage measures each map against what the cohort covers, not against an ideal
        brain.
    policy : QCPolicy, optional
        Which checks exclude and the thresholds; default ``QCPolicy()``.

    Returns
    -------
    QCResult

    Raises
    ------
    DatasetError
        A variable is not in the table, or maps and table rows disagree in number.
    DataFileNotFoundError, ImageError
        A map is missing, unreadable, not 3-D, or on another grid (with
        ``on_grid_mismatch="error"``); raised before any image data is read.
    QCError
        Fewer subjects are kept than the design needs (the message lists the reasons).

    Examples
    --------
    >>> import numpy as np, nibabel as nib, pandas as pd, tempfile, pathlib
    >>> from types import SimpleNamespace
    >>> tmp = pathlib.Path(tempfile.mkdtemp()); rng = np.random.default_rng(0); maps = []
    >>> for i in range(8):
    ...     data = rng.normal(size=(6, 6, 6)) * (100 if i == 3 else 1)
    ...     nib.save(nib.Nifti1Image(data, np.eye(4)), tmp / f"s{i}.nii.gz")
    ...     maps.append(str(tmp / f"s{i}.nii.gz"))
    >>> table = pd.DataFrame({"subject": [f"s{i}" for i in range(8)],
    ...                       "x": [1.0, np.nan, 2, 3, 4, 5, 6, 7]})
    >>> qc = run_qc(SimpleNamespace(maps=maps, table=table), variables=["x"])
    >>> qc.excluded
    ('s1', 's3')
    >>> print(qc.exclusions()["reasons"][0])
    x is missing (n/a)
    """
    policy, maps, table, subjects, variables = _check_inputs(dataset, variables, policy)
    rows = _Rows(policy)
    _table_checks(table, subjects, variables, rows)  # cheap, first
    grid = _Grid.of(maps, subjects, policy)  # headers only: no voxel data read yet

    def load(i):
        img = nib.load(maps[i])
        if i in grid.mismatched:
            img = resample_to_grid(img, grid.shape, grid.affine, interpolation="continuous")
        return _read_data(img)

    if mask_img is not None:
        mask, mask_source = _user_mask(mask_img, grid.shape, grid.affine)
    else:
        mask, mask_source = _default_mask(load, len(maps), grid.shape, grid.affine)
    logger.info("QC analysis mask: %s (%d voxels)", mask_source, int(mask.sum()))

    log_scales = _map_rows(subjects, load, mask, grid, policy, rows)
    for row in scale_checks(log_scales, policy):
        rows.add(*row)
    result = _assemble(rows, subjects, policy, grid, mask, mask_source)
    for row in result.exclusions().itertuples(index=False):
        logger.info("QC excludes %s: %s", row.subject, row.reasons)
    _check_enough_kept(result, len(variables), len(subjects))
    return result


def _check_inputs(dataset, variables, policy):
    """Validate the policy, the table against the maps, and the variables (no image read).

    Returns ``(policy, maps, table, subjects, variables)``.
    """
    policy = QCPolicy() if policy is None else policy
    if not isinstance(policy, QCPolicy):
        raise ParameterError(f"policy: expected a QCPolicy or None, found {type(policy).__name__}")
    maps = [str(m) for m in getattr(dataset, "maps", ())]
    table = getattr(dataset, "table", None)
    if not isinstance(table, pd.DataFrame) or "subject" not in table.columns:
        raise DatasetError(
            "run_qc: dataset must have a table (DataFrame) with a 'subject' column, found "
            f"{type(table).__name__}"
            + (f" with columns {list(table.columns)}" if isinstance(table, pd.DataFrame) else "")
        )
    if len(maps) != len(table):
        raise DatasetError(
            f"run_qc: {len(maps)} maps but {len(table)} table rows; one row per map expected"
        )
    if len(maps) == 0:
        raise DatasetError("run_qc: the dataset has no subject (0 maps)")
    subjects = table["subject"].astype(str).tolist()
    duplicated = sorted(s for s, k in Counter(subjects).items() if k > 1)
    if duplicated:
        raise DatasetError(
            f"run_qc: subject ids must be unique; duplicated: {duplicated}. Remove or merge "
            "the duplicate rows"
        )
    unknown_keep = sorted(policy.keep - set(subjects))
    if unknown_keep:
        raise DatasetError(
            f"qc keep names subject(s) {unknown_keep[:5]} that are not in the dataset "
            f"({len(subjects)} subjects, e.g. {subjects[:3]}); check the ids or drop them from "
            "keep")
    variables = (variables,) if isinstance(variables, str) else tuple(variables)
    unknown = [v for v in variables if v not in table.columns]
    if unknown:
        raise DatasetError(
            f"run_qc: variable(s) {unknown} not in the table; use its columns: "
            f"{[c for c in table.columns if c != 'subject']}"
        )
    for v in variables:
        if table[v].isna().all():
            raise DatasetError(
                f"run_qc: variable {v!r} is missing (n/a) for all {len(table)} subjects; "
                "check the table (wrong column, failed join?) or leave it out of variables"
            )
    return policy, maps, table, subjects, variables


class _Rows:
    """The QC table being built: one row per (subject, check); the policy turns a failed
    check into ``"exclude"`` or ``"flag"``."""

    def __init__(self, policy: QCPolicy) -> None:
        self.policy = policy
        self.rows: list[dict] = []
        self.kept_by_request: set[str] = set()

    def add(self, subject, check, value, failed, reason) -> None:
        verdict = "pass"
        if failed:
            verdict = "exclude" if check in self.policy.exclude else "flag"
            if verdict == "exclude" and subject in self.policy.keep:
                verdict = "flag"
                reason = f"{reason} [kept by request: qc keep]"
                self.kept_by_request.add(subject)
        self.rows.append(dict(subject=subject, check=check, value=value, verdict=verdict,
                              reason=reason))


def _table_checks(table: pd.DataFrame, subjects: list[str], variables: tuple[str, ...],
                  rows: _Rows) -> None:
    """``missing_value`` rows: the design's variables a subject lacks."""
    for i, subject in enumerate(subjects):
        missing = [v for v in variables if pd.isna(table[v].iloc[i])]
        if missing and subject in rows.policy.keep:
            raise QCError(
                f"qc keep names {subject!r}, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing for it: a subject without a "
                "design variable cannot enter the model; fill the table or leave it out of keep")
        if variables:
            rows.add(subject, "missing_value", float(len(missing)), bool(missing),
                     f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing (n/a)"
                     if missing else f"{', '.join(variables)} present")


@dataclass(frozen=True, eq=False)
class _Grid:
    """The reference grid (the first map's) and the maps that are not on it."""

    shape: tuple[int, ...]
    affine: np.ndarray
    mismatched: frozenset[int]
    order: tuple[int, ...]  # the mismatched maps, in dataset order
    notes: dict[int, str]  # how each mismatched map's grid differs

    @classmethod
    def of(cls, maps: list[str], subjects: list[str], policy: QCPolicy) -> _Grid:
        """Read every header (existence, 3-D, grid); a mismatch is an error unless resampling
        is asked for."""
        headers = [load_header(p, s) for p, s in zip(maps, subjects)]
        ref_img, ref_shape = headers[0]
        ref_affine = ref_img.affine
        mismatched = [
            i for i, (img, shape) in enumerate(headers)
            if not same_grid(shape, img.affine, ref_shape, ref_affine)
        ]
        if mismatched and policy.on_grid_mismatch == "error":
            raise ImageError(_grid_error(headers, mismatched, maps, subjects))
        notes = {i: _grid_difference(headers[i][1], headers[i][0].affine, ref_shape, ref_affine)
                 for i in mismatched}
        return cls(ref_shape, ref_affine, frozenset(mismatched), tuple(mismatched), notes)


def _grid_error(headers, mismatched: list[int], maps: list[str], subjects: list[str]) -> str:
    """Message for maps off the first map's grid: the first three, and how to fix it."""
    ref_img, ref_shape = headers[0]
    shown = mismatched[:3]
    parts = [
        f"  {subjects[i]}: {maps[i]}\n    shape {headers[i][1]}, affine\n      "
        f"{_fmt_affine(headers[i][0].affine)}"
        for i in shown
    ]
    more = f"\n  ... and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""
    return (
        f"{len(mismatched)} map(s) are not on the grid of the first map "
        f"({subjects[0]}: {maps[0]}; shape {ref_shape}, affine\n      "
        f"{_fmt_affine(ref_img.affine)}):\n" + "\n".join(parts) + more
        + "\nResample them to a common grid, or pass "
        "policy=QCPolicy(on_grid_mismatch='resample') to resample them to the first map's "
        "grid"
    )


def _map_rows(subjects, load, mask, grid: _Grid, policy: QCPolicy, rows: _Rows):
    """``grid`` and the per-map checks, one image in memory at a time; the log scale of each
    usable map (subject -> float) for the cohort's scale check."""
    log_scales: dict[str, float] = {}
    for i, subject in enumerate(subjects):
        if i in grid.mismatched:
            rows.add(subject, "grid", 1.0, True,
                     f"map is on another grid than the first map ({grid.notes[i]}); resampled "
                     "to the first map's grid (continuous interpolation)")
        else:
            rows.add(subject, "grid", 0.0, False, "same grid as the first map")
        checks, log_scale = _map_checks(load(i), mask, policy.min_coverage, grid.affine)
        for check, value, failed, reason in checks:
            rows.add(subject, check, value, failed, reason)
        if log_scale is not None:
            log_scales[subject] = log_scale
    return log_scales


def _assemble(rows: _Rows, subjects, policy, grid: _Grid, mask, mask_source) -> QCResult:
    """The QC table sorted by subject (dataset order) then check (``CHECKS`` order)."""
    qc_table = pd.DataFrame(rows.rows, columns=["subject", "check", "value", "verdict", "reason"])
    order = {s: i for i, s in enumerate(subjects)}
    check_order = {c: i for i, c in enumerate(CHECKS)}
    qc_table = qc_table.sort_values(
        ["subject", "check"],
        key=lambda s: s.map(order) if s.name == "subject" else s.map(check_order),
    ).reset_index(drop=True)
    bad = set(qc_table.loc[qc_table["verdict"] == "exclude", "subject"])
    return QCResult(
        table=qc_table,
        kept=tuple(s for s in subjects if s not in bad),
        excluded=tuple(s for s in subjects if s in bad),
        policy=policy,
        mask_img=nib.Nifti1Image(mask.astype(np.uint8), grid.affine),
        mask_source=mask_source,
        resampled=tuple(subjects[i] for i in grid.order),
        kept_by_request=tuple(s for s in subjects if s in rows.kept_by_request),
    )


def _check_enough_kept(result: QCResult, n_variables: int, n_subjects: int) -> None:
    """QCError listing the exclusions when fewer subjects are kept than the design needs."""
    min_subjects = result.policy.min_subjects or n_variables + 3
    if len(result.kept) >= min_subjects:
        return
    reasons = "\n".join(
        f"  {r.subject}: {r.reasons}" for r in result.exclusions().itertuples(index=False)
    )
    hint = ""
    coverage = result.table.query("check == 'coverage'")["verdict"]
    if (coverage == "exclude").mean() > 0.5:
        hint = (f"\nMost maps fail coverage against the analysis mask ({result.mask_source}): "
                "pass a mask that fits the data (mask_img=) or lower min_coverage")
    raise QCError(
        f"QC keeps {len(result.kept)} of {n_subjects} subjects; at least {min_subjects} are "
        f"needed (design columns + 2). Excluded:\n{reasons}{hint}\n"
        "Fix the inputs, or relax the policy (QCPolicy(exclude=...))"
    )


def _default_mask(load, n_maps, shape, affine) -> tuple[np.ndarray, str]:
    """Brain mask from the template (if MNI-like) restricted to where most maps have data."""
    count = np.zeros(shape, dtype=np.int32)
    for i in range(n_maps):  # one streaming pass, one map in memory at a time
        d = load(i)
        count += np.isfinite(d) & (d != 0)
        del d
    support = count >= n_maps / 2.0
    source = "voxels where at least half of the maps have finite non-zero data"
    mni = _mni_mask_on_grid(shape, affine)
    if mni is not None:
        mask = mni & support
        source = ("MNI152 brain mask resampled to the data grid (grid is MNI-like), "
                  "restricted to " + source)
        if mask.sum() < 0.5 * mni.sum():
            logger.warning(
                "QC: only %d of the %d MNI brain-mask voxels hold data in most maps; are the "
                "maps in MNI space? Pass mask_img= to choose the analysis mask",
                int(mask.sum()), int(mni.sum()),
            )
    else:
        mask = support
    if not mask.any():
        raise QCError(
            "run_qc: no voxel has data in at least half of the maps, so no analysis mask can "
            "be derived; pass mask_img=, or check the maps (all empty?)"
        )
    return mask, source


def _map_checks(
    data: np.ndarray, mask: np.ndarray, min_coverage: float, affine: np.ndarray
) -> tuple[list[tuple[str, float, bool, str]], float | None]:
    """Per-map checks on one 3-D array: rows ``(check, value, failed, reason)`` and log scale.

    Checks after ``empty_map`` / ``constant_map`` are skipped when those fail (and the log
    scale is then None: such a map does not enter the cohort's scale statistics).
    """
    rows = []
    n_mask = int(mask.sum())
    n_inf_all = int(np.isinf(data).sum())
    values = data[mask]
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum())
    has_data = np.isfinite(values) & (values != 0)
    n_data = int(has_data.sum())
    nan_note = (f"{n_nan} NaN voxels inside the brain mask, read as no data (see coverage)"
                if n_nan else "no NaN inside the brain mask")
    if n_inf:
        rows.append(("non_finite", float(n_inf), True,
                     f"{_n(n_inf, 'voxel')} inside the brain mask "
                     f"{'is' if n_inf == 1 else 'are'} +/-inf; inf is never valid "
                     "data: re-export the map (or set those voxels to NaN)"))
    elif n_inf_all:
        rows.append(("non_finite", 0.0, False,
                     f"{_n(n_inf_all, '+/-inf voxel')} outside the brain mask (ignored); "
                     f"{nan_note}"))
    else:
        rows.append(("non_finite", 0.0, False, f"no inf; {nan_note}"))
    if n_data == 0:
        outside = data[~mask]
        n_out = int((np.isfinite(outside) & (outside != 0)).sum())
        rows.append(("empty_map", 0.0, True,
                     "map has no finite non-zero value inside the brain mask"
                     + (f" ({n_out} voxels outside it do: wrong space or mask?)" if n_out
                        else " (all 0 or NaN)")))
        return rows, None
    rows.append(("empty_map", float(n_data), False, f"{n_data} in-mask voxels with data"))
    in_data = values[has_data]
    lo, hi = float(in_data.min()), float(in_data.max())
    if lo == hi:
        rows.append(("constant_map", 0.0, True,
                     f"all {n_data} in-mask voxels with data have the same value {lo:.6g}; "
                     "this looks like a mask or placeholder, not a contrast map"))
        return rows, None
    rows.append(("constant_map", float(np.std(in_data)), False,
                 f"values from {lo:.4g} to {hi:.4g}"))
    log_scale = float(np.log(np.median(np.abs(in_data))))

    coverage = n_data / n_mask
    failed = coverage < min_coverage
    reason = f"covers {coverage:.0%} of the brain mask"
    if failed:
        reason += f" (< {min_coverage:.0%} required)"
        missing = np.zeros(mask.shape, dtype=bool)
        missing[mask] = ~has_data
        size, centre = _largest_gap(missing, affine)
        if size >= 0.5 * (n_mask - n_data):
            reason += (
                f"; missing block of coverage ({size} voxels around "
                f"({', '.join(str(round(float(c))) for c in centre)}) mm, 0 or NaN)"
            )
        else:
            reason += "; missing voxels are scattered (0 or NaN)"
    rows.append(("coverage", round(coverage, 4), failed, reason))
    return rows, log_scale


def _user_mask(mask_img, ref_shape, ref_affine) -> tuple[np.ndarray, str]:
    if isinstance(mask_img, (str, os.PathLike)):
        if not os.path.exists(mask_img):
            raise DataFileNotFoundError(f"mask_img not found: {mask_img}")
        img = nib.load(str(mask_img))
        source = f"mask_img {os.fspath(mask_img)}"
    elif isinstance(mask_img, nib.spatialimages.SpatialImage):
        img = mask_img
        source = "mask_img (given)"
    else:
        raise ParameterError(
            f"mask_img: expected a path or a Nifti1Image, found {type(mask_img).__name__}"
        )
    shape = img.shape[:3] if len(img.shape) == 3 or img.shape[3:] == (1,) else None
    if shape is None:
        raise ImageError(f"mask_img must be 3-D, found shape {img.shape}")
    if not same_grid(shape, img.affine, ref_shape, ref_affine):
        img = resample_to_grid(img, ref_shape, ref_affine, interpolation="nearest")
        source += " resampled (nearest) to the data grid"
    data = np.asarray(img.dataobj, dtype=np.float64).reshape(ref_shape)
    mask = np.isfinite(data) & (data > 0)
    if not mask.any():
        raise ImageError(f"mask_img is empty (no voxel > 0 on the data grid): {source}")
    return mask, source


def scale_checks(log_scales: dict[str, float], policy: QCPolicy
                 ) -> list[tuple[str, str, float, bool, str]]:
    """Each map's scale against the cohort median: rows ``(subject, check, value, failed,
    reason)`` of ``unit_change`` (the ratio to the median) and ``scale_outlier`` (robust z of
    the log scale against the median / MAD).

    Examples
    --------
    >>> logs = dict(zip("abcdef", np.log([1.0, 1.1, 0.9, 1.2, 0.8, 30.0])))
    >>> [(s, c) for s, c, _, failed, _ in scale_checks(logs, QCPolicy()) if failed]
    [('f', 'unit_change'), ('f', 'scale_outlier')]
    """
    if len(log_scales) < _MIN_MAPS_FOR_SCALE:
        return [(subject, check, float("nan"), False,
                 f"not assessed: fewer than {_MIN_MAPS_FOR_SCALE} usable maps")
                for subject in log_scales for check in ("unit_change", "scale_outlier")]
    values = np.array(list(log_scales.values()))
    centre = float(np.median(values))
    spread = max(_MAD_TO_SD * float(np.median(np.abs(values - centre))), _MIN_LOG_SCALE_SD)
    rows = []
    for subject, value in log_scales.items():
        z = (value - centre) / spread
        ratio = float(np.exp(value - centre))
        text = f"{ratio:.3g}x" if ratio >= 0.01 else f"{ratio:.2g}x"
        unit = ratio >= policy.unit_ratio or ratio <= 1 / policy.unit_ratio
        reason = f"map scale is {text} the cohort median"
        if unit:
            reason += (
                f" (>= {policy.unit_ratio:g}x): almost surely in other units (x10, x100, "
                "percent signal change); rescale it or drop it" if ratio > 1 else
                f" (<= 1/{policy.unit_ratio:g}): almost surely in other units, or nearly "
                "empty; rescale it or drop it")
        rows.append((subject, "unit_change", round(ratio, 4), unit, reason))
        outlier = abs(z) > policy.scale_z_max
        reason = f"map scale is {text} the cohort median (robust z = {z:.1f})"
        if outlier:
            reason += (f"; above the cohort's spread (|z| > {policy.scale_z_max:g}): check the "
                       "map; real cohorts hold such subjects")
        rows.append((subject, "scale_outlier", round(z, 3), outlier, reason))
    return rows