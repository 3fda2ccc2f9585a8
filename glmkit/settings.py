"""One validated settings object for a run: notebook parameters, CLI flags and YAML files.

:class:`RunSettings` is declared once and validated in ``__post_init__``. The same object
checks papermill's injected parameters (the notebook's first cell after ``parameters``
builds it), ``glmkit run --flag value`` (strings are coerced to the field's type) and
``--params file.yaml``. Unknown names are an error listing the known ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob as _glob
import inspect
import json
import os
import re
import string
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmkit.data import bids
from glmkit.data.choices import (  # the data layer's facts
    BIDS_TABLE,
    BUILTIN_DATASETS,
    BUILTIN_DEFAULTS,
    EXPORT_FORMATS,
    GRID_ACTIONS,
    ON_MISSING,
)
from glmkit.errors import ContrastError, DataFileNotFoundError, ParameterError
from glmkit.stats.choices import ACCELERATIONS, HEIGHT_CONTROLS  # the stats layer's facts
from glmkit.stats.statistics import SCHEMES, statistic_names  # the engine's registry

__all__ = [
    "RunSettings",
    "Parameter",
    "parameters",
    "parameter_table",
    "BUILTIN_DATASETS",
    "HEIGHT_CONTROLS",
    "GRID_ACTIONS",
    "RUNNER_FIELDS",
    "packaged_notebook",
    "load_yaml",
    "read_params_file",
    "MAX_RUN_NAME",
]

NOTEBOOK_NAME = "second_level_association.ipynb"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}
_NONE = {"none", "null", "~", ""}


def packaged_notebook() -> Path:
    """Path of the notebook shipped inside the package (``glmkit/notebooks/``).

    Examples
    --------
    >>> packaged_notebook().name
    'second_level_association.ipynb'
    """
    return Path(__file__).resolve().parent / "notebooks" / NOTEBOOK_NAME


_KIND_HELP = {
    "str": "a string",
    "str?": "a string or none",
    "dataset": "a built-in name, a folder, glob or file of maps, or a list of them "
               "(comma-separated on the command line)",
    "path": "a path",
    "path?": "a path or none",
    "int": "an integer",
    "float": "a number",
    "float?": "a number or none",
    "bool": "true or false",
    "strs": "a list of names (comma-separated on the command line)",
    "strs?": "a list of names (comma-separated on the command line) or none",
    "dict": "a mapping, e.g. '{pseudo: fluency}'",
    "dict?": "a mapping or none",
    "tfce?": "none, true (default TFCE options) or a mapping such as '{E: 0.5, H: 2}'",
    "floats3": "three numbers x,y,z in mm",
    "floats3?": "three numbers x,y,z in mm, or none",
    "contrast": "a design column, an expression such as 'a - b' or '2*a', one weight per "
                "column such as '[1, 0]', or a list of those (an F test) such as "
                "'[age, score]'",
    "contrast?": "a design column, an expression such as 'a - b' or '2*a', one weight per "
                 "column such as '[1, 0]', a list of those (an F test), or none",
}
#: fields a dataset supplies when they are left unset (none): the built-in datasets' reference
#: analysis (``BUILTIN_DEFAULTS``), nothing for a folder of maps
DATASET_DEFAULTED = ("covariates", "rename", "contrast", "cut_coords")


def _param(default: Any, kind: str, text: str, *, runner: bool = False, flag: bool = True,
           notebook: bool = True) -> Any:
    """A :class:`RunSettings` field with its declaration: the kind its values are coerced to
    (a key of ``_KIND_HELP``) and its help text (markdown: code in backticks; ``$name``
    stands for a list of choices, see :func:`_choices`).

    ``runner``: steers the runner (where and how to run), not the analysis; left out of
    ``params.json``. ``flag``: a ``glmkit run`` flag and a row of the README table.
    ``notebook``: injected into the notebook's parameters cell by ``glmkit run``.
    """
    metadata = {"kind": kind, "help": text, "runner": runner, "flag": flag,
                "notebook": notebook}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Parameters of one second-level run (the reference analysis by default).

    Every field is a notebook parameter and a ``glmkit run --flag`` (except ``output_dir``,
    which the runner chooses). Values given as strings (from the command line) are coerced:
    ``"1000"`` -> 1000, ``"voxel,tfce"`` -> ``("voxel", "tfce")``, ``"{pseudo: fluency}"`` ->
    ``{"pseudo": "fluency"}``, ``"none"`` -> None. Each field declares its kind and help text
    once (:func:`parameters`); the command line's help and the README's table derive from
    them.

    Parameters
    ----------
    $parameters

    Examples
    --------
    >>> s = RunSettings(n_perm="1000", statistics="voxel,tfce")
    >>> s.n_perm, s.statistics
    (1000, ('voxel', 'tfce'))
    >>> RunSettings(alpha=2)
    Traceback (most recent call last):
    ...
    glmkit.errors.ParameterError: alpha=2.0 is out of range: expected 0 < alpha < 1 ...
    """

    dataset: str | tuple[str, ...] = _param(
        "demo", "dataset", "$datasets, a folder of maps (searched recursively; with `table`), "
        "a glob (`spm/sub-*/con_0001.nii`), a list of them, or a BIDS derivatives root (a "
        "folder with `dataset_description.json`: `participants.tsv` is its table); from "
        "Python also a `glmkit.Dataset`")
    table: str | None = _param(None, "path?", "subject table (TSV/CSV) of a folder dataset "
                               "(`none`: a BIDS root's `participants.tsv`)")
    subject_column: str | None = _param(
        None, "str?", "the table's subject-id column (`none`: `participant_id` for a BIDS root, "
        "else `subject`)")
    on_grid_mismatch: str = _param(
        "error", "str", "a map on another grid (shape/affine) than the first map: `error` "
        "(naming the files) or `resample` it to the first map's grid (QC flags it)")
    localizer_contrast: str = _param("left button press (auditory cue)", "str",
                                     "Localizer contrast fetched with `dataset: localizer`")
    n_subjects: int = _param(94, "int", "Localizer subjects to fetch (`dataset: localizer`)")
    covariates: tuple[str, ...] | None = _param(
        None, "strs?", "table columns of the design (an intercept is added; ignored when "
        "`formula` is set); `none`: the built-in dataset's ($ref_covariates), required for a "
        "folder")
    within: str | None = _param(
        None, "str?", "table column of the within-subject condition (e.g. `session`) of a "
        "paired / repeated-measures design: several maps per subject, the contrast names "
        "its levels (`post - pre`); each subject's combination of its maps is tested "
        "(sign-flipped, subjects as units)")
    formula: str | None = _param(None, "str?", "a formulaic formula instead of `covariates`, "
                                 "e.g. `pseudo + age + C(sex)`")
    rename: dict[str, str] | None = _param(
        None, "dict?", "design column renames, as in nilearn's example; `none`: the built-in "
        "dataset's ($ref_rename), no renames for a folder")
    contrast: str | tuple[float, ...] | None = _param(
        None, "contrast?", "what is tested: a design column, an expression of columns "
        "(`a - b`, `2*fluency`) or one weight per column (`[1, 0]`); `none`: the built-in "
        "dataset's ($ref_contrast), required for a folder")
    center: bool = _param(False, "bool", "centre the covariates (the reference does not)")
    smoothing_fwhm: float | None = _param(5.0, "float?", "Gaussian smoothing FWHM in mm "
                                          "applied to the maps (`none`: no smoothing)")
    mask: str | None = _param(
        None, "str?", "analysis mask: a NIfTI file or `mni152` (nilearn's packaged MNI152 "
        "brain mask), resampled (nearest) to the maps' grid; none: a mask computed from the "
        "data, as nilearn does")
    qc: dict[str, Any] | None = _param(
        None, "dict?", "quality-control policy, e.g. `{exclude: [missing_value, coverage], "
        "keep: [S12], min_coverage: 0.8}`: which checks exclude (the others flag), their "
        "thresholds (`min_coverage`, `scale_z_max`, `unit_ratio`) and subjects kept whatever "
        "QC says; none: exclude only what is almost surely an error")
    alpha: float = _param(0.05, "float", "FDR q and FWER level of every threshold, in (0, 1)")
    height_control: str | None = _param("fdr", "str?", "parametric height control of the "
                                        "headline map: $height_controls")
    n_perm: int = _param(5000, "int", "number of permutations, >= 1 (the reference uses 1000)")
    two_sided: bool = _param(False, "bool", "two-sided tests (the reference is one-sided: "
                             "a positive association)")
    statistics: tuple[str, ...] = _param(("voxel",), "strs", "permutation statistics, any of "
                                         "$statistics; empty: no permutation stage")
    scheme: str = _param("freedman_lane", "str", "permutation scheme: $schemes (Freedman-Lane "
                         "permutes the reduced model's residuals, as nilearn, randomise and "
                         "PALM do; ter Braak the full model's; sign_flip flips their signs, "
                         "assuming symmetric errors); one-sample tests always sign-flip")
    groups: str | None = _param(None, "str?", "table column of exchangeability blocks (e.g. "
                                "`site`): permutations stay within blocks, as randomise's and "
                                "PALM's `-eb`; QC excludes subjects missing it")
    tfce: bool | dict[str, Any] | None = _param(
        None, "tfce?", "TFCE options: `true` (the defaults) or a mapping such as "
        "`{E: 0.5, H: 2}`; adds `tfce` to `statistics`")
    cluster_threshold: float = _param(0.001, "float", "cluster-forming uncorrected p of the "
                                      "cluster statistics, in (0, 1)")
    accel: str | None = _param(None, "str?", "acceleration of the FWER p-values: $accelerations "
                               "fits a generalised Pareto distribution to the upper tail of "
                               "each null (Winkler et al. 2016, PALM's `-accel tail`), so "
                               "p-values below 1/(n_perm + 1) are reported; `none`: plain "
                               "permutation p-values")
    random_state: int = _param(2026, "int",
                               "seed of the permutation stream (recorded in `provenance.json`)")
    n_jobs: int = _param(1, "int", "permutation workers (joblib: -1 = all cores; not 0)")
    run_name: str = _param("demo", "str", "folder of the run under `reports_dir` (one name, "
                           "no path separator)")
    reports_dir: str = _param("reports", "path", "where runs land")
    cut_coords: tuple[float, float, float] | None = _param(
        None, "floats3?", "figure cut x,y,z in mm (the peak is used when the cut misses the "
        "data); `none`: the built-in dataset's ($ref_cut_coords), none for a folder (the "
        "peak)")
    bids_filter: dict[str, Any] | None = _param(
        None, "dict?", "BIDS entities the maps must have, e.g. `{desc: fluency, space: "
        "MNI152NLin2009cAsym, suffix: effect}` (a value or a list of values each; keys as in "
        "the file names), for a BIDS root or any folder of BIDS-named maps")
    on_missing: str = _param("error", "str", "maps without a table row and rows without a "
                             "map: `error` (listing them) or `drop` them (logged)")
    export: str | None = _param(
        None, "str?", "`bids`: the run folder also holds `bids/`, a BIDS derivatives export "
        "(nilearn's `save_glm_to_bids` naming, JSON sidecars, cluster table)")
    output_dir: str | None = _param(
        None, "path?", "where the notebook writes (`none`: `reports_dir/run_name`); "
        "`glmkit run` sets it to a temporary folder that it renames when the run is complete",
        runner=True, flag=False)
    notebook: str | None = _param(
        None, "path?", "the notebook to execute (`none`: the notebook shipped with glmkit); "
        "`glmkit run` passes its path to the notebook, which records its sha256", runner=True)
    force: bool = _param(False, "bool", "replace a complete earlier run of the same name",
                         runner=True, notebook=False)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _coerce(f.name, f.metadata["kind"], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self._check_dataset()
        self._fill_from_dataset()
        self._check()

    def dataset_defaults(self) -> dict[str, Any]:
        """What the dataset supplies for the fields left unset: a built-in dataset's reference
        analysis, a :class:`~glmkit.data.datasets.Dataset`'s ``defaults``, else nothing."""
        if _is_dataset(self.dataset):
            return dict(getattr(self.dataset, "defaults", None) or {})
        if isinstance(self.dataset, str) and self.dataset in BUILTIN_DEFAULTS:
            return dict(BUILTIN_DEFAULTS[self.dataset])
        return {}

    def _fill_from_dataset(self) -> None:
        """Fields of ``DATASET_DEFAULTED`` left unset take the dataset's values (recorded, so
        that :meth:`replace` with another dataset unsets them again); ``rename`` is otherwise
        empty. Required fields still unset are an error naming the parameter."""
        defaults, filled = self.dataset_defaults(), []
        kinds = {f.name: f.metadata["kind"] for f in dataclasses.fields(self)}
        for name in DATASET_DEFAULTED:
            if getattr(self, name) is None and (name in defaults or name == "rename"):
                value = _coerce(name, kinds[name], defaults.get(name, {}))
                object.__setattr__(self, name, value)
                filled.append(name)
        object.__setattr__(self, "_filled", tuple(filled))
        what = ("a folder dataset" if not _is_dataset(self.dataset)
                else f"dataset {self.dataset.name!r} (given from Python)")
        if self.covariates is None and self.formula is None:
            raise ParameterError(
                f"covariates is not set: {what} has no default design; pass "
                "covariates=['age', 'score'] or formula='score + age + C(sex)' (or "
                "covariates=[] for a one-sample test of the mean)")
        if self.contrast is None:
            raise ParameterError(
                f"contrast is not set: {what} has no default contrast; pass what is tested, "
                "e.g. contrast='score' (a design column), contrast='score - age' or "
                "contrast=[1, 0] (one weight per column)")

    def _check_dataset(self) -> None:
        """The dataset: a built-in name, a Dataset, or paths that exist (a glob matching a
        file), with the table a folder needs; options that only apply elsewhere refused."""
        folder_only = [n for n in ("table", "subject_column", "bids_filter")
                       if getattr(self, n) is not None]
        if _is_dataset(self.dataset) or self.dataset in BUILTIN_DATASETS:
            if folder_only:
                shown = ("a glmkit.Dataset" if _is_dataset(self.dataset)
                         else f"the built-in {self.dataset!r}")
                raise ParameterError(
                    f"{', '.join(folder_only)} given with dataset {shown}: it brings its own "
                    "maps and table; these are for a folder of maps (leave them unset)")
            return
        items = (self.dataset,) if isinstance(self.dataset, str) else self.dataset
        if not items or not all(items):
            raise ParameterError("dataset is empty: expected 'demo', 'demo-null', "
                                 "'localizer' or a folder of maps")
        for item in items:
            _check_dataset_path(item)
        root = Path(items[0]).expanduser()
        if len(items) == 1 and bids.is_bids_root(root):
            if self.table is None and not (root / BIDS_TABLE).is_file():
                raise DataFileNotFoundError(
                    f"dataset={items[0]!r} is a BIDS root (it has dataset_description.json) "
                    f"without {BIDS_TABLE}: pass table=<subject table> or add {BIDS_TABLE} "
                    "with a participant_id column")
        elif self.table is None:
            raise ParameterError(
                f"table is not set: the folder of maps {_shown_dataset(self.dataset)} needs a "
                "subject table; pass table='participants.tsv' (TSV or CSV, one row per "
                "subject), or point dataset at a BIDS root that has participants.tsv")
        if self.table is not None:
            _check_file("table", self.table, "a TSV/CSV subject table")

    def _check(self) -> None:
        if self.mask is not None and self.mask.strip().lower() != "mni152":
            _check_file("mask", self.mask, "a NIfTI mask file or 'mni152' (nilearn's MNI152 "
                        "brain mask)")
        _check_choice("on_missing", self.on_missing, ON_MISSING)
        if self.export is not None:
            _check_choice("export", self.export, EXPORT_FORMATS, what="export format")
        bids.normalise_filter(self.bids_filter)
        if self.n_subjects < 1:
            raise ParameterError(f"n_subjects={self.n_subjects} is out of range: expected >= 1")
        localizer_only = [n for n in ("localizer_contrast", "n_subjects")
                          if getattr(self, n) != self.__dataclass_fields__[n].default]
        if localizer_only and self.dataset != "localizer":
            raise ParameterError(
                f"{', '.join(localizer_only)} given with dataset={_shown_dataset(self.dataset)}"
                ": they choose what is fetched of the Localizer (dataset='localizer'); leave "
                "them unset for other datasets")
        _check_range("n_perm", self.n_perm, low=1, hint="use at least 1 (1000 for the reference, "
                     "5000 or more for publication)")
        _check_open_unit("alpha", self.alpha)
        _check_open_unit("cluster_threshold", self.cluster_threshold)
        _check_finite("smoothing_fwhm", self.smoothing_fwhm,
                      "a FWHM in mm >= 0, or none for no smoothing")
        if self.smoothing_fwhm is not None and not self.smoothing_fwhm >= 0:
            raise ParameterError(f"smoothing_fwhm={self.smoothing_fwhm} is out of range: "
                                 "expected a FWHM in mm >= 0, or none for no smoothing")
        if not 0 <= self.random_state < 2**63:
            raise ParameterError(
                f"random_state={self.random_state} is out of range: expected an integer "
                "0 <= random_state < 2**63 (the seed recorded in provenance.json), e.g. 2026")
        for coord in self.cut_coords or ():
            _check_finite("cut_coords", coord, "three finite numbers x,y,z in mm, e.g. "
                          "38,-17,-3, or none (the peak)")
        if self.n_jobs == 0:
            raise ParameterError("n_jobs=0 is not allowed: expected a positive number of workers "
                                 "or a negative one counted from all cores (-1 = all cores)")
        _check_choice("height_control", self.height_control, HEIGHT_CONTROLS)
        _check_choice("scheme", self.scheme, SCHEMES)
        _check_choice("accel", self.accel, (*ACCELERATIONS, None))
        _check_choice("on_grid_mismatch", self.on_grid_mismatch, GRID_ACTIONS)
        for stat in self.statistics:
            _check_choice("statistics", stat, statistic_names(), what="statistic")
        if isinstance(self.tfce, Mapping):
            from glmkit.stats.permutation import check_tfce  # numpy: not at import

            check_tfce(self.tfce)
        covariates = list(self.covariates or ())
        repeated = sorted({c for c in covariates if covariates.count(c) > 1})
        if repeated:
            raise ParameterError(f"covariates={covariates} repeats {repeated}; list each "
                                 "column once")
        if self.tfce is not None and "tfce" not in self.statistics:
            object.__setattr__(self, "statistics", (*self.statistics, "tfce"))
        if len(set(self.statistics)) != len(self.statistics):
            raise ParameterError(f"statistics={list(self.statistics)} repeats a statistic; "
                                 "list each statistic once")
        _check_run_name(self.run_name)
        if not self.reports_dir.strip():
            raise ParameterError("reports_dir is empty: expected a folder, e.g. 'reports'")
        _check_path_text("reports_dir", self.reports_dir)
        _check_path_text("notebook", self.notebook)
        for key, value in self.rename.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ParameterError(f"rename={self.rename!r}: expected a mapping of column "
                                     "names to new names (strings)")
        targets = list(self.rename.values())
        twice = sorted({v for v in targets if targets.count(v) > 1})
        if twice:
            raise ParameterError(f"rename={self.rename!r} gives several columns the name(s) "
                                 f"{twice}; give each column its own name")
        self._check_contrast()
        self._check_design_options()

    def _check_contrast(self) -> None:
        """The contrast, read by the one parser: its syntax, and that it is not zero whatever
        the design. Its names are checked against the design built from the table before any
        map is read (:func:`glmkit.pipeline.check_contrast`; ``glmkit run`` does it before
        the notebook starts): only the table says which covariates are categorical and
        which levels they have. A ContrastError is also a ParameterError."""
        from glmkit.stats.contrast import parse_contrast  # numpy: not at import (CLI help)

        parsed = parse_contrast(self.contrast)
        if parsed.is_list and self.two_sided:
            raise ContrastError(
                f"contrast {parsed.name!r} is a list of contrasts, an F test, and two_sided="
                "true has no meaning for it: F grows with effects of either sign already; "
                "leave two_sided false")
        if parsed.is_list and self.within is not None:
            raise ContrastError(
                f"contrast {parsed.name!r} is a list of contrasts (an F test) with within="
                f"{self.within!r}: a repeated-measures F test is not supported; test one "
                "difference of levels at a time, e.g. 'post - pre'")

    def _check_design_options(self) -> None:
        if self.within is not None and self.dataset in BUILTIN_DATASETS:
            raise ParameterError(
                f"within={self.within!r} with the built-in dataset {self.dataset!r}: it has "
                "one map per subject; within is for a folder with several maps per subject "
                "(one per level), e.g. dataset='maps/' with table='sessions.tsv'")
        if self.within is not None and self.within in (self.covariates or ()):
            raise ParameterError(f"within={self.within!r} is also in covariates: the "
                                 "within-subject column is not a covariate; remove it")
        if self.qc is not None:
            from glmkit.data.choices import POLICY_KEYS

            unknown = sorted(str(k) for k in self.qc if k not in POLICY_KEYS)
            if unknown:
                raise ParameterError(f"qc: unknown key(s) {unknown}; known keys: "
                                     f"{list(POLICY_KEYS)} (e.g. '{{exclude: [missing_value, "
                                     "coverage], keep: [S12], min_coverage: 0.8}')")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all parameters, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def notebook_parameters(cls) -> tuple[str, ...]:
        """Names ``glmkit run`` injects into the notebook's ``parameters`` cell (all but
        ``force``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["notebook"])

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any], /, **overrides: Any) -> RunSettings:
        """Build settings from the parameter names found in ``namespace``, ignoring other names.

        Meant for a notebook's ``globals()``: papermill injects the parameters as variables, so
        ``RunSettings.from_namespace(globals())`` takes each of them (a parameter the namespace
        lacks takes its default) and ignores the notebook's other names. ``overrides`` take
        precedence.

        Examples
        --------
        >>> RunSettings.from_namespace({"n_perm": 50, "np": object(), "x": 1}).n_perm
        50
        >>> RunSettings.from_namespace({}) == RunSettings()
        True
        """
        if not isinstance(namespace, Mapping):
            raise ParameterError(f"from_namespace expects a mapping of names to values (such "
                                 f"as globals()), found {type(namespace).__name__}")
        given = {name: namespace[name] for name in cls.field_names() if name in namespace}
        return cls.from_mapping(given, **overrides)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None = None, /, **overrides: Any
                     ) -> RunSettings:
        """Build settings from a mapping (YAML, CLI); names may use dashes or underscores.

        Unknown names raise :class:`~glmkit.errors.ParameterError` listing the known ones.

        Examples
        --------
        >>> RunSettings.from_mapping({"n-perm": 50, "run_name": "quick"}).n_perm
        50
        >>> RunSettings.from_mapping({"n_prem": 50})
        Traceback (most recent call last):
        ...
        glmkit.errors.ParameterError: unknown parameter 'n_prem' (did you mean 'n_perm'?) ...
        """
        merged: dict[str, Any] = {}
        for source in (mapping or {}), overrides:
            if not isinstance(source, Mapping):
                raise ParameterError(f"parameters must be a mapping of name -> value, "
                                     f"found {type(source).__name__}")
            for key, value in source.items():
                merged[_normalise_name(key)] = value
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, /, **overrides: Any) -> RunSettings:
        """Read parameters from a YAML mapping file; ``overrides`` take precedence."""
        return cls.from_mapping(read_params_file(path), **overrides)

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some fields changed (validated again).

        Fields this settings' dataset filled in (they were left unset) are unset again unless
        changed, so that another dataset supplies its own (or none): ``RunSettings()`` holds
        the demo's covariates, ``RunSettings().replace(dataset="maps/", ...)`` does not.
        """
        changes = {_normalise_name(k): v for k, v in changes.items()}
        values = {name: getattr(self, name) for name in self.field_names()}
        values.update({name: None for name in getattr(self, "_filled", ())})
        return type(self)(**{**values, **changes})

    # ------------------------------------------------------------------ outputs
    def to_dict(self, *, runner: bool = True) -> dict[str, Any]:
        """JSON-able dict (tuples as lists); ``runner=False`` drops the runner fields.

        Examples
        --------
        >>> RunSettings().to_dict()["cut_coords"]  # the demo's, filled in
        [38.0, -17.0, -3.0]
        """
        out = {}
        for name in self.field_names():
            if not runner and name in RUNNER_FIELDS:
                continue
            out[name] = _jsonable(getattr(self, name))
        return out

    def to_json(self) -> str:
        """The analysis parameters as indented JSON (what ``params.json`` holds)."""
        return json.dumps(self.to_dict(runner=False), indent=2)

    @property
    def notebook_path(self) -> Path:
        """The notebook to execute (``notebook`` or the packaged one)."""
        return Path(self.notebook) if self.notebook else packaged_notebook()

    @property
    def run_dir(self) -> Path:
        """``reports_dir / run_name``: where a complete run lands."""
        return Path(self.reports_dir) / self.run_name

    def resolved_output_dir(self) -> Path:
        """Where the notebook writes: ``output_dir``, else ``reports_dir/run_name``."""
        return Path(self.output_dir) if self.output_dir else self.run_dir

    @property
    def stat_type(self) -> str:
        """``"F"`` when the contrast is a list of contrasts (an F test), else ``"t"``: the
        statistic map of the run is ``maps/<stat_type>.nii.gz``."""
        from glmkit.stats.contrast import parse_contrast

        return "F" if parse_contrast(self.contrast).is_list else "t"

    def design_variables(self) -> tuple[str, ...]:
        """Table columns the analysis uses (design, ``groups`` and ``within``; QC checks them
        for missing values)."""
        columns = (tuple(self.covariates) if self.formula is None
                   else tuple(_IDENTIFIER.findall(self.formula)))
        extra = tuple(c for c in (self.groups, self.within) if c)
        return tuple(dict.fromkeys(columns + extra))

    def command_line(self, program: str = "glmkit run") -> str | None:
        """The command that reproduces these settings: each flag whose value differs from its
        default, paths as given (None for a dataset given as a Python object).

        Examples
        --------
        >>> print(RunSettings(dataset="demo-null", n_perm=1000, statistics="voxel,tfce")
        ...       .command_line())
        glmkit run --dataset demo-null --n-perm 1000 --statistics '[voxel, tfce]'
        """
        import shlex

        import yaml

        if _is_dataset(self.dataset):
            return None
        current = self.to_dict(runner=False)
        implied = _jsonable(dict(BUILTIN_DEFAULTS.get(self.dataset, {}))) if isinstance(
            self.dataset, str) else {}  # what a built-in dataset fills in by itself
        parts = [program]
        for p in parameters():
            if not p.flag or p.runner or p.name not in current:
                continue
            value = current[p.name]
            if value == p.default or value == implied.get(p.name, p.default):
                continue
            text = (yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
                    if isinstance(value, (list, dict)) else _shown_scalar(value))
            parts.append(f"--{p.name.replace('_', '-')} {shlex.quote(text)}")
        return " ".join(parts)

    def summary(self) -> str:
        """One line per analysis parameter."""
        return "\n".join(f"{k}: {v}" for k, v in self.to_dict(runner=False).items())


#: Fields that steer the runner (where and how to run), not the analysis; they are left out
#: of ``params.json``.
RUNNER_FIELDS = tuple(f.name for f in dataclasses.fields(RunSettings) if f.metadata["runner"])


# ---------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class Parameter:
    """One run parameter, as its :class:`RunSettings` field declares it.

    Attributes
    ----------
    name : str
        Field name (``--name-with-dashes`` on the command line).
    kind : str
        What values are coerced to (``"int"``, ``"float?"``, ``"strs"``, ...); see
        :attr:`expects`.
    type : str
        The field's annotation.
    default : object
        The default value (JSON-able: tuples as lists).
    text : str
        The declared help text: markdown (code in backticks) where ``$name`` stands for a
        list of choices read when :attr:`markdown` is asked for (``$statistics``: the
        statistics registered at that time).
    runner, flag, notebook : bool
        Steers the runner (not in ``params.json``); is a ``glmkit run`` flag and a README row;
        is injected into the notebook by ``glmkit run``.
    """

    name: str
    kind: str
    type: str
    default: Any
    text: str
    runner: bool
    flag: bool
    notebook: bool

    @property
    def markdown(self) -> str:
        """The help text in markdown, choices filled in from where they are declared now."""
        return string.Template(self.text).substitute(_choices())

    @property
    def help(self) -> str:
        """The help text as plain text (command line)."""
        return self.markdown.replace("`", "")

    @property
    def expects(self) -> str:
        """What a value must be, in words (e.g. ``"an integer"``)."""
        return _KIND_HELP[self.kind]

    @property
    def default_markdown(self) -> str:
        """The default as shown in the README (a value the command line accepts back)."""
        return _shown(self.default)

    @property
    def default_text(self) -> str:
        """The default as shown by ``glmkit run --help``."""
        return self.default_markdown.replace("`", "")


def parameters() -> tuple[Parameter, ...]:
    """Every run parameter with its declaration, in field order.

    Examples
    --------
    >>> by_name = {p.name: p for p in parameters()}
    >>> by_name["n_perm"].kind, by_name["n_perm"].default, by_name["n_perm"].expects
    ('int', 5000, 'an integer')
    >>> "`tfce`" in by_name["statistics"].markdown  # read from the registry of statistics
    True
    """
    return tuple(
        Parameter(name=f.name, kind=f.metadata["kind"], type=str(f.type),
                  default=_jsonable(f.default if f.default is not dataclasses.MISSING
                                    else f.default_factory()), text=f.metadata["help"],
                  runner=f.metadata["runner"], flag=f.metadata["flag"],
                  notebook=f.metadata["notebook"])
        for f in dataclasses.fields(RunSettings))


def parameter_table() -> str:
    """The README's table of ``glmkit run`` parameters (markdown), generated from the fields.

    ``tests/test_packaging.py`` checks that README.md holds exactly this table; after adding
    or changing a field, paste the output of
    ``python -c "import glmkit.settings as s; print(s.parameter_table())"`` into README.md.
    """
    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    rows += [f"| `{p.name}` | {p.default_markdown} | {p.markdown} |"
             for p in parameters() if p.flag]
    return "\n".join(rows) + "\n"


def _choices() -> dict[str, str]:
    """The lists the help texts name as ``$name``, read from where each is declared now (a
    statistic registered at run time is listed)."""
    from glmkit.stats.statistics import SCHEMES as schemes
    from glmkit.stats.statistics import statistic_names

    def listed(values) -> str:
        return ", ".join(f"`{_shown_scalar(v)}`" for v in values)

    reference = {f"ref_{name}": _shown(_jsonable(value))
                 for name, value in BUILTIN_DEFAULTS[BUILTIN_DATASETS[0]].items()}
    return {"datasets": listed(BUILTIN_DATASETS), "height_controls": listed(HEIGHT_CONTROLS),
            "statistics": listed(statistic_names()), "schemes": listed(schemes),
            "accelerations": listed(ACCELERATIONS), **reference}


def _shown_scalar(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _shown(value: Any) -> str:
    """A default as the command line would take it back: ``none``, ``false``, ``5000``,
    ``0.05``, ```voxel```, ```38,-17,-3```, ```{pseudo: fluency}```."""
    if value is None or isinstance(value, (bool, int, float)):
        return _shown_scalar(value)
    if isinstance(value, list):
        return f"`{','.join(_shown_scalar(v) for v in value)}`" if value else "empty"
    if isinstance(value, dict):
        items = ", ".join(f"{k}: {_shown_scalar(v)}" for k, v in value.items())
        return f"`{{{items}}}`"
    return f"`{value}`"


def _numpydoc_parameters() -> str:
    """The Parameters section of :class:`RunSettings`'s docstring, from the declarations."""
    lines = []
    for p in parameters():
        text = re.sub(r"`([^`]*)`", r"``\1``", p.markdown)
        default = re.sub(r"`([^`]*)`", r"``\1``", p.default_markdown)
        lines.append(f"{p.name} : {p.type}")
        lines += textwrap.wrap(f"{text[:1].upper()}{text[1:]}. Default: {default}.", width=88,
                               initial_indent="    ", subsequent_indent="    ",
                               break_on_hyphens=False)
    return "\n".join(lines)


# ---------------------------------------------------------------------- helpers
def read_params_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (or JSON) parameters file into a dict, with clear errors."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise DataFileNotFoundError(
            f"params file {str(path)!r} is a folder: expected a YAML file of name: value "
            "lines, e.g. notebooks/reference.yaml")
    if not path.is_file():
        raise DataFileNotFoundError(
            f"params file {str(path)!r} does not exist: expected a YAML file of name: value "
            "lines, e.g. notebooks/reference.yaml")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ParameterError(f"params file {str(path)!r} is not UTF-8 text ({exc.reason} at "
                             f"byte {exc.start}): save it as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"params file {str(path)!r} is not valid YAML: "
                             f"{yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ParameterError(
            f"params file {str(path)!r} holds a {type(data).__name__}, expected a mapping of "
            "parameter names to values (lines like 'n_perm: 1000')")
    return dict(data)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, but a mapping that repeats a key is an error (a ``yaml.YAMLError``
    naming the key and its lines) instead of keeping the last value silently.

    Examples
    --------
    >>> load_yaml("n_perm: 10\\nalpha: 0.01")
    {'n_perm': 10, 'alpha': 0.01}
    >>> import yaml
    >>> try:
    ...     load_yaml("n_perm: 10\\nn_perm: 20")
    ... except yaml.YAMLError as exc:
    ...     print(exc.problem)
    key 'n_perm' is given twice (lines 1 and 2); keep one
    """
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}); "
                    "keep one", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return loader.construct_mapping(node, deep=True)

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(exc: Exception) -> str:
    """A YAML error on one line: what is wrong, where, and the fix."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}; fix that line (lines like 'n_perm: 1000', lists in [ ])"


def _normalise_name(name: Any) -> str:
    return str(name).strip().lstrip("-").replace("-", "_")


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_range(name: str, value, *, low, hint: str) -> None:
    if value < low:
        raise ParameterError(f"{name}={value} is out of range: expected {name} >= {low}; {hint}")


def _check_open_unit(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ParameterError(f"{name}={value} is out of range: expected 0 < {name} < 1 "
                             "(an error rate or p-value, e.g. 0.05)")


def _check_choice(name: str, value, choices, *, what: str = "value") -> None:
    if value not in choices:
        shown = [c if c is not None else "none" for c in choices]
        raise ParameterError(f"{name}={value!r} is not a known {what}: expected one of {shown}"
                             f"{_did_you_mean(value, [c for c in choices if c])}")


#: longest run name: the run's folder, its temporary and failed siblings must fit a file name
MAX_RUN_NAME = 100


def _check_run_name(name: str) -> None:
    """One safe folder name: at most ``MAX_RUN_NAME`` characters, no path separator, ``..``,
    control character, leading ``.`` or ``~``, and no ``{}`` (papermill reads braces in paths
    as parameters)."""
    problem = None
    if not name or name in (".", ".."):
        problem = "it is empty" if not name else f"{name!r} is not a folder name"
    elif len(name) > MAX_RUN_NAME:
        problem = f"it has {len(name)} characters, more than {MAX_RUN_NAME}"
    elif any(ord(ch) < 32 or ord(ch) == 127 or 0x80 <= ord(ch) < 0xA0 for ch in name):
        problem = "it holds a control character (a newline, tab, ...)"
    elif "{" in name or "}" in name:
        problem = "it holds '{' or '}', which papermill reads as a parameter of the path"
    elif name.startswith((".", "~")):
        problem = f"it starts with {name[0]!r} (a hidden folder, or the home folder)"
    elif ("/" in name or "\\" in name or ".." in name or os.sep in name
          or (os.altsep and os.altsep in name)):
        problem = "it holds a path separator or '..'"
    elif any(ch in name for ch in ':*?"<>|'):
        problem = "it holds one of the characters : * ? \" < > |"
    elif name != name.strip():
        problem = "it starts or ends with white space"
    elif name.lower() == "index.html":
        problem = "it is the name of a batch's index page in reports_dir"
    if problem:
        raise ParameterError(
            f"run_name={_short_repr(name, 60)} is not a safe folder name: {problem}. Expected "
            f"one folder name of at most {MAX_RUN_NAME} characters (letters, digits, '-', '_', "
            "'.') without a path separator, '..', braces, control characters or a leading "
            "'.' or '~'; use reports_dir to choose where runs land")


def _check_path_text(name: str, value: str | None) -> None:
    """A path parameter papermill formats (its braces are parameters there): no braces, no
    control character."""
    if value is None:
        return
    if "{" in value or "}" in value:
        raise ParameterError(
            f"{name}={_short_repr(value, 80)} holds '{{' or '}}': papermill reads braces in "
            f"the notebook's paths as parameters; rename the folder or choose another {name}")
    if any(ord(ch) < 32 for ch in value):
        raise ParameterError(f"{name}={_short_repr(value, 80)} holds a control character (a "
                             "newline, tab, ...); check the value")


def _check_file(name: str, value: str, expected: str) -> None:
    """``value`` names an existing file (a folder or a missing path is an error saying which)."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise DataFileNotFoundError(
            f"{name}={value!r} is a folder: expected {expected}; name the file inside it")
    if not path.is_file():
        raise DataFileNotFoundError(
            f"{name}={value!r} does not exist: expected {expected}; check the path (relative "
            "paths are taken from the current folder)")


def _check_finite(name: str, value: float | None, hint: str) -> None:
    import math

    if value is not None and not math.isfinite(value):
        raise ParameterError(f"{name}={value} is not a finite number: expected {hint}")


def _type_error(name: str, kind: str, value: Any) -> ParameterError:
    return ParameterError(f"{name}={_short_repr(value)} has the wrong type: expected "
                          f"{_KIND_HELP[kind]}, found {type(value).__name__}")


def _short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)``, but a table or array by its shape, and never more than ``limit``
    characters (an error never prints a whole DataFrame)."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (str, bytes)):
        return f"<{type(value).__name__} of shape {tuple(shape)}>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + " ...>"


def _coerce(name: str, kind: str, value: Any) -> Any:  # noqa: C901 - one branch per kind
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    # an empty list, mapping or contrast is a value (an error or no renames), not "unset"
    words = _NONE - {""} if base in ("strs", "dict", "contrast", "floats3") else _NONE
    if isinstance(value, str) and optional and value.strip().lower() in words:
        return None
    if value is None:
        if optional:
            return None
        raise ParameterError(f"{name} is none: expected {_KIND_HELP[kind]}")
    if base in ("str", "path"):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if base == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # e.g. run_name: 2024 in a YAML file
        if not isinstance(value, str):
            raise _type_error(name, kind, value)
        return value.strip() if base == "str" else value
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _type_error(name, kind, value)
    if base == "int":
        if isinstance(value, bool):
            raise _type_error(name, kind, value)
        if isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                raise _type_error(name, kind, value) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) and not _is_np_integer(value):
            raise _type_error(name, kind, value)
        return int(value)
    if base == "float":
        if isinstance(value, bool):
            raise _type_error(name, kind, value)
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _type_error(name, kind, value) from None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _type_error(name, kind, value) from None
    if base == "strs":
        items = _as_list(name, kind, value)
        if not all(isinstance(v, str) for v in items):
            raise _type_error(name, kind, value)
        return tuple(v.strip() for v in items if v.strip())
    if base == "floats3":
        items = _as_list(name, kind, value)
        try:
            coords = tuple(float(v) for v in items)
        except (TypeError, ValueError):
            raise _type_error(name, kind, value) from None
        if len(coords) != 3:
            raise ParameterError(f"{name}={value!r}: expected three numbers x,y,z in mm, "
                                 f"found {len(coords)}")
        return coords
    if base == "tfce":
        if isinstance(value, str):
            text = value.strip().lower()
            value = text in _TRUE if text in _TRUE | _FALSE else _yaml_value(name, kind, value)
        if value is False or value is None:
            return None
        if value is True:
            return True
        if not isinstance(value, Mapping):
            raise _type_error(name, kind, value)
        return dict(value)
    if base == "contrast":
        return _coerce_contrast(name, kind, value)
    if base == "dataset":
        return _coerce_dataset(name, kind, value)
    if base == "dict":
        if isinstance(value, str):
            value = _yaml_value(name, kind, value)
            if value is None:
                return None if optional else {}
        if not isinstance(value, Mapping):
            raise _type_error(name, kind, value)
        return dict(value)
    raise AssertionError(kind)  # pragma: no cover


def _coerce_contrast(name: str, kind: str, value: Any) -> str | tuple:
    """A contrast as text, or a list (``'[1, 0]'`` on the command line) as a tuple: numbers as
    floats, names kept (a list of names is an F-test, refused by validation for now)."""
    if isinstance(value, str):
        if not value.strip().startswith("["):
            return value.strip()
        value = _yaml_value(name, kind, value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hasattr(value, "tolist"):  # a NumPy array
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise _type_error(name, kind, value)

    def item(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return tuple(item(w) for w in v)
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        return float(v) if numeric else v

    return tuple(item(v) for v in value)


def _is_np_integer(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Integral)


def _yaml_value(name: str, kind: str, text: str) -> Any:
    import yaml

    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        if "given twice" in str(exc):
            raise ParameterError(f"{name}={_short_repr(text)}: {exc.problem}") from None
        raise _type_error(name, kind, text) from None


def _as_list(name: str, kind: str, value: Any) -> list:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            value = _yaml_value(name, kind, "[" + text[1:-1] + "]")
        else:
            value = [v for v in text.split(",")] if text else []
            if any(not v.strip() for v in value):
                raise ParameterError(
                    f"{name}={value!r:.80} has an empty item (two commas in a row, or one at an "
                    f"end); list the {name} separated by single commas, e.g. "
                    f"{name}={','.join(v.strip() for v in value if v.strip())!r}")
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _type_error(name, kind, value)


def _is_dataset(value: Any) -> bool:
    """A :class:`glmkit.data.datasets.Dataset` (or alike: maps, table, name), checked without
    importing the data layer's heavy modules."""
    return all(hasattr(value, attr) for attr in ("maps", "table", "name", "subjects"))


def _shown_dataset(value: Any) -> str:
    return f"<Dataset {value.name!r}>" if _is_dataset(value) else repr(value)


def _check_dataset_path(item: str) -> None:
    """One path of ``dataset``: an existing folder or file, or a glob matching a file."""
    if _glob.has_magic(item):
        if not _glob.glob(os.path.expanduser(item), recursive=True):
            raise DataFileNotFoundError(
                f"dataset={item!r} is a glob that matches no file: check the pattern "
                "(relative paths are taken from the current folder; '**' matches any number "
                "of folders)")
    elif not Path(item).expanduser().exists():
        hint = _did_you_mean(item, BUILTIN_DATASETS)
        raise ParameterError(
            f"dataset={item!r} is neither one of {list(BUILTIN_DATASETS)} nor an existing "
            f"folder, file or glob of maps{hint}; pass a built-in name or the path of a folder")


def _coerce_dataset(name: str, kind: str, value: Any) -> Any:
    """A built-in name or one path as a string; several paths (a list, or comma-separated
    text) as a tuple; a Dataset as it is."""
    if _is_dataset(value):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        value = [v for v in value.split(",")] if "," in value else [value]
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (str, os.PathLike)) for v in value):
        raise _type_error(name, kind, value)
    items = tuple(os.fspath(v).strip() for v in value)
    return items[0] if len(items) == 1 else items


