"""glmkit.run mechanics: atomic run folders, failed cells, interrupts, overwrite, batch.

These tests execute tiny stand-in notebooks (kernel start-up only, no analysis) so the
runner's guarantees are checked quickly; tests/test_notebook.py runs the real notebook.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from glmkit.errors import ParameterError, ReportError, RunError, RunLockedError
from glmkit.report.runfolder import promised_files
from glmkit.run import RunInterrupted, check_run_folder, load_grid, recover, run_batch, run_lock
from glmkit.run import run_notebook as run
from glmkit.settings import RunSettings

#: what glmkit.write_report writes, written by hand (and the manifest by hashlib): the runner
#: is checked against an independent writer of the folder and of manifest.json
WRITE_OUTPUTS = """
import hashlib, json, pathlib
from glmkit.settings import RunSettings
settings = RunSettings.from_namespace(globals())  # the parameters as glmkit run passed them
out = pathlib.Path(output_dir)
(out / "maps").mkdir(parents=True, exist_ok=True)
names = [f"maps/{m}.nii.gz" for m in
         ["mask", "z", "t", "p", "effect", "variance", "z_fdr", "logp_bonferroni",
          "logp_maxt"]]
for name in names:
    (out / name).write_bytes(b"")
for name in ["report.html", "design.csv", "qc.csv", "clusters.csv"]:
    (out / name).write_text(run_name)
    names.append(name)
(out / "params.json").write_text(settings.to_json())
(out / "provenance.json").write_text(json.dumps({"random_state": random_state}))
(out / "summary.json").write_text(json.dumps({
    "n_kept": 3, "n_subjects": 4, "n_voxels": 10, "peak_z": 4.5,
    "peak_xyz_mm": [1.0, 2.0, 3.0], "suprathreshold": {"fdr": 5, "bonferroni": 2},
}))
names += ["params.json", "provenance.json", "summary.json"]
files = [{"path": n, "size": (out / n).stat().st_size,
          "sha256": hashlib.sha256((out / n).read_bytes()).hexdigest()} for n in names]
(out / "manifest.json").write_text(json.dumps({"format": 1, "files": files}))
"""


def _notebook(path: Path, *cells: str) -> str:
    nb = new_notebook(cells=[
        new_code_cell("output_dir = None\nrun_name = None\nrandom_state = 0\nnotebook = None",
                      metadata={"tags": ["parameters"]}),
        *(new_code_cell(source) for source in cells),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return str(path)


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("notebooks")
    return {
        "ok": _notebook(root / "ok.ipynb", WRITE_OUTPUTS),
        "fail": _notebook(root / "fail.ipynb", "x = 1",
                          "raise ValueError('planted failure in cell two')"),
        "partial": _notebook(root / "partial.ipynb",
                             "import pathlib\n(pathlib.Path(output_dir) / 'report.html')"
                             ".write_text('half')"),
        "slow": _notebook(root / "slow.ipynb",
                          "import pathlib, time\n(pathlib.Path(output_dir) / 'report.html')"
                          ".write_text('half')\ntime.sleep(120)"),
        "sleepy": _notebook(root / "sleepy.ipynb", "import pathlib, time\n"
                            "(pathlib.Path(output_dir) / 'started').write_text('')\n"
                            "time.sleep(6)", WRITE_OUTPUTS + "\n(out / 'started').unlink()"),
        "tampered": _notebook(root / "tampered.ipynb", WRITE_OUTPUTS,
                              "(out / 'qc.csv').write_text('changed after the manifest')"),
        "unlisted": _notebook(root / "unlisted.ipynb", WRITE_OUTPUTS,
                              "(out / 'manifest.json').write_text(json.dumps("
                              "{'format': 1, 'files': files[1:]}))"),
        "own_params": _notebook(root / "own_params.ipynb", WRITE_OUTPUTS.replace(
            "from_namespace(globals())", "from_namespace(globals(), n_perm=999)")),
    }


def _settings(tmp_path: Path, notebook: str, **changes) -> RunSettings:
    return RunSettings(notebook=notebook, reports_dir=str(tmp_path / "reports"),
                       run_name="r", n_perm=10, **changes)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _run_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_successful_run_is_complete_and_recorded(tmp_path, notebooks):
    settings = _settings(tmp_path, notebooks["ok"], random_state=11)
    report = run(settings, progress_bar=False)
    target = tmp_path / "reports" / "r"
    assert report == target / "report.html"
    assert _listing(tmp_path / "reports") == ["r"]  # no temporary folder left
    manifest = check_run_folder(target)
    assert set(manifest.paths) == set(promised_files(["voxel"]))
    assert _run_files(target) == set(manifest.paths) | {"manifest.json", "notebook.ipynb",
                                                         "run.json"}
    params = json.loads((target / "params.json").read_text())
    assert RunSettings(**params) == settings.replace(notebook=None)  # as given
    assert "output_dir" not in params and "notebook" not in params
    # what the notebook wrote is kept as written: the runner adds run.json beside it
    assert (target / "provenance.json").read_text() == json.dumps({"random_state": 11})
    record = json.loads((target / "run.json").read_text())
    assert record["run_name"] == "r" and record["kernel"] == "python3"
    assert record["wall_time_s"] > 0 and record["finished_utc"]
    assert [c["index"] for c in record["cells"]] == [0, 1, 2]  # incl. injected
    assert {f["path"]: f["sha256"] for f in record["files"]} == {
        name: hashlib.sha256((target / name).read_bytes()).hexdigest()
        for name in ("notebook.ipynb", "manifest.json")}
    executed = nbformat.read(target / "notebook.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert f'notebook = "{notebooks["ok"]}"' in injected[0].source  # its own path
    assert "force" not in injected[0].source
    assert oct((target).stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_notebook_gets_the_parameters_as_given(tmp_path, notebooks, monkeypatch):
    """Relative paths reach the notebook (and params.json) as typed, taken from the current
    folder; no trace of the temporary folder is recorded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "participants.tsv").write_text("subject\tpseudo\nS01\t1\n")
    settings = RunSettings(notebook=notebooks["ok"], reports_dir="reports", run_name="rel",
                           dataset="study", table="study/participants.tsv", n_perm=10,
                           covariates="pseudo", contrast="pseudo")
    run(settings, progress_bar=False)
    folder = tmp_path / "reports" / "rel"
    params = json.loads((folder / "params.json").read_text())
    assert (params["dataset"], params["table"], params["reports_dir"]) == (
        "study", "study/participants.tsv", "reports")
    for name in ("params.json", "provenance.json", "run.json", "manifest.json"):
        assert ".tmp-" not in (folder / name).read_text(), name


