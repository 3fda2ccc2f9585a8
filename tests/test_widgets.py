"""Tests of glmkit.widgets.explore, driven from Python through the widgets' traits (no browser)."""

from __future__ import annotations

import asyncio
import json
import time

import ipywidgets
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from glmkit.errors import ParameterError, ReportError
from glmkit.widgets import EMPTY_MESSAGE, Explorer, explore, load_run_folder

AFFINE = np.array([[3.0, 0, 0, -78], [0, 3, 0, -111], [0, 0, 3, -51], [0, 0, 0, 1]])
SHAPE = (53, 63, 46)
PEAKS = ((38, -17, -3), (-40, -60, 20))


def _synthetic_maps(z, mask):
    """Maps derived from a z map with planted blobs (conftest's ``planted_z``) and its mask."""
    p = np.where(mask, norm.sf(z), 0.0)
    logp_bonf = np.where(mask, -np.log10(np.minimum(1, norm.sf(z) * mask.sum())), 0.0)
    return {"mask": mask.astype(np.uint8), "z": z, "p": p, "effect": z * 0.5,
            "z_fdr": np.where(z > 4.0, z, 0.0), "logp_bonferroni": logp_bonf,
            "logp_maxt": np.clip(logp_bonf * 0.5, 0, None)}


def _write_folder(path, maps, *, clusters=True, params=True):
    (path / "maps").mkdir(parents=True)
    for name, data in maps.items():
        nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32 if name != "mask" else np.uint8), AFFINE),
                 path / "maps" / f"{name}.nii.gz")
    if clusters:
        pd.DataFrame({"cluster_id": ["1", "2"], "x": [38.0, -40.0], "y": [-17.0, -60.0], "z": [-3.0, 20.0],
                      "peak_stat": [7.0, 5.0]}).to_csv(path / "clusters.csv", index=False)
    if params:
        (path / "params.json").write_text(json.dumps({"cut_coords": [0, 0, 0], "two_sided": False}))
    return path


@pytest.fixture(scope="module")
def synth_maps(planted_z):
    return _synthetic_maps(*planted_z(np.random.default_rng(7), SHAPE, AFFINE, PEAKS))


@pytest.fixture
def run_folder(tmp_path, synth_maps):
    return _write_folder(tmp_path / "run", synth_maps)


@pytest.fixture
def opened(run_folder):
    return explore(run_folder, debounce=0)


@pytest.fixture
def ex(opened):
    """The explorer on the z map (it opens on the permutation map, as the report)."""
    opened.controls["map"].value = "z"
    return opened


def _count(z, mask, t):
    return int(((z >= t) & (z != 0) & (mask > 0)).sum())


def test_opens_as_the_report(opened, synth_maps):
    """On the headline map (the permutation statistic's), at the run's alpha (0.05 here)."""
    ex = opened
    assert (ex.map_name, ex.method, ex.alpha) == ("logp_maxt", "fwer", 0.05)
    assert ex.threshold == pytest.approx(-np.log10(0.05))
    expected = int((synth_maps["logp_maxt"] >= -np.log10(0.05)).sum())
    assert ex.n_suprathreshold == expected > 0
    ex.controls["map"].value = "logp_bonferroni"
    assert (ex.method, ex.alpha) == ("bonferroni", 0.05)


def test_layout_and_state(ex, synth_maps):
    assert isinstance(ex, ipywidgets.VBox) and isinstance(ex, Explorer)
    assert ex.image_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    assert ex.map_name == "z" and ex.method == "fdr"
    assert [o[1] for o in ex.controls["map"].options] == ["z", "z_fdr", "logp_bonferroni", "logp_maxt"]
    assert ex.cut_coords == (0.0, 0.0, 0.0) or all(abs(c) <= 1.5 for c in ex.cut_coords)
    assert set(ex.controls) >= {"map", "method", "alpha", "threshold", "threshold_text", "extent", "x", "y",
                                "z", "peak", "mode"}
    assert ex.n_suprathreshold == _count(synth_maps["z"], synth_maps["mask"], ex.threshold)