def _jsonable(value: Any) -> Any:
    if _is_dataset(value):  # a Dataset given from Python: its name
        return str(value.name)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _check_names(names) -> None:
    """Every name is a RunSettings field; else an error naming the first unknown one, a close
    known name (a typo) and every known parameter."""
    known = RunSettings.field_names()
    unknown = [k for k in names if k not in known]
    if unknown:
        name = unknown[0]
        hint = _did_you_mean(name, known).replace(";", "")
        raise ParameterError(
            f"unknown parameter {name!r}{hint} "
            f"{'(and ' + ', '.join(map(repr, unknown[1:])) + ') ' if unknown[1:] else ''}"
            f"- known parameters: {', '.join(known)}")


def _checked_init(init):
    """RunSettings' generated ``__init__``, with positional and unknown arguments refused as a
    ParameterError (a typo gets the close name) rather than a TypeError."""
    import functools

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            raise ParameterError(
                f"RunSettings takes parameters by name (RunSettings(n_perm=1000, ...)), found "
                f"{len(args)} positional argument(s) {_short_repr(args, 80)}; for a mapping "
                "use RunSettings.from_mapping(mapping)")
        _check_names(kwargs)
        init(self, **kwargs)

    return __init__


RunSettings.__init__ = _checked_init(RunSettings.__init__)  # type: ignore[method-assign]

# the docstring's Parameters section, from the field declarations (needs the helpers above)
RunSettings.__doc__ = inspect.cleandoc(RunSettings.__doc__ or "").replace(
    "$parameters", _numpydoc_parameters())
