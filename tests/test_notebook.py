"""The reference notebook: its parameters cell, no logic in cells, and a real papermill run."""

from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from glmkit._util import sha256_file
from glmkit.report.runfolder import promised_files
from glmkit.run import check_run_folder
from glmkit.settings import RunSettings, packaged_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "second_level_association.ipynb"
REFERENCE = ROOT / "notebooks" / "reference.yaml"


def _cells():
    return nbformat.read(NOTEBOOK, as_version=4).cells


def _parameters_cell():
    cells = [c for c in _cells() if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    return cells[0]


def test_packaged_copy_is_identical():
    assert packaged_notebook().read_bytes() == NOTEBOOK.read_bytes(), (
        "copy notebooks/second_level_association.ipynb to glmkit/notebooks/")


def test_notebook_is_committed_without_outputs():
    nbformat.validate(nbformat.read(NOTEBOOK, as_version=4))
    for cell in _cells():
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_parameters_cell_declares_every_parameter_with_reference_defaults():
    namespace: dict = {}
    exec(_parameters_cell().source, namespace)  # noqa: S102 - our own notebook
    defaults = {k: v for k, v in namespace.items() if not k.startswith("__")}
    assert set(defaults) == set(RunSettings.notebook_parameters())
    # defaults are the reference analysis (what `make demo` runs)
    assert RunSettings(**defaults) == RunSettings.from_yaml(REFERENCE)
    # running as-is in JupyterLab writes next to the notebook's folder
    assert RunSettings(**defaults).resolved_output_dir() == Path("reports") / "demo"


def test_code_cells_only_call_glmkit():
    """No control flow or definitions in the notebook: the logic lives in tested code."""
    forbidden = (ast.For, ast.While, ast.If, ast.IfExp, ast.FunctionDef, ast.ClassDef,
                 ast.Try, ast.With, ast.ListComp, ast.DictComp, ast.Lambda)
    settings_cell_seen = False
    for cell in _cells():
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        bad = [type(n).__name__ for n in ast.walk(tree) if isinstance(n, forbidden)]
        assert not bad, (bad, cell.source)
        settings_cell_seen |= "RunSettings.from_namespace(globals())" in cell.source
    assert settings_cell_seen


def test_narrative_covers_the_key_explanations():
    text = "\n".join(c.source for c in _cells() if c.cell_type == "markdown")
    for phrase in ("#3038", "FWER", "FDR", "max-T", "cluster_size", "tfce", "random_state",
                   "Quality control", "x100"):
        assert phrase in text, phrase


# ------------------------------------------------------------------ one real papermill run
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, glmkit_data_dir):
    reports = tmp_path_factory.mktemp("nbrun") / "reports"
    cmd = [sys.executable, "-m", "glmkit", "run", "--params", str(REFERENCE), "--n-perm", "50",
           "--run-name", "nb", "--reports-dir", str(reports), "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return reports / "nb", out


def test_run_prints_report_path_and_writes_every_promised_file(run_folder):
    folder, out = run_folder
    assert out.stdout.strip().splitlines()[-1] == f"report: {folder / 'report.html'}"
    manifest = check_run_folder(folder)  # every file as the writer left it
    assert manifest.paths[-1] == "report.html"
    assert set(manifest.paths) == set(promised_files(["voxel"]))
    assert "maps/logp_maxt.nii.gz" in manifest.paths
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert written == set(manifest.paths) | {"manifest.json", "notebook.ipynb", "run.json"}
    assert [p.name for p in folder.parent.iterdir()] == ["nb"]  # nothing else left behind


def test_executed_notebook_has_outputs_and_no_error(run_folder):
    folder, _ = run_folder
    nb = nbformat.read(folder / "notebook.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "n_perm = 50" in injected[0].source


def test_params_and_provenance(run_folder):
    folder, _ = run_folder
    params = json.loads((folder / "params.json").read_text())
    assert params["n_perm"] == 50 and params["run_name"] == "nb"
    assert RunSettings(**params).replace(n_perm=1000, run_name="demo", reports_dir="reports") \
        == RunSettings.from_yaml(REFERENCE)
    prov = json.loads((folder / "provenance.json").read_text())
    for package in ("glmkit", "numpy", "scipy", "nilearn", "nibabel", "pandas"):
        assert prov["software"][package]
    assert prov["random_state"] == params["random_state"]
    assert set(prov["timings_s"]) >= {"load", "qc", "design", "fit", "permutation"}
    assert prov["dataset"]["provenance"]["sha256"]
    assert prov["notebook"] == {"name": NOTEBOOK.name,
                                "sha256": sha256_file(packaged_notebook())}
    record = json.loads((folder / "run.json").read_text())
    assert record["wall_time_s"] > 0
    assert len(record["cells"]) == 1 + sum(c.cell_type == "code" for c in _cells())  # injected
    for name in ("provenance.json", "params.json", "run.json"):  # no trace of the temporary
        assert ".tmp-" not in (folder / name).read_text(), name  # folder


def test_tables_and_maps_are_consistent(run_folder):
    import nibabel as nib

    folder, _ = run_folder
    with open(folder / "design.csv") as handle:
        rows = list(csv.DictReader(handle))
    summary = json.loads((folder / "summary.json").read_text())
    assert rows[0].keys() >= {"subject", "fluency", "intercept"}
    assert len(rows) == summary["n_kept"]
    assert not {r["subject"] for r in rows} & set(summary["excluded"])
    mask = np.asarray(nib.load(folder / "maps" / "mask.nii.gz").dataobj) > 0
    assert mask.sum() == summary["n_voxels"]
    logp = np.asarray(nib.load(folder / "maps" / "logp_maxt.nii.gz").dataobj)
    assert np.isfinite(logp).all()
    assert summary["suprathreshold"]["perm_voxel"] == int((logp > -np.log10(0.05)).sum())


def test_planted_effect_is_found_in_the_planted_region(run_folder, demo):
    """The run's max-T FWER map detects the demo's planted sphere and nothing far from it."""
    import nibabel as nib
    from scipy import ndimage

    folder, _ = run_folder
    logp_img = nib.load(folder / "maps" / "logp_maxt.nii.gz")
    truth_img = nib.load(demo.ground_truth)
    assert logp_img.shape == truth_img.shape and np.allclose(logp_img.affine, truth_img.affine)
    truth = truth_img.get_fdata() > 0
    detected = np.asarray(logp_img.dataobj) > -np.log10(0.05)
    hits = int((detected & truth).sum())
    distance = ndimage.distance_transform_edt(~truth, sampling=truth_img.header.get_zooms()[:3])
    assert hits > 0 and hits >= 0.5 * detected.sum(), (hits, int(detected.sum()))
    assert distance[detected].max() <= 15.0  # mm from the planted sphere


def test_second_run_refused_without_force(run_folder):
    folder, _ = run_folder
    stamp = (folder / "report.html").stat().st_mtime_ns
    out = subprocess.run([sys.executable, "-m", "glmkit", "run", "--run-name", "nb",
                          "--reports-dir", str(folder.parent)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "already exists" in out.stderr
    assert (folder / "report.html").stat().st_mtime_ns == stamp


def test_real_notebook_failing_cell_is_named(tmp_path):
    """Parameters that pass validation (and the runner's checks of the table's design) but
    fail in the notebook: a map on another grid, found by QC."""
    import nibabel as nib
    import numpy as np

    folder = tmp_path / "study"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        shape = (8, 8, 8) if i != 3 else (9, 8, 8)
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.eye(4)),
                 folder / f"S0{i}.nii.gz")
    table = tmp_path / "participants.tsv"
    table.write_text("subject\tpseudo\n" + "".join(f"S0{i}\t{i}.0\n" for i in range(6)))
    reports = tmp_path / "reports"
    out = _run_bad(folder, table, reports)
    assert out.returncode == 1, out.stderr
    assert "failed in notebook cell" in out.stderr
    assert "qc = pipeline.quality_control(dataset, settings, timings=timings)" in out.stderr
    assert "ImageError" in out.stderr and "not on the grid of the first map" in out.stderr
    names = [p.name for p in reports.iterdir()]
    assert "bad" not in names and len(names) == 1 and names[0].startswith("bad.failed-")
    assert (reports / names[0] / "notebook.ipynb").is_file()


def _run_bad(folder, table, reports) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glmkit", "run", "--dataset", str(folder),
                           "--table", str(table), "--covariates", "pseudo", "--contrast",
                           "pseudo", "--reports-dir", str(reports), "--run-name", "bad",
                           "--quiet"], capture_output=True, text=True, timeout=300)