def test_higher_threshold_fewer_voxels_and_new_image(ex, synth_maps):
    seen = []
    for t in (2.0, 3.0, 4.0, 5.5):
        ex.controls["threshold"].value = t
        assert ex.method == "value" and ex.threshold == pytest.approx(t)
        assert ex.n_suprathreshold == _count(synth_maps["z"], synth_maps["mask"], t)
        seen.append((ex.n_suprathreshold, ex.image_bytes, ex._table_html.value))
    counts = [s[0] for s in seen]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] > 0
    assert len({s[1] for s in seen}) == len(seen), "the image must change with the threshold"
    assert len({s[2] for s in seen}) == len(seen), "the cluster table must change with the threshold"
    assert str(counts[-1]) in ex.message


def test_go_to_peak_moves_the_cut(ex):
    ex.controls["threshold"].value = 3.5
    frame = ex.cluster_frame
    assert len(frame) >= 2
    for n in (1, 2):
        before = ex.image_bytes
        ex.go_to_peak(n)
        row = frame[frame["cluster"] == n].iloc[0]
        assert ex.cut_coords == (row["x"], row["y"], row["z"])
        assert ex.image_bytes != before
    # the planted peaks are the two largest clusters' peaks (within a voxel)
    got = sorted(tuple(r) for r in frame[["x", "y", "z"]].head(2).to_numpy())
    assert all(min(np.abs(np.subtract(g, p)).max() for g in got) <= 3 for p in PEAKS)
    # the dropdown does the same: its first entry is the prompt, then one entry per cluster
    assert ex.controls["peak"].options[0] == ("go to peak…", 0) and ex.controls["peak"].index == 0
    label, number = ex.controls["peak"].options[2]
    assert label.startswith("#2:") and number == 2
    ex.controls["peak"].value = number
    row = frame[frame["cluster"] == 2].iloc[0]
    assert ex.cut_coords == (row["x"], row["y"], row["z"])
    with pytest.raises(ParameterError, match="cluster 999"):
        ex.go_to_peak(999)


def test_slice_sliders_move_the_cut(ex):
    before = ex.image_bytes
    ex.controls["x"].value = 30.0
    ex.controls["y"].value = -20.0
    ex.controls["z"].value = 10.0
    assert ex.cut_coords == (30.0, -21.0, 9.0)  # nearest voxel centres on the 3 mm grid
    assert ex.image_bytes != before


def test_method_switch_updates_threshold(ex, synth_maps):
    from nilearn.glm import threshold_stats_img

    z_img = nib.Nifti1Image(synth_maps["z"], AFFINE)
    mask_img = nib.Nifti1Image(synth_maps["mask"], AFFINE)
    ex.controls["method"].value = "uncorrected"
    ex.controls["alpha"].value = 0.001
    assert ex.threshold == pytest.approx(norm.isf(0.001))  # one-sided, as params.json says
    assert ex.controls["threshold_text"].value == pytest.approx(norm.isf(0.001))
    for method, control, alpha in (("fdr", "fdr", 0.05), ("bonferroni", "bonferroni", 0.05),
                                   ("fdr", "fdr", 0.01)):
        ex.controls["method"].value = method
        ex.controls["alpha"].value = alpha
        _, expected = threshold_stats_img(z_img, mask_img=mask_img, alpha=alpha, height_control=control,
                                          two_sided=False)
        assert ex.threshold == pytest.approx(expected), (method, alpha)
        assert f"{expected:.4g}" in ex.message
    # an alpha outside the viewer's fixed list still works (computed exactly)
    ex.controls["alpha"].value = 0.0123
    assert ex.threshold > 0 and ex.alpha == 0.0123
    # moving the slider goes back to "value"
    ex.controls["threshold"].value = 2.5
    assert ex.method == "value"


