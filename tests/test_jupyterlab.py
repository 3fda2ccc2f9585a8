"""The analysis notebook in a real JupyterLab, driven through the page by headless Chromium.

A temporary folder plays a checkout that has just run the README's demo command (`glmkit
run`, with 50 permutations, into ``reports/demo``). `make lab` (the README's command) starts
JupyterLab there on a free loopback port, without a token, with no request leaving the
machine (the page's requests other than the server's are aborted and recorded; JupyterLab's
news, update check and extension manager are off). The test opens the notebook with 50
permutations, runs all cells from the Run menu, and then operates the explorer as a person
would: it picks maps and methods, types alphas, thresholds and a cluster extent, moves the
threshold slider with the keys and by dragging, moves the cut with the keys and jumps to a
peak. After every action the method, alpha and voxel count the explorer shows are compared
with the report's kernel-free viewer (the same run's report.html, operated the same way), with
summary.json, and, for thresholds typed or slid by value, with an independent count on the
run's NIfTI map. A second JupyterLab that has no kernel opens the executed notebook of
reports/demo, untrusted, and must show the explorer's picture.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage


pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/second_level_association.ipynb"
N_PERM = 50
TCP_WARNING = "without encryption"
#: JupyterLab's features that would reach the network, switched off
QUIET_LAB = ["--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly"]


def _require(what: str, found: bool, fix: str) -> None:
    if found:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {what} is missing; {fix}")
    pytest.skip(f"{what} is missing; {fix}")


def test_missing_requirement_fails_in_ci_and_skips_elsewhere(monkeypatch):
    """The guard of JupyterLab and make: with CI=true their absence fails these tests."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="^CI: JupyterLab is missing; install it$"):
        _require("JupyterLab", False, "install it")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="^JupyterLab is missing; install it$"):
        _require("JupyterLab", False, "install it")
    _require("JupyterLab", True, "install it")  # found: nothing happens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- the checkout