def test_a_folder_without_maps_fails_before_the_kernel_starts(tmp_path):
    """The runner reads the table's design before starting a kernel: an empty folder is a
    usage error (exit 2) and nothing is created."""
    folder = tmp_path / "empty-study"
    folder.mkdir()
    table = tmp_path / "participants.tsv"
    table.write_text("subject\tpseudo\nS01\t1.0\nS02\t2.0\n")
    reports = tmp_path / "reports"
    out = _run_bad(folder, table, reports)
    assert out.returncode == 2, out.stderr
    assert "holds no image" in out.stderr
    assert not reports.exists()


#: a value other than the default for every notebook parameter ({tmp}: a temporary folder)
NON_DEFAULT = {
    "dataset": "{tmp}", "table": "{tmp}/participants.tsv", "subject_column": "participant_id",
    "on_grid_mismatch": "resample", "localizer_contrast": "right button press",
    "n_subjects": 12, "covariates": ["pseudo", "age"], "formula": "pseudo + age",
    "rename": {"age": "years"}, "contrast": "pseudo", "center": True, "smoothing_fwhm": 8.0,
    "alpha": 0.01, "height_control": "bonferroni", "n_perm": 77, "two_sided": True,
    "statistics": ["voxel", "cluster_size"], "scheme": "ter_braak", "groups": "site",
    "tfce": {"E": 1.0, "H": 2.0}, "cluster_threshold": 0.01, "accel": "tail", "random_state": 7,
    "n_jobs": 2,
    "run_name": "other", "reports_dir": "elsewhere", "cut_coords": [1.0, 2.0, 3.0],
    "bids_filter": {"desc": "fluency"}, "on_missing": "drop", "export": "bids",
    "within": "session", "mask": "mni152", "qc": {"keep": ["S01"]},
    "output_dir": "{tmp}/out", "notebook": "{tmp}/this.ipynb",
}


