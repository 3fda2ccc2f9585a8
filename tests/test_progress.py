"""glmkit.progress: the runner's view inside long cells, and a kernel that needs no TCP warning.

A small notebook runs through papermill with glmkit's engine (a real kernel): its cell draws a
tqdm bar, as the permutation engine does, and the runner's stderr must show that bar with its
count, rate and time left, under the cell's section; with no progress object nothing is shown.
The kernel's own stderr (captured at the file-descriptor level) must not hold ipykernel's
"running over TCP without encryption" warning.
"""

from __future__ import annotations

import io
import re

import nbformat
import pytest

from glmkit.progress import ENGINE_NAME, NotebookProgress, secure_transport

TCP_WARNING = "without encryption"
N = 240


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A test notebook\n\n## 6. Permutation inference"),
        nbformat.v4.new_code_cell(
            "import time\nfrom tqdm.auto import tqdm\n"
            f"for _ in tqdm(range({N}), desc='permutations', unit='perm', mininterval=0.05):\n"
            "    time.sleep(0.006)"),
        nbformat.v4.new_markdown_cell("## 8. Report\nwritten here"),
        nbformat.v4.new_code_cell("time.sleep(2.2)"),
    ]
    nbformat.write(nb, path)
    return path


def _run(tmp_path, progress):
    import papermill

    source = _notebook(tmp_path / "in.ipynb")
    return papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"),
                                      kernel_name="python3", engine_name=ENGINE_NAME,
                                      progress=progress, progress_bar=False, cwd=str(tmp_path))


@pytest.mark.slow
def test_bars_inside_cells_are_mirrored(tmp_path, capfd):
    out = io.StringIO()
    progress = NotebookProgress(file=out, tick=0.2)
    try:
        nb = _run(tmp_path, progress)
    finally:
        progress.close()
    text = out.getvalue().replace("\r", "\n")
    # the live bar: count of total, rate and time left, as tqdm writes them
    live = [line for line in text.splitlines()
            if re.search(rf"permutations:\s+\d+%.*\b\d+/{N} \[\d\d:\d\d<\d\d:\d\d, .*perm/s\]",
                         line)]
    assert live, text
    assert any(re.search(rf"\b(?!0/)\d+/{N} ", line) and f"{N}/{N}" not in line
               for line in live), "no intermediate count was shown"
    # the summary line: the kernel's own final count, elapsed time and rate
    assert re.search(rf"^  permutations: {N}/{N} \[\d\d:\d\d<00:00, [\d.]+perm/s\]$", text,
                     flags=re.M), text
    # the sections of the running cells name the bar; a long cell gets its own line
    assert "6. Permutation inference" in text and "8. Report" in text
    assert re.search(r"^cell 2/2 \(8\. Report\): \d+\.\d s$", text, flags=re.M), text
    _assert_saved_bar_is_final(nb)
    captured = capfd.readouterr()
    assert TCP_WARNING not in captured.err + captured.out


def _assert_saved_bar_is_final(nb):
    """The saved notebook's copy of the cell's bar (its text/plain, what shows without the
    widget) is the bar at its end, as tqdm prints it, not the 0% it was displayed with."""
    outputs = nb.cells[1].outputs
    assert all(o.output_type != "error" for o in outputs)
    bars = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(bars) == 1, outputs
    text = bars[0].data["text/plain"]
    assert re.fullmatch(rf"permutations: 100%\|\u2588{{10}}\| {N}/{N} "
                        rf"\[\d\d:\d\d<00:00, +[\d.]+perm/s\]", text), text


@pytest.mark.slow
def test_no_progress_object_shows_nothing(tmp_path, capfd):
    nb = _run(tmp_path, None)
    _assert_saved_bar_is_final(nb)  # quiet, the saved notebook's bar is still its end
    captured = capfd.readouterr()
    assert "permutations" not in captured.err + captured.out
    assert "8. Report" not in captured.err + captured.out
    assert TCP_WARNING not in captured.err + captured.out