@pytest.mark.parametrize(
    ("notebook", "match"),
    [
        ("tampered", r"do not match manifest.json: qc.csv has 26 bytes, the manifest says 1"),
        ("unlisted", r"do not match manifest.json: maps/mask.nii.gz is not in it"),
        ("own_params", r"other parameters than given \(n_perm: given 10, written 999\)"),
    ],
)
def test_folder_that_does_not_match_its_manifest_is_not_a_complete_run(
        tmp_path, notebooks, notebook, match):
    with pytest.raises(RunError, match=match):
        run(_settings(tmp_path, notebooks[notebook]), progress_bar=False)
    names = _listing(tmp_path / "reports")
    assert "r" not in names and len(names) == 1 and names[0].startswith("r.failed-")


@pytest.mark.parametrize("changed", ["report.html", "maps/z.nii.gz", "notebook.ipynb",
                                     "manifest.json"])
def test_check_run_folder_finds_a_file_changed_after_the_run(tmp_path, notebooks, changed):
    run(_settings(tmp_path, notebooks["ok"]), progress_bar=False)
    folder = tmp_path / "reports" / "r"
    check_run_folder(folder)
    path = folder / changed
    path.write_bytes(path.read_bytes()[:-1] + b"#" if path.stat().st_size else b"#")
    with pytest.raises(ReportError, match=re.escape(changed)):
        check_run_folder(folder)
    path.unlink()
    with pytest.raises(ReportError, match=re.escape(changed)):
        check_run_folder(folder)


def test_existing_run_is_not_overwritten_without_force(tmp_path, notebooks):
    target = tmp_path / "reports" / "r"
    target.mkdir(parents=True)
    (target / "report.html").write_text("earlier complete run")
    with pytest.raises(ReportError, match=r"already exists .*pass force=True"):
        run(_settings(tmp_path, notebooks["ok"]), progress_bar=False)
    assert (target / "report.html").read_text() == "earlier complete run"


def test_force_replaces_complete_run(tmp_path, notebooks):
    target = tmp_path / "reports" / "r"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("old")
    run(_settings(tmp_path, notebooks["ok"], force=True), progress_bar=False)
    assert not (target / "stale.txt").exists()
    assert (target / "report.html").read_text() == "r"
    assert _listing(tmp_path / "reports") == ["r"]


