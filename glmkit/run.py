"""Execute the analysis notebook with papermill into ``reports/<run_name>/``, atomically.

:func:`run_notebook` validates everything it can before starting a kernel (parameters, the reports
folder, an earlier run of the same name), executes the notebook into a temporary folder
beside ``reports/<run_name>/``, checks what the notebook's :func:`glmkit.write_report` wrote
against its manifest, adds its own ``run.json`` and renames the folder. A failing
cell raises :class:`~glmkit.errors.RunError` naming the cell and keeps the partly executed
notebook in ``reports/<run_name>.failed-<UTC time>/``; an interrupted run (Ctrl-C, SIGTERM)
leaves nothing behind. :func:`run_batch` runs a grid of settings and writes ``index.html``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glmkit._util import atomic_folder, logger
from glmkit.preflight import check_memory
from glmkit.errors import (
    GlmkitError,
    ParameterError,
    ReportError,
    RunError,
    RunLockedError,
    checked_arguments,
)
from glmkit.settings import MAX_RUN_NAME, BUILTIN_DATASETS, RunSettings, read_params_file

if TYPE_CHECKING:  # pragma: no cover - imported when a run ends (the report layer is heavy)
    from glmkit.report.runfolder import RunManifest

__all__ = ["run_notebook", "run_batch", "load_grid", "write_index", "check_reports_dir",
           "check_run_folder", "run_lock", "recover", "RunInterrupted", "KERNEL_NAME",
           "NOTEBOOK_FILE", "RUN_RECORD", "MAX_BATCH"]

KERNEL_NAME = "python3"
#: the executed notebook papermill writes into the run folder
NOTEBOOK_FILE = "notebook.ipynb"
#: batches of more runs than this need ``yes=True`` (``glmkit batch --yes``)
MAX_BATCH = 50


class RunInterrupted(KeyboardInterrupt):
    """A run or batch was interrupted (Ctrl-C, SIGTERM); the message says what was written.

    Not a :class:`~glmkit.errors.GlmkitError`: an interrupt is the user's decision, and
    ``except Exception`` must not swallow it.
    """


#: the runner's own record in the run folder: kernel, finish time, wall time, cell timings, and
#: the size and sha256 of the executed notebook and of ``manifest.json``
RUN_RECORD = "run.json"


# --------------------------------------------------------------------------------- one run
@checked_arguments(cwd="path?", progress_bar="flag", log_output="flag", wait="flag")
def run_notebook(settings: RunSettings, *, progress_bar: bool = True, log_output: bool = False,
                 cwd: str | os.PathLike | None = None, wait: bool = False) -> Path:
    """Execute the notebook for ``settings`` and return the path of the run's ``report.html``.

    The notebook receives the parameters as given (relative paths as typed, taken from
    ``cwd``), plus ``output_dir`` (the temporary folder) and ``notebook`` (its own path). It
    writes the run folder with :func:`glmkit.write_report`; the runner then checks the folder
    against the manifest (:func:`check_run_folder`), adds ``run.json`` and renames the folder.

    Parameters
    ----------
    settings : RunSettings
        Validated parameters; ``settings.force`` replaces a complete earlier run.
    progress_bar : bool
        Show the run's progress on stderr: the section of the running cell and the progress
        bars the cells draw (permutations: count, rate, time left); see
        :mod:`glmkit.progress`.
    log_output : bool
        Echo the notebook's outputs to the log while it runs.
    cwd : path-like, optional
        Folder that relative paths are taken from, and the kernel's working folder; default
        the current folder.
    wait : bool
        When another run of the same name is running (it holds the run's lock), wait for it
        to finish instead of refusing at once.

    Raises
    ------
    RunLockedError
        Another run of the same name is running (the message names it) and ``wait`` is False.
    ReportError
        The reports folder cannot be written, or the run exists and ``force`` is False.
    RunInterrupted
        Ctrl-C or SIGTERM: the message says what was kept (nothing half-written remains).
    RunError
        A cell failed (the message names it), or the notebook did not write a promised file,
        wrote files that do not match its manifest, or ran with other parameters than given.
    """
    if not isinstance(settings, RunSettings):
        raise ParameterError(f"run_notebook: settings is a {type(settings).__name__}, expected "
                             "glmkit.RunSettings (e.g. RunSettings.from_mapping(params))")
    if settings.output_dir is not None:
        raise ParameterError(
            f"output_dir={settings.output_dir!r} cannot be set for glmkit run: the run is "
            "written to a temporary folder renamed to reports_dir/run_name at the end; set "
            "reports_dir=<folder> and run_name=<name> instead")
    cwd = Path(cwd if cwd is not None else os.getcwd()).absolute()
    notebook, target = _from(cwd, settings.notebook_path), _from(cwd, settings.run_dir)
    _check_design(settings, cwd)  # before anything is created
    _preflight(settings, notebook, target)
    check_reports_dir(target.parent)
    with run_lock(target, wait=wait):
        recover(target)
        _check_existing(settings, target)
        try:
            _execute(settings, notebook, target, cwd, progress_bar=progress_bar,
                     log_output=log_output)
        except RunInterrupted:
            raise
        except KeyboardInterrupt:
            kept = (f"the earlier run {target} was kept" if target.exists()
                    else f"nothing was written to {target}")
            raise RunInterrupted(kept) from None
    report = target / "report.html"
    logger.info("run %s complete: %s", settings.run_name, report)
    return report


def _execute(settings: RunSettings, notebook: Path, target: Path, cwd: Path, *,
             progress_bar: bool, log_output: bool) -> None:
    """Execute the notebook into a temporary folder renamed to ``target`` when complete."""
    import papermill

    from glmkit.progress import ENGINE_NAME, NotebookProgress

    start = time.perf_counter()
    with _interrupts_stop_the_run() as interrupt, \
            atomic_folder(target, overwrite=settings.force) as tmp:
        _readable(tmp)
        values = {**settings.to_dict(), "output_dir": str(tmp), "notebook": str(notebook)}
        parameters = {name: values[name] for name in RunSettings.notebook_parameters()}
        logger.info("running %s -> %s", notebook.name, target)
        # the cells' sections and their own progress bars (permutations, ...); see progress.py
        progress = NotebookProgress() if progress_bar else None
        try:
            papermill.execute_notebook(
                str(notebook), str(tmp / NOTEBOOK_FILE), parameters=parameters,
                kernel_name=KERNEL_NAME, engine_name=ENGINE_NAME, progress=progress,
                progress_bar=False, log_output=log_output, cwd=str(cwd))
        except (GlmkitError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a cell failed, the kernel died or could not start, ...
            if interrupt["signal"] is not None:  # it failed because the handler stopped it
                raise KeyboardInterrupt(f"interrupted by signal {interrupt['signal']}") from None
            failed = _keep_failed(tmp, target)
            if isinstance(exc, papermill.PapermillExecutionError):
                first = (exc.source or "").strip().splitlines()[:1] or [""]
                raise RunError(
                    f"run {settings.run_name!r} failed in notebook cell {exc.exec_count} (index "
                    f"{exc.cell_index}, starting {first[0]!r}): {exc.ename}: "
                    f"{str(exc.evalue).rstrip('.')}. "
                    f"The partly executed notebook is in {failed}; nothing was written to "
                    f"{target}") from None
            raise RunError(f"run {settings.run_name!r} failed: {type(exc).__name__}: {exc}. "
                           f"What was written is in {failed}; nothing was written to "
                           f"{target}") from exc
        finally:
            if progress is not None:
                progress.close()
        _finish(tmp, settings, target, wall_time=time.perf_counter() - start)


def _from(cwd: Path, path: str | os.PathLike) -> Path:
    """``path`` taken from ``cwd`` (the runner's own paths; the notebook gets them as given)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else cwd / path


def _preflight(settings: RunSettings, notebook: Path, target: Path) -> None:  # noqa: ARG001
    """Everything else that can be checked before a kernel starts."""
    if notebook.is_dir():
        raise RunError(f"notebook={str(notebook)!r} is a folder: expected the analysis "
                       "notebook (.ipynb); leave notebook unset to use glmkit's own")
    if not notebook.is_file():
        raise RunError(f"notebook {str(notebook)!r} does not exist: expected the analysis "
                       "notebook; leave notebook unset to use glmkit's own")


def _check_existing(settings: RunSettings, target: Path) -> None:
    if target.exists() and not settings.force:
        raise ReportError(
            f"run folder {str(target)!r} already exists (a complete earlier run): refusing to "
            "overwrite it; pass force=True to replace it, or choose another "
            "run_name=<name>")


# ------------------------------------------------------------------ lock and leftovers
def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when another process holds it.
    The operating system releases it when the process ends, however it ends."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(lock: Path) -> str:
    """Who holds a run's lock, in words (what it wrote into the lock file)."""
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "a process that has not said which"
    return (f"process {info.get('pid')}, started {info.get('started_utc')}, command "
            f"{info.get('command', '?')!r}")


@contextlib.contextmanager
def run_lock(target: str | os.PathLike, *, wait: bool = False, poll: float = 0.25
             ) -> Iterator[Path]:
    """Hold the lock of the run folder ``target`` (``.<run_name>.lock`` beside it) while a run
    of that name executes; one process at a time holds it.

    Another holder means another run of the same name is going: refuse at once with a
    :class:`~glmkit.errors.RunLockedError` naming it, or with ``wait`` wait for it. The lock
    is an OS file lock (``flock``), released when its process ends, even by SIGKILL; the lock
    file is removed on release.
    """
    target = Path(target)
    lock = _lock_path(target)
    announced = False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if _try_lock(fd):
            try:  # the holder before us may have removed the file: lock the one in place
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        os.close(fd)
        if not wait:
            raise RunLockedError(
                f"run {target.name!r} is already running in {str(target.parent)!r} "
                f"({_holder(lock)}): a second run of the same name would overwrite it. Wait "
                "for it to finish, pass wait=True to wait for it, or choose another "
                "run_name=<name>")
        if not announced:
            logger.info("waiting for the run %s that is running (%s)", target.name,
                        _holder(lock))
            announced = True
        time.sleep(poll)
    try:
        record = {"pid": os.getpid(), "run_name": target.name,
                  "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _leftovers(target: Path, kind: str) -> list[Path]:
    """``.<name>.tmp-XXXXXXXX`` (mkdtemp's suffix) or ``.<name>.old-<pid>`` folders of a run."""
    pattern = re.compile(re.escape(f".{target.name}.{kind}-") + r"[A-Za-z0-9_]+$")
    return sorted(p for p in target.parent.glob(f".{target.name}.{kind}-*")
                  if pattern.fullmatch(p.name) and p.is_dir())


def recover(target: str | os.PathLike) -> None:
    """Clean up after a killed run of ``target``'s name; call it holding the run's lock.

    A ``--force`` run killed between its two renames left the earlier run in a hidden
    ``.<name>.old-<pid>`` folder: it is restored when ``target`` is missing, else (the new run
    was complete) removed. Temporary ``.<name>.tmp-*`` folders are removed: no run of this name
    is writing them, since the caller holds the lock.
    """
    target = Path(target)
    olds = _leftovers(target, "old")
    if olds and not target.exists():
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        newest.rename(target)
        olds.remove(newest)
        logger.warning("restored the earlier run %s from %s, where a forced run that was "
                       "killed had left it", target, newest.name)
    for folder in olds + _leftovers(target, "tmp"):
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s, left by a run of %s that was killed", folder.name,
                    target.name)


def _check_design(settings: RunSettings, cwd: Path) -> None:
    """The contrast against the table's design and the mask against the maps, before the
    kernel starts, for glmkit's own notebook (the Localizer, fetched by the notebook, is
    checked there)."""
    if settings.dataset == "localizer" or settings.notebook is not None:
        return  # the Localizer is fetched by the notebook; another notebook reads as it will
    from glmkit import pipeline

    paths = {name: str(_from(cwd, value)) for name in ("dataset", "table", "mask")
             if (value := getattr(settings, name)) is not None
             and value not in (*BUILTIN_DATASETS, "mni152")}
    local = settings.replace(**paths)
    dataset = pipeline.load_data(local)
    pipeline.check_contrast(dataset, local)
    mask = pipeline.analysis_mask(dataset, local)
    check_memory(dataset, local, mask_voxels=None if mask is None else mask.n_voxels)


def check_reports_dir(reports_dir: str | os.PathLike) -> Path:
    """Create ``reports_dir`` if needed and check that runs can be written into it."""
    path = Path(reports_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".write-test-", dir=path))
        probe.rmdir()
    except OSError as exc:
        raise ReportError(
            f"reports_dir {str(path)!r} is not writable ({exc.strerror or exc}): expected a "
            "folder where runs can be created; pass reports_dir=<writable folder> or fix its "
            "permissions") from None
    return path


@contextlib.contextmanager
def _interrupts_stop_the_run() -> Iterator[dict[str, Any]]:
    """SIGINT and SIGTERM stop the run's kernel and raise KeyboardInterrupt, so cleanup runs.

    The handler kills the child processes started since entering (the notebook's kernel)
    before raising: wherever the interrupt lands in the notebook client, the run
    cannot go on waiting for a long cell. The yielded state records the signal, so a cell
    or kernel failure caused by that termination is reported as the interrupt it is.
    """
    state: dict[str, Any] = {"signal": None, "children": _child_pids()}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):  # noqa: ARG001
        state["signal"] = signum
        _kill_new_children(state["children"])
        raise KeyboardInterrupt(f"interrupted by signal {signum}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _child_pids() -> set[int]:
    """PIDs of this process's children (the kernels started before a run are not its own)."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _kill_new_children(before: set[int]) -> None:
    """Kill the child processes started since ``before`` (the run's kernel, batch workers).

    On an interrupt papermill leaves its kernel running the current cell; waiting for it (or
    for its sockets at interpreter exit) can hold the process for as long as the cell runs.
    The kernel holds nothing worth a graceful shutdown: the run is being discarded.
    """
    import psutil

    for proc in psutil.Process().children(recursive=True):
        if proc.pid not in before:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _readable(folder: Path) -> None:
    """Give the run folder the usual permissions (mkdtemp makes it private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def _keep_failed(tmp: Path, target: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    failed = target.with_name(f"{target.name}.failed-{stamp}")
    number = 1
    while failed.exists():
        number += 1
        failed = target.with_name(f"{target.name}.failed-{stamp}-{number}")
    shutil.copytree(tmp, failed)
    return failed


def _finish(tmp: Path, settings: RunSettings, target: Path, *, wall_time: float) -> None:
    """Check what the notebook wrote against its manifest and the parameters given, then add
    ``run.json``; nothing the notebook wrote is rewritten."""
    from glmkit.report.runfolder import MANIFEST_NAME, FileRecord

    problem = _written_problem(tmp, settings)
    if problem:
        failed = _keep_failed(tmp, target)
        raise RunError(f"run {settings.run_name!r}: the notebook finished but {problem}; its "
                       f"output is in {failed}")
    record = {
        "run_name": settings.run_name,
        "kernel": KERNEL_NAME,
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(wall_time, 3),
        "cells": _cell_timings(tmp / NOTEBOOK_FILE),
        "files": [dataclasses.asdict(FileRecord.of(tmp, name))
                  for name in (NOTEBOOK_FILE, MANIFEST_NAME)],
    }
    (tmp / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def _written_problem(tmp: Path, settings: RunSettings) -> str | None:
    """What is wrong with the folder the notebook wrote (None when it is complete)."""
    from glmkit.report.runfolder import MANIFEST_NAME, RunManifest, promised_files

    promised = promised_files(settings.statistics, stat_type=settings.stat_type,
                              export=settings.export)
    missing = [name for name in (*promised, MANIFEST_NAME, NOTEBOOK_FILE)
               if not (tmp / name).is_file()]
    if missing:
        return f"did not write {missing}"
    try:
        manifest = RunManifest.read(tmp)
    except ReportError as exc:
        return str(exc)
    problems = manifest.problems() + [f"{name} is not in it" for name in promised
                                      if name not in manifest.paths]
    if problems:
        return f"wrote files that do not match {MANIFEST_NAME}: {'; '.join(problems)}"
    written = json.loads((tmp / "params.json").read_text())
    given = settings.to_dict(runner=False)
    changed = [f"{k}: given {given.get(k)!r}, written {written.get(k)!r}"
               for k in sorted(set(given) | set(written)) if given.get(k) != written.get(k)]
    if changed:
        return (f"wrote params.json with other parameters than given ({'; '.join(changed)}): "
                "does its settings cell build RunSettings.from_namespace(globals())?")
    return None


def _cell_timings(notebook: Path) -> list[dict[str, Any]]:
    """Index, first code line and papermill's duration of each code cell."""
    import nbformat

    cells = []
    for index, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        first = next((ln for ln in cell.source.splitlines() if ln.strip()
                      and not ln.startswith("#")), "")
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        cells.append({"index": index, "source": first[:80], "seconds": duration})
    return cells


@checked_arguments(folder="path")
def check_run_folder(folder: str | os.PathLike) -> RunManifest:
    """Check a complete run folder: every file of ``manifest.json`` and of ``run.json`` (the
    executed notebook and the manifest itself) is there and unchanged.

    Returns the manifest; raises :class:`~glmkit.errors.ReportError` naming each file that is
    missing or differs.
    """
    from glmkit.report.runfolder import FileRecord, RunManifest

    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"run folder {str(folder)!r} "
                          f"{'is a file' if folder.exists() else 'does not exist'}; expected a "
                          "run's folder (with manifest.json), e.g. reports/<run-name>")
    manifest = RunManifest.read(folder)
    try:
        record = json.loads((folder / RUN_RECORD).read_text())
        runner_files = [FileRecord(**entry) for entry in record["files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"run folder {str(folder)!r}: {RUN_RECORD} is missing or unreadable "
                          f"({exc}); it is not a complete glmkit run") from None
    problems = manifest.problems() + [p for p in (f.problem(folder) for f in runner_files) if p]
    if problems:
        raise ReportError(f"run folder {str(folder)!r} has changed since it was written: "
                          f"{'; '.join(problems)}")
    return manifest


# --------------------------------------------------------------------------------- batch
@checked_arguments(path="path")
def load_grid(path: str | os.PathLike, *, force: bool | None = None) -> list[RunSettings]:
    """Read a batch file into validated settings, one per run (nothing runs yet).

    The YAML mapping holds base parameters (top level, or under ``base:``), and either
    ``grid:`` (parameter -> list of values; the cartesian product, run names derived from
    the values) or ``runs:`` (a list of parameter mappings, each over the base).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "grid.yaml"
    >>> _ = p.write_text("n_perm: 100\\ngrid:\\n  smoothing_fwhm: [0, 5]\\n")
    >>> [s.run_name for s in load_grid(p)]
    ['grid-smoothing_fwhm=0', 'grid-smoothing_fwhm=5']
    """
    path = Path(path)
    data = read_params_file(path)
    grid = data.pop("grid", None)
    runs = data.pop("runs", None)
    base = data.pop("base", None) or {}
    if not isinstance(base, Mapping):
        raise ParameterError(f"batch file {str(path)!r}: 'base' must map parameter names to "
                             f"values, found a {type(base).__name__}")
    base = {**base, **data}
    if grid is not None and runs is not None:
        raise ParameterError(f"batch file {str(path)!r} has both 'grid' and 'runs': use one")
    if force is not None:
        base["force"] = force
    prefix = str(base.pop("run_name", None) or path.stem)
    combos: list[dict[str, Any]] = []
    if grid is not None:
        if not isinstance(grid, Mapping) or not grid:
            raise ParameterError(f"batch file {str(path)!r}: 'grid' must map parameter names "
                                 "to lists of values, e.g. 'smoothing_fwhm: [0, 5, 8]'")
        names = list(grid)
        values = []
        for name in names:
            options = grid[name]
            if not isinstance(options, list) or not options:
                raise ParameterError(f"batch file {str(path)!r}: grid entry {name!r} must be a "
                                     f"non-empty list of values, found {options!r}")
            values.append(options)
        count = 1
        for options in values:
            count *= len(options)
        if count > MAX_GRID:
            raise ParameterError(
                f"batch file {str(path)!r}: the grid makes {count} runs "
                f"({' x '.join(str(len(v)) for v in values)}), more than {MAX_GRID}: split it "
                "into several batch files")
        for combo in itertools.product(*values):
            params = dict(zip(names, combo, strict=True))
            label = "_".join(f"{_normalise(n)}={_label(v)}" for n, v in params.items())
            combos.append({**params, "run_name": _run_name(prefix, label)})
    elif runs is not None:
        if not isinstance(runs, list) or not all(isinstance(r, Mapping) for r in runs):
            raise ParameterError(f"batch file {str(path)!r}: 'runs' must be a list of "
                                 "parameter mappings")
        if not runs:
            raise ParameterError(f"batch file {str(path)!r}: 'runs' is empty; list at least "
                                 "one run, e.g. 'runs: [{n_perm: 1000}]'")
        for number, params in enumerate(runs, start=1):
            combos.append({"run_name": f"{prefix}-{number}", **params})
    else:
        raise ParameterError(f"batch file {str(path)!r} has neither 'grid' nor 'runs': add "
                             "'grid:' (parameter -> list of values) or 'runs:' (a list)")
    settings = [RunSettings.from_mapping({**base, **combo}) for combo in combos]
    names = [s.run_name for s in settings]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ParameterError(f"batch file {str(path)!r} gives several runs the same run_name "
                             f"{duplicates}: give each run its own run_name")
    if len({str(Path(s.reports_dir).absolute()) for s in settings}) > 1:
        raise ParameterError(f"batch file {str(path)!r}: all runs must share one reports_dir; "
                             "give reports_dir once, at the top of the file")
    return settings


#: a grid larger than this is refused before any run is validated
MAX_GRID = 10_000


def _run_name(prefix: str, label: str) -> str:
    """``<prefix>-<label>``, cut to ``MAX_RUN_NAME`` characters with a hash of the whole name
    when longer (so that names stay distinct)."""
    import hashlib

    name = f"{prefix}-{label}"
    if len(name) <= MAX_RUN_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:MAX_RUN_NAME - 9].rstrip('._-')}-{digest}"


def _normalise(name: str) -> str:
    return str(name).replace("-", "_")


def _label(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = "+".join(_label(v) for v in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, Mapping):
        text = "+".join(f"{k}{_label(v)}" for k, v in value.items())
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text).strip(".") or "none"


def _run_one(settings: RunSettings, cwd: str, wait: bool = False) -> tuple[str, str]:
    try:
        run_notebook(settings, progress_bar=False, cwd=cwd, wait=wait)
    except GlmkitError as exc:
        return settings.run_name, f"failed: {exc}"
    return settings.run_name, "ok"


def _finished(settings: RunSettings) -> int | None:
    """When the run's folder was completed (its ``run.json``'s mtime), None if it is not."""
    try:
        return (settings.run_dir / RUN_RECORD).stat().st_mtime_ns
    except OSError:
        return None


@checked_arguments(path="path", force="flag", yes="flag", wait="flag")
def run_batch(path: str | os.PathLike, *, force: bool = False, n_jobs: int = 1,
              yes: bool = False, wait: bool = False) -> Path:
    """Run every parameter set of a batch file and write ``<reports_dir>/index.html``.

    Complete runs are skipped unless ``force``; runs go in parallel over ``n_jobs``
    processes (joblib); each takes its run's lock as :func:`run_notebook` does (``wait``:
    wait for a run of the same name that is going). More than ``MAX_BATCH`` runs to do need
    ``yes=True``. A failed run does not stop the others; it is listed in the index and
    reported at the end as a :class:`~glmkit.errors.RunError`. An interrupt (Ctrl-C, SIGTERM)
    rewrites the index for the runs that completed and raises :class:`RunInterrupted` naming
    them.
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ParameterError(f"n_jobs={n_jobs!r} is not allowed: expected a positive number of "
                             "runs in parallel or -1 for all cores")
    all_settings = load_grid(path, force=force)
    reports_dir = check_reports_dir(all_settings[0].reports_dir)
    todo = [s for s in all_settings if force or not s.run_dir.exists()]
    if len(todo) > MAX_BATCH and not yes:
        raise ParameterError(
            f"batch file {str(path)!r} would start {len(todo)} runs (of {len(all_settings)}), "
            f"more than {MAX_BATCH}: check the grid, then pass yes=True to start them")
    status = {s.run_name: "skipped (complete run exists; force=True to redo)"
              for s in all_settings if s not in todo}
    logger.info("batch %s: %d runs, %d to do", Path(path).name, len(all_settings), len(todo))
    if todo:
        before = {s.run_name: _finished(s) for s in todo}
        try:
            _run_all(todo, status, n_jobs=n_jobs, wait=wait)
        except KeyboardInterrupt:
            raise _interrupted(path, reports_dir, all_settings, todo, before, status) from None
    index = write_index(reports_dir, all_settings, status)
    failed = {n: s for n, s in status.items() if s.startswith("failed")}
    if failed:
        raise RunError(f"{len(failed)} of {len(all_settings)} runs failed "
                       + "; ".join(f"{n}: {s}" for n, s in failed.items())
                       + f". The index is {index}")
    return index


def _run_all(todo: list[RunSettings], status: dict[str, str], *, n_jobs: int,
             wait: bool) -> None:
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    jobs = (delayed(_run_one)(s, os.getcwd(), wait) for s in todo)  # workers may be elsewhere
    with _interrupts_stop_the_run():
        results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
        for name, outcome in tqdm(results, total=len(todo), desc="batch", unit="run"):
            status[name] = outcome


def _interrupted(path, reports_dir: Path, all_settings: list[RunSettings],
                 todo: list[RunSettings], before: dict[str, int | None],
                 status: dict[str, str]) -> RunInterrupted:
    """After an interrupt: clean what killed workers left (for the runs no one else is
    running), rewrite the index for the runs that completed, and say which they are."""
    completed, stopped = [], []
    for s in todo:
        target = Path(s.run_dir).absolute()
        with contextlib.suppress(RunLockedError, OSError):
            with run_lock(target):
                recover(target)
        done = _finished(s)
        if done is not None and done != before[s.run_name]:
            completed.append(s.run_name)
            status.setdefault(s.run_name, "ok")
        else:
            stopped.append(s.run_name)
            status[s.run_name] = "interrupted (not complete)"
    index = write_index(reports_dir, all_settings, status)
    shown = ", ".join(completed[:20]) + (" ..." if len(completed) > 20 else "")
    return RunInterrupted(
        f"batch {Path(path).name}: {len(completed)} of {len(todo)} runs completed"
        + (f" ({shown})" if completed else "")
        + f", {len(stopped)} not; the index {index} lists them")


def write_index(reports_dir: str | os.PathLike, settings: Sequence[RunSettings],
                status: Mapping[str, str] | None = None) -> Path:
    """Write a self-contained ``index.html`` linking each run with its headline numbers.

    The page is the template ``index.html`` of :mod:`glmkit.report.templates` (autoescaped):
    run names, parameters and statuses are shown as text, never read as markup.
    """
    from urllib.parse import quote

    from glmkit.report.templates import render

    reports_dir = Path(reports_dir)
    status = dict(status or {})
    base = settings[0].to_dict(runner=False) if settings else {}
    varying = [k for k in base if k != "run_name"
               and any(s.to_dict(runner=False)[k] != base[k] for s in settings)]
    heads = []
    methods: list[str] = []
    for s in settings:
        summary_file = s.run_dir / "summary.json"
        head = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        methods += [m for m in head.get("suprathreshold", {}) if m not in methods]
        heads.append(head)
    runs = []
    for s, head in zip(settings, heads, strict=True):
        complete = (s.run_dir / "report.html").is_file()
        state = status.get(s.run_name, "complete" if complete else "missing")
        cells = [state.splitlines()[0][:200]]
        cells += [json.dumps(s.to_dict(runner=False)[k]) for k in varying]
        if head:
            cells += [f"{head['n_kept']} / {head['n_subjects']}", str(head["n_voxels"])]
            cells += [str(head["suprathreshold"].get(m, "")) for m in methods]
            cells += [f"{head['peak_z']:.2f}", ", ".join(f"{c:g}" for c in head["peak_xyz_mm"])]
        else:
            cells += [""] * (4 + len(methods))
        # the link is a relative URL: the run's folder name percent-encoded as a path segment
        href = quote(s.run_name, safe="!$&'()*+,;=:@") + "/report.html" if complete else None
        runs.append({"name": s.run_name, "href": href, "cells": cells})
    page = render(
        "index.html", runs=runs,
        columns=(["run", "status"] + varying + ["subjects kept / total", "voxels"]
                 + [f"{m} voxels" for m in methods] + ["peak z", "peak (mm)"]),
        alphas=[str(a) for a in sorted({s.alpha for s in settings})],
        shared=json.dumps({k: v for k, v in base.items() if k not in varying and k != "run_name"}))
    index = reports_dir / "index.html"
    tmp = reports_dir / f".index.html.tmp-{os.getpid()}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)
    return index