@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A folder laid out as a checkout that has just run the demo command (fewer permutations):
    pyproject.toml, the Makefile and .venv/ as `make demo` leaves them, the notebook with
    n_perm 50 in its parameters cell, and reports/demo."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    _as_after_make_demo(root)
    (root / "notebooks").mkdir()
    nb = nbformat.read(ROOT / NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "n_perm = 1000" in cell.source
    cell.source = cell.source.replace("n_perm = 1000", f"n_perm = {N_PERM}")
    nbformat.write(nb, root / NOTEBOOK)
    cmd = [sys.executable, "-m", "glmkit", "run",
           "--params", str(ROOT / "notebooks/reference.yaml"),
           "--n-perm", str(N_PERM), "--run-name", "demo", "--force"]
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return root, run


def test_glmkit_run_shows_progress_inside_cells(checkout):
    """`glmkit run` (not quiet) shows the permutations' own bar and the report's section, and
    the kernel no longer warns that it runs over TCP without encryption."""
    _, run = checkout
    err = run.stderr.replace("\r", "\n")
    assert re.search(rf"^  permutations: {N_PERM}/{N_PERM} \[\d\d:\d\d<00:00, +[\d.]+perm/s\]$",
                     err, flags=re.M), err[-3000:]
    assert re.search(r"^8\. Report:", err, flags=re.M), err[-3000:]
    assert TCP_WARNING not in err


def test_executed_notebook_names_no_temporary_folder(checkout):
    """The executed notebook glmkit run keeps (reports/demo/notebook.ipynb) was written in a
    temporary folder, reports/.demo.tmp-*: no output of it names that folder; the report cell
    prints where the run is once complete."""
    root, _ = checkout
    nb = nbformat.read(root / "reports" / "demo" / "notebook.ipynb", as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    temporary = re.search(r'^output_dir = "(.+)"$', injected.source, flags=re.M).group(1)
    assert Path(temporary).name.startswith(".demo.tmp-")  # the folder the run was written in
    outputs = [json.dumps(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs
    leaks = [o[:300] for o in outputs if ".tmp-" in o or Path(temporary).name in o]
    assert not leaks, leaks
    report_cell = next(c for c in nb.cells if c.cell_type == "code" and "write_report" in c.source)
    printed = "".join(o.get("text", "") for o in report_cell.outputs)
    assert printed.splitlines()[1] == str(Path("reports") / "demo" / "report.html"), printed
    assert printed.startswith(f"{Path('reports') / 'demo'}: ")


# ----------------------------------------------------------------------------- JupyterLab
def _readme_lab_blocks() -> list[str]:
    """The bash blocks of the README's JupyterLab section: `make lab`, then the kernel's
    registration for a JupyterLab started elsewhere."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## In JupyterLab and in Python")
    section = readme[start:readme.index("\n## ", start)]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def _as_after_make_demo(root: Path) -> None:
    """``root/.venv`` as `make demo` leaves it (installed: make has nothing to do), its
    ``python`` and ``jupyter`` those of the environment running the tests; the Makefile."""
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    jupyter = Path(sys.prefix) / "bin" / "jupyter"
    for name, target in (("python", sys.executable), ("jupyter", jupyter)):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {shlex.quote(str(target))} "$@"\n')
        (bin_dir / name).chmod(0o755)
    (root / ".venv" / ".installed").touch()
    past = time.time() - 60  # make's prerequisites older than .venv/.installed
    for path in (root / "pyproject.toml", bin_dir / "python"):
        os.utime(path, (past, past))


class Lab:
    """A JupyterLab server started in ``root`` by the README's `make lab`, run verbatim by bash
    (stopped with ``stop``); the server's options come through make's ``LAB_ARGS``."""

    def __init__(self, root: Path, home: Path, extra: list[str]):
        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"lab-{self.port}.log"
        args = ["--no-browser", "--IdentityProvider.token=", "--ServerApp.password=",
                "--ServerApp.ip=127.0.0.1", f"--port={self.port}", f"--ServerApp.root_dir={root}",
                *QUIET_LAB, *extra] + (["--allow-root"] if os.geteuid() == 0 else [])
        env = {**os.environ, **_jupyter_dirs(home), "LAB_ARGS": shlex.join(args)}
        self.command = _readme_lab_blocks()[0]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", self.command], cwd=root,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, f"JupyterLab stopped:\n{self.log()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"JupyterLab did not start:\n{self.log()[-3000:]}"
            time.sleep(0.5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # bash, make, JupyterLab and its kernels
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if not self._log.closed:
            self._log.close()


def _jupyter_dirs(home: Path) -> dict[str, str]:
    """Jupyter's folders in ``home``: no user setting applies, nothing is written elsewhere."""
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime", "IPYTHONDIR": "ipython",
            "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
    out = {key: str(home / name) for key, name in dirs.items()}
    notification = home / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return out


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory):
    _require("make", shutil.which("make") is not None, "install make (apt-get install make)")
    _require("JupyterLab", (Path(sys.prefix) / "bin" / "jupyter").is_file()
             and subprocess.run([sys.executable, "-c", "import jupyterlab"]).returncode == 0,
             "`make test` installs glmkit with JupyterLab into .venv/")
    return tmp_path_factory.mktemp("jupyter")


@pytest.fixture(scope="module")
def lab(checkout, lab_home):
    server = Lab(checkout[0], lab_home, [])
    yield server
    server.stop()


def test_readme_lab_commands_run_as_written(lab, checkout, tmp_path, monkeypatch):
    """The README's JupyterLab commands, run verbatim by bash in the checkout: `make lab` (the
    server these tests use: it serves the analysis notebook) and the kernel's registration for
    a JupyterLab started elsewhere, whose kernel imports this glmkit."""
    from jupyter_client.manager import start_new_kernel

    blocks = _readme_lab_blocks()
    assert len(blocks) == 2 and lab.command == blocks[0] and blocks[0].startswith("make lab ")
    with urllib.request.urlopen(f"{lab.url}/api/contents/{NOTEBOOK}?content=0", timeout=10) as r:
        assert json.load(r)["type"] == "notebook"
    data = tmp_path / "jupyter-data"  # where --user puts kernels, here the test's own folder
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks[1]], cwd=checkout[0],
                         env={**os.environ, "JUPYTER_DATA_DIR": str(data)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    spec = json.loads((data / "kernels" / "glmkit" / "kernel.json").read_text())
    assert spec["display_name"] == "Python (glmkit)" and spec["argv"][0] == sys.executable
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    km, kc = start_new_kernel(kernel_name="glmkit", startup_timeout=120)
    printed = []
    try:
        kc.execute_interactive("import glmkit; print(glmkit.__file__)", timeout=120,
                               output_hook=lambda m: printed.append(m["content"].get("text", "")))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert Path("".join(printed).strip()) == ROOT / "glmkit" / "__init__.py"


class Page:
    """A Chromium page on a JupyterLab server: requests elsewhere are aborted and recorded."""

    def __init__(self, browser, base: str):
        self.base = base
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route):
        url = route.request.url
        if url.startswith((self.base + "/", "data:", "blob:")) or url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def open(self, path: str):
        self.page.goto(f"{self.base}/lab/tree/{path}")
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=90_000)
        return self.page

    def wait_for_kernel(self, path: str, timeout: float = 120) -> None:
        """Until the server's session of ``path`` has an idle kernel and the page says so."""
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"{self.base}/api/sessions", timeout=5) as r:
                sessions = json.load(r)
            states = [s["kernel"]["execution_state"] for s in sessions if s["path"] == path]
            if states == ["idle"]:
                break
            dialog = self.page.locator(".jp-Dialog", has_text="Select Kernel")
            if not states and dialog.count():  # JupyterLab asks when its kernel list was late
                dialog.locator("button", has_text=re.compile("^Select$")).click()
            assert time.monotonic() < deadline, f"no idle kernel for {path}: {sessions}"
            time.sleep(0.5)
        self.page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                    timeout=60_000)

    def close(self):
        self.context.close()
        assert self.blocked == [], f"the page tried to reach {self.blocked}"


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


