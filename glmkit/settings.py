"""One validated settings object for a run: notebook parameters, CLI flags and YAML files.

:class:`RunSettings` is declared once and validated in ``__post_init__``. The same object
checks papermill's injected parameters (the notebook's first cell after ``parameters``
builds it), ``glmkit run --flag value`` (strings are coerced to the field's type) and
``--params file.yaml``. Unknown names are an error listing the known ones.
"""

from __future__ import annotations

import dataclasses
import difflib
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

from glmkit.data.choices import GRID_ACTIONS  # QC's fact
from glmkit.errors import ContrastError, DataFileNotFoundError, ParameterError
from glmkit.stats.choices import ACCELERATIONS, HEIGHT_CONTROLS  # the stats layer's facts
from glmkit.stats.contrast import parse_contrast
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
]

BUILTIN_DATASETS = ("demo", "demo-null", "localizer")
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
    "path": "a path",
    "path?": "a path or none",
    "int": "an integer",
    "float": "a number",
    "float?": "a number or none",
    "bool": "true or false",
    "strs": "a list of names (comma-separated on the command line)",
    "dict": "a mapping, e.g. '{pseudo: fluency}'",
    "dict?": "a mapping or none",
    "tfce?": "none, true (default TFCE options) or a mapping such as '{E: 0.5, H: 2}'",
    "floats3": "three numbers x,y,z in mm",
    "contrast": "a design column, an expression such as 'a - b' or '2*a', or one weight per "
                "column such as '[1, 0]'",
}


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

    dataset: str = _param("demo", "str", "$datasets or a folder or glob of maps (with `table`)")
    table: str | None = _param(None, "path?", "subject table (TSV/CSV) of a folder dataset")
    subject_column: str = _param("subject", "str",
                                 "the table's subject-id column (e.g. `participant_id`)")
    on_grid_mismatch: str = _param(
        "error", "str", "a map on another grid (shape/affine) than the first map: `error` "
        "(naming the files) or `resample` it to the first map's grid (QC flags it)")
    localizer_contrast: str = _param("left button press (auditory cue)", "str",
                                     "Localizer contrast fetched with `dataset: localizer`")
    n_subjects: int = _param(94, "int", "Localizer subjects to fetch (`dataset: localizer`)")
    covariates: tuple[str, ...] = _param(("pseudo",), "strs", "table columns of the design "
                                         "(an intercept is added); ignored when `formula` is set")
    formula: str | None = _param(None, "str?", "a formulaic formula instead of `covariates`, "
                                 "e.g. `pseudo + age + C(sex)`")
    rename: dict[str, str] = _param({"pseudo": "fluency"}, "dict",
                                    "design column renames, as in nilearn's example")
    contrast: str | tuple[float, ...] = _param(
        "fluency", "contrast", "what is tested: a design column, an expression of columns "
        "(`a - b`, `2*fluency`) or one weight per column (`[1, 0]`)")
    center: bool = _param(False, "bool", "centre the covariates (the reference does not)")
    smoothing_fwhm: float | None = _param(5.0, "float?", "Gaussian smoothing FWHM in mm "
                                          "applied to the maps (`none`: no smoothing)")
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
    cut_coords: tuple[float, float, float] = _param(
        (38.0, -17.0, -3.0), "floats3",
        "figure cut x,y,z in mm (the peak is used when the cut misses the data)")
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
        self._check()

    def _check(self) -> None:
        if not self.dataset:
            raise ParameterError("dataset is empty: expected 'demo', 'demo-null', "
                                 "'localizer' or a folder of maps")
        if self.dataset not in BUILTIN_DATASETS and not Path(self.dataset).expanduser().exists():
            hint = _did_you_mean(self.dataset, BUILTIN_DATASETS)
            raise ParameterError(
                f"dataset={self.dataset!r} is neither one of {list(BUILTIN_DATASETS)} nor an "
                f"existing folder of maps{hint}; pass a built-in name or the path of a folder")
        if self.table is not None and not Path(self.table).expanduser().is_file():
            raise DataFileNotFoundError(
                f"table={self.table!r} does not exist: expected a TSV/CSV subject table; "
                "check the path (relative paths are taken from the current folder)")
        if self.n_subjects < 1:
            raise ParameterError(f"n_subjects={self.n_subjects} is out of range: expected >= 1")
        _check_range("n_perm", self.n_perm, low=1, hint="use at least 1 (1000 for the reference, "
                     "5000 or more for publication)")
        _check_open_unit("alpha", self.alpha)
        _check_open_unit("cluster_threshold", self.cluster_threshold)
        if self.smoothing_fwhm is not None and not self.smoothing_fwhm >= 0:
            raise ParameterError(f"smoothing_fwhm={self.smoothing_fwhm} is out of range: "
                                 "expected a FWHM in mm >= 0, or none for no smoothing")
        if self.n_jobs == 0:
            raise ParameterError("n_jobs=0 is not allowed: expected a positive number of workers "
                                 "or a negative one counted from all cores (-1 = all cores)")
        _check_choice("height_control", self.height_control, HEIGHT_CONTROLS)
        _check_choice("scheme", self.scheme, SCHEMES)
        _check_choice("accel", self.accel, (*ACCELERATIONS, None))
        _check_choice("on_grid_mismatch", self.on_grid_mismatch, GRID_ACTIONS)
        for stat in self.statistics:
            _check_choice("statistics", stat, statistic_names(), what="statistic")
        if self.tfce is not None and "tfce" not in self.statistics:
            object.__setattr__(self, "statistics", (*self.statistics, "tfce"))
        if len(set(self.statistics)) != len(self.statistics):
            raise ParameterError(f"statistics={list(self.statistics)} repeats a statistic")
        _check_run_name(self.run_name)
        if not self.reports_dir:
            raise ParameterError("reports_dir is empty: expected a folder, e.g. 'reports'")
        if self.formula is None and not self.covariates:
            raise ParameterError("covariates is empty and formula is none: the design needs "
                                 "at least one covariate (e.g. covariates=pseudo) or a formula")
        for key, value in self.rename.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ParameterError(f"rename={self.rename!r}: expected a mapping of column "
                                     "names to new names (strings)")
        self._check_contrast_names()

    def _check_contrast_names(self) -> None:
        """The contrast, read by the one parser: always its syntax and that it is not zero;
        its names against the design's columns when they are known before the data are (the
        covariates renamed, plus the intercept; not with a formula). A ContrastError is also
        a ParameterError."""
        parsed = parse_contrast(self.contrast)
        if parsed.is_list:  # issue 10 lifts this
            raise ContrastError(
                f"contrast {parsed.name!r} is a list of contrasts, i.e. an F-test: F-tests are "
                "not supported yet by glmkit run; test one column, expression or vector of "
                "weights, e.g. contrast='fluency' (glmkit.compute_contrast(..., "
                "stat_type='F') computes a parametric F-test from Python)")
        if self.formula is None:
            columns = [self.rename.get(c, c) for c in self.covariates] + ["intercept"]
            parsed.matrix(columns, where=f"the design built from covariates="
                          f"{list(self.covariates)} and rename={self.rename}")

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
        known = cls.field_names()
        unknown = [k for k in merged if k not in known]
        if unknown:
            name = unknown[0]
            hint = _did_you_mean(name, known).replace(";", "")
            raise ParameterError(
                f"unknown parameter {name!r}{hint} "
                f"{'(and ' + ', '.join(map(repr, unknown[1:])) + ') ' if unknown[1:] else ''}"
                f"- known parameters: {', '.join(known)}")
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, /, **overrides: Any) -> RunSettings:
        """Read parameters from a YAML mapping file; ``overrides`` take precedence."""
        return cls.from_mapping(read_params_file(path), **overrides)

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **{_normalise_name(k): v for k, v in changes.items()})

    # ------------------------------------------------------------------ outputs
    def to_dict(self, *, runner: bool = True) -> dict[str, Any]:
        """JSON-able dict (tuples as lists); ``runner=False`` drops the runner fields.

        Examples
        --------
        >>> RunSettings().to_dict()["cut_coords"]
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

    def design_variables(self) -> tuple[str, ...]:
        """Table columns the analysis uses (design and ``groups``; QC checks them for missing
        values)."""
        columns = (tuple(self.covariates) if self.formula is None
                   else tuple(_IDENTIFIER.findall(self.formula)))
        return tuple(dict.fromkeys(columns + ((self.groups,) if self.groups else ())))

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
    defaults = RunSettings().to_dict()
    return tuple(
        Parameter(name=f.name, kind=f.metadata["kind"], type=str(f.type),
                  default=defaults[f.name], text=f.metadata["help"],
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

    return {"datasets": listed(BUILTIN_DATASETS), "height_controls": listed(HEIGHT_CONTROLS),
            "statistics": listed(statistic_names()), "schemes": listed(schemes),
            "accelerations": listed(ACCELERATIONS)}


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
    if not path.is_file():
        raise DataFileNotFoundError(
            f"params file {str(path)!r} does not exist: expected a YAML file of name: value "
            "lines, e.g. notebooks/reference.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParameterError(f"params file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ParameterError(
            f"params file {str(path)!r} holds a {type(data).__name__}, expected a mapping of "
            "parameter names to values (lines like 'n_perm: 1000')")
    return dict(data)


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
        raise ParameterError(f"{name}: {value!r} is not a known {what}: expected one of {shown}"
                             f"{_did_you_mean(value, [c for c in choices if c])}")


def _check_run_name(name: str) -> None:
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or ".." in name
           or name.startswith(".") or os.sep in name or (os.altsep and os.altsep in name)
           or any(ch in name for ch in ':*?"<>|\0') or name != name.strip())
    if bad:
        raise ParameterError(
            f"run_name={name!r} is not a safe folder name: expected one folder name (letters, "
            "digits, '-', '_', '.') without a path separator, '..' or a leading dot; "
            "use reports_dir to choose where runs land")


def _type_error(name: str, kind: str, value: Any) -> ParameterError:
    return ParameterError(f"{name}={value!r} has the wrong type: expected {_KIND_HELP[kind]}, "
                          f"found {type(value).__name__}")


def _coerce(name: str, kind: str, value: Any) -> Any:  # noqa: C901 - one branch per kind
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    if isinstance(value, str) and optional and value.strip().lower() in _NONE:
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
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise _type_error(name, kind, text) from None


def _as_list(name: str, kind: str, value: Any) -> list:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            value = _yaml_value(name, kind, "[" + text[1:-1] + "]")
        else:
            value = [v for v in text.split(",")] if text else []
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _type_error(name, kind, value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


# the docstring's Parameters section, from the field declarations (needs the helpers above)
RunSettings.__doc__ = inspect.cleandoc(RunSettings.__doc__ or "").replace(
    "$parameters", _numpydoc_parameters())
