"""The reference analysis as stage functions, and :func:`run_analysis` that chains them.

The notebook calls the stages one by one (so a reader sees each step and its output);
:func:`run_analysis` does the same in one call. Every stage takes plain inputs and the
:class:`~glmkit.settings.RunSettings`, returns a frozen result, and records its wall time
into ``timings`` when given one::

    load_data -> quality_control -> build_design -> fit_model -> compute_contrast
      -> apply_thresholds -> run_permutation -> collect  (-> AnalysisResult)

The contrast is read by :mod:`glmkit.stats.contrast` (the one parser) three times, each as
early as the facts allow: by ``RunSettings`` (syntax, zero, and the columns when covariates
make them predictable), by :func:`check_contrast` at the start of :func:`quality_control`
against the design of the table rows that have every design variable (before any map is
read), and by :func:`build_design` against the design of the subjects QC kept.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from glmkit._util import get_data_dir, logger
from glmkit.preflight import check_memory
from glmkit.errors import (
    DatasetError,
    GlmkitError,
    ParameterError,
    ResourceError,
    checked_arguments,
)
from glmkit.settings import RunSettings
from glmkit.stats.contrast import parse_contrast

if TYPE_CHECKING:  # pragma: no cover
    from glmkit.data.masks import MaskInfo
    import nibabel as nib

    from glmkit.data.datasets import Dataset
    from glmkit.stats.design import Design
    from glmkit.stats.glm import ContrastResult, SecondLevelResult
    from glmkit.stats.permutation import PermutationResult
    from glmkit.data.qc import QCResult
    from glmkit.stats.threshold import ThresholdResult

__all__ = [
    "AnalysisResult",
    "load_data",
    "check_contrast",
    "quality_control",
    "build_design",
    "fit_model",
    "compute_contrast",
    "apply_thresholds",
    "run_permutation",
    "collect",
    "run_analysis",
    "preview",
    "software_versions",
]


_PACKAGES = ("glmkit", "numpy", "scipy", "pandas", "nibabel", "nilearn", "formulaic", "numba",
             "joblib", "papermill", "matplotlib")


#: warnings raised during the stages of a run, by ``id(timings)`` (the run's timings dict),
#: until :func:`collect` moves them into the result
_WARNINGS: dict[int, list[tuple[str, str, str]]] = {}


class _LoggedWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


#: how lower layers name what a run sets through its parameters, and the run parameter
#: (messages of the data and stats layers speak to their own callers; a run's user sets
#: ``mask``, not ``run_qc(mask_img=)``)
_RUN_TERMS = (
    (re.compile(r"policy=QCPolicy\(on_grid_mismatch='resample'\)"),
     "on_grid_mismatch='resample'"),
    (re.compile(r"\bmask_img=(?=[\s,.;)]|$)"), "mask=<NIfTI file or 'mni152'>"),
    (re.compile(r"lower min_coverage"), "lower min_coverage, e.g. qc={'min_coverage': 0.5}"),
    (re.compile(r"\bQCPolicy\.(\w+)"), r"qc's \1"),
    (re.compile(r"\(QCPolicy\(exclude=\.\.\.\)\)"),
     "with qc={'exclude': ['missing_value']} (the checks that exclude; the others flag)"),
)


def in_run_terms(message: str) -> str:
    """A message of a lower layer in the terms of the run parameters (``mask_img=`` ->
    ``mask=``, ``policy=QCPolicy(on_grid_mismatch=...)`` -> ``on_grid_mismatch=...``).

    Examples
    --------
    >>> in_run_terms("pass a mask that fits the data (mask_img=) or lower min_coverage")
    "pass a mask that fits the data (mask=<NIfTI file or 'mni152'>) or lower min_coverage, \
e.g. qc={'min_coverage': 0.5}"
    """
    for pattern, words in _RUN_TERMS:
        message = pattern.sub(words, message)
    return message


@contextlib.contextmanager
def _timed(stage: str, timings: dict[str, float] | None) -> Iterator[None]:
    """Time a stage; keep the warnings it raises (Python warnings, glmkit's logged
    warnings) for the report's errors-and-warnings section (they still reach the user). Its
    errors speak in run parameters, and running out of memory is a ResourceError that says
    what to change."""
    start = time.perf_counter()
    handler = _LoggedWarnings()
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield
    except GlmkitError as exc:
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (in_run_terms(exc.args[0]), *exc.args[1:])
        raise
    except MemoryError as exc:
        raise ResourceError(
            f"stage {stage} ran out of memory ({type(exc).__name__}: {exc}); use an analysis "
            "mask, mask='mni152' or mask=<NIfTI file>, fewer permutations (n_perm=...), "
            "n_jobs=1, or a machine with more memory") from None
    finally:
        logger.removeHandler(handler)
    for w in caught:  # shown as they would have been
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    elapsed = time.perf_counter() - start
    logger.info("stage %s took %.2f s", stage, elapsed)
    if timings is not None:
        timings[stage] = round(elapsed, 4)
        kept = _WARNINGS.setdefault(id(timings), [])
        kept += [(stage, w.category.__name__, str(w.message)) for w in caught]
        kept += [(stage, "log", r.getMessage()) for r in handler.records]


# ---------------------------------------------------------------------------------- stages
def load_data(settings: RunSettings, *, timings: dict[str, float] | None = None) -> Dataset:
    """Load the dataset of ``settings.dataset``: a built-in one, a BIDS root, a folder, glob
    or list of maps (:func:`glmkit.data.datasets.load_dataset`), or the
    :class:`~glmkit.data.datasets.Dataset` given from Python as it is."""
    from glmkit.data import datasets

    _expect_settings(settings, "load_data")
    with _timed("load", timings):
        if not isinstance(settings.dataset, (str, tuple)):  # a Dataset given from Python
            return settings.dataset
        if settings.dataset == "localizer":
            return datasets.load_localizer(settings.localizer_contrast,
                                           n_subjects=settings.n_subjects)
        if settings.within is not None:
            return _load_within(settings)
        return datasets.load_dataset(
            settings.dataset, table=settings.table, subject_column=settings.subject_column,
            bids_filter=settings.bids_filter, on_missing=settings.on_missing)


def _load_within(settings: RunSettings) -> Dataset:
    """A folder (glob, list) of one map per subject and level of ``settings.within``."""
    from glmkit.data import bids
    from glmkit.data.local import load_folder
    from glmkit.data.paired import load_within

    table = settings.table
    spec = settings.dataset
    if table is None and isinstance(spec, str) and bids.is_bids_root(Path(spec).expanduser()):
        table = Path(spec).expanduser() / "participants.tsv"
    return load_within(spec, table, within=settings.within, load=load_folder,
                       subject_column=settings.subject_column, contrast=settings.contrast,
                       bids_filter=settings.bids_filter, on_missing=settings.on_missing)


def _within(dataset: Dataset, settings: RunSettings) -> dict[str, float]:
    """The level weights of a within-subject design, checked against the table."""
    from glmkit.data.paired import check_levels, levels_of, within_weights

    levels = sorted({str(v) for v in dataset.table[settings.within]}) if (
        settings.within in dataset.table.columns) else levels_of(dataset.table, settings.within)
    weights = within_weights(settings.contrast, levels, settings.within)
    check_levels(dataset, settings.within, weights)
    return weights


def tested_contrast(settings: RunSettings) -> Any:
    """The contrast the GLM tests: ``settings.contrast``, or the intercept of each subject's
    combination of maps in a within-subject design."""
    return "intercept" if settings.within is not None else settings.contrast


def check_contrast(dataset: Dataset, settings: RunSettings) -> Design:
    """The contrast against the design of the table rows that have every design variable.

    QC excludes the subjects missing a design variable, and a column only they carry (a
    categorical level, say) is then absent; this finds that, a zero or non-estimable contrast
    and an unknown column from the table alone, before any map is read. Returns that design.

    Raises
    ------
    ContrastError
        Naming the contrast, what is wrong, the design's columns and the fix.
    """
    variables = _design_variables(dataset, settings)
    table = dataset.table
    if settings.within is not None:
        from glmkit.data.paired import subject_table

        weights = _within(dataset, settings)
        table = subject_table(dataset, settings.within, weights)
        variables = tuple(v for v in variables if v in table.columns)
    complete = table.dropna(subset=variables) if variables else table
    design = _design_from_table(complete, settings)
    others = len(table) - len(complete)
    _check_contrast(tested_contrast(settings), design,
                    f"the design of the {len(complete)} subjects that have every design "
                    f"variable {list(variables)}"
                    + (f" (QC excludes the {others} others)" if others else ""))
    return design


def quality_control(dataset: Dataset, settings: RunSettings, *,
                    timings: dict[str, float] | None = None) -> QCResult:
    """Run the QC checks on the maps and the design variables; nothing is dropped silently.

    :func:`check_contrast` runs first: a contrast that cannot work fails before any map is
    read.
    """
    from glmkit.data.qc import QCPolicy, run_qc

    _expect_dataset(dataset, "quality_control")
    with _timed("qc", timings):
        check_contrast(dataset, settings)
        policy = QCPolicy.from_mapping(settings.qc, on_grid_mismatch=settings.on_grid_mismatch)
        mask = analysis_mask(dataset, settings)
        check_memory(dataset, settings,
                     mask_voxels=None if mask is None else mask.n_voxels)
        return run_qc(dataset, variables=_design_variables(dataset, settings), policy=policy,
                      mask_img=None if mask is None else mask.img)


def analysis_mask(dataset: Dataset, settings: RunSettings) -> MaskInfo | None:
    """The ``mask`` parameter on the grid of the dataset's first map (None: from the data)."""
    if settings.mask is None:
        return None
    from glmkit.data.masks import load_mask

    key = (settings.mask, str(dataset.maps[0]))
    if key not in _MASKS:
        _MASKS.clear()
        _MASKS[key] = load_mask(settings.mask, dataset.maps[0])
        logger.info("analysis mask %s", _MASKS[key].describe())
    return _MASKS[key]