def test_failing_cell_names_cell_and_keeps_failed_notebook(tmp_path, notebooks):
    with pytest.raises(RunError) as info:
        run(_settings(tmp_path, notebooks["fail"]), progress_bar=False)
    message = str(info.value)
    assert "failed in notebook cell" in message
    assert "index 3" in message  # parameters, injected parameters, x = 1, then the raise
    assert "raise ValueError" in message and "planted failure in cell two" in message
    reports = tmp_path / "reports"
    names = _listing(reports)
    assert "r" not in names
    assert len(names) == 1 and names[0].startswith("r.failed-")
    assert names[0] in message
    failed_nb = nbformat.read(reports / names[0] / "notebook.ipynb", as_version=4)
    errors = [o for c in failed_nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors and errors[0]["evalue"] == "planted failure in cell two"


def test_failed_forced_run_keeps_the_earlier_complete_run(tmp_path, notebooks):
    target = tmp_path / "reports" / "r"
    target.mkdir(parents=True)
    (target / "report.html").write_text("earlier complete run")
    with pytest.raises(RunError, match="failed in notebook cell"):
        run(_settings(tmp_path, notebooks["fail"], force=True), progress_bar=False)
    assert (target / "report.html").read_text() == "earlier complete run"
    assert _listing(target) == ["report.html"]


def test_output_dir_is_the_runners_choice(tmp_path, notebooks):
    with pytest.raises(ParameterError, match="output_dir=.* cannot be set for glmkit run"):
        run(_settings(tmp_path, notebooks["ok"], output_dir=str(tmp_path)), progress_bar=False)


def test_notebook_that_forgets_files_is_not_a_complete_run(tmp_path, notebooks):
    with pytest.raises(RunError, match=r"did not write \[.*'notebook.ipynb'|did not write \["):
        run(_settings(tmp_path, notebooks["partial"]), progress_bar=False)
    assert "r" not in _listing(tmp_path / "reports")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killed_run_leaves_nothing_half_written(tmp_path, notebooks, sig):
    reports = tmp_path / "reports"
    cmd = [sys.executable, "-m", "glmkit", "run", "--notebook", notebooks["slow"],
           "--reports-dir", str(reports), "--run-name", "r", "--quiet"]
    # Output goes to files, not pipes: after SIGKILL the orphaned kernel still holds the
    # runner's stdout/stderr, so reading pipes to EOF would wait for the kernel's cell to end.
    log_out, log_err = tmp_path / "out.log", tmp_path / "err.log"
    with open(log_out, "w") as fout, open(log_err, "w") as ferr:
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, text=True,
                                start_new_session=True)
    kernels: list[psutil.Process] = []
    try:
        deadline = time.time() + 90
        started = False
        while time.time() < deadline and proc.poll() is None:
            tmp = [p for p in reports.glob(".r.tmp-*") if (p / "report.html").exists()]
            if tmp:  # the notebook is running and has written half of its outputs
                started = True
                break
            time.sleep(0.2)
        assert started, (proc.poll(), log_err.read_text())
        kernels = psutil.Process(proc.pid).children(recursive=True)
        assert kernels, "the run's kernel should be a child of the runner"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        if sig != signal.SIGKILL:  # the runner stopped its kernel before exiting
            _, alive = psutil.wait_procs(kernels, timeout=10)
            assert alive == [], f"kernel processes left running: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for kernel in kernels:  # whatever happened, nothing lingers
            with contextlib.suppress(psutil.Error):
                kernel.kill()
        proc.wait(timeout=30)
    err = log_err.read_text()
    assert proc.returncode != 0
    assert not (reports / "r").exists()
    if sig != signal.SIGKILL:  # cleanup ran: not even the temporary folder is left
        assert _listing(reports) == [], err
        assert "interrupted; nothing was written" in err
    else:  # only a hidden temporary folder (and the lock file), which the next run removes
        assert all(name.startswith((".r.tmp-", ".r.lock")) for name in _listing(reports))
        out = subprocess.run([*cmd[:5], notebooks["fail"], *cmd[6:]], capture_output=True,
                             text=True, timeout=120)
        assert re.search(r"removed \.r\.tmp-\w+, left by a run of r that was killed", out.stderr)
        assert [n for n in _listing(reports) if n.startswith(".")] == []