@pytest.fixture(scope="module")
def ran(browser, lab, checkout):
    """The notebook opened in JupyterLab and run with Run > Run All Cells."""
    root = checkout[0]
    before = {p.name for p in (root / "reports").iterdir()}
    session = Page(browser, lab.url)
    page = session.open(NOTEBOOK)
    session.wait_for_kernel(NOTEBOOK)
    _menu(page, "Run", "Run All Cells")
    page.wait_for_selector(".glmkit-explorer .glmkit-status [role=status]", timeout=600_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, tracebacks
    new = sorted({p.name for p in (root / "reports").iterdir()} - before)
    yield session, page, new
    session.close()


# ----------------------------------------------------------------------------- the run by hand
def test_run_all_writes_a_run_of_its_own(ran, checkout):
    """Run All in a checkout that holds reports/demo: a new, complete run folder in the
    checkout's reports/ (not beside the notebook); reports/demo is left as it was."""
    from glmkit.report.runfolder import RunManifest
    from glmkit.run import check_run_folder

    root, _ = checkout
    _, _, new = ran
    assert len(new) == 1 and re.fullmatch(r"demo-notebook-\d{8}-\d{6}(-\d+)?", new[0]), new
    manifest = RunManifest.read(root / "reports" / new[0])
    assert manifest.problems() == [] and manifest.report.is_file()
    check_run_folder(root / "reports" / "demo")  # every file unchanged since glmkit run wrote it
    assert not (root / "notebooks" / "reports").exists()


# ----------------------------------------------------------------------------- the explorer
STATUS = ".glmkit-explorer .glmkit-status [role=status]"
#: the maps of the demo run, in the explorer's (and the report's) order
MAP_NAMES = ("z", "z_fdr", "logp_bonferroni", "logp_maxt")


def _state(page) -> dict[str, str]:
    el = page.locator(STATUS)
    return {k: el.get_attribute(f"data-{k}")
            for k in ("map", "method", "alpha", "threshold", "count", "clusters", "cut")}


def _settle(page, check, what: str, timeout: float = 60) -> dict[str, str]:
    """The explorer's state once ``check(state)`` holds, and still holds a moment later (a
    value sent back by the browser would have changed it by then)."""
    deadline = time.monotonic() + timeout
    while not check(state := _state(page)):
        assert time.monotonic() < deadline, f"{what}: the explorer shows {state}"
        time.sleep(0.2)
    time.sleep(1.0)
    state = _state(page)
    assert check(state), f"{what}: the explorer changed to {state} by itself"
    return state


class Report:
    """The run's report.html (its kernel-free viewer), opened from disk in the same browser."""

    def __init__(self, context, path: Path):
        self.page = context.new_page()
        self.page.goto(path.as_uri())
        self.page.wait_for_selector(".glmkit-viewer[data-ready='1']", timeout=60_000)
        self.root = self.page.locator(".glmkit-viewer").first

    def show(self, label: str, method: str | None = None, alpha: str | None = None) -> dict:
        ctl = self.root.locator
        ctl('select[data-control="map"]').select_option(label=label)
        if method is not None:
            ctl('select[data-control="method"]').select_option(value=method)
        if alpha is not None:
            ctl('select[data-control="alpha"]').select_option(value=alpha)
        return self.state()

    def state(self) -> dict:
        return self.root.evaluate(
            "r => ({map: r.querySelector('select[data-control=map]').selectedOptions[0].text,"
            " method: r.glmkit.state.method, alpha: r.glmkit.state.alpha, t: r.glmkit.state.t,"
            " count: r.glmkit.state.count})")


def _same_as_report(state: dict, report: dict, what: str) -> None:
    got = (state["method"], state["alpha"] if state["method"] != "value" else None,
           int(state["count"]))
    expected = (report["method"], report["alpha"] if report["method"] != "value" else None,
                int(report["count"]))
    assert got == expected, f"{what}: explorer {state}, report {report}"
    assert float(state["threshold"]) == pytest.approx(float(report["t"]), rel=1e-9, abs=1e-12)


def _truth(folder: Path, name: str, t: float, extent: int = 0) -> int:
    """Voxels >= t (and not 0) of the run's map ``name`` in clusters (faces) of >= extent."""
    data = np.asarray(nib.load(folder / "maps" / f"{name}.nii.gz").get_fdata())
    supra = (data >= t) & (data != 0)
    labels, _ = ndimage.label(supra)
    sizes = np.bincount(labels.ravel())[1:]
    return int(sizes[sizes >= extent].sum())


@pytest.fixture(scope="module")
def explorer(ran, checkout):
    session, page, new = ran
    folder = checkout[0] / "reports" / new[0]
    page.locator(".glmkit-explorer").scroll_into_view_if_needed()
    report = Report(session.context, folder / "report.html")
    maps = page.locator(".glmkit-map select").evaluate(
        "s => Array.from(s.options).map(o => o.value)")
    return page, report, folder, maps


def _pick(page, control: str, value: str) -> None:
    page.locator(f".glmkit-{control} select").select_option(value=value)


def _type(page, control: str, value) -> None:
    box = page.locator(f".glmkit-{control} input")
    box.fill(str(value))
    box.press("Enter")


def test_every_map_and_method_equals_the_report(explorer):
    """For each map, its opening state and each of its methods at two alphas: the explorer's
    method, alpha, threshold and count are the report's, and stay so."""
    page, report, folder, maps = explorer
    summary = json.loads((folder / "summary.json").read_text())
    assert maps[:3] == ["z", "z, FDR q<0.05", "-log10 p, Bonferroni"] and len(maps) == 4
    # both open on the headline map, at the run's alpha
    opening = report.state()
    state = _settle(page, lambda s: s["map"] == "logp_maxt", "opened")
    assert opening["map"] == maps[3]
    _same_as_report(state, opening, "opened")
    headline = {}
    for label, name in zip(maps, MAP_NAMES, strict=True):
        _pick(page, "map", label)
        expected = report.show(label)
        state = _settle(page, lambda s: s["map"] == name and s["method"] == expected["method"],
                        f"{label} opened")
        _same_as_report(state, expected, f"{label} opened")
        methods = page.locator(".glmkit-method select").evaluate(
            "s => Array.from(s.options).map(o => o.value)")
        for method in [m for m in methods if m != "value"]:
            key = {"uncorrected p": "uncorrected", "FDR q": "fdr", "Bonferroni alpha": "bonferroni",
                   "FWER alpha (permutation)": "fwer"}[method]
            _pick(page, "method", method)
            for alpha in ("0.05", "0.01"):
                _type(page, "alpha", alpha)
                state = _settle(page, lambda s: s["method"] == key and s["alpha"] == alpha,
                                f"{label}, {method} {alpha}")
                _same_as_report(state, report.show(label, key, alpha),
                                f"{label}, {method} {alpha}")
                headline[(label, key, alpha)] = int(state["count"])
    # the headline numbers of summary.json (the run's alpha, 0.05)
    assert headline[("z", "fdr", "0.05")] == summary["suprathreshold"]["fdr"]
    assert headline[("z", "bonferroni", "0.05")] == summary["suprathreshold"]["bonferroni"]
    assert headline[(maps[3], "fwer", "0.05")] == summary["suprathreshold"]["perm_voxel"]


def test_fwer_map_at_alpha_one_tenth_is_one(explorer):
    """The permutation map at FWER alpha 0.1 is thresholded at -log10 p >= 1 exactly (the
    slider's grid does not turn it into 0.999...), as in the report."""
    page, report, _, maps = explorer
    _pick(page, "map", maps[3])
    _settle(page, lambda s: s["map"] == "logp_maxt" and s["method"] == "fwer", "FWER map")
    _type(page, "alpha", "0.1")
    state = _settle(page, lambda s: s["alpha"] == "0.1", "FWER map at 0.1")
    assert (state["method"], float(state["threshold"])) == ("fwer", 1.0)
    _same_as_report(state, report.show(maps[3], "fwer", "0.1"), "FWER map at 0.1")


def _handle(page, control: str):
    return page.locator(f".glmkit-{control} .noUi-handle")


def test_slider_keys_drag_typed_threshold_extent_and_cut(explorer):
    """By value: keys and a drag on the threshold slider, a typed threshold, a cluster extent
    and a cut moved with the keys; every count is the map's own. Then back to FDR (and FDR at
    alpha 0.01): the report's numbers again, nothing drifted."""
    page, report, folder, maps = explorer
    _pick(page, "map", maps[0])
    start = _settle(page, lambda s: s["map"] == "z" and s["method"] == "fdr", "z opened")
    t_fdr = float(start["threshold"])
    step = float(np.nanmax(nib.load(folder / "maps" / "z.nii.gz").get_fdata())) / 1000
    # keys: three steps up from the FDR threshold
    _handle(page, "threshold").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    state = _settle(page, lambda s: s["method"] == "value" and float(s["threshold"]) > t_fdr,
                    "threshold slider, keys")
    t = float(state["threshold"])
    assert t_fdr + 2.4 * step < t < t_fdr + 3.6 * step, (t_fdr, t, step)
    assert int(state["count"]) == _truth(folder, "z", t)
    # drag the handle to the left
    box = _handle(page, "threshold").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 60, box["y"] + box["height"] / 2, steps=6)
    page.mouse.up()
    state = _settle(page, lambda s: s["method"] == "value" and float(s["threshold"]) < t - step,
                    "threshold slider, drag")
    t = float(state["threshold"])
    assert int(state["count"]) == _truth(folder, "z", t) > _truth(folder, "z", t_fdr)
    # a typed threshold, then a cluster extent
    _type(page, "threshold-text", "3.1")
    state = _settle(page, lambda s: s["threshold"] == "3.1", "typed threshold")
    assert state["method"] == "value" and int(state["count"]) == _truth(folder, "z", 3.1)
    _type(page, "extent", "12")
    state = _settle(page, lambda s: int(s["count"]) == _truth(folder, "z", 3.1, 12),
                    "cluster extent 12")
    assert (state["method"], state["threshold"]) == ("value", "3.1")
    assert _truth(folder, "z", 3.1, 12) < _truth(folder, "z", 3.1)
    # the cut, with the keys: two voxels (3 mm) along x; the threshold stays
    x0 = float(state["cut"].split(",")[0])
    _handle(page, "x").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    moved = _settle(page, lambda s: float(s["cut"].split(",")[0]) == x0 + 6, "cut, keys")
    assert {k: moved[k] for k in ("method", "threshold", "count")} == {
        k: state[k] for k in ("method", "threshold", "count")}
    # back to FDR, extent 0: the report's numbers, then at alpha 0.01
    _type(page, "extent", "0")
    _pick(page, "method", "FDR q")
    _type(page, "alpha", "0.05")
    state = _settle(page, lambda s: s["method"] == "fdr" and s["alpha"] == "0.05"
                    and s["count"] == start["count"], "FDR again")
    _same_as_report(state, report.show(maps[0], "fdr", "0.05"), "FDR again")
    _type(page, "alpha", "0.01")
    state = _settle(page, lambda s: s["method"] == "fdr" and s["alpha"] == "0.01", "FDR 0.01")
    _same_as_report(state, report.show(maps[0], "fdr", "0.01"), "FDR 0.01")