_MASKS: dict[tuple[str, str], MaskInfo] = {}  # QC and the fit use the same resampled mask


def _design_variables(dataset: Dataset, settings: RunSettings) -> tuple[str, ...]:
    """The table columns QC checks for missing values (design variables and ``groups``)."""
    return tuple(v for v in settings.design_variables() if v in dataset.table.columns)


def _design_from_table(table: pd.DataFrame, settings: RunSettings) -> Design:
    """The design of ``table``'s subjects; in a within-subject design the covariates are
    centred, so the intercept is the mean combination of maps."""
    from glmkit.stats.design import make_design

    return make_design(table, None if settings.formula else list(settings.covariates or ()),
                       formula=settings.formula, rename=settings.rename or None,
                       center=settings.center or settings.within is not None)


def _check_contrast(contrast: Any, design: Design, where: str) -> None:
    """The contrast against ``design``'s columns and matrix (estimable), by the one parser."""
    parse_contrast(contrast).matrix(design.columns, design.matrix.to_numpy(dtype=float),
                                    where=where, levels=getattr(design, "levels", {}))


def build_design(dataset: Dataset, qc: QCResult, settings: RunSettings, *,
                 timings: dict[str, float] | None = None) -> Design:
    """Design matrix of the subjects QC kept; the contrast is checked against it again (QC
    may have excluded, for their maps, the only subjects carrying a column)."""
    with _timed("design", timings):
        kept = qc.apply(dataset)
        table = kept.table
        if settings.within is not None:
            from glmkit.data.paired import subject_table

            table = subject_table(dataset, settings.within, _within(dataset, settings),
                                  kept=qc.kept)
        design = _design_from_table(table, settings)
        _check_contrast(tested_contrast(settings), design,
                        f"the design of the {len(table)} subjects QC kept")
        if settings.groups is not None:
            _exchangeability_blocks(kept, design, settings.groups)  # checked before the fit
        return design


