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
import platform
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from glmkit._util import get_data_dir, logger
from glmkit.errors import ParameterError
from glmkit.settings import RunSettings
from glmkit.stats.contrast import parse_contrast

if TYPE_CHECKING:  # pragma: no cover
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


@contextlib.contextmanager
def _timed(stage: str, timings: dict[str, float] | None) -> Iterator[None]:
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    logger.info("stage %s took %.2f s", stage, elapsed)
    if timings is not None:
        timings[stage] = round(elapsed, 4)


# ---------------------------------------------------------------------------------- stages
def load_data(settings: RunSettings, *, timings: dict[str, float] | None = None) -> Dataset:
    """Load the dataset named by ``settings.dataset`` (demo, demo-null, localizer, folder)."""
    from glmkit.data import datasets

    with _timed("load", timings):
        if settings.dataset == "demo":
            return datasets.load_demo("association")
        if settings.dataset == "demo-null":
            return datasets.load_demo("null")
        if settings.dataset == "localizer":
            return datasets.load_localizer(settings.localizer_contrast,
                                           n_subjects=settings.n_subjects)
        return datasets.load_folder(settings.dataset, settings.table,
                                    subject_column=settings.subject_column)


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
    complete = table.dropna(subset=variables) if variables else table
    design = _design_from_table(complete, settings)
    others = len(table) - len(complete)
    _check_contrast(settings.contrast, design,
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

    with _timed("qc", timings):
        check_contrast(dataset, settings)
        return run_qc(dataset, variables=_design_variables(dataset, settings),
                      policy=QCPolicy(on_grid_mismatch=settings.on_grid_mismatch))


def _design_variables(dataset: Dataset, settings: RunSettings) -> tuple[str, ...]:
    """The table columns QC checks for missing values (design variables and ``groups``)."""
    return tuple(v for v in settings.design_variables() if v in dataset.table.columns)


def _design_from_table(table: pd.DataFrame, settings: RunSettings) -> Design:
    from glmkit.stats.design import make_design

    return make_design(table, None if settings.formula else list(settings.covariates),
                       formula=settings.formula, rename=settings.rename or None,
                       center=settings.center)


def _check_contrast(contrast: Any, design: Design, where: str) -> None:
    """The contrast against ``design``'s columns and matrix (estimable), by the one parser."""
    parse_contrast(contrast).matrix(design.columns, design.matrix.to_numpy(dtype=float),
                                    where=where)


def build_design(dataset: Dataset, qc: QCResult, settings: RunSettings, *,
                 timings: dict[str, float] | None = None) -> Design:
    """Design matrix of the subjects QC kept; the contrast is checked against it again (QC
    may have excluded, for their maps, the only subjects carrying a column)."""
    with _timed("design", timings):
        kept = qc.apply(dataset)
        design = _design_from_table(kept.table, settings)
        _check_contrast(settings.contrast, design,
                        f"the design of the {len(kept.table)} subjects QC kept")
        if settings.groups is not None:
            _exchangeability_blocks(kept, design, settings.groups)  # checked before the fit
        return design


def fit_model(dataset: Dataset, design: Design, settings: RunSettings, *,
              timings: dict[str, float] | None = None) -> SecondLevelResult:
    """Smooth, mask and fit the mass-univariate OLS on the design's subjects (in its order)."""
    from glmkit.stats.glm import fit_second_level

    by_subject = dict(zip(dataset.table["subject"].astype(str), dataset.maps, strict=True))
    maps = [by_subject[str(s)] for s in design.matrix.index]
    with _timed("fit", timings):
        if settings.on_grid_mismatch == "resample":
            maps = _on_first_grid(maps, dataset.maps[0])
        return fit_second_level(maps, design, smoothing_fwhm=settings.smoothing_fwhm)


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
    """t contrast ``settings.contrast``: stat, z, p, effect and variance per voxel."""
    with _timed("contrast", timings):
        return model.compute_contrast(settings.contrast, stat_type="t")


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
            model.Y, model.design.matrix, settings.contrast, n_perm=settings.n_perm,
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
    return AnalysisResult(settings=settings, dataset=dataset, qc=qc, design=design, model=model,
                          contrast=contrast, thresholds=dict(thresholds),
                          logp_bonferroni=logp_bonferroni, permutation=permutation,
                          clusters=clusters, timings=timings)


def run_analysis(settings: RunSettings | None = None, /, **changes: Any) -> AnalysisResult:
    """The whole reference analysis in one call (what the notebook does cell by cell).

    Parameters
    ----------
    settings : RunSettings, optional
        Defaults to ``RunSettings()``; ``changes`` are applied on top (validated).
    """
    settings = (settings or RunSettings()).replace(**changes) if changes else (
        settings or RunSettings())
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


def preview(settings: RunSettings | None = None) -> str:
    """Dataset, QC and design summary without fitting anything (``glmkit summary``)."""
    settings = settings or RunSettings()
    dataset = load_data(settings)
    qc = quality_control(dataset, settings)
    design = build_design(dataset, qc, settings)
    return "\n\n".join([dataset.summary(), qc.summary(), design.summary(),
                        f"contrast: {parse_contrast(settings.contrast).name}"])


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

    def maps(self) -> dict[str, nib.Nifti1Image]:
        """Images by name: mask, z, p, effect, z_fdr, logp_bonferroni, and one FWER map per
        permutation statistic named by the registry (``logp_maxt``, ``logp_tfce``, ...)."""
        unmask = self.model.unmask
        out = {
            "mask": self.model.mask_img,
            "z": unmask(self.contrast.z),
            "p": unmask(self.contrast.p),
            "effect": unmask(self.contrast.effect),
            "z_fdr": unmask(self.thresholds["fdr"].thresholded),
            "logp_bonferroni": unmask(self.logp_bonferroni),
        }
        if self.permutation is not None:
            from glmkit.stats.statistics import get_statistic

            for stat in self.permutation.statistics:
                out[get_statistic(stat).map_name] = unmask(
                    np.asarray(self.permutation.logp_fwer[stat]))
        return out

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