def test_reports_dir_not_writable(tmp_path, notebooks):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = RunSettings(notebook=notebooks["ok"], reports_dir=str(blocker / "reports"))
    with pytest.raises(ReportError, match=r"reports_dir .* is not writable .*"
                                          r"reports_dir=<writable"):
        run(settings, progress_bar=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permissions do not restrict root")
def test_reports_dir_read_only(tmp_path, notebooks):
    reports = tmp_path / "ro"
    reports.mkdir()
    reports.chmod(0o500)
    try:
        with pytest.raises(ReportError, match="is not writable"):
            run(RunSettings(notebook=notebooks["ok"], reports_dir=str(reports)),
                progress_bar=False)
    finally:
        reports.chmod(0o700)


def test_missing_notebook(tmp_path):
    settings = RunSettings(notebook=str(tmp_path / "nope.ipynb"), reports_dir=str(tmp_path))
    with pytest.raises(RunError, match=r"notebook .*nope.ipynb' does not exist"):
        run(settings, progress_bar=False)


# ------------------------------------------------------------------------------ batch
def _grid(tmp_path: Path, notebook: str, body: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(f"notebook: {notebook}\nreports_dir: {tmp_path / 'reports'}\n"
                    f"n_perm: 10\n{body}")
    return path


def test_grid_is_cartesian_product_with_derived_names(tmp_path):
    path = _grid(tmp_path, "nb.ipynb", "grid:\n  smoothing_fwhm: [0, 5.5]\n"
                 "  covariates: [[pseudo], [pseudo, age]]\n")
    names = [s.run_name for s in load_grid(path)]
    assert names == ["grid-smoothing_fwhm=0_covariates=pseudo",
                     "grid-smoothing_fwhm=0_covariates=pseudo+age",
                     "grid-smoothing_fwhm=5.5_covariates=pseudo",
                     "grid-smoothing_fwhm=5.5_covariates=pseudo+age"]
    assert [s.smoothing_fwhm for s in load_grid(path)] == [0, 0, 5.5, 5.5]


def test_explicit_runs_list(tmp_path):
    path = _grid(tmp_path, "nb.ipynb", "run_name: study\nruns:\n  - {n_perm: 20}\n"
                 "  - {run_name: special, alpha: 0.01}\n")
    settings = load_grid(path, force=True)
    assert [(s.run_name, s.n_perm, s.alpha, s.force) for s in settings] == [
        ("study-1", 20, 0.05, True), ("special", 10, 0.01, True)]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("", r"has neither 'grid' nor 'runs'"),
        ("grid:\n  smoothing_fwhm: 5\n", r"grid entry 'smoothing_fwhm' must be a non-empty list"),
        ("grid:\n  smothing_fwhm: [1, 2]\n", r"unknown parameter 'smothing_fwhm'.*smoothing_fwhm"),
        ("grid:\n  alpha: [0.05, 2]\n", r"alpha=2.0 is out of range"),
        ("runs:\n  - {run_name: a}\n  - {run_name: a}\n", r"same run_name \['a'\]"),
        ("runs: 3\n", r"'runs' must be a list"),
        ("grid:\n  n_perm: [1]\nruns: []\n", r"has both 'grid' and 'runs'"),
    ],
)
def test_bad_grid_files(tmp_path, body, match):
    with pytest.raises(ParameterError, match=match):
        load_grid(_grid(tmp_path, "nb.ipynb", body))


def test_batch_runs_skips_and_forces(tmp_path, notebooks):
    path = _grid(tmp_path, notebooks["ok"], "grid:\n  random_state: [1, 2]\n")
    reports = tmp_path / "reports"
    index = run_batch(path, n_jobs=2)
    assert index == reports / "index.html"
    names = ["grid-random_state=1", "grid-random_state=2"]
    assert [n for n in _listing(reports) if not n.endswith(".html")] == names
    page = index.read_text()
    for name in names:
        assert f'href="{name}/report.html"' in page
    assert "<td>3 / 4</td>" in page and "<td>4.50</td>" in page  # headline numbers
    assert "random_state" in page  # the varying parameter is a column
    assert "http" not in page  # self-contained: no external resource
    stamp = (reports / names[0] / "report.html").stat().st_mtime_ns
    run_batch(path)  # complete runs are skipped
    assert (reports / names[0] / "report.html").stat().st_mtime_ns == stamp
    assert "skipped" in index.read_text()
    time.sleep(0.01)
    run_batch(path, force=True)
    assert (reports / names[0] / "report.html").stat().st_mtime_ns != stamp