def test_secure_transport_provisions_curve_or_ipc():
    import zmq
    from jupyter_client.manager import AsyncKernelManager

    km = secure_transport(AsyncKernelManager(kernel_name="python3"))
    if zmq.has("curve") and km.has_trait("transport_encryption"):
        assert km.transport_encryption == "auto" and km.transport == "tcp"
    else:
        assert km.transport == "ipc"


def test_widget_messages_without_a_kernel():
    """The mirror reads tqdm's notebook bar from its widget messages (as ipywidgets sends
    them): a progress model inside a box between two HTML texts."""
    out = io.StringIO()
    p = NotebookProgress(file=out, tick=0)

    def msg(kind, comm_id, state=None, method=None):
        data = {"state": state or {}}
        if method:
            data["method"] = method
        return {"msg_type": kind, "content": {"comm_id": comm_id, "data": data}}

    p.message(msg("comm_open", "bar", {"_model_name": "FloatProgressModel", "max": 10.0,
                                       "value": 0.0}))
    p.message(msg("comm_open", "left", {"_model_name": "HTMLModel", "value": ""}))
    p.message(msg("comm_open", "right", {"_model_name": "HTMLModel", "value": ""}))
    p.message(msg("comm_open", "box", {"_model_name": "HBoxModel", "children": [
        "IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"]}))
    assert not p._bars  # no text yet: nothing to show
    p.message(msg("comm_msg", "left", {"value": "report\u2007figures:\u2007\u200740%"},
                  "update"))
    p.message(msg("comm_msg", "right", {"value": "|\u20074/10\u2007[00:01<00:01,\u20073.00fig/s]"},
                  "update"))
    p.message(msg("comm_msg", "bar", {"value": 4.0}, "update"))
    bar = p._bars["bar"]
    assert (bar.n, bar.total, bar.unit, bar.desc.rstrip(": ")) == (4, 10, "fig", "report figures")
    p.message(msg("comm_msg", "right", {"value": "| 10/10 [00:03<00:00, 3.30fig/s]"}, "update"))
    p.message(msg("comm_msg", "bar", {"value": 10.0, "bar_style": "success"}, "update"))
    assert not p._bars
    p.message(msg("comm_msg", "bar", {"value": 10.0}, "update"))  # late updates: no new bar
    assert not p._bars
    p.close()
    assert "  report figures: 10/10 [00:03<00:00, 3.30fig/s]\n" in out.getvalue()


def test_closing_the_box_ends_its_bar():
    """tqdm(leave=False) closes its box instead of styling the bar: the terminal bar ends."""
    out = io.StringIO()
    p = NotebookProgress(file=out, tick=0)
    opened = [("bar", {"_model_name": "IntProgressModel", "max": 5, "value": 2}),
              ("txt", {"_model_name": "HTMLModel", "value": "load:  40%"}),
              ("box", {"_model_name": "HBoxModel", "children": ["IPY_MODEL_txt",
                                                                "IPY_MODEL_bar"]})]
    for comm_id, state in opened:
        p.message({"msg_type": "comm_open", "content": {"comm_id": comm_id,
                                                        "data": {"state": state}}})
    assert p._bars["bar"].n == 2 and p._bars["bar"].desc.startswith("load")
    p.message({"msg_type": "comm_close", "content": {"comm_id": "box", "data": {}}})
    assert not p._bars and "  load: 2/5" in out.getvalue()
    p.close()


def test_permutation_bar_counts_whole_permutations(capsys):
    """The permutation engine's bar (the one mirrored in glmkit run) counts whole
    permutations, also when a block of permutations is split into voxel blocks: "30/30",
    never "30.0/30"."""
    import numpy as np

    import glmkit

    rng = np.random.default_rng(0)
    Y = rng.standard_normal((12, 40))
    X = np.column_stack([rng.standard_normal(12), np.ones(12)])
    glmkit.permutation_test(Y, X, [1, 0], n_perm=30, random_state=0, verbose=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    assert re.search(r"permutations: 100%.*\| 30/30 \[", err), err
    assert not re.search(r"\d\.\d+/30", err), err