def test_map_without_survivors_says_so(ex):
    ex.controls["map"].value = "logp_maxt"
    assert ex.methods == ["value", "fwer"]
    ex.controls["alpha"].value = 1e-10  # -log10 p > 10, above this map's maximum
    assert ex.threshold == pytest.approx(10.0) and ex.current_map.max_abs < 10
    assert ex.n_suprathreshold == 0 and ex.cluster_frame.empty
    assert EMPTY_MESSAGE in ex.message and "above the map's maximum" in ex.message
    ex.controls["alpha"].value = 0.05
    assert ex.n_suprathreshold > 0 and EMPTY_MESSAGE not in ex.message
    # and an all-zero map
    ex2 = Explorer(*_prepare({"z": (np.zeros(SHAPE), AFFINE), "mask": (np.ones(SHAPE), AFFINE)}), debounce=0)
    assert ex2.n_suprathreshold == 0 and EMPTY_MESSAGE in ex2.message
    assert ex2.image_bytes.startswith(b"\x89PNG")


def _prepare(maps):
    from glmkit.report.maps import prepare_maps

    return prepare_maps(maps)


def test_no_permutation_no_fwer(tmp_path, synth_maps):
    maps = {k: v for k, v in synth_maps.items() if k != "logp_maxt"}
    ex = explore(_write_folder(tmp_path / "run", maps), debounce=0)
    for name in ("z", "z_fdr", "logp_bonferroni"):
        ex.controls["map"].value = name
        assert "fwer" not in ex.methods
    assert all(key != "fwer" for _, key in ex._all_methods)


def test_with_permutation_fwer_offered(ex):
    ex.controls["map"].value = "logp_maxt"
    assert "fwer" in ex.methods
    ex.controls["map"].value = "z"
    assert "fwer" not in ex.methods  # FWER belongs to the permutation maps


def test_threshold_outside_range_is_clamped(ex):
    top = ex.current_map.max_abs
    ex.controls["threshold_text"].value = top + 100
    assert ex.threshold == pytest.approx(top)
    assert "clamped" in ex.message
    assert ex.n_suprathreshold >= 1  # the peak voxel itself survives
    ex.controls["threshold_text"].value = -3
    assert ex.threshold == 0.0 and "clamped to 0" in ex.message


def test_cluster_extent(ex):
    ex.controls["threshold"].value = 3.0
    frame = ex.cluster_frame
    n_all = ex.n_suprathreshold
    ex.controls["extent"].value = int(frame["size"].iloc[1]) + 1  # keeps only the largest cluster
    assert ex.n_suprathreshold == int(frame["size"].iloc[0]) < n_all
    assert len(ex.cluster_frame) == 1
    ex.controls["extent"].value = int(frame["size"].max()) + 1
    assert ex.n_suprathreshold == 0 and EMPTY_MESSAGE in ex.message


@pytest.mark.parametrize("mode", ["ortho", "x", "y", "z", "mosaic"])
def test_modes_render(ex, mode):
    from PIL import Image
    import io

    ex.controls["mode"].value = mode
    img = Image.open(io.BytesIO(ex.image_bytes))
    assert img.size[0] > 100 and img.size[1] > 100
    assert ex.mode == mode


def test_debounced_in_event_loop(run_folder):
    ex = explore(run_folder, debounce=0.05)
    start = ex.render_count

    async def burst():
        for t in (2.0, 2.5, 3.0, 3.5):
            ex.controls["threshold"].value = t
        await asyncio.sleep(0.3)

    asyncio.run(burst())
    assert ex.render_count == start + 1  # one render for the burst, after the last change
    assert ex.threshold == 3.5


@pytest.mark.parametrize(
    ("drop", "missing"),
    [("clusters.csv", "clusters.csv"), ("params.json", "params.json"), ("maps", "maps/*.nii.gz"),
     ("maps/z.nii.gz", "maps/z.nii.gz")],
)
def test_incomplete_folder(tmp_path, synth_maps, drop, missing):
    import shutil

    folder = _write_folder(tmp_path / "run", synth_maps)
    target = folder / drop
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ReportError, match="incomplete") as info:
        explore(folder)
    assert missing in str(info.value)


