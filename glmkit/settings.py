"""One validated settings object for a run: notebook parameters, CLI flags and YAML files.

:class:`RunSettings` is declared once and validated in ``__post_init__``. The same object
checks papermill's injected parameters (the notebook's first cell after ``parameters``
builds it), ``glmkit run --flag value`` (strings are coerced to the field's type) and
``--params file.yaml``. Unknown names are an error listing the known ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmkit.data import DEFAULT_CUT_COORDS
from glmkit.errors import DataFileNotFoundError, ParameterError

__all__ = [
    "RunSettings",
    "BUILTIN_DATASETS",
    "STATISTICS",
    "HEIGHT_CONTROLS",
    "SCHEMES",
    "GRID_ACTIONS",
    "RUNNER_FIELDS",
    "packaged_notebook",
]

BUILTIN_DATASETS = ("demo", "demo-null", "localizer")
STATISTICS = ("voxel", "cluster_size", "cluster_mass", "tfce")
HEIGHT_CONTROLS = ("fdr", "bonferroni", "fpr", None)
SCHEMES = ("freedman_lane", "ter_braak")
GRID_ACTIONS = ("error", "resample")
NOTEBOOK_NAME = "second_level_association.ipynb"
#: Fields that steer the runner (where and how to run), not the analysis; they are not
#: notebook parameters and are left out of ``params.json``.
RUNNER_FIELDS = ("notebook", "force", "output_dir")

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


# field name -> kind used to coerce strings (CLI flags) and check types
_KINDS: dict[str, str] = {
    "dataset": "str",
    "table": "path?",
    "subject_column": "str",
    "on_grid_mismatch": "str",
    "localizer_contrast": "str",
    "n_subjects": "int",
    "covariates": "strs",
    "formula": "str?",
    "rename": "dict",
    "contrast": "str",
    "center": "bool",
    "smoothing_fwhm": "float?",
    "alpha": "float",
    "height_control": "str?",
    "n_perm": "int",
    "two_sided": "bool",
    "statistics": "strs",
    "scheme": "str",
    "groups": "str?",
    "tfce": "tfce?",
    "cluster_threshold": "float",
    "random_state": "int",
    "n_jobs": "int",
    "run_name": "str",
    "reports_dir": "path",
    "cut_coords": "floats3",
    "output_dir": "path?",
    "notebook": "path?",
    "force": "bool",
}

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
}


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Parameters of one second-level run (the reference analysis by default).

    Every field is a notebook parameter and a ``glmkit run --flag`` (except ``notebook``,
    ``force`` and ``output_dir``, which steer the runner). Values given as strings (from the
    command line) are coerced: ``"1000"`` -> 1000, ``"voxel,tfce"`` -> ``("voxel", "tfce")``,
    ``"{pseudo: fluency}"`` -> ``{"pseudo": "fluency"}``, ``"none"`` -> None.

    Parameters
    ----------
    dataset : str
        ``"demo"``, ``"demo-null"``, ``"localizer"`` or a folder of maps (with ``table``).
    table : str or None
        Subject table (TSV/CSV) of a folder dataset.
    subject_column : str
        Column of ``table`` holding the subject ids.
    on_grid_mismatch : {"error", "resample"}
        A map on another grid (shape/affine) than the first map: stop with an error naming
        the files, or resample it to the first map's grid (continuous interpolation; QC
        flags it).
    localizer_contrast, n_subjects : str, int
        Which Localizer contrast and how many subjects (``dataset="localizer"``).
    covariates : tuple of str
        Table columns of the design (an intercept is added). Ignored when ``formula`` is set.
    formula : str or None
        A formulaic formula, e.g. ``"pseudo + age + C(sex)"``, instead of ``covariates``.
    rename : dict
        Design column renames, e.g. ``{"pseudo": "fluency"}`` as in nilearn's example.
    contrast : str
        Design column (or expression such as ``"a - b"``) tested.
    center : bool
        Centre the covariates (the reference does not).
    smoothing_fwhm : float or None
        Gaussian smoothing in mm applied to the maps (5.0 in the reference).
    alpha : float
        Error rate of every threshold (FDR q and FWER), in (0, 1).
    height_control : {"fdr", "bonferroni", "fpr", None}
        Parametric height control of the headline parametric map.
    n_perm : int
        Number of permutations (>= 1); the reference uses 1000.
    two_sided : bool
        Two-sided tests (the reference is one-sided: a positive association).
    statistics : tuple of str
        Permutation statistics, a subset of ``("voxel", "cluster_size", "cluster_mass",
        "tfce")``; empty skips the permutation stage.
    scheme : {"freedman_lane", "ter_braak"}
        Permutation scheme for designs with nuisance covariates: Freedman-Lane (nilearn's,
        randomise's and PALM's) permutes the residuals of the model without the tested
        regressor; ter Braak those of the full model.
    groups : str or None
        Table column of exchangeability blocks (e.g. ``"site"``): permutations stay within
        blocks, as randomise's and PALM's ``-eb``. Subjects missing it are excluded by QC.
    tfce : None, True or dict
        TFCE options passed to the permutation engine (True: the defaults E=0.5, H=2; a
        mapping such as ``{"E": 0.5, "H": 2}``). Setting it adds ``"tfce"`` to
        ``statistics``.
    cluster_threshold : float
        Cluster-forming uncorrected p threshold of cluster statistics, in (0, 1).
    random_state : int
        Seed of the permutation stream (recorded in the provenance).
    n_jobs : int
        Workers for the permutations (joblib convention: -1 = all cores; not 0).
    run_name : str
        Folder name of the run under ``reports_dir`` (no path separator).
    reports_dir : str
        Where runs land.
    cut_coords : tuple of 3 floats
        Cut (x, y, z) in mm of the figures.
    output_dir : str or None
        Where the notebook writes its outputs; None -> ``reports_dir/run_name``. The runner
        sets it to a temporary folder that it renames when the run is complete.
    notebook : str or None
        Notebook to execute; None -> the notebook shipped with glmkit.
    force : bool
        Replace a complete earlier run of the same name.

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

    dataset: str = "demo"
    table: str | None = None
    subject_column: str = "subject"
    on_grid_mismatch: str = "error"
    localizer_contrast: str = "left button press (auditory cue)"
    n_subjects: int = 94
    covariates: tuple[str, ...] = ("pseudo",)
    formula: str | None = None
    rename: dict[str, str] = field(default_factory=lambda: {"pseudo": "fluency"})
    contrast: str = "fluency"
    center: bool = False
    smoothing_fwhm: float | None = 5.0
    alpha: float = 0.05
    height_control: str | None = "fdr"
    n_perm: int = 5000
    two_sided: bool = False
    statistics: tuple[str, ...] = ("voxel",)
    scheme: str = "freedman_lane"
    groups: str | None = None
    tfce: bool | dict[str, Any] | None = None
    cluster_threshold: float = 0.001
    random_state: int = 2026
    n_jobs: int = 1
    run_name: str = "demo"
    reports_dir: str = "reports"
    cut_coords: tuple[float, float, float] = DEFAULT_CUT_COORDS
    output_dir: str | None = None
    notebook: str | None = None
    force: bool = False

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _coerce(f.name, _KINDS[f.name], getattr(self, f.name))
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
        _check_choice("on_grid_mismatch", self.on_grid_mismatch, GRID_ACTIONS)
        for stat in self.statistics:
            _check_choice("statistics", stat, STATISTICS, what="statistic")
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
        if not self.contrast.strip():
            raise ParameterError("contrast is empty: expected a design column, e.g. 'fluency'")
        if self.formula is None:
            self._check_contrast_names()

    def _check_contrast_names(self) -> None:
        columns = [self.rename.get(c, c) for c in self.covariates] + ["intercept"]
        for name in _IDENTIFIER.findall(self.contrast):
            if name not in columns:
                hint = _did_you_mean(name, columns)
                raise ParameterError(
                    f"contrast={self.contrast!r} names {name!r}, which is not a design column: "
                    f"the design built from covariates={list(self.covariates)} and "
                    f"rename={self.rename} has columns {columns}{hint}; pass one of them")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all parameters, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def notebook_parameters(cls) -> tuple[str, ...]:
        """Names injected into the notebook's ``parameters`` cell (all but runner fields)."""
        return tuple(n for n in cls.field_names() if n not in ("notebook", "force"))

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
    if base == "dict":
        if isinstance(value, str):
            value = _yaml_value(name, kind, value)
            if value is None:
                return None if optional else {}
        if not isinstance(value, Mapping):
            raise _type_error(name, kind, value)
        return dict(value)
    raise AssertionError(kind)  # pragma: no cover


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