def fit_model(dataset: Dataset, design: Design, settings: RunSettings, *,
              timings: dict[str, float] | None = None) -> SecondLevelResult:
    """Smooth, mask and fit the mass-univariate OLS on the design's subjects (in its order)."""
    from glmkit.stats.glm import fit_second_level

    if settings.within is not None:
        from glmkit.data.paired import combination_maps

        maps = combination_maps(dataset, settings.within, _within(dataset, settings),
                                [str(s) for s in design.matrix.index])
    else:
        by_subject = dict(zip(dataset.table["subject"].astype(str), dataset.maps, strict=True))
        maps = [by_subject[str(s)] for s in design.matrix.index]
    with _timed("fit", timings):
        if settings.on_grid_mismatch == "resample":
            maps = _on_first_grid(maps, dataset.maps[0])
        mask = analysis_mask(dataset, settings)
        return fit_second_level(maps, design, smoothing_fwhm=settings.smoothing_fwhm,
                                mask_img=None if mask is None else mask.img)


def _on_first_grid(maps: list, first: Any) -> list:
    """Maps on another grid than the dataset's first map resampled to it, as QC did; the
    others stay paths (the fit loads them once)."""
    import nibabel as nib

    from glmkit.data.qc import resample_to_grid, same_grid

    ref = nib.load(first)
    ref_shape, ref_affine = ref.shape[:3], ref.affine
    out = []
    for path in maps:
        img = nib.load(path)
        if same_grid(img.shape[:3], img.affine, ref_shape, ref_affine):
            out.append(path)
        else:
            logger.info("resampling %s to the grid of %s", path, first)
            out.append(resample_to_grid(img, ref_shape, ref_affine, interpolation="continuous"))
    return out