def test_peak_selector_and_keyboard(explorer):
    """The peak selector shows its first entry; choosing a cluster with the keyboard moves the
    cut to its peak; Tab reaches every control."""
    page, _, _, maps = explorer
    _pick(page, "map", maps[0])
    _settle(page, lambda s: s["map"] == "z" and s["method"] == "fdr", "z opened")
    peak = page.locator(".glmkit-peak select")
    shown = peak.evaluate("s => s.selectedIndex >= 0 ? s.options[s.selectedIndex].text : null")
    assert shown is not None and shown.replace("\xa0", " ") == "go to peak…"
    first = peak.evaluate("s => s.options[1].text").replace("\xa0", " ")
    xyz = re.search(r"at \((-?\d+), (-?\d+), (-?\d+)\)", first).groups()
    # "#" picks the first entry that starts with it (the browser's type-ahead): the largest
    # cluster. (ArrowUp/ArrowDown on a closed list move JupyterLab's cell cursor instead: the
    # notebook's command-mode shortcuts take them from any element in an output that is not
    # text-editable, and nothing a kernel sends can exempt it.)
    peak.focus()
    page.keyboard.press("#")
    _settle(page, lambda s: s["cut"] == ",".join(f"{float(v):g}" for v in xyz), "go to peak 1")
    # Tab from the map selector visits every control
    page.locator(".glmkit-map select").focus()
    seen = []
    for _ in range(40):
        page.keyboard.press("Tab")
        seen.append(page.evaluate(
            "() => { const w = document.activeElement.closest('[class*=glmkit-]'); return w ?"
            " Array.from(w.classList).filter(c => c.startsWith('glmkit-')).join() : '' }"))
    wanted = {"glmkit-method", "glmkit-threshold", "glmkit-threshold-text", "glmkit-extent",
              "glmkit-x", "glmkit-y", "glmkit-z", "glmkit-mode", "glmkit-peak"}
    assert wanted <= set(seen), seen


