"""A catalogue of bad inputs, through the Python API and the command line.

Each case asserts the :class:`~glmkit.errors.GlmkitError` subclass raised, that the message
names the input (the parameter, file or column) and says what to do, that it speaks the
interface in use (``name=value`` to Python users, ``--name value`` on the command line), and,
for validation-level errors, that no map was loaded (``nibabel.load`` is watched, as in
tests/test_designs.py). Most cases are settings and argument validation: milliseconds each.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import glmkit
import glmkit.data.datasets
import glmkit.data.qc
import glmkit.pipeline
import glmkit.stats.glm
from glmkit import cli
from glmkit.errors import (
    ContrastError,
    DataFileNotFoundError,
    DatasetError,
    DesignError,
    GlmkitError,
    ImageError,
    ParameterError,
    ReportError,
    RunError,
)
from glmkit.settings import RunSettings

SHAPE = (6, 6, 6)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
N = 8
#: words that say what to do
FIX = re.compile(r"\b(expected|expect|pass|use|set|choose|check|fix|remove|rename|add|drop|"
                 r"give|name|leave|keep|split|wait|save|point|list|encode|merge|convert|"
                 r"test|fill|lower|re-export|must|one of|compare)\b|\be\.g\.", re.I)


# ----------------------------------------------------------------------------- study
@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """8 maps (sub-00 .. sub-07) of smooth-free noise plus a mean effect, and a table with
    age, score, group and site; extra folders with broken variants."""
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("catalogue")
    maps = root / "maps"
    maps.mkdir()
    for i in range(N):
        data = rng.standard_normal(SHAPE).astype(np.float32) + 1.0
        nib.save(nib.Nifti1Image(data, AFFINE), maps / f"sub-{i:02d}.nii.gz")
    table = pd.DataFrame({"subject": [f"sub-{i:02d}" for i in range(N)],
                          "age": rng.uniform(20, 60, N).round(1),
                          "score": rng.normal(size=N).round(2),
                          "group": ["a", "b"] * (N // 2), "site": ["x"] * 4 + ["y"] * 4})
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    text = (root / "participants.tsv").read_text().splitlines()
    (root / "dup_column.tsv").write_text("\n".join([text[0].replace("score", "age"),
                                                    *text[1:]]) + "\n")
    table.assign(age_months=table["age"] * 12 + rng.normal(size=N) * 1e-9).to_csv(
        root / "near_copy.tsv", sep="\t", index=False)
    (root / "one_row.tsv").write_text("subject\tage\nsub-00\t30\n")
    (root / "no_subject.tsv").write_text(text[0].replace("subject", "id") + "\n"
                                         + "\n".join(text[1:]) + "\n")
    (root / "empty.tsv").write_text("")
    (root / "dup_ids.tsv").write_text("\n".join([*text, text[1]]) + "\n")
    (root / "extra_row.tsv").write_text("\n".join([*text, text[1].replace("sub-00", "sub-99")])
                                        + "\n")
    (root / "table.xlsx").write_bytes(b"PK\x03\x04 not a table")
    (root / "latin1.tsv").write_bytes("subject\tâge\nsub-00\t1\n".encode("latin-1"))
    _variant(root / "complex", lambda d: (d + 1j * d).astype(np.complex64), AFFINE)
    _variant(root / "huge_voxels", lambda d: d, np.diag([1e12, 1e12, 1e12, 1.0]))
    _variant(root / "flat_affine", lambda d: d, np.diag([3.0, 3.0, 0.0, 1.0]), raw=True)
    _variant(root / "nan_affine", lambda d: d, np.diag([np.nan, 3.0, 3.0, 1.0]), raw=True)
    _variant(root / "identical", lambda d: rng.standard_normal(SHAPE).astype(np.float32) * 0
             + np.linspace(0, 1, d.size, dtype=np.float32).reshape(SHAPE), AFFINE)
    (root / "nonbinary_mask.nii.gz").parent.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(SHAPE, 0.5, np.float32), AFFINE),
             root / "nonbinary_mask.nii.gz")
    (root / "notebook.ipynb").write_text("{}")
    return root


def _variant(folder: Path, data: Callable, affine: np.ndarray, raw: bool = False) -> None:
    """The study's maps with changed data or affine (``raw``: an affine nibabel refuses to
    write, put into the header by hand)."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(N):
        values = np.asarray(data(rng.standard_normal(SHAPE).astype(np.float32) + 1.0))
        if raw:
            img = nib.Nifti1Image(values.astype(np.float32), AFFINE)
            header = img.header
            header["srow_x"], header["srow_y"], header["srow_z"] = affine[:3]
            header["sform_code"], header["qform_code"] = 1, 0
            (folder / f"sub-{i:02d}.nii").write_bytes(
                header.binaryblock + b"\0" * 4 + values.astype(np.float32).tobytes(order="F"))
        else:
            nib.save(nib.Nifti1Image(values, affine), folder / f"sub-{i:02d}.nii.gz")


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One bad input.

    ``api(study)`` makes the Python call; ``argv(study)`` the command line (None: no CLI
    form). ``names`` are regexes the message must hold (the input named); ``validation``: the
    error comes before any map is loaded.
    """

    id: str
    error: type[GlmkitError]
    names: tuple[str, ...]
    api: Callable[[Path], Any] | None = None
    argv: Callable[[Path], list[str]] | None = None
    validation: bool = True
    marks: tuple = field(default_factory=tuple)


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _folder(study: Path, **changes) -> dict[str, Any]:
    return {"dataset": str(study / "maps"), "table": str(study / "participants.tsv"),
            "covariates": ["age"], "contrast": "age", "smoothing_fwhm": None, "n_perm": 9,
            **changes}


def _argv(params: dict[str, Any]) -> list[str]:
    out = []
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        out += [_flag(name), "none" if value is None else str(value)]
    return out


#: (parameter, bad value, error) validated by RunSettings
SETTINGS = [
    ("n_perm", 0, ParameterError), ("n_perm", -5, ParameterError),
    ("n_perm", "lots", ParameterError), ("n_perm", 1.5, ParameterError),
    ("n_perm", "1e3x", ParameterError),
    ("alpha", 0, ParameterError), ("alpha", 1, ParameterError), ("alpha", 1.5, ParameterError),
    ("alpha", -0.1, ParameterError), ("alpha", "x", ParameterError),
    ("alpha", "nan", ParameterError),
    ("cluster_threshold", 0, ParameterError), ("cluster_threshold", 1, ParameterError),
    ("cluster_threshold", 2.5, ParameterError), ("cluster_threshold", "p", ParameterError),
    ("smoothing_fwhm", -1, ParameterError), ("smoothing_fwhm", "inf", ParameterError),
    ("smoothing_fwhm", "nan", ParameterError), ("smoothing_fwhm", "wide", ParameterError),
    ("random_state", -1, ParameterError), ("random_state", 2**63, ParameterError),
    ("random_state", "seed", ParameterError), ("random_state", 1.5, ParameterError),
    ("n_jobs", 0, ParameterError), ("n_jobs", "all", ParameterError),
    ("n_jobs", 2.5, ParameterError), ("n_subjects", 0, ParameterError),
    ("n_subjects", "many", ParameterError),
    ("statistics", "maxt", ParameterError), ("statistics", "voxel,voxel", ParameterError),
    ("statistics", "tfc", ParameterError), ("statistics", "voxel,clustr_size", ParameterError),
    ("scheme", "manly", ParameterError), ("scheme", "freedman-lane", ParameterError),
    ("scheme", "", ParameterError),
    ("height_control", "fwer", ParameterError), ("height_control", "bonf", ParameterError),
    ("on_grid_mismatch", "ignore", ParameterError), ("on_missing", "skip", ParameterError),
    ("on_missing", "", ParameterError), ("export", "nifti", ParameterError),
    ("export", "bidss", ParameterError),
    ("run_name", "../escape", ParameterError), ("run_name", "a/b", ParameterError),
    ("run_name", ".hidden", ParameterError), ("run_name", "~home", ParameterError),
    ("run_name", "a{b}", ParameterError), ("run_name", "{run_name}", ParameterError),
    ("run_name", "x" * 101, ParameterError), ("run_name", "x" * 300, ParameterError),
    ("run_name", "a\nb", ParameterError), ("run_name", "a\tb", ParameterError),
    ("run_name", "a\x1bb", ParameterError), ("run_name", "", ParameterError),
    ("run_name", "a:b", ParameterError), ("run_name", "..", ParameterError),
    ("run_name", "a*b", ParameterError), ("run_name", "a..b", ParameterError),
    ("reports_dir", "", ParameterError), ("reports_dir", "out/{x}", ParameterError),
    ("reports_dir", "out\nx", ParameterError), ("notebook", "nb{x}.ipynb", ParameterError),
    ("cut_coords", "1,2", ParameterError), ("cut_coords", "nan,0,0", ParameterError),
    ("cut_coords", "a,b,c", ParameterError), ("cut_coords", "1,2,3,4", ParameterError),
    ("cut_coords", "inf,0,0", ParameterError), ("cut_coords", "[1, 2]", ParameterError),
    ("two_sided", "sometimes", ParameterError), ("two_sided", 2, ParameterError),
    ("center", "perhaps", ParameterError), ("force", "maybe", ParameterError),
    ("contrast", "fluency - fluency", ContrastError),
    ("contrast", "", ParameterError), ("contrast", "[]", ContrastError),
    ("contrast", "0*fluency", ContrastError), ("contrast", "[0, 0]", ContrastError),
    ("contrast", "[[1, 0], [1, 0", ParameterError),
    ("covariates", "[1, 2]", ParameterError), ("rename", "[a, b]", ParameterError),
    ("rename", "{pseudo: 1}", ParameterError), ("rename", "{a: [", ParameterError),
    ("qc", "{colour: 1}", ParameterError), ("qc", "[1, 2]", ParameterError),
    ("qc", "{keep: [S1], keep: [S2]}", ParameterError),
    ("tfce", "[1]", ParameterError), ("tfce", "maybe", ParameterError),
    ("dataset", "demo_nul", ParameterError), ("dataset", "nowhere/", ParameterError),
    ("dataset", "nowhere/*.nii", DataFileNotFoundError), ("dataset", ",", ParameterError),
    ("table", "participants.tsv", ParameterError),
    ("subject_column", "participant_id", ParameterError),
    ("bids_filter", "{desc: x}", ParameterError),
    ("mask", "nowhere.nii.gz", DataFileNotFoundError),
    # found by benchmarks/probe_bad_inputs.py
    ("covariates", "age,,score", ParameterError), ("statistics", "voxel,", ParameterError),
    ("covariates", ",age", ParameterError), ("rename", "{a: b, c: b}", ParameterError),
    ("run_name", "index.html", ParameterError), ("n_subjects", 95, ParameterError),
    ("localizer_contrast", "nope", ParameterError),
    ("output_dir", None, None),  # placeholder removed below
]
SETTINGS = [s for s in SETTINGS if s[2] is not None]

#: unknown parameter names (typos): the close name and the known names in the message
UNKNOWN = [("n_prem", "n_perm"), ("alfa", "alpha"), ("nperm", "n_perm"),
           ("smoothing", "smoothing_fwhm"), ("covariate", "covariates"), ("colour", None),
           ("seed", None), ("contrasts", "contrast"), ("statistic", "statistics"),
           ("twosided", "two_sided")]


def _settings_cases() -> list[Case]:
    cases = []
    for number, (name, value, error) in enumerate(SETTINGS):
        ident = f"{number:03d}-{name}={value!r}"[:40]
        cases.append(Case(f"api-{ident}", error, (re.escape(name),),
                          api=lambda study, n=name, v=value: RunSettings(**{n: v})))
        cases.append(Case(f"cli-{ident}", error, (f"{re.escape(_flag(name))}|{name}",),
                          argv=lambda study, n=name, v=value: ["summary", _flag(n), str(v)]))
    for name, close in UNKNOWN:
        names = (re.escape(name), *((f"did you mean '{close}'",) if close else ()), "n_perm")
        cases.append(Case(f"api-unknown-{name}", ParameterError, names,
                          api=lambda study, n=name: RunSettings(**{n: 1})))
        cases.append(Case(f"api-unknown-run_analysis-{name}", ParameterError, names,
                          api=lambda study, n=name: glmkit.run_analysis(**{n: 1})))
        cases.append(Case(f"cli-unknown-{name}", ParameterError, names,
                          argv=lambda study, n=name: ["summary", f"--{n}", "1"]))
    cases += [
        Case("api-positional-settings", ParameterError, ("RunSettings", "by name"),
             api=lambda study: RunSettings(1000)),
        Case("api-replace-typo", ParameterError, ("n_prem", "did you mean 'n_perm'"),
             api=lambda study: RunSettings().replace(n_prem=3)),
        Case("api-from-mapping-list", ParameterError, ("mapping",),
             api=lambda study: RunSettings.from_mapping([("n_perm", 3)])),
        Case("api-within-in-covariates", ParameterError, ("within", "covariates"),
             api=lambda study: RunSettings(**_folder(study, within="age"))),
        Case("cli-within-in-covariates", ParameterError, ("--within", "covariates"),
             argv=lambda study: ["summary", *_argv(_folder(study, within="age"))]),
        Case("api-f-test-two-sided", ContrastError, ("two_sided=true",),
             api=lambda study: RunSettings(contrast="[fluency, intercept]", two_sided=True)),
        Case("cli-f-test-two-sided", ContrastError, ("--two-sided true",),
             argv=lambda study: ["summary", "--contrast", "[fluency, intercept]",
                                 "--two-sided"]),
        Case("api-folder-without-table", ParameterError, ("table is not set", "table="),
             api=lambda study: RunSettings(dataset=str(study / "maps"), covariates="age",
                                           contrast="age")),
        Case("cli-folder-without-table", ParameterError, ("table is not set", "--table"),
             argv=lambda study: ["summary", "--dataset", str(study / "maps"), "--covariates",
                                 "age", "--contrast", "age"]),
        Case("api-folder-without-covariates", ParameterError, ("covariates", "formula="),
             api=lambda study: RunSettings(dataset=str(study / "maps"),
                                           table=str(study / "participants.tsv"))),
        Case("cli-folder-without-covariates", ParameterError, ("covariates", "--formula"),
             argv=lambda study: ["summary", "--dataset", str(study / "maps"), "--table",
                                 str(study / "participants.tsv")]),
        Case("api-folder-without-contrast", ParameterError, ("contrast", "contrast="),
             api=lambda study: RunSettings(**{**_folder(study), "contrast": None})),
        Case("cli-folder-without-contrast", ParameterError, ("contrast", "--contrast"),
             argv=lambda study: ["summary", *_argv({**_folder(study), "contrast": None})]),
        Case("api-table-is-a-folder", DataFileNotFoundError, ("table=", "is a folder"),
             api=lambda study: RunSettings(**_folder(study, table=str(study)))),
        Case("cli-table-is-a-folder", DataFileNotFoundError, ("--table", "is a folder"),
             argv=lambda study: ["summary", *_argv(_folder(study, table=str(study)))]),
        Case("api-table-missing", DataFileNotFoundError, ("table=", "does not exist"),
             api=lambda study: RunSettings(**_folder(study, table=str(study / "no.tsv")))),
        Case("cli-table-missing", DataFileNotFoundError, ("--table", "does not exist"),
             argv=lambda study: ["summary",
                                 *_argv(_folder(study, table=str(study / "no.tsv")))]),
        Case("api-mask-is-a-folder", DataFileNotFoundError, ("mask=", "is a folder"),
             api=lambda study: RunSettings(mask=str(study))),
        Case("cli-mask-is-a-folder", DataFileNotFoundError, ("--mask", "is a folder"),
             argv=lambda study: ["summary", "--mask", str(study)]),
        Case("api-dataset-glob-nothing", DataFileNotFoundError, ("dataset=", "glob"),
             api=lambda study: RunSettings(**_folder(study, dataset=str(study / "*.nope")))),
        Case("cli-dataset-glob-nothing", DataFileNotFoundError, ("--dataset", "glob"),
             argv=lambda study: ["summary",
                                 *_argv(_folder(study, dataset=str(study / "*.nope")))]),
        Case("cli-run-output-dir", ParameterError, ("--output-dir", "--reports-dir"),
             argv=lambda study: ["run", "--output-dir", str(study / "out"), "--reports-dir",
                                 str(study / "reports-never")]),
        Case("api-run-output-dir", ParameterError, ("output_dir=", "reports_dir="),
             api=lambda study: glmkit.run_notebook(RunSettings(output_dir=str(study / "o")))),
        Case("cli-stray-argument", ParameterError, ("stray", "--name value"),
             argv=lambda study: ["summary", "--n-perm=5", "stray"]),
    ]
    return cases


def _params_file_cases() -> list[Case]:
    texts = {
        "list": ("- n_perm\n- 10\n", ParameterError, ("params file", "mapping")),
        "invalid": ("n_perm: [1, 2\n", ParameterError, ("params file", "not valid YAML")),
        "dup-key": ("n_perm: 10\nalpha: 0.1\nn_perm: 20\n", ParameterError,
                    ("params file", "'n_perm' is given twice", "lines 1 and 3")),
        "dup-nested": ("qc:\n  keep: [S1]\n  keep: [S2]\n", ParameterError,
                       ("'keep' is given twice",)),
        "unknown": ("n_perm: 100\ncolour: blue\n", ParameterError, ("unknown parameter 'colour'",)),
        "bad-value": ("alpha: 7\n", ParameterError, ("alpha", "out of range")),
        "scalar": ("42\n", ParameterError, ("params file", "mapping")),
        "latin1": (b"run_name: caf\xe9\n", ParameterError, ("params file", "UTF-8")),
        "tab-indent": ("qc:\n\tkeep: [S1]\n", ParameterError, ("params file", "YAML")),
    }
    cases = []
    for key, (text, error, names) in texts.items():
        def write(study, key=key, text=text):
            path = study / f"params-{key}.yaml"
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
            return path

        cases.append(Case(f"api-params-{key}", error, names,
                          api=lambda study, w=write: RunSettings.from_yaml(w(study))))
        cases.append(Case(f"cli-params-{key}", error, names,
                          argv=lambda study, w=write: ["summary", "--params", str(w(study))]))
    cases += [
        Case("api-params-folder", DataFileNotFoundError, ("params file", "is a folder"),
             api=lambda study: RunSettings.from_yaml(study)),
        Case("cli-params-folder", DataFileNotFoundError, ("params file", "is a folder"),
             argv=lambda study: ["run", "--params", str(study)]),
        Case("api-params-missing", DataFileNotFoundError, ("params file", "does not exist"),
             api=lambda study: RunSettings.from_yaml(study / "none.yaml")),
        Case("cli-params-missing", DataFileNotFoundError, ("params file", "does not exist"),
             argv=lambda study: ["run", "--params", str(study / "none.yaml")]),
    ]
    return cases


def _batch_cases() -> list[Case]:
    bodies = {
        "runs-empty": ("runs: []\n", ParameterError, ("'runs' is empty",)),
        "runs-scalar": ("runs: 3\n", ParameterError, ("'runs' must be a list",)),
        "runs-of-scalars": ("runs: [1, 2]\n", ParameterError, ("'runs' must be a list",)),
        "both": ("grid:\n  n_perm: [1]\nruns: []\n", ParameterError, ("both 'grid' and 'runs'",)),
        "neither": ("n_perm: 5\n", ParameterError, ("neither 'grid' nor 'runs'",)),
        "grid-scalar": ("grid:\n  smoothing_fwhm: 5\n", ParameterError,
                        ("grid entry 'smoothing_fwhm'", "list")),
        "grid-empty-list": ("grid:\n  n_perm: []\n", ParameterError, ("grid entry 'n_perm'",)),
        "grid-not-mapping": ("grid: [1, 2]\n", ParameterError, ("'grid' must map",)),
        "grid-unknown": ("grid:\n  smothing_fwhm: [1, 2]\n", ParameterError,
                         ("unknown parameter 'smothing_fwhm'", "smoothing_fwhm")),
        "grid-bad-value": ("grid:\n  alpha: [0.05, 2]\n", ParameterError, ("alpha", "range")),
        "same-names": ("runs:\n  - {run_name: a}\n  - {run_name: a}\n", ParameterError,
                       ("same run_name", "'a'")),
        "base-scalar": ("base: 3\ngrid:\n  n_perm: [1, 2]\n", ParameterError, ("'base'",)),
        "dup-key": ("n_perm: 1\nn_perm: 2\ngrid:\n  alpha: [0.1]\n", ParameterError,
                    ("'n_perm' is given twice",)),
        "huge-grid": ("grid:\n  n_perm: " + str(list(range(1, 101))) + "\n  random_state: "
                      + str(list(range(101))) + "\n", ParameterError,
                      ("makes 10100 runs", "split")),
        "two-reports-dirs": ("runs:\n  - {reports_dir: a}\n  - {reports_dir: b}\n",
                             ParameterError, ("reports_dir",)),
        "bad-run-name": ("run_name: '{x}'\ngrid:\n  n_perm: [1]\n", ParameterError,
                         ("run.name", "papermill")),
    }
    cases = []
    for key, (body, error, names) in bodies.items():
        def write(study, key=key, body=body):
            path = study / f"batch-{key}.yaml"
            path.write_text(f"reports_dir: {study / 'batch-reports'}\n{body}"
                            if "reports_dir" not in body else body)
            return path

        cases.append(Case(f"api-batch-{key}", error, names,
                          api=lambda study, w=write: glmkit.run_batch(w(study))))
        cases.append(Case(f"cli-batch-{key}", error, names,
                          argv=lambda study, w=write: ["batch", str(w(study))]))

    def many(study):
        path = study / "batch-many.yaml"
        path.write_text(f"reports_dir: {study / 'batch-many'}\nnotebook: "
                        f"{study / 'notebook.ipynb'}\ngrid:\n  random_state: "
                        f"{list(range(51))}\n")
        return path

    cases += [
        Case("api-batch-over-50-without-yes", ParameterError, ("51 runs", "yes=True"),
             api=lambda study: glmkit.run_batch(many(study))),
        Case("cli-batch-over-50-without-yes", ParameterError, ("51 runs", "--yes"),
             argv=lambda study: ["batch", str(many(study))]),
        Case("api-batch-n-jobs-0", ParameterError, ("n_jobs=0",),
             api=lambda study: glmkit.run_batch(many(study), n_jobs=0)),
        Case("api-batch-missing", DataFileNotFoundError, ("does not exist",),
             api=lambda study: glmkit.run_batch(study / "nope.yaml")),
        Case("cli-batch-missing", DataFileNotFoundError, ("does not exist",),
             argv=lambda study: ["batch", str(study / "nope.yaml")]),
        Case("api-batch-typo", ParameterError, ("n_job", "did you mean 'n_jobs'"),
             api=lambda study: glmkit.run_batch(many(study), n_job=2)),
    ]
    return cases


def _api_cases() -> list[Case]:
    from glmkit.stats.permutation import permutation_test

    table = lambda study: pd.read_csv(study / "participants.tsv", sep="\t")  # noqa: E731
    ones = np.ones((N, 1))
    Y = np.random.default_rng(0).standard_normal((N, 20))
    cases = [
        Case("run_analysis-mapping-of-parameters", ParameterError, ("n_perm", r"run_analysis\("),
             api=lambda study: glmkit.run_analysis({"n_perm": 10, "alpha": 0.1})),
        Case("run_analysis-two-positional", ParameterError, ("run_analysis", "positional"),
             api=lambda study: glmkit.run_analysis("a", "b")),
        Case("run_analysis-table-without-maps", ParameterError, ("table=<DataFrame>",),
             api=lambda study: glmkit.run_analysis(table=table(study))),
        Case("run_analysis-maps-without-table", ParameterError, ("table=",),
             api=lambda study: glmkit.run_analysis([str(study / "maps" / "sub-00.nii.gz")])),
        Case("run_analysis-settings-and-typo", ParameterError, ("n_prem", "n_perm"),
             api=lambda study: glmkit.run_analysis(RunSettings(), n_prem=5)),
        Case("load_folder-empty-list", DataFileNotFoundError, ("maps", "empty list"),
             api=lambda study: glmkit.load_folder([], table(study))),
        Case("load_folder-on_missing", ParameterError, ("on_missing='skip'",),
             api=lambda study: glmkit.load_folder(study / "maps", table(study),
                                                  on_missing="skip")),
        Case("load_folder-xlsx", DatasetError, ("table.xlsx", "TSV"),
             api=lambda study: glmkit.load_folder(study / "maps", study / "table.xlsx")),
        Case("load_folder-missing-table", DataFileNotFoundError, ("no.tsv", "does not exist"),
             api=lambda study: glmkit.load_folder(study / "maps", study / "no.tsv")),
        Case("load_folder-table-folder", DataFileNotFoundError, ("table",),
             api=lambda study: glmkit.load_folder(study / "maps", study)),
        Case("load_folder-int-maps", DatasetError, ("maps", "int"),
             api=lambda study: glmkit.load_folder([1, 2], table(study))),
        Case("load_folder-missing-folder", DataFileNotFoundError, ("nowhere", "does not exist"),
             api=lambda study: glmkit.load_folder(study / "nowhere", table(study))),
        Case("load_folder-empty-folder", DataFileNotFoundError, ("holds no image",),
             api=lambda study: glmkit.load_folder(_empty(study), table(study))),
        Case("load_folder-dup-column-file", DatasetError, ("several columns named", "age"),
             api=lambda study: glmkit.load_folder(study / "maps", study / "dup_column.tsv")),
        Case("load_folder-dup-column-frame", DatasetError, ("several columns named", "age"),
             api=lambda study: glmkit.load_folder(
                 study / "maps", table(study).rename(columns={"score": "age"}))),
        Case("load_folder-no-subject-column", DatasetError, ("no subject column", "id"),
             api=lambda study: glmkit.load_folder(study / "maps", study / "no_subject.tsv")),
        Case("load_folder-subject-column-typo", DatasetError, ("subjct",),
             api=lambda study: glmkit.load_folder(study / "maps", table(study),
                                                  subject_column="subjct")),
        Case("load_folder-empty-table", DatasetError, ("empty.tsv", "empty"),
             api=lambda study: glmkit.load_folder(study / "maps", study / "empty.tsv")),
        Case("load_folder-duplicate-ids", DatasetError, ("duplicated subject ids", "sub-00"),
             api=lambda study: glmkit.load_folder(study / "maps", study / "dup_ids.tsv")),
        Case("load_folder-row-without-map", DatasetError, ("sub-99", "on_missing='drop'"),
             api=lambda study: glmkit.load_folder(study / "maps", study / "extra_row.tsv")),
        Case("load_folder-images-count", DatasetError, ("nibabel images", "table rows"),
             validation=False,
             api=lambda study: glmkit.load_folder(
                 [nib.load(study / "maps" / "sub-00.nii.gz")], table(study))),
        Case("load_folder-typo", ParameterError, ("on_mising", "did you mean 'on_missing'"),
             api=lambda study: glmkit.load_folder(study / "maps", table(study),
                                                  on_mising="drop")),
        Case("load_bids-not-bids", DatasetError, ("not a BIDS root", "load_folder"),
             api=lambda study: glmkit.load_bids(study / "maps")),
        Case("load_demo-typo", ParameterError, ("varient", "variant"),
             api=lambda study: glmkit.load_demo(varient="null")),
        Case("permutation_test-zero-voxels", ParameterError, ("Y", "no voxel"),
             api=lambda study: permutation_test(np.zeros((N, 0)), ones, [1.0], n_perm=9)),
        Case("permutation_test-zero-subjects", ParameterError, ("Y", "no subject"),
             api=lambda study: permutation_test(np.zeros((0, 5)), np.ones((0, 1)), [1.0],
                                                n_perm=9)),
        Case("permutation_test-complex", ParameterError, ("Y", "complex"),
             api=lambda study: permutation_test(Y + 1j, ones, [1.0], n_perm=9)),
        Case("permutation_test-strings", ParameterError, ("Y", "dtype"),
             api=lambda study: permutation_test(Y.astype(str), ones, [1.0], n_perm=9)),
        Case("permutation_test-two-sided-text", ParameterError, ("two_sided", "True or False"),
             api=lambda study: permutation_test(Y, ones, [1.0], n_perm=9, two_sided="yes")),
        Case("permutation_test-3d", ParameterError, ("Y", "2-D"),
             api=lambda study: permutation_test(Y[:, :, None], ones, [1.0], n_perm=9)),
        Case("permutation_test-nan", ParameterError, ("Y", "NaN"),
             api=lambda study: permutation_test(np.where(Y > 2, np.nan, Y), ones, [1.0],
                                                n_perm=9)),
        Case("permutation_test-rows", DesignError, ("design", "rows"),
             api=lambda study: permutation_test(Y, np.ones((N - 1, 1)), [1.0], n_perm=9)),
        Case("permutation_test-n_perm-0", ParameterError, ("n_perm",),
             api=lambda study: permutation_test(Y, ones, [1.0], n_perm=0)),
        Case("permutation_test-negative-seed", ParameterError, ("random_state", ">= 0"),
             api=lambda study: permutation_test(Y, ones, [1.0], n_perm=9, random_state=-1)),
        Case("permutation_test-scheme", ParameterError, ("scheme",),
             api=lambda study: permutation_test(Y, ones, [1.0], n_perm=9, scheme="manly")),
        Case("permutation_test-n_jobs-0", ParameterError, ("n_jobs",),
             api=lambda study: permutation_test(Y, ones, [1.0], n_perm=9, n_jobs=0)),
        Case("permutation_test-dtype", ParameterError, ("dtype",),
             api=lambda study: permutation_test(Y, ones, [1.0], n_perm=9, dtype="float16")),
        Case("permutation_test-typo", ParameterError, ("n_perms", "did you mean 'n_perm'"),
             api=lambda study: permutation_test(Y, ones, [1.0], n_perms=9)),
        Case("permutation_test-contrast-length", ContrastError, ("contrast", "weights"),
             api=lambda study: permutation_test(Y, ones, [1.0, 0.0], n_perm=9)),
        Case("permutation_test-cluster-without-mask", ParameterError, ("mask_img",),
             api=lambda study: permutation_test(Y, ones, [1.0], n_perm=9,
                                                statistics="cluster_size")),
        Case("make_design-unknown-column", DesignError, ("nope",),
             api=lambda study: glmkit.make_design(table(study), ["nope"])),
        Case("make_design-typo", ParameterError, ("colums", "columns"),
             api=lambda study: glmkit.make_design(table(study), colums=["age"])),
        Case("make_design-intercept-string", ParameterError, ("intercept", "True or False"),
             api=lambda study: glmkit.make_design(table(study), ["age"], intercept="no")),
        Case("make_design-standardize-string", ParameterError, ("standardize",),
             api=lambda study: glmkit.make_design(table(study), ["age"], standardize="yes")),
        Case("load_folder-same-map-twice", DatasetError, ("more than once", "sub-00"),
             api=lambda study: glmkit.load_folder([study / "maps" / "sub-00.nii.gz"] * 2,
                                                  table(study).head(2))),
        Case("load_folder-table-none", ParameterError, ("table", "found None"),
             api=lambda study: glmkit.load_folder(study / "maps", None)),
        Case("load_folder-maps-none", DatasetError, ("maps", "expected"),
             api=lambda study: glmkit.load_folder(None, table(study))),
        Case("load_bids-root-int", ParameterError, ("root", "path"),
             api=lambda study: glmkit.load_bids(3)),
        Case("check_run_folder-file", ReportError, ("is a file", "manifest"),
             api=lambda study: glmkit.check_run_folder(study / "participants.tsv")),
        Case("check_run_folder-none", ParameterError, ("folder", "path"),
             api=lambda study: glmkit.check_run_folder(None)),
        Case("run_batch-dict", ParameterError, ("path",),
             api=lambda study: glmkit.run_batch({"grid": {}})),
        Case("ols_fit-dict", ParameterError, ("Y", "array"),
             api=lambda study: glmkit.ols_fit({"a": 1}, ones)),
        Case("ols_fit-inf", ImageError, ("Y", "remove"),
             api=lambda study: glmkit.ols_fit(np.where(Y > 1, np.inf, Y), ones)),
        Case("compute_contrast-not-a-fit", ParameterError, ("fit", "OLSFit"),
             api=lambda study: glmkit.stats.glm.compute_contrast(None, "a")),
        Case("contrast_vector-no-columns", ParameterError, ("columns=", "X="),
             api=lambda study: glmkit.contrast_vector("age", None)),
        Case("threshold_map-missing-file", DataFileNotFoundError, ("z", "does not exist"),
             api=lambda study: glmkit.threshold_map(str(study / "none.nii.gz"))),
        Case("threshold_map-nan", ParameterError, ("z", "pass a finite map"),
             api=lambda study: glmkit.threshold_map(np.array([1.0, np.nan]))),
        Case("builtin_defaults-unknown", ParameterError, ("'x'", "use one of"),
             api=lambda study: glmkit.data.datasets.builtin_defaults("x")),
        Case("resample_to_grid-interpolation", ParameterError, ("interpolation", "use one of"),
             api=lambda study: glmkit.data.qc.resample_to_grid(
                 str(study / "maps" / "sub-00.nii.gz"), SHAPE, AFFINE, interpolation="cubic")),
        Case("run_qc-unknown-variable", DatasetError, ("nope", "use its columns"),
             api=lambda study: glmkit.run_qc(glmkit.load_folder(study / "maps", table(study)),
                                             variables=["nope"])),
        Case("make_design-near-collinear", DesignError, ("nearly linearly dependent", "VIF|"
                                                          "variance inflation", "Remove"),
             api=lambda study: glmkit.make_design(
                 table(study).assign(b=lambda t: t["age"] + 1e-9 * t["score"]), ["age", "b"])),
        Case("make_design-one-subject", DesignError, ("1 subjects", "more subjects"),
             api=lambda study: glmkit.make_design(table(study).head(1), ["age"])),
        Case("fit_second_level-typo", ParameterError, ("smoothing", "smoothing_fwhm"),
             api=lambda study: glmkit.fit_second_level([], None, smoothing=5)),
        Case("threshold_map-alpha", ParameterError, ("alpha",),
             api=lambda study: glmkit.threshold_map(np.zeros(SHAPE), alpha=2.0)),
        Case("threshold_map-height", ParameterError, ("height_control",),
             api=lambda study: glmkit.threshold_map(np.zeros(SHAPE), height_control="fwe")),
        Case("threshold_map-typo", ParameterError, ("alpa", "did you mean 'alpha'"),
             api=lambda study: glmkit.threshold_map(np.zeros(SHAPE), alpa=0.1)),
        Case("run_qc-policy", ParameterError, ("policy", "QCPolicy"),
             api=lambda study: glmkit.run_qc(glmkit.load_folder(study / "maps", table(study)),
                                             policy="strict")),
        Case("QCPolicy-from_mapping-unknown", ParameterError, ("colour",),
             api=lambda study: glmkit.QCPolicy.from_mapping({"colour": 1})),
        Case("check_run_folder-missing", ReportError, ("manifest",),
             api=lambda study: glmkit.check_run_folder(study / "no-run")),
        Case("run_notebook-not-settings", ParameterError, ("settings", "RunSettings"),
             api=lambda study: glmkit.run_notebook({"n_perm": 10})),
        Case("run_notebook-typo", ParameterError, ("progress", "progress_bar"),
             api=lambda study: glmkit.run_notebook(RunSettings(), progress=False)),
        Case("run_notebook-notebook-folder", RunError, ("notebook", "is a folder"),
             api=lambda study: glmkit.run_notebook(RunSettings(notebook=str(study),
                                                               reports_dir=str(study / "r")))),
        Case("preview-not-settings", ParameterError, ("preview", "RunSettings"),
             api=lambda study: glmkit.pipeline.preview(3)),
        Case("load_data-not-settings", ParameterError, ("load_data", "RunSettings"),
             api=lambda study: glmkit.pipeline.load_data("demo")),
        Case("quality_control-not-a-dataset", ParameterError, ("dataset", "Dataset"),
             api=lambda study: glmkit.pipeline.quality_control("maps", RunSettings())),
        Case("write_report-typo", ParameterError, ("outdir", "write_report"),
             api=lambda study: glmkit.write_report(None, outdir="x")),
    ]
    return cases


def _empty(study: Path) -> Path:
    folder = study / "empty-folder"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("no maps here")
    return folder


#: (id, settings changes on the folder study, error, names, validation-level). The design
#: checks of a folder dataset come after load_folder has opened each map's header
#: (nibabel.load reads headers only) to match it to its row, and before QC reads any data:
#: those cases are not "validation-level" here; table errors (read_table, matching) are.
PIPELINE = [
    ("contrast-unknown-column", {"contrast": "agee"}, ContrastError,
     ("agee", "did you mean 'age'"), False),
    ("covariate-unknown-column", {"covariates": ["agee"], "contrast": "agee"}, GlmkitError,
     ("agee",), False),
    ("contrast-reference-level", {"covariates": ["group"], "contrast": "a"}, ContrastError,
     ("reference level",), False),
    ("groups-unknown-column", {"groups": "sitee", "contrast": "age"}, ParameterError,
     ("sitee",), False),
    ("within-unknown-column", {"within": "session", "covariates": [], "contrast": "post - pre"},
     GlmkitError, ("session",), False),
    ("formula-syntax", {"covariates": None, "formula": "age +", "contrast": "age"},
     DesignError, ("formula",), False),
    ("complex-maps", {"dataset": "complex"}, ImageError, ("complex",), False),
    ("huge-voxels", {"dataset": "huge_voxels"}, ImageError, ("voxels measure", "affine"),
     False),
    ("singular-affine", {"dataset": "flat_affine"}, ImageError, ("singular",), False),
    ("nan-affine", {"dataset": "nan_affine"}, ImageError, ("NaN",), False),
    ("dup-column", {"table": "dup_column.tsv"}, DatasetError, ("several columns named",),
     True),
    ("subject-column-clash", {"subject_column": "age"}, DatasetError,
     ("'subject' column", "subject_column='age'|--subject-column age"), True),
    ("near-collinear", {"table": "near_copy.tsv", "covariates": ["age", "age_months"]},
     DesignError, ("nearly linearly dependent", "age_months", "Remove one"), False),
    ("one-subject", {"dataset": "maps/sub-00.nii.gz", "table": "one_row.tsv"}, DesignError,
     ("1 subjects", "more subjects"), False),
    ("row-without-map", {"table": "extra_row.tsv"}, DatasetError,
     ("sub-99", "on_missing='drop'|--on-missing drop"), True),
    ("non-binary-mask", {"mask": "nonbinary_mask.nii.gz"}, ImageError, ("not binary",), False),
    ("latin1-table", {"table": "latin1.tsv", "covariates": [], "contrast": "intercept"},
     DatasetError, ("latin1.tsv",), True),
    # text that does not parse is a column name (columns can be named anything): the
    # design says it is none of its columns, from the table, before any map is read
    ("contrast-syntax-star", {"contrast": "2*"}, ContrastError, (r"2\*",), False),
    ("contrast-syntax-paren", {"contrast": "(age"}, ContrastError, (r"\(age",), False),
    ("contrast-syntax-ops", {"contrast": "age +* 2"}, ContrastError, (r"age \+\* 2",), False),
]


def _pipeline_cases() -> list[Case]:
    def params(study, changes):
        out = _folder(study)
        for key, value in changes.items():
            if key in ("dataset", "table", "mask") and value is not None:
                value = str(study / value)
            out[key] = value
        return {k: v for k, v in out.items() if v is not None or k == "smoothing_fwhm"}

    cases = []
    for ident, changes, error, names, validation in PIPELINE:
        cases.append(Case(f"api-{ident}", error, names, validation=validation,
                          api=lambda study, c=changes: glmkit.pipeline.preview(
                              RunSettings(**params(study, c)))))
        cases.append(Case(f"cli-{ident}", error, names, validation=validation,
                          argv=lambda study, c=changes: ["summary", *_argv(params(study, c))]))
    cases += [
        Case("api-identical-maps", DatasetError, ("statistic 0 at all", "each subject's map"),
             validation=False, api=lambda study: glmkit.run_analysis(
                 RunSettings(**params(study, {"dataset": "identical"})), statistics=[])),
    ]
    return cases


CASES = [*_settings_cases(), *_params_file_cases(), *_batch_cases(),
         *(Case(f"api-{c.id}", c.error, c.names, api=c.api, validation=c.validation)
           for c in _api_cases()), *_pipeline_cases()]
VALIDATION_ONLY_API = {"api-run_qc-policy", "api-run_qc-unknown-variable",
                       "api-resample_to_grid-interpolation"}  # reads the folder's headers before the policy


def test_the_catalogue_is_large():
    assert len(CASES) >= 250, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.argv is not None for c in CASES) >= 100


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every ``nibabel.load`` call during the test (the maps read)."""
    calls: list[str] = []
    original = nib.load

    def load(path, *args, **kwargs):
        calls.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(nib, "load", load)
    return calls


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, study, loads, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    if case.api is not None:
        with pytest.raises(GlmkitError) as raised:
            case.api(study)
        exc, message = raised.value, str(raised.value)
        # Python users are told parameters as name=value, never a command-line flag
        assert not re.search(r"(?<![\w-])--[a-z]", message), message
    else:
        seen: list[GlmkitError] = []
        original = cli._error_exit

        def record(command, exc):
            seen.append(exc)
            return original(command, exc)

        monkeypatch.setattr(cli, "_error_exit", record)
        code = cli.main(case.argv(study))
        err = capsys.readouterr().err
        assert seen, f"no GlmkitError (exit {code}): {err[-2000:]}"
        exc = seen[0]
        assert code == (2 if isinstance(exc, (ParameterError, DataFileNotFoundError)) else 1)
        message = err.strip().splitlines()[-1]
        assert message.startswith("glmkit "), err
        assert "Traceback" not in err
        # command-line users are told flags: nothing left in name=value form
        assert cli.cli_text(message) == message, message
    assert isinstance(exc, case.error), (type(exc), message)
    for name in case.names:
        assert re.search(name, message), (name, message)
    assert FIX.search(message), f"no fix in: {message}"
    assert len(message) < 3000
    if case.validation and case.id not in VALIDATION_ONLY_API:
        assert loads == [], f"maps loaded before the error: {loads[:3]}"