def compute_contrast(model: SecondLevelResult, settings: RunSettings, *,
                     timings: dict[str, float] | None = None) -> ContrastResult:
    """t contrast ``settings.contrast`` (F for a list of contrasts): stat, z, p, effect and
    variance per voxel."""
    stat_type = "F" if parse_contrast(settings.contrast).is_list else "t"
    with _timed("contrast", timings):
        contrast = model.compute_contrast(tested_contrast(settings), stat_type=stat_type,
                                          name=str(parse_contrast(settings.contrast).name))
        _check_not_all_zero(contrast, model)
        return contrast


def _check_not_all_zero(contrast: ContrastResult, model: SecondLevelResult) -> None:
    """A statistic that is 0 at every voxel would make a complete report of zeros: the maps
    vary nowhere across subjects (the same map copied, say). That is an error, not a result."""
    stat = np.asarray(contrast.stat, dtype=float)
    if stat.size and np.any(np.isfinite(stat) & (stat != 0)):
        return
    variance = np.asarray(contrast.variance, dtype=float)
    why = ("the residual variance is 0 at every voxel: the maps are the same up to what the "
           "design explains (one map copied for every subject?)" if not np.any(variance > 0)
           else "its effect is 0 at every voxel")
    raise DatasetError(
        f"contrast {contrast.name!r} has statistic 0 at all {stat.size} voxels of the mask: "
        f"{why}; nothing can be tested. Check that each subject's map is its own (the "
        f"{model.design.matrix.shape[0]} maps of the design), and the mask")


def apply_thresholds(contrast: ContrastResult, model: SecondLevelResult,
                     settings: RunSettings, *, timings: dict[str, float] | None = None
                     ) -> dict[str, ThresholdResult]:
    """Parametric thresholds of the z map: FDR and Bonferroni always (+ ``height_control``)."""
    from glmkit.stats.threshold import threshold_map

    methods = ["fdr", "bonferroni"]
    if settings.height_control not in (None, *methods):
        methods.append(settings.height_control)
    with _timed("thresholds", timings):
        return {
            method: threshold_map(contrast.z, alpha=settings.alpha, height_control=method,
                                  two_sided=settings.two_sided, mask_img=model.mask_img)
            for method in methods
        }


def run_permutation(model: SecondLevelResult, settings: RunSettings, *,
                    dataset: Dataset | None = None,
                    timings: dict[str, float] | None = None) -> PermutationResult | None:
    """Permutation FWER inference for each of ``settings.statistics`` (None when empty).

    ``dataset`` (its table) is needed when ``settings.groups`` names the exchangeability
    blocks column.
    """
    if not settings.statistics:
        return None
    from glmkit.stats.permutation import permutation_test

    groups = None
    if settings.groups is not None:
        if dataset is None:
            raise ParameterError(
                f"groups={settings.groups!r}: run_permutation needs the dataset to read the "
                "exchangeability blocks; call run_permutation(model, settings, dataset=dataset)")
        groups = _exchangeability_blocks(dataset, model.design, settings.groups)
    with _timed("permutation", timings):
        return permutation_test(
            model.Y, model.design.matrix, tested_contrast(settings), n_perm=settings.n_perm,
            two_sided=settings.two_sided, statistics=tuple(settings.statistics),
            mask_img=model.mask_img, cluster_threshold=settings.cluster_threshold,
            tfce=settings.tfce, scheme=settings.scheme, groups=groups,
            random_state=settings.random_state, n_jobs=settings.n_jobs, accel=settings.accel,
        )