def test_settings_cell_takes_every_injected_parameter(tmp_path):
    """What `glmkit run` injects reaches the settings: run the notebook's code up to its
    settings cell, with papermill's injected cell after the parameters cell setting every
    parameter to a value other than its default, and compare the settings field by field.
    The Localizer's own parameters are valid only with dataset='localizer': a second pass."""
    (tmp_path / "participants.tsv").write_text("participant_id\tpseudo\tage\tsite\n")
    values = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v
              for k, v in NON_DEFAULT.items()}
    assert set(values) == set(RunSettings.notebook_parameters())  # a new one needs a value here
    localizer = {k: values.pop(k) for k in ("localizer_contrast", "n_subjects")}
    defaults = RunSettings().to_dict()
    assert not [k for k in values if RunSettings(**values).to_dict()[k] == defaults[k]]
    assert _settings_cell(values).to_dict() == RunSettings(**values).to_dict()
    # as `glmkit run` injects them: every parameter (the built-in's defaults resolved)
    settings = RunSettings(dataset="localizer", **localizer)
    assert not [k for k in localizer if settings.to_dict()[k] == defaults[k]]
    runner = {**settings.to_dict(), "output_dir": values["output_dir"],
              "notebook": values["notebook"]}
    given = {k: runner[k] for k in RunSettings.notebook_parameters()}
    assert _settings_cell(given).to_dict() == RunSettings(**given).to_dict()
    assert RunSettings(**given).to_dict()["n_subjects"] == localizer["n_subjects"]


def _settings_cell(values: dict) -> RunSettings:
    """The settings the notebook's cells build with ``values`` injected after its parameters
    cell (the notebook run up to its settings cell)."""
    from papermill.translators import PythonTranslator

    code = [c for c in _cells() if c.cell_type == "code"]
    cut = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    end = next(i for i, c in enumerate(code) if "RunSettings.from_namespace" in c.source)
    sources = ([c.source for c in code[:cut + 1]] + [PythonTranslator.codify(values)]
               + [c.source for c in code[cut + 1:end + 1]])
    namespace: dict = {}
    for source in sources:
        exec(source, namespace)  # noqa: S102 - our own notebook
    return namespace["settings"]