def test_batch_reports_failed_runs_and_still_writes_index(tmp_path, notebooks):
    path = _grid(tmp_path, notebooks["ok"], f"runs:\n  - {{run_name: good}}\n"
                 f"  - {{run_name: bad, notebook: {notebooks['fail']}}}\n")
    with pytest.raises(RunError, match=r"1 of 2 runs failed bad: failed: run 'bad' failed"):
        run_batch(path)
    page = (tmp_path / "reports" / "index.html").read_text()
    assert 'href="good/report.html"' in page and "failed: run" in page


def test_batch_n_jobs_zero(tmp_path, notebooks):
    with pytest.raises(ParameterError, match="n_jobs=0 is not allowed"):
        run_batch(_grid(tmp_path, notebooks["ok"], "grid:\n  n_perm: [1]\n"), n_jobs=0)


def test_terminated_parallel_batch_leaves_nothing(tmp_path, notebooks):
    path = _grid(tmp_path, notebooks["slow"], "grid:\n  random_state: [1, 2]\n")
    reports = tmp_path / "reports"
    proc = subprocess.Popen([sys.executable, "-m", "glmkit", "batch", str(path), "--n-jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len([p for p in reports.glob(".*.tmp-*") if (p / "report.html").exists()]) == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the runs did not start: {proc.communicate(timeout=10)}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # no run was complete: only the index, which says so, is left (no temporary folder)
    assert _listing(reports) == ["index.html"], err
    assert "interrupted; batch grid.yaml: 0 of 2 runs completed, 2 not" in err
    assert (reports / "index.html").read_text().count("interrupted (not complete)") == 2


# ------------------------------------------------------------------- lock and leftovers
def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def _wait_for(condition, timeout: float = 90) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_second_run_of_the_same_name_refuses_then_waits(tmp_path, notebooks):
    """Two real processes: while the first runs, a second run of the same name refuses within
    seconds naming it; with --wait it waits for the first to finish, then runs."""
    reports = tmp_path / "reports"
    cmd = [sys.executable, "-m", "glmkit", "run", "--notebook", notebooks["sleepy"],
           "--reports-dir", str(reports), "--run-name", "r", "--quiet"]
    first = _start(cmd, tmp_path / "first.log")
    try:
        assert _wait_for(lambda: any(reports.glob(".r.tmp-*/started"))), (
            (tmp_path / "first.log").read_text())
        start = time.time()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        refused_after = time.time() - start
        assert second.returncode == 1, second.stderr
        assert f"run 'r' is already running in '{reports}' (process {first.pid}," in (
            second.stderr)
        assert "--wait" in second.stderr and "wait=True" not in second.stderr
        assert first.poll() is None  # the first run was not disturbed
        waiting = subprocess.run([*cmd, "--wait", "--force"], capture_output=True, text=True,
                                 timeout=300)
        assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()
    finally:
        if first.poll() is None:
            first.kill()
    assert waiting.returncode == 0, waiting.stderr
    assert "waiting for the run r" in waiting.stderr
    assert refused_after < 30  # refused at once, not after the analysis
    check_run_folder(reports / "r")
    assert _listing(reports) == ["r"]  # no lock file, no temporary folder left


def test_lock_names_its_holder_and_is_released(tmp_path):
    target = tmp_path / "r"
    with run_lock(target) as lock:
        assert lock.name == ".r.lock" and json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=rf"run 'r' is already running .*process "
                                                 rf"{os.getpid()}.*wait=True.*run_name=<name>"):
            with run_lock(target):
                pass
    assert not (tmp_path / ".r.lock").exists()
    with run_lock(target):  # free again
        pass


def test_batch_runs_take_the_same_lock(tmp_path, notebooks):
    path = _grid(tmp_path, notebooks["ok"], "runs:\n  - {run_name: held}\n  - {run_name: free}\n")
    (tmp_path / "reports").mkdir()
    with run_lock(tmp_path / "reports" / "held"):
        with pytest.raises(RunError, match=r"1 of 2 runs failed held: failed: run 'held' is "
                                           r"already running"):
            run_batch(path)
    assert (tmp_path / "reports" / "free" / "report.html").is_file()
    assert not (tmp_path / "reports" / "held").exists()


def test_next_run_restores_a_run_a_killed_force_left_hidden(tmp_path):
    """A --force run killed between its two renames leaves the earlier run in .r.old-<pid>:
    the next run of the name (holding the lock) puts it back; temporary folders go."""
    reports = tmp_path / "reports"
    old = reports / ".r.old-4242"
    old.mkdir(parents=True)
    (old / "report.html").write_text("earlier complete run")
    (reports / ".r.tmp-abc12345").mkdir()
    (reports / ".r.tmp-abc12345" / "report.html").write_text("half")
    (reports / ".rr.tmp-abc12345").mkdir()  # another run's: left alone
    with run_lock(reports / "r"):
        recover(reports / "r")
    assert (reports / "r" / "report.html").read_text() == "earlier complete run"
    assert _listing(reports) == [".rr.tmp-abc12345", "r"]
    # when the new run had been renamed in place, the hidden old one is only removed
    (reports / ".r.old-77").mkdir()
    recover(reports / "r")
    assert _listing(reports) == [".rr.tmp-abc12345", "r"]


def test_interrupt_between_the_renames_of_force_puts_the_old_run_back(tmp_path, monkeypatch):
    from glmkit._util import atomic_folder

    target = tmp_path / "r"
    target.mkdir()
    (target / "report.html").write_text("earlier complete run")
    real_rename = Path.rename
    interrupts = [KeyboardInterrupt()]

    def rename(self, other):  # the interrupt lands after the old run was moved aside
        if Path(other) == target and interrupts:
            raise interrupts.pop()
        return real_rename(self, other)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target, overwrite=True) as tmp:
            (tmp / "report.html").write_text("new")
    monkeypatch.setattr(Path, "rename", real_rename)
    assert (target / "report.html").read_text() == "earlier complete run"
    assert _listing(tmp_path) == ["r"]


