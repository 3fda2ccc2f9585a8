"""What ``glmkit run`` shows while the notebook runs, and how it talks to the kernel.

papermill's own bar counts cells, so it sits still through a long cell (the permutations,
the report). The runner executes the notebook through a papermill engine of its own,
registered as :data:`ENGINE_NAME`, whose client sees every message of the kernel:

- a bar over the notebook's code cells, named after the section the running cell belongs to
  (the last heading above it, e.g. ``8. Report``), its elapsed time ticking while a cell runs,
  and a line per cell that took a while;
- each progress bar a cell draws (tqdm's notebook bar: a progress widget with text beside it,
  as the permutation engine's ``permutations`` bar) mirrored as a terminal bar with its count,
  rate and time left, then summed up in one line.

Quiet or not, the saved notebook's copy of such a bar (the ``text/plain`` beside its widget
view, what a notebook shows without its widgets: untrusted, without a kernel, on GitHub) is
its last state, ``permutations: 100%|██████████| 50/50 [...]``, not the ``0%`` of the moment
it was displayed.

The kernel's manager provisions CurveZMQ keys (jupyter_client's ``transport_encryption``), so
the kernel's traffic is encrypted and ipykernel has no reason to warn "Kernel is running over
TCP without encryption"; where pyzmq lacks CURVE, the kernel talks over local IPC sockets.
"""

from __future__ import annotations

import html
import os
import re
import sys
import threading
import time
from typing import Any

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger as papermill_logger

__all__ = ["NotebookProgress", "ProgressEngine", "ENGINE_NAME", "secure_transport"]

#: the papermill engine name of :class:`ProgressEngine`
ENGINE_NAME = "glmkit"
#: widget models whose ``value``/``max`` a progress bar is made of
_PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")
#: a cell that runs longer than this (seconds) gets its own line
_LONG_CELL = 2.0
#: characters of the bar in a saved progress bar's text (tqdm's notebook bar has ten)
_BAR_WIDTH = 10


def secure_transport(km: Any) -> Any:
    """Make kernel manager ``km`` start a kernel whose traffic ipykernel need not warn about.

    CurveZMQ keys are provisioned when pyzmq has CURVE and jupyter_client knows
    ``transport_encryption`` (the kernelspec says whether the kernel supports it, as
    ipykernel's does); otherwise, on POSIX, the kernel listens on IPC sockets (files only this
    user can reach) instead of TCP. Returns ``km``.
    """
    import zmq

    if zmq.has("curve") and km.has_trait("transport_encryption"):
        km.transport_encryption = "auto"
    elif os.name == "posix":
        km.transport = "ipc"
    return km