def _exchangeability_blocks(dataset: Dataset, design: Design, column: str) -> np.ndarray:
    """The ``column`` value of each design subject (in design order), checked."""
    table = dataset.table
    if column not in table.columns:
        raise ParameterError(
            f"groups={column!r} is not a column of the subject table (columns: "
            f"{', '.join(map(str, table.columns))}); name the column of exchangeability blocks, "
            "e.g. groups=site, or leave groups unset")
    values = table.set_index(table["subject"].astype(str))[column]
    blocks = values.reindex([str(s) for s in design.matrix.index])
    if blocks.isna().any():
        missing = [str(s) for s in blocks.index[blocks.isna()]]
        raise ParameterError(
            f"groups={column!r} is missing for subjects {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}; QC excludes them when groups is set, "
            "or fill the column in the table")
    if blocks.nunique() == len(blocks):
        raise ParameterError(
            f"groups={column!r} puts every subject in its own block: no permutation is "
            "possible within blocks; name a column with repeated values (e.g. site)")
    return blocks.to_numpy()


def collect(settings: RunSettings, *, dataset: Dataset, qc: QCResult, design: Design,
            model: SecondLevelResult, contrast: ContrastResult,
            thresholds: Mapping[str, ThresholdResult], permutation: PermutationResult | None,
            timings: dict[str, float] | None = None) -> AnalysisResult:
    """Bonferroni -log10 p map and cluster table, then everything in one :class:`AnalysisResult`."""
    from glmkit.stats.threshold import bonferroni_logp, cluster_table

    timings = {} if timings is None else timings
    with _timed("collect", timings):
        logp_bonferroni = np.asarray(bonferroni_logp(contrast.p))
        primary = thresholds.get(settings.height_control or "fdr", thresholds["fdr"])
        # nothing survives -> threshold above the peak: an empty table with the usual columns
        z = np.asarray(contrast.z, dtype=float)
        threshold = (float(primary.threshold) if np.isfinite(primary.threshold)
                     else float(np.abs(z).max()) + 1.0)
        clusters = cluster_table(model.unmask(z), stat_threshold=threshold,
                                 two_sided=settings.two_sided)
    seen = list(dict.fromkeys(_WARNINGS.pop(id(timings), [])))  # each warning once
    return AnalysisResult(settings=settings, dataset=dataset, qc=qc, design=design, model=model,
                          contrast=contrast, thresholds=dict(thresholds),
                          logp_bonferroni=logp_bonferroni, permutation=permutation,
                          clusters=clusters, timings=timings, warnings=tuple(seen))


@checked_arguments
def run_analysis(data: Any = None, /, *, table: Any = None, **changes: Any) -> AnalysisResult:
    """The whole analysis in one call (what the notebook does cell by cell).

    Parameters
    ----------
    data : RunSettings, Dataset, path, list of paths or images, or mapping, optional
        ``RunSettings`` (``changes`` applied on top); a
        :class:`~glmkit.data.datasets.Dataset`; or maps for
        :func:`~glmkit.data.datasets.load_folder` (a folder, glob or BIDS root, paths, nibabel
        images in table order, or a mapping of subject id to image or path) with ``table``.
        Default: the reference analysis on the demo (``RunSettings()``).
    table : DataFrame or path, optional
        The subject table of maps given as ``data`` (a path is also the ``table`` parameter).
    **changes
        Run parameters (:class:`~glmkit.settings.RunSettings` fields), validated.

    Examples
    --------
    >>> result = run_analysis(maps, table=frame, covariates=["age"],
    ...                       contrast="age")  # doctest: +SKIP
    """
    settings = _settings_for(data, table, changes)
    timings: dict[str, float] = {}
    dataset = load_data(settings, timings=timings)
    qc = quality_control(dataset, settings, timings=timings)
    design = build_design(dataset, qc, settings, timings=timings)
    model = fit_model(dataset, design, settings, timings=timings)
    contrast = compute_contrast(model, settings, timings=timings)
    thresholds = apply_thresholds(contrast, model, settings, timings=timings)
    permutation = run_permutation(model, settings, dataset=dataset, timings=timings)
    return collect(settings, dataset=dataset, qc=qc, design=design, model=model,
                   contrast=contrast, thresholds=thresholds, permutation=permutation,
                   timings=timings)


