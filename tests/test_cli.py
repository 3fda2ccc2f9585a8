"""The command line: flags generated from RunSettings, bad parameters fail before running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from glmkit import cli
from glmkit.settings import RunSettings


def _main(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_python_m_glmkit_run_unknown_parameter_lists_known_names():
    out = subprocess.run([sys.executable, "-m", "glmkit", "run", "--bogus", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "unknown parameter 'bogus'" in out.stderr
    for name in RunSettings.field_names():
        assert name in out.stderr
    assert "Traceback" not in out.stderr


def test_glmkit_help_lists_every_parameter_flag():
    out = subprocess.run([sys.executable, "-m", "glmkit", "run", "--help"],
                         capture_output=True, text=True, timeout=120, check=True)
    for name in RunSettings.field_names():
        if name != "output_dir":
            assert f"--{name.replace('_', '-')}" in out.stdout, name
    top = subprocess.run([sys.executable, "-m", "glmkit", "--help"], capture_output=True,
                         text=True, timeout=120, check=True)
    for command in ("run", "batch", "summary"):
        assert command in top.stdout


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--n-perm", "0"], "--n-perm 0 is out of range: expected n_perm >= 1"),
        (["--n_perm", "lots"], "--n-perm lots has the wrong type: expected an integer"),
        (["--alpha", "1.5"], "--alpha 1.5 is out of range: expected 0 < alpha < 1"),
        (["--alpha", "0"], "--alpha 0.0 is out of range"),
        (["--run-name", "../escape"], "--run-name ../escape is not a safe folder name"),
        (["--run-name", "a/b"], "--run-name a/b is not a safe folder name"),
        (["--statistics", "voxel,maxt"], "--statistics maxt is not a known statistic"),
        (["--height-control", "fwer"], "--height-control fwer is not a known value"),
        (["--scheme", "manly"], "--scheme manly is not a known value"),
        (["--contrast", "fluenc"], "contrast 'fluenc' names 'fluenc', which is not a design "
                                   "column.*did you mean 'fluency'"),
        (["--contrast", "fluency - fluency"], r"contrast 'fluency - fluency' is all zeros "
                                              r"\(fluency: 0\): it tests nothing"),
        (["--contrast", "[fluency, intercept]", "--two-sided", "true"],
         "is a list of contrasts, an F test, and --two-sided true has no meaning"),
        (["--contrast", "[1, 0, 0]"], r"has 3 weights but the design of the \d+ subjects that "
                                      r"have every design variable"),
        (["--covariates", "sex,pseudo", "--rename", "{}", "--contrast", "M - f"],
         r"names 'f', which is not a design column: .* and levels sex: F \(reference\), M "
         r"\(did you mean 'F'\?\)"),
        (["--mask", "nowhere.nii.gz"], r"--mask nowhere.nii.gz does not exist"),
        (["--smoothing-fwhm", "-2"], "--smoothing-fwhm -2.0 is out of range"),
        (["--n-jobs", "0"], "--n-jobs 0 is not allowed"),
        (["--two-sided", "sometimes"], "--two-sided sometimes has the wrong type"),
        (["--dataset", "demo_nul"], "--dataset demo_nul is neither.*did you mean 'demo-null'"),
        (["--nperm", "10"], "unknown parameter 'nperm' \\(did you mean 'n_perm'\\?\\)"),
        (["--n-perm=5", "stray"], "unexpected argument 'stray'"),
        (["--params", "missing.yaml"], "params file 'missing.yaml' does not exist"),
        (["--output-dir", "elsewhere"], "--output-dir elsewhere cannot be set for glmkit run.*"
                                        "set --reports-dir <folder> and --run-name <name>"),
    ],
)
def test_bad_run_parameters_exit_2_before_running(argv, match, capsys, tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    code, out, err = _main(["run", "--reports-dir", str(tmp_path / "reports"), *argv], capsys)
    assert code == 2, err
    assert re.search(match, err), err
    # the error is the last line (progress lines such as "generated demo" may precede it)
    assert err.strip().splitlines()[-1].startswith("glmkit run: error: ")
    assert not (tmp_path / "reports").exists()  # nothing ran, nothing was created


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- n_perm\n- 10\n", "holds a list, expected a mapping"),
        ("n_perm: 100\ncolour: blue\n", "unknown parameter 'colour'"),
        ("n_perm: [1, 2\n", "is not valid YAML"),
    ],
)
def test_bad_params_file(text, match, capsys, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    code, _, err = _main(["run", "--params", str(path)], capsys)
    assert code == 2 and match in err, err


def test_flags_override_params_file(tmp_path, monkeypatch):
    seen = {}

    def fake_run(settings, *, progress_bar=True, wait=False):
        seen["settings"], seen["progress_bar"] = settings, progress_bar
        return Path("somewhere/report.html")

    monkeypatch.setattr("glmkit.run.run_notebook", fake_run)
    path = tmp_path / "p.yaml"
    path.write_text("n_perm: 100\nalpha: 0.01\nstatistics: [voxel, tfce]\n")
    code = cli.main(["run", "--params", str(path), "--n-perm", "7", "--two-sided",
                     "--run_name", "x", "--force", "--quiet"])
    assert code == 0
    s = seen["settings"]
    assert (s.n_perm, s.alpha, s.statistics, s.two_sided, s.run_name, s.force) == (
        7, 0.01, ("voxel", "tfce"), True, "x", True)
    assert seen["progress_bar"] is False


def test_run_prints_report_path(monkeypatch, capsys):
    monkeypatch.setattr("glmkit.run.run_notebook",
                        lambda settings, **kw: Path("r/demo/report.html"))
    code, out, _ = _main(["run"], capsys)
    assert code == 0 and out.strip() == f"report: {Path('r/demo/report.html')}"


def test_reference_yaml_is_valid():
    root = Path(__file__).resolve().parents[1]
    settings = RunSettings.from_yaml(root / "notebooks" / "reference.yaml")
    assert (settings.n_perm, settings.smoothing_fwhm, settings.contrast, settings.two_sided,
            settings.statistics) == (1000, 5.0, "fluency", False, ("voxel",))


def test_unwritable_reports_dir_is_error_1(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _main(["run", "--reports-dir", str(blocker / "sub")], capsys)
    assert code == 1 and "is not writable" in err


def test_existing_run_refused(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    code, _, err = _main(["run", "--reports-dir", str(tmp_path)], capsys)
    assert code == 1 and "already exists" in err and "--force" in err


def test_batch_bad_inputs(tmp_path, capsys):
    code, _, err = _main(["batch", str(tmp_path / "grid.yaml")], capsys)
    assert code == 2 and "does not exist" in err
    with pytest.raises(SystemExit):
        cli.main(["batch", str(tmp_path / "grid.yaml"), "--n-perm", "3"])
    assert "parameters go in the batch file" in capsys.readouterr().err


def test_summary_prints_dataset_qc_design(capsys, demo):
    code, out, err = _main(["summary", "--dataset", "demo"], capsys)
    assert code == 0, err
    for subject, kind in demo.provenance["defects"].items():  # the planted defects, named
        verb = "excluded" if kind == "scale_x100" else "flagged"  # a unit change excludes
        assert f"{verb} {subject}" in out
    assert "fluency" in out and "intercept" in out
    assert "contrast: fluency" in out


def test_in_process_main_leaves_logging_as_it_found_it(capsys, demo):
    """glmkit.cli.main called from Python (a notebook, a test) must not leave a handler behind
    that keeps printing, or that writes to a stream closed since (CI failure of stop 7)."""
    import logging

    logger = logging.getLogger("glmkit")
    before = (list(logger.handlers), logger.level)
    code, _, err = _main(["summary", "--dataset", "demo"], capsys)
    assert code == 0, err
    assert (list(logger.handlers), logger.level) == before
    logger.info("after the command")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("flag", "shown"), [("2*fluency", "2*fluency"), ("[1, 0]", "[1, 0]")])
def test_summary_takes_every_documented_contrast_form(flag, shown, capsys, demo):
    code, out, err = _main(["summary", "--dataset", "demo", "--contrast", flag], capsys)
    assert code == 0, err
    assert f"contrast: {shown}" in out


def test_vector_contrast_from_a_params_file(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("glmkit.run.run_notebook",
                        lambda settings, **kw: seen.setdefault("s", settings) and Path("r"))
    path = tmp_path / "p.yaml"
    path.write_text("contrast: [1, 0]\n")
    assert cli.main(["run", "--params", str(path), "--quiet"]) == 0
    assert seen["s"].contrast == (1.0, 0.0)


@pytest.mark.slow
def test_glmkit_run_with_a_vector_contrast_equals_the_named_one(tmp_path, demo):
    """End to end (papermill, notebook, report): --contrast '[1, 0]' writes the permutation
    map of 'fluency', bit for bit, and names the contrast as given."""
    import json

    import nibabel as nib
    import numpy as np

    from glmkit.pipeline import run_analysis

    reports = tmp_path / "reports"
    common = ["--n-perm", "20", "--run-name", "vec", "--reports-dir", str(reports), "--quiet"]
    out = subprocess.run([sys.executable, "-m", "glmkit", "run", "--contrast", "[1, 0]",
                          *common], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = reports / "vec"
    assert json.loads((folder / "summary.json").read_text())["contrast"] == "[1, 0]"
    assert json.loads((folder / "params.json").read_text())["contrast"] == [1.0, 0.0]
    assert "[1, 0]" in (folder / "report.html").read_text()
    named = run_analysis(RunSettings(n_perm=20, run_name="vec"))
    written = np.asarray(nib.load(folder / "maps" / "logp_maxt.nii.gz").dataobj)
    expected = np.asarray(named.maps()["logp_maxt"].dataobj).astype(written.dtype)
    np.testing.assert_array_equal(written, expected)
    assert written.max() > 1  # the planted effect: the comparison is not between empty maps


def test_every_flag_shows_its_declared_help_and_default():
    """`glmkit run --help` shows each parameter's declared help text and default, so the
    help cannot drift from the RunSettings fields (nor fall back to a generic text)."""
    from glmkit.settings import parameters

    out = subprocess.run([sys.executable, "-m", "glmkit", "run", "--help"],
                         capture_output=True, text=True, timeout=120, check=True)
    page = " ".join(out.stdout.split())
    flags = [p for p in parameters() if p.flag]
    assert {p.name for p in flags} == set(RunSettings.field_names()) - {"output_dir"}
    for p in flags:
        assert p.help.strip() and p.help != p.expects, p.name
        assert f"{' '.join(p.help.split())} (default: {p.default_text})" in page, p.name
    assert "--output-dir" not in page  # the runner chooses it


def test_statistics_help_lists_statistics_registered_at_run_time():
    import numpy as np

    from glmkit.stats.statistics import (StatisticSpec, register_statistic, statistic_names,
                                         unregister_statistic)

    spec = StatisticSpec(name="toy_abs_max", label="toy", short="toy", units="max |t|",
                         observed=lambda t, ctx: np.abs(t), null_max=None,
                         methods=lambda result: "toy")
    register_statistic(spec)
    try:
        run = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices.values()
                   if a.prog.endswith(" run"))
        page = " ".join(run.format_help().split())
    finally:
        unregister_statistic("toy_abs_max")
    listed = ", ".join(statistic_names() + ("toy_abs_max",))
    assert f"permutation statistics, any of {listed};" in page


def test_cli_reads_settings_through_public_names_only():
    import ast

    tree = ast.parse(Path(cli.__file__).read_text())
    imported = [(node.module, alias.name) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names]
    assert ("glmkit.settings", "parameters") in imported
    private = [(m, n) for m, n in imported if m and m.startswith("glmkit") and n.startswith("_")
               and n != "__version__"]
    assert private == []