class NotebookProgress:
    """Terminal progress of one notebook run (see the module's docstring).

    Parameters
    ----------
    file : file-like, optional
        Where the bars go (default: ``sys.stderr``).
    tick : float
        Seconds between refreshes of the cell bar while a cell runs (0: no ticking).
    show : bool
        Show anything at all; False only follows the bars for :meth:`saved_texts`.
    """

    def __init__(self, *, file=None, tick: float = 1.0, show: bool = True) -> None:
        self._file = file if file is not None else sys.stderr
        self._tick = float(tick)
        self._show = bool(show)
        #: the text of each progress bar's box (widget model id) in its last state
        self.saved_texts: dict[str, str] = {}
        self._lock = threading.RLock()
        self._sections: dict[int, str] = {}
        self._order: list[int] = []
        self._cells = None
        self._cell_start = 0.0
        self._models: dict[str, dict[str, Any]] = {}
        self._bars: dict[str, Any] = {}
        self._done: set[str] = set()  # progress models whose bar is finished
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ------------------------------------------------------------------ cells
    def start(self, nb) -> None:
        """Take the notebook about to run (papermill's, parameters injected)."""
        from tqdm.auto import tqdm

        section = ""
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                section = _heading(cell.source) or section
            elif cell.cell_type == "code":
                self._sections[index] = section
                self._order.append(index)
        if not self._show:
            return
        self._cells = tqdm(total=len(self._order), unit="cell", file=self._file, position=0,
                           desc="starting the kernel", dynamic_ncols=True)
        if self._tick > 0:
            self._ticker = threading.Thread(target=self._refresh, daemon=True,
                                            name="glmkit-progress")
            self._ticker.start()

    def cell_start(self, index: int) -> None:
        with self._lock:
            self._cell_start = time.perf_counter()
            if self._cells is not None and index in self._sections:
                self._cells.set_description(self._sections[index][:48] or "notebook")

    def cell_done(self, index: int) -> None:
        with self._lock:
            if self._cells is None or index not in self._sections:
                return
            seconds = time.perf_counter() - self._cell_start
            for comm_id in list(self._bars):  # a bar the cell left open ends with it
                self._finish(comm_id)
            self._cells.update(1)
            if self._cells.n >= self._cells.total:
                self._stop.set()  # the last cell is done: nothing left to tick for
            if seconds >= _LONG_CELL:
                number = self._order.index(index) + 1
                self._cells.write(f"cell {number}/{len(self._order)} "
                                  f"({self._sections[index] or 'notebook'}): {seconds:.1f} s",
                                  file=self._file)

    def _refresh(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                if self._cells is not None:
                    self._cells.refresh()

    def close(self) -> None:
        """Stop ticking and close every bar."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            for comm_id in list(self._bars):
                self._finish(comm_id)
            if self._cells is not None:
                self._cells.close()
                self._cells = None

    # ------------------------------------------------------------------ kernel messages
    def message(self, msg: dict) -> None:
        """Take one iopub message of the kernel; widget messages may move a mirrored bar."""
        kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
        if kind not in ("comm_open", "comm_msg", "comm_close"):
            return
        content = msg.get("content", {})
        comm_id = content.get("comm_id")
        data = content.get("data") or {}
        with self._lock:
            if kind == "comm_close":  # a bar or its box is gone: its bar ends
                for progress_id in self._progress_ids(comm_id):
                    self._finish(progress_id)
                self._models.pop(comm_id, None)
                return
            if kind == "comm_open" or data.get("method") in ("update", "echo_update"):
                self._models.setdefault(comm_id, {}).update(data.get("state") or {})
                for progress_id in self._progress_ids(comm_id):
                    self._sync(progress_id)

    def _progress_ids(self, comm_id: str) -> list[str]:
        """The progress models a model belongs to: itself, its children (a box), or its
        siblings in a box (a text beside the bar)."""
        model = self._models.get(comm_id, {})
        if model.get("_model_name") in _PROGRESS_MODELS:
            return [comm_id]
        ref = f"IPY_MODEL_{comm_id}"
        boxes = [model] + [box for box in self._models.values()
                           if ref in (box.get("children") or ())]
        ids = [child[len("IPY_MODEL_"):] for box in boxes for child in box.get("children") or ()]
        return [i for i in dict.fromkeys(ids)
                if self._models.get(i, {}).get("_model_name") in _PROGRESS_MODELS]

    def _box(self, progress_id: str) -> str | None:
        """The model id of the box a progress model is in (None: in none)."""
        ref = f"IPY_MODEL_{progress_id}"
        return next((box_id for box_id, box in self._models.items()
                     if ref in (box.get("children") or ())), None)

    def _texts(self, progress_id: str) -> tuple[str, str]:
        """The text left and right of a progress model in its box (tqdm: description and
        percentage, then count, times and rate)."""
        box = self._models.get(self._box(progress_id), {})
        children = list(box.get("children") or ())
        if not children:
            return "", ""
        at = children.index(f"IPY_MODEL_{progress_id}")
        left = [self._models.get(c[len("IPY_MODEL_"):], {}).get("value", "")
                for c in children[:at]]
        right = [self._models.get(c[len("IPY_MODEL_"):], {}).get("value", "")
                 for c in children[at + 1:]]
        return _text(" ".join(map(str, left))), _text(" ".join(map(str, right)))

    def _save_text(self, progress_id: str, value: float, total: float) -> None:
        """Remember the bar's text as tqdm prints it, under its box's id."""
        box = self._box(progress_id)
        left, right = self._texts(progress_id)
        if box is None or not (left or right):
            return
        full = round(_BAR_WIDTH * min(max(value / total, 0.0), 1.0))
        bar = "\u2588" * full + " " * (_BAR_WIDTH - full)
        self.saved_texts[box] = f"{left}|{bar}| {right.lstrip('| ')}"

    def _sync(self, progress_id: str) -> None:
        from tqdm.auto import tqdm

        if progress_id in self._done:
            return
        state = self._models[progress_id]
        total, value = state.get("max"), state.get("value")
        if not isinstance(total, (int, float)) or not isinstance(value, (int, float)) or total <= 0:
            return
        self._save_text(progress_id, value, total)
        if not self._show:
            return
        left, right = self._texts(progress_id)
        desc = re.sub(r"\s*\d+%\s*$", "", left).rstrip(": ")
        unit = re.search(r"([A-Za-z%]+)/s\]", right) or re.search(r"s/([A-Za-z%]+)\]", right)
        bar = self._bars.get(progress_id)
        if bar is None:
            if not desc and not value:
                return  # tqdm has not written its text yet
            bar = self._bars[progress_id] = tqdm(
                total=_number(total), desc=desc or "progress", position=1, leave=False,
                file=self._file, dynamic_ncols=True)
        if desc:
            bar.set_description(desc, refresh=False)
        if unit:
            bar.unit = unit.group(1)
        bar.glmkit_text = right
        bar.update(_number(value) - bar.n)
        if state.get("bar_style") in ("success", "danger"):  # tqdm closed it: texts are final
            self._finish(progress_id)

    def _finish(self, progress_id: str) -> None:
        self._done.add(progress_id)
        bar = self._bars.pop(progress_id, None)
        if bar is None:
            return
        desc = bar.desc.rstrip(": ")
        # the kernel's own account (count, elapsed, rate) when it has one, else the bar's
        summary = getattr(bar, "glmkit_text", "").lstrip("| ") or f"{bar.n}/{bar.total}"
        bar.close()
        bar.write(f"  {desc}: {summary}", file=self._file)


def _number(x: float) -> int | float:
    """``x`` as an int when it is one (widget values travel as JSON floats)."""
    return int(x) if float(x).is_integer() else x


def _heading(markdown: str) -> str:
    """The last heading of a markdown cell, without its ``#`` marks ("" when it has none)."""
    found = re.findall(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", markdown, flags=re.M)
    return found[-1] if found else ""


def _text(markup: str) -> str:
    """Plain text of a widget's HTML value (tqdm pads with figure spaces)."""
    plain = html.unescape(re.sub(r"<[^>]*>", "", markup))
    return re.sub(r"[\s\u2007\u00a0]+", " ", plain).strip()


def _save_bar_texts(cell, texts: dict[str, str]) -> None:
    """Put each progress bar's last text into the ``text/plain`` of its widget output."""
    for output in cell.get("outputs", ()):
        view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
        if view and view.get("model_id") in texts:
            output["data"]["text/plain"] = texts[view["model_id"]]


class _ProgressClient(PapermillNotebookClient):
    """papermill's client, telling a :class:`NotebookProgress` about cells and kernel messages,
    with a kernel manager made secure by :func:`secure_transport`."""

    def __init__(self, nb_man, progress: NotebookProgress | None = None, **kw: Any) -> None:
        super().__init__(nb_man, **kw)
        self.glmkit_progress = progress
        # the bars are followed even when nothing is shown: their saved texts need it
        self.glmkit_bars = progress if progress is not None else NotebookProgress(show=False)
        if progress is not None:
            progress.start(self.nb)

    def create_kernel_manager(self):
        return secure_transport(super().create_kernel_manager())

    def execute_cell(self, cell, cell_index, *args, **kwargs):
        progress = self.glmkit_progress
        if progress is not None:
            progress.cell_start(cell_index)
        try:
            return super().execute_cell(cell, cell_index, *args, **kwargs)
        finally:
            _save_bar_texts(cell, self.glmkit_bars.saved_texts)
            if progress is not None:
                progress.cell_done(cell_index)

    def process_message(self, msg, cell, cell_index):
        self.glmkit_bars.message(msg)
        return super().process_message(msg, cell, cell_index)


class ProgressEngine(NBClientEngine):
    """papermill's nbclient engine with :class:`_ProgressClient`; ``progress=`` (a
    :class:`NotebookProgress` or None) comes through ``papermill.execute_notebook``."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                 stderr_file=None, start_timeout=60, execution_timeout=None,
                                 progress: NotebookProgress | None = None, **kwargs):
        kwargs.pop("input_path", None)
        timeout = execution_timeout or kwargs.pop("timeout", None)
        kwargs.pop("startup_timeout", None)
        client = _ProgressClient(
            nb_man, progress=progress, timeout=timeout, startup_timeout=start_timeout,
            kernel_name=kernel_name, log=papermill_logger,
            log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file, **kwargs)
        return client.execute()


papermill_engines.register(ENGINE_NAME, ProgressEngine)