def _expect_settings(settings: Any, where: str) -> None:
    if not isinstance(settings, RunSettings):
        raise ParameterError(f"{where}: settings is a {type(settings).__name__}, expected "
                             "glmkit.RunSettings (e.g. RunSettings(n_perm=1000) or "
                             "RunSettings.from_mapping(params))")


def _expect_dataset(dataset: Any, where: str) -> None:
    if not all(hasattr(dataset, a) for a in ("maps", "table", "subjects")):
        raise ParameterError(f"{where}: dataset is a {type(dataset).__name__}, expected a "
                             "glmkit.Dataset (from load_data(settings), load_folder or "
                             "load_demo)")


def _settings_for(data: Any, table: Any, changes: dict[str, Any]) -> RunSettings:
    """The settings of :func:`run_analysis`'s arguments; maps given with a DataFrame (or
    images) are loaded here into a Dataset, which the settings then carry."""
    if isinstance(data, RunSettings):
        if table is not None:
            changes = {**changes, "table": table}
        return data.replace(**changes) if changes else data
    if data is None:
        if isinstance(table, pd.DataFrame):
            raise ParameterError(
                "run_analysis(table=<DataFrame>) without maps: pass the maps first, "
                "run_analysis(maps, table=frame, ...), maps being paths, nibabel images in "
                "table order or a mapping of subject id to image")
        return RunSettings(**({**changes, "table": table} if table is not None else changes))
    if isinstance(data, Mapping) and data and all(
            str(k).replace("-", "_") in RunSettings.field_names() for k in data):
        raise ParameterError(
            f"run_analysis got a mapping of run parameters {sorted(map(str, data))}: pass "
            "them by name, run_analysis(**params), or as settings, "
            "run_analysis(RunSettings.from_mapping(params)) (a mapping given first is maps: "
            "subject id -> image or path)")
    if isinstance(data, (str, Path)) and not isinstance(table, pd.DataFrame):
        return RunSettings(**{**changes, "dataset": data,
                              **({"table": table} if table is not None else {})})
    if not hasattr(data, "subjects"):  # maps: paths, images or a mapping, with a table
        from glmkit.data.datasets import load_dataset

        if table is None and not isinstance(data, (str, Path)):
            raise ParameterError(
                "run_analysis(maps, ...) needs the subject table: pass table=<DataFrame or "
                "TSV/CSV path>; maps given from Python are matched to its rows")
        options = {k: changes.pop(k) for k in ("subject_column", "bids_filter", "on_missing")
                   if changes.get(k) is not None}
        data = load_dataset(data, table=table, **options)
    elif table is not None:
        raise ParameterError("run_analysis(dataset, table=...): a Dataset brings its own table; "
                             "leave table unset")
    return RunSettings(**{**changes, "dataset": data})


@checked_arguments
def preview(settings: RunSettings | None = None) -> str:
    """Dataset, QC and design summary without fitting anything (``glmkit summary``)."""
    settings = settings or RunSettings()
    _expect_settings(settings, "preview")
    dataset = load_data(settings)
    qc = quality_control(dataset, settings)
    design = build_design(dataset, qc, settings)
    from glmkit.report.words import describe_test

    words = describe_test(design.columns, settings.contrast, two_sided=settings.two_sided,
                          levels=design.levels, within=settings.within)
    return "\n\n".join([dataset.summary(), qc.summary(), design.summary(),
                        f"contrast: {parse_contrast(settings.contrast).name}\n"
                        f"tests: {words.phrase} ({words.test})"])