# ------------------------------------------------------------ hints speak the interface
@pytest.mark.parametrize(("text", "expected"), [
    ("pass force=True", "pass --force"),
    ("pass on_missing='drop' to drop them", "pass --on-missing drop to drop them"),
    ("pass covariates=['age', 'score'] or formula='score + age'",
     "pass --covariates age,score or --formula 'score + age'"),
    ("e.g. contrast=[1, 0]", "e.g. --contrast '[1, 0]'"),
    ("with qc={'exclude': ['missing_value']}", "with --qc '{exclude: [missing_value]}'"),
    ("run_name='a b' is not safe", "--run-name 'a b' is not safe"),
    ("two_sided=False", "--two-sided false"), ("cut_coords=None", "--cut-coords none"),
    ("choose another run_name=<name>", "choose another --run-name <name>"),
    ("set n_perm=... lower", "set --n-perm ... lower"),
    ("pass wait=True or yes=True", "pass --wait or --yes"),
    ("alpha=0.05.", "--alpha 0.05."),
    ("policy=QCPolicy(on_grid_mismatch='resample')",
     "policy=QCPolicy(on_grid_mismatch='resample')"),  # code: a call's arguments stay
    ("run_qc(mask_img=...)", "run_qc(mask_img=...)"),
    ("(pass mask=<file>)", "(pass --mask <file>)"),
    ("tfce['dh']=2", "tfce['dh']=2"), ("x.n_perm=3", "x.n_perm=3"),
    ("unknown_thing=3", "unknown_thing=3"),
])
def test_cli_text(text, expected):
    assert cli.cli_text(text) == expected


def test_lower_layer_terms_become_run_parameters():
    from glmkit.pipeline import in_run_terms

    text = ("Resample them, or pass policy=QCPolicy(on_grid_mismatch='resample') to resample "
            "them; pass a mask that fits the data (mask_img=) or lower min_coverage")
    run = in_run_terms(text)
    assert "on_grid_mismatch='resample' to resample" in run and "QCPolicy" not in run
    assert "mask_img" not in run and "(mask=<NIfTI file or 'mni152'>)" in run
    assert cli.cli_text(run).count("--") == 3  # --on-grid-mismatch, --mask, --qc


def test_finite_checks_cover_every_float_parameter():
    """No float parameter accepts a non-finite value (nan or inf reach no later stage)."""
    from glmkit.settings import parameters

    floats = [p.name for p in parameters() if p.kind.rstrip("?") == "float"]
    assert floats
    for name in floats:
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(ParameterError, match=re.escape(name)):
                RunSettings(**{name: value})