def test_interrupted_forced_run_says_the_earlier_run_was_kept(tmp_path, notebooks,
                                                              monkeypatch):
    target = tmp_path / "reports" / "r"
    target.mkdir(parents=True)
    (target / "report.html").write_text("earlier complete run")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("papermill.execute_notebook", interrupted)
    with pytest.raises(RunInterrupted, match=rf"the earlier run {re.escape(str(target))} was "
                                             "kept"):
        run(_settings(tmp_path, notebooks["ok"], force=True), progress_bar=False)
    assert (target / "report.html").read_text() == "earlier complete run"
    assert _listing(tmp_path / "reports") == ["r"]


def test_run_names_are_checked_and_long_grid_names_shortened(tmp_path):
    for name in ["x" * 101, "a{b}", ".hidden", "~me", "a\nb"]:
        with pytest.raises(ParameterError, match="run_name=.* is not a safe folder name"):
            RunSettings(run_name=name)
    path = _grid(tmp_path, "nb.ipynb", "grid:\n  covariates: [[" + ", ".join(
        f"variable_{i}" for i in range(30)) + "], [a]]\n")
    names = [s.run_name for s in load_grid(path)]
    assert len(names[0]) <= 100 and re.fullmatch(r"grid-covariates=.*-[0-9a-f]{8}", names[0])
    assert names[1] == "grid-covariates=a"


def test_big_batch_needs_yes(tmp_path, notebooks, monkeypatch):
    path = _grid(tmp_path, notebooks["ok"], "grid:\n  random_state: " + str(list(range(51)))
                 + "\n")
    with pytest.raises(ParameterError, match=r"would start 51 runs .* more than 50: check the "
                                             r"grid, then pass yes=True"):
        run_batch(path)
    assert not (tmp_path / "reports" / "index.html").exists()  # nothing started
    started = []
    monkeypatch.setattr("glmkit.run._run_one",
                        lambda s, cwd, wait=False: started.append(s.run_name) or (s.run_name,
                                                                                   "ok"))
    run_batch(path, yes=True)
    assert len(started) == 51


def test_interrupted_batch_reports_the_runs_that_completed(tmp_path, notebooks):
    """Ctrl-C during the second run of a batch: the message and the rewritten index name the
    first run as complete and the second as interrupted; nothing half-written is left."""
    path = _grid(tmp_path, notebooks["ok"], f"runs:\n  - {{run_name: one}}\n"
                 f"  - {{run_name: two, notebook: {notebooks['slow']}}}\n")
    reports = tmp_path / "reports"
    proc = subprocess.Popen([sys.executable, "-m", "glmkit", "batch", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: any(reports.glob(".two.tmp-*/report.html")), timeout=180)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; batch grid.yaml: 1 of 2 runs completed (one), 1 not; the index" in err
    assert _listing(reports) == ["index.html", "one"]
    page = (reports / "index.html").read_text()
    assert 'href="one/report.html"' in page and "interrupted (not complete)" in page