# ---------------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """Everything one run produced, stage by stage.

    Attributes
    ----------
    settings, dataset, qc, design, model, contrast
        The inputs and the result of each stage (``dataset`` is the full cohort; ``qc``
        says who was kept; ``design`` rows are the kept subjects).
    thresholds : dict
        Parametric :class:`~glmkit.stats.threshold.ThresholdResult` per method (``"fdr"``,
        ``"bonferroni"``, and ``height_control`` when it is another one).
    logp_bonferroni : ndarray
        Parametric Bonferroni ``-log10(min(1, p * n_voxels))`` per in-mask voxel (finite).
    permutation : PermutationResult or None
        Permutation inference (None when no statistic was asked for).
    clusters : DataFrame
        Cluster table of the headline parametric map.
    timings : dict
        Wall time in seconds per stage.
    warnings : tuple of (stage, kind, message)
        The warnings the stages raised (Python warnings and glmkit's logged warnings), for
        the report's errors-and-warnings section.
    """

    settings: RunSettings
    dataset: Dataset
    qc: QCResult
    design: Design
    model: SecondLevelResult
    contrast: ContrastResult
    thresholds: dict[str, ThresholdResult]
    logp_bonferroni: np.ndarray
    permutation: PermutationResult | None
    clusters: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[tuple[str, str, str], ...] = ()

    def maps(self) -> dict[str, nib.Nifti1Image]:
        """Images by name: mask, z, t (F for an F contrast), p, effect, variance, z_fdr,
        logp_bonferroni, and one FWER map per permutation statistic named by the registry
        (``logp_maxt``, ``logp_tfce``, ...).

        Each is float32 on disk (the mask uint8) with its NIfTI intent (z score; t test with
        its dof; f test with both; p value; estimate) and the input maps' sform/qform codes
        (MNI stays MNI); outside the mask p is 1 and every other map 0, so "p < 0.05" or
        "-log10 p > 1.3" never selects a voxel the model did not see
        (:func:`glmkit.data.nifti.result_map`).
        """
        from glmkit.data.nifti import result_map, space_of

        unmask, contrast = self.model.unmask, self.contrast
        space = space_of(self.dataset.maps[0])
        mask = np.asarray(self.model.mask_img.dataobj) > 0
        dof = (float(contrast.dof) if contrast.stat_type == "t"
               else (float(np.atleast_2d(contrast.contrast).shape[0]), float(contrast.dof)))
        arrays = {
            "mask": ("mask", None),
            "z": ("z", contrast.z),
            contrast.stat_type: (contrast.stat_type, contrast.stat),
            "p": ("p", contrast.p),
            "effect": ("effect", contrast.effect),
            "variance": ("variance", contrast.variance),
            "z_fdr": ("z", self.thresholds["fdr"].thresholded),
            "logp_bonferroni": ("logp", self.logp_bonferroni),
        }
        if self.permutation is not None:
            from glmkit.stats.statistics import get_statistic

            for stat in self.permutation.statistics:
                arrays[get_statistic(stat).map_name] = (
                    "logp", np.asarray(self.permutation.logp_fwer[stat]))
        return {
            name: result_map(self.model.mask_img if values is None else unmask(values), kind,
                             mask=mask, space=space, dof=dof)
            for name, (kind, values) in arrays.items()
        }

    @property
    def cut_coords(self) -> tuple[float, float, float]:
        """Where figures cut: ``settings.cut_coords`` (a built-in dataset's reference cut
        unless set), else the peak of the z map."""
        cut = self.settings.cut_coords
        return tuple(cut) if cut is not None else self.peak()[1]

    @property
    def n_voxels(self) -> int:
        """Number of voxels in the analysis mask."""
        return int(np.asarray(self.contrast.z).size)

    def fwer_maps(self) -> dict[str, np.ndarray]:
        """FWER -log10 p per voxel for each family-wise method (Bonferroni and permutation)."""
        out = {"bonferroni": np.asarray(self.logp_bonferroni)}
        if self.permutation is not None:
            for stat in self.permutation.statistics:
                out[f"perm_{stat}"] = np.asarray(self.permutation.logp_fwer[stat])
        return out

    def peak(self) -> tuple[float, tuple[float, float, float]]:
        """Peak z (largest |z| when two-sided) and its coordinate in mm."""
        z = np.asarray(self.contrast.z, dtype=float)
        index = int(np.argmax(np.abs(z) if self.settings.two_sided else z))
        volume = np.zeros(z.shape)
        volume[index] = 1.0
        img = self.model.unmask(volume)
        ijk = np.argwhere(np.asarray(img.dataobj) == 1.0)[0][:3]
        xyz = img.affine @ np.r_[ijk, 1.0]
        return float(z[index]), (float(xyz[0]), float(xyz[1]), float(xyz[2]))

    def headline(self) -> dict[str, Any]:
        """Headline numbers (JSON-able): subjects in/out, voxels, suprathreshold counts, peak.

        ``suprathreshold`` counts voxels passing each method at ``alpha``: FDR (q), Bonferroni
        and each permutation statistic (FWER).
        """
        alpha = self.settings.alpha
        supra = {name: int(t.n_suprathreshold) for name, t in self.thresholds.items()}
        cut = -np.log10(alpha)
        for name, logp in self.fwer_maps().items():
            if name != "bonferroni":
                supra[name] = int(np.count_nonzero(logp > cut))
        peak_z, peak_xyz = self.peak()
        return {
            "run_name": self.settings.run_name,
            "dataset": self.dataset.name,
            "n_subjects": len(self.dataset.maps),
            "n_kept": len(self.qc.kept),
            "n_excluded": len(self.qc.excluded),
            "excluded": list(self.qc.excluded),
            "design_columns": list(self.design.columns),
            "contrast": self.contrast.name,
            "n_voxels": self.n_voxels,
            "alpha": alpha,
            "suprathreshold": supra,
            "thresholds_z": {name: float(t.threshold) for name, t in self.thresholds.items()},
            "peak_z": round(peak_z, 4),
            "peak_xyz_mm": [round(c, 2) for c in peak_xyz],
            "n_perm": self.permutation.n_perm if self.permutation is not None else 0,
            "random_state": self.settings.random_state,
        }

    def summary(self) -> str:
        """The headline in a few readable lines."""
        h = self.headline()
        lines = [
            f"{h['dataset']}: {h['n_kept']} of {h['n_subjects']} subjects analysed "
            f"({h['n_excluded']} excluded by QC: {', '.join(h['excluded']) or 'none'})",
            f"design {h['design_columns']}, contrast {h['contrast']!r}, "
            f"{h['n_voxels']} voxels in the mask",
            f"peak z = {h['peak_z']:.2f} at {tuple(h['peak_xyz_mm'])} mm",
        ]
        for name, count in h["suprathreshold"].items():
            kind = "FDR" if name in ("fdr",) else ("uncorrected" if name == "fpr" else "FWER")
            lines.append(f"{name:>18}: {count} voxels ({kind} {h['alpha']})")
        return "\n".join(lines)

    def permutation_summary(self) -> str:
        """Summary of the permutation stage (or why there is none)."""
        if self.permutation is None:
            return "no permutation inference (statistics is empty)"
        return self.permutation.summary()

    def provenance(self) -> dict[str, Any]:
        """Versions, input hashes, seed and per-stage wall times (JSON-able, no host name)."""
        return {
            "software": software_versions(),
            "python": platform.python_version(),
            "platform": {"system": platform.system(), "machine": platform.machine()},
            "dataset": {"name": self.dataset.name,
                        "provenance": _portable(_jsonable(dict(self.dataset.provenance)))},
            "random_state": self.settings.random_state,
            "n_perm": self.permutation.n_perm if self.permutation is not None else 0,
            "timings_s": dict(self.timings),
        }


def software_versions() -> dict[str, str]:
    """Installed versions of glmkit and the libraries it computes with."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover
            out[name] = "not installed"
    out["python"] = sys.version.split()[0]
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _portable(value: Any) -> Any:
    """Replace machine-specific folder prefixes ($GLMKIT_DATA, home) in recorded paths."""
    prefixes = [(str(get_data_dir()), "$GLMKIT_DATA"), (str(Path.home()), "~")]
    if isinstance(value, dict):
        return {_portable(k): _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, str):
        for prefix, name in prefixes:
            if prefix and value.startswith(prefix):
                return name + value[len(prefix):]
    return value