# ----------------------------------------------------------------------------- no kernel
@pytest.fixture(scope="module")
def lab_without_kernels(checkout, lab_home, tmp_path_factory):
    home = tmp_path_factory.mktemp("jupyter-no-kernel")  # no workspace of the first server
    server = Lab(checkout[0], home, ["--KernelSpecManager.allowed_kernelspecs=no-such-kernel"])
    yield server
    server.stop()


def test_executed_notebook_shows_results_without_kernel_or_trust(browser, lab_without_kernels,
                                                                 checkout):
    """reports/demo/notebook.ipynb (executed by glmkit run, never signed) in a JupyterLab that
    has no kernel: untrusted, it shows the explorer's picture (its PNG), not a widget's repr,
    and the permutations' bar as it ended (50/50), not at 0%."""
    from nbformat.sign import NotebookNotary

    root = checkout[0]
    path = "reports/demo/notebook.ipynb"
    nb = nbformat.read(root / path, as_version=4)
    notary = NotebookNotary(data_dir=str(lab_without_kernels.home / "data"))
    assert not notary.check_signature(nb)
    outputs = [o for c in nb.cells for o in c.get("outputs", ())
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert outputs and all("text/plain" in o["data"] for o in outputs)
    explorers = [o for o in outputs if "image/png" in o["data"]]
    assert len(explorers) == 1 and explorers[0]["data"]["text/plain"].startswith(
        "glmkit explorer: ")
    bars = [o["data"]["text/plain"] for o in outputs if o not in explorers]
    assert len(bars) == 1 and bars[0].startswith(
        f"permutations: 100%|{chr(0x2588) * 10}| {N_PERM}/{N_PERM} ["), bars
    session = Page(browser, lab_without_kernels.url)
    page = session.open(path)
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    dialog.wait_for(timeout=60_000)
    dialog.locator("button", has_text=re.compile("^No Kernel$")).click()
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator", timeout=30_000)
    # JupyterLab adds the cells a few at a time and draws the outputs of cells in view only
    code_cells = sum(c.cell_type == "code" for c in nb.cells)
    page.wait_for_function(
        f"() => document.querySelectorAll('.jp-CodeCell').length == {code_cells}", timeout=60_000)
    last = page.locator(".jp-CodeCell").last
    last.scroll_into_view_if_needed()
    image = last.locator(".jp-OutputArea-output.jp-RenderedImage img")
    image.wait_for(timeout=60_000)
    png = explorers[0]["data"]["image/png"].replace("\n", "")
    assert image.get_attribute("src") == f"data:image/png;base64,{png}"
    assert image.evaluate("i => i.naturalWidth") > 400
    assert "Explorer(children" not in last.inner_text()
    cell = page.locator(".jp-CodeCell", has_text="pipeline.run_permutation(")
    cell.scroll_into_view_if_needed()
    bar = cell.locator(".jp-OutputArea-output")
    bar.wait_for(timeout=30_000)
    # JupyterLab renders a cell scrolled into view lazily, and may draw it again (a new
    # element): compare the text of whatever element is there, until it matches or 30 s pass
    from playwright.sync_api import expect

    expect(bar).to_have_text(bars[0], use_inner_text=True, timeout=30_000)
    assert last.locator(".glmkit-explorer").count() == 0  # untrusted: no widget is drawn
    assert "is not trusted" in lab_without_kernels.log()
    assert not json.load(urllib.request.urlopen(f"{lab_without_kernels.url}/api/sessions"))
    session.close()


def test_no_tcp_warning_in_jupyterlab(ran, lab):
    """`make lab` starts kernels with CurveZMQ keys: no "TCP without encryption" warning."""
    assert "Kernel started" in lab.log() and TCP_WARNING not in lab.log()


def test_executed_copy_run_again_by_hand(checkout):
    """reports/demo/notebook.ipynb (it names the temporary folder glmkit run wrote it in, gone
    since) run again by hand with its kernel in reports/demo: it completes and is a run of its
    own beside reports/demo; reports/demo and its folder are left as they were."""
    import nbclient

    from glmkit.report.runfolder import RunManifest
    from glmkit.run import check_run_folder

    reports = checkout[0] / "reports"
    before = {p.name for p in reports.iterdir()}
    nb = nbformat.read(reports / "demo" / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(reports / "demo")}}).execute()
    new = sorted({p.name for p in reports.iterdir()} - before)
    assert len(new) == 1 and re.fullmatch(r"demo-notebook-\d{8}-\d{6}(-\d+)?", new[0]), new
    assert RunManifest.read(reports / new[0]).problems() == []
    assert not list(reports.glob(".demo.tmp-*"))
    check_run_folder(reports / "demo")