def test_bad_inputs(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        explore(tmp_path / "nope")
    with pytest.raises(ParameterError, match="AnalysisResult"):
        explore(42)


def test_render_time_demo_grid(ex):
    """Each change re-renders well under 0.5 s on the demo grid (53x63x46)."""
    times = []
    for t in (2.0, 2.7, 3.4, 4.1):
        start = time.perf_counter()
        ex.controls["threshold"].value = t
        times.append(time.perf_counter() - start)
    print(f"explore: threshold change incl. clusters + render: median {np.median(times):.3f} s")
    assert np.median(times) < 0.5


def test_load_run_folder_specs(run_folder):
    specs, clusters, params = load_run_folder(run_folder)
    assert list(specs) == ["mask", "z", "z_fdr", "logp_bonferroni", "logp_maxt"]
    assert specs["z_fdr"]["methods_from"] == "z" and specs["z"]["two_sided"] is False
    assert list(clusters.columns[:4]) == ["cluster_id", "x", "y", "z"]


def test_run_folder_maps_come_from_the_registry(tmp_path, synth_maps):
    """A registered statistic's map is shown with its registry label; an unknown logp_ file
    (not a registered statistic's map) is not taken for a permutation map."""
    from glmkit.stats.statistics import StatisticSpec, register_statistic, unregister_statistic

    maps = {**synth_maps, "logp_maxabs": synth_maps["logp_maxt"],
            "logp_stray": synth_maps["logp_maxt"]}
    folder = _write_folder(tmp_path / "run", maps)
    register_statistic(StatisticSpec(
        name="maxabs", label="toy", short="max-|t|", units="toy units",
        observed=lambda t, ctx, cache=None: np.abs(t), null_max=None,
        methods=lambda result: "toy"))
    try:
        specs, _, _ = load_run_folder(folder)
    finally:
        unregister_statistic("maxabs")
    assert list(specs) == ["mask", "z", "z_fdr", "logp_bonferroni", "logp_maxt", "logp_maxabs"]
    assert specs["logp_maxabs"]["kind"] == "logp_fwer"
    assert specs["logp_maxabs"]["label"] == "-log10 p, FWER (max-|t|, permutation)"
    assert specs["logp_maxt"]["label"] == "-log10 p, FWER (max-T, permutation)"


# ------------------------------------------------------------------------ a real run


@pytest.fixture(scope="module")
def real_result(glmkit_data_dir):
    from glmkit.pipeline import run_analysis

    return run_analysis(dataset="demo", n_perm=50, statistics=("voxel",), run_name="widgets-test")


@pytest.mark.slow
def test_real_analysis_result(real_result):
    r = real_result
    ex = explore(r, debounce=0)
    names = [o[1] for o in ex.controls["map"].options]
    assert names[:3] == ["z", "z_fdr", "logp_bonferroni"] and "logp_maxt" in names
    # it opens as the report does: the permutation map at the run's alpha
    assert (ex.map_name, ex.method, ex.alpha) == ("logp_maxt", "fwer", r.settings.alpha)
    ex.controls["map"].value = "z"
    fdr = r.thresholds["fdr"]
    assert ex.method == "fdr" and ex.threshold == pytest.approx(fdr.threshold)
    assert ex.n_suprathreshold == fdr.n_suprathreshold
    assert ex.cut_coords == pytest.approx(tuple(r.settings.cut_coords), abs=1.5 * 3)
    # go to the largest cluster's peak; it matches the run's cluster table's first peak
    ex.go_to_peak(1)
    first = r.clusters.iloc[0]
    assert np.allclose(ex.cut_coords, (first["x"], first["y"], first["z"]), atol=1e-6)
    # the permutation map offers FWER; at FWER 0.05 the count equals the pipeline's headline
    ex.controls["map"].value = "logp_maxt"
    assert "fwer" in ex.methods
    ex.controls["alpha"].value = 0.05
    assert ex.n_suprathreshold == int(np.count_nonzero(np.asarray(r.permutation.logp_fwer["voxel"])
                                                       >= -np.log10(0.05)))
    times = []
    for t in (0.5, 1.0, 1.5):
        start = time.perf_counter()
        ex.controls["threshold"].value = t
        times.append(time.perf_counter() - start)
    print(f"explore on the demo run: {np.median(times):.3f} s per change")
    assert max(times) < 0.5


@pytest.mark.slow
def test_real_run_folder(real_result, tmp_path):
    """A folder as `glmkit run` writes it (report files + params.json) explores like the result."""
    from glmkit.report import write_report

    folder = tmp_path / "demo"
    write_report(real_result, folder)
    (folder / "params.json").write_text(real_result.settings.to_json())
    ex = explore(folder, debounce=0)
    assert "logp_maxt" in [o[1] for o in ex.controls["map"].options]
    assert (ex.map_name, ex.alpha) == ("logp_maxt", real_result.settings.alpha)
    ex.controls["map"].value = "z"
    fdr = real_result.thresholds["fdr"]
    assert ex.threshold == pytest.approx(fdr.threshold, rel=1e-6)
    assert ex.n_suprathreshold == fdr.n_suprathreshold
    (folder / "clusters.csv").unlink()
    with pytest.raises(ReportError, match="clusters.csv"):
        explore(folder)


@pytest.mark.slow
def test_widget_state_saved_by_nbclient(run_folder, tmp_path):
    """Executed with nbclient's store_widget_state (as papermill runs do), the notebook keeps the
    explorer's state, rendered PNG included, so the executed notebook shows it without a kernel."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"from glmkit.widgets import explore\nex = explore({str(run_folder)!r}, debounce=0)\nex")]
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {m["model_name"] for m in state.values()}
    assert {"VBoxModel", "ImageModel", "FloatSliderModel", "DropdownModel"} <= models
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    # the PNG travels as a base64 buffer of the Image model's "value"
    pngs = [b["data"] for m in images for b in m.get("buffers", []) if b["path"] == ["value"]]
    assert pngs and all(p.startswith("iVBORw0KGgo") for p in pngs)  # base64 of the PNG signature


def test_result_without_permutation(synth_maps):
    """An AnalysisResult-like object with no permutation stage: no FWER anywhere; the run's own
    FDR threshold is used for the z maps."""
    from types import SimpleNamespace

    imgs = {k: nib.Nifti1Image(np.asarray(v, dtype=float), AFFINE) for k, v in synth_maps.items()
            if k != "logp_maxt"}
    result = SimpleNamespace(
        maps=lambda: imgs, permutation=None,
        thresholds={"fdr": SimpleNamespace(threshold=4.25, alpha=0.05, two_sided=False),
                    "bonferroni": SimpleNamespace(threshold=5.0, alpha=0.05, two_sided=False)},
        settings=SimpleNamespace(cut_coords=(38, -17, -3), alpha=0.05),
        clusters=pd.DataFrame({"x": [38.0], "y": [-17.0], "z": [-3.0]}),
    )
    ex = explore(result, debounce=0, background=None)
    assert [o[1] for o in ex.controls["map"].options] == ["z", "z_fdr", "logp_bonferroni"]
    assert ex.map_name == "z_fdr"  # no permutation: the FDR map is the headline, as in the report
    ex.controls["map"].value = "z"
    assert ex.method == "fdr" and ex.threshold == 4.25  # the run's threshold, not recomputed
    assert ex.n_suprathreshold == _count(synth_maps["z"], synth_maps["mask"], 4.25)
    for name in ("z", "z_fdr", "logp_bonferroni"):
        ex.controls["map"].value = name
        assert "fwer" not in ex.methods
    assert "bonferroni" in ex.methods
    ex.controls["map"].value = "z_fdr"
    assert ex.threshold == 4.25  # thresholds of z_fdr come from z


# ------------------------------------------------------------------------ what a browser sends back
def test_a_shown_value_sent_back_rounded_is_no_edit(ex, synth_maps):
    """A browser's slider snaps the value it is given to its step grid and may send it back:
    that is no edit (method, alpha and count stay); a move of one step (a key press) is."""
    slider = ex.controls["threshold"]
    assert not slider.continuous_update  # it sends values the user sets, not those it is given
    assert ex.method == "fdr"
    t, count = ex.threshold, ex.n_suprathreshold
    snapped = round(t / slider.step) * slider.step
    assert snapped != t
    slider.value = snapped  # the echo
    assert (ex.method, ex.alpha, ex.threshold, ex.n_suprathreshold) == ("fdr", 0.05, t, count)
    ex.controls["threshold_text"].value = float(f"{t:.15g}")  # the text box, reformatted
    assert (ex.method, ex.threshold) == ("fdr", t)
    slider.value = snapped + slider.step  # the user's key press
    assert ex.method == "value" and ex.threshold == pytest.approx(snapped + slider.step)
    assert ex.n_suprathreshold == _count(synth_maps["z"], synth_maps["mask"], ex.threshold)
    # the FWER map at alpha 0.1 stays at -log10 p = 1 exactly
    ex.controls["map"].value = "logp_maxt"
    ex.controls["alpha"].value = 0.1
    assert (ex.method, ex.threshold) == ("fwer", 1.0)
    slider = ex.controls["threshold"]
    slider.value = round(1.0 / slider.step) * slider.step
    assert (ex.method, ex.alpha, ex.threshold) == ("fwer", 0.1, 1.0)


def test_cut_sliders_sent_back_do_not_render(ex):
    before = ex.render_count
    x = ex.controls["x"]
    x.value = x.value + 0.4 * x.step  # within half a step of what was shown
    assert ex.render_count == before
    x.value = x.value + x.step
    assert ex.render_count == before + 1


def test_static_copy_beside_the_widget(ex):
    """The display bundle holds the widget view, the current picture and the status as text."""
    import base64
    import io

    from PIL import Image

    bundle = ex._repr_mimebundle_()
    assert {"application/vnd.jupyter.widget-view+json", "image/png", "text/plain"} <= set(bundle)
    png = base64.b64decode(bundle["image/png"])
    assert png == ex.image_bytes
    assert Image.open(io.BytesIO(png)).size[0] > 400
    assert ex.message in bundle["text/plain"] and "glmkit explorer: z" in bundle["text/plain"]
    assert "Explorer(children" not in bundle["text/plain"]


def test_picture_has_colour_bar_and_orientation(ex):
    """Under the slices a colour bar runs from the threshold's colour (red) to the maximum's
    (yellow); L and R are written on the coronal and axial panels."""
    import io

    from PIL import Image

    from glmkit.widgets import BAR_HEIGHT

    img = np.asarray(Image.open(io.BytesIO(ex.image_bytes)).convert("RGB"))
    bar = img[-BAR_HEIGHT:][4:16]
    reds = bar[(bar[..., 0] == 255) & (bar[..., 2] == 0)]
    assert len(reds) and reds[:, 1].min() <= 45 and reds[:, 1].max() >= 250
    letters = {"ortho": ["P", "A", "L", "R", "L", "R"], "x": ["P", "A"], "y": ["L", "R"],
               "z": ["L", "R"], "mosaic": ["L", "R"]}
    for mode, expected in letters.items():
        ex.controls["mode"].value = mode
        _, labels = ex._compose()
        texts = [text for _, text in labels]
        assert [t for t in texts if t in "LRAP"] == expected, (mode, texts)
        # and they are drawn: the picture differs from one drawn without them
        left = [xy for xy, text in labels if text in ("L", "P")][0]
        img = np.asarray(Image.open(io.BytesIO(ex.image_bytes)).convert("RGB"))
        x0, y0 = left[0] + 3, left[1] + 2
        assert (img[y0:y0 + 14, x0:x0 + 10] > 180).all(axis=-1).any(), mode  # white ink
        assert not (img[y0 - 20:y0 - 8, x0:x0 + 10] > 180).all(axis=-1).any(), mode  # none above


def test_peak_selector_first_entry(ex):
    peak = ex.controls["peak"]
    assert peak.index == 0 and peak.options[0][0] == "go to peak…"
    ex.controls["threshold"].value = 3.0
    assert peak.index == 0 and len(peak.options) == len(ex.cluster_frame.head(50)) + 1
