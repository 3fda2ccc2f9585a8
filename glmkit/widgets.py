"""Explore a run's maps live in JupyterLab: :func:`explore` returns an ipywidgets layout.

Controls: map, threshold by value or by method (uncorrected p, FDR q, Bonferroni alpha, FWER
alpha for permutation maps), cluster-extent minimum, x/y/z cut in mm, "go to peak" from the
cluster table, display mode (ortho, x, y, z, mosaic). Each change re-renders one PNG into an
``ipywidgets.Image`` (slices composed with numpy, encoded by Pillow: no figure is cleared, so
nothing flickers), debounced on the kernel's event loop; the cluster table (an HTML widget)
follows the threshold. Thresholds and clusters come from :mod:`glmkit.report.maps`, so the numbers
match the report's kernel-free viewer.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import html
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from glmkit._util import logger
from glmkit.errors import ParameterError, ReportError, checked_arguments
from glmkit.data import DEFAULT_CUT_COORDS
from glmkit.report.maps import (
    METHODS,
    ViewerMap,
    background_u8,
    cut_in_view,
    fwer_map_spec,
    label_clusters,
    maps_from_result,
    method_threshold,
    prepare_maps,
    run_view,
)
from glmkit.stats.statistics import get_statistic, statistic_names

__all__ = ["explore", "Explorer", "load_run_folder"]

MODES = ("ortho", "x", "y", "z", "mosaic")
EMPTY_MESSAGE = "no voxel survives this threshold"
#: the peak selector's first entry (its value 0: no cluster chosen)
PEAK_PROMPT = "go to peak…"
#: height in pixels of the colour bar under the slices
BAR_HEIGHT = 30
#: the parametric maps of a run folder, in display order, with their kinds
_PARAMETRIC = {"z": "z", "z_fdr": "z", "logp_bonferroni": "logp_bonferroni"}


def load_run_folder(path: str | os.PathLike) -> tuple[dict[str, dict], pd.DataFrame, dict]:
    """Map specs, cluster table and params of a run folder ``reports/<run_name>/``.

    Raises
    ------
    glmkit.errors.ReportError
        If the folder lacks ``maps/*.nii.gz`` (with a ``z`` map), ``clusters.csv`` or
        ``params.json``; the message lists everything missing.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ReportError(f"run folder {str(folder)!r} does not exist; pass a "
                          "reports/<run_name>/ folder written by `glmkit run`, or an "
                          "AnalysisResult")
    files = {p.name[: -len(".nii.gz")]: p for p in sorted((folder / "maps").glob("*.nii.gz"))}
    missing = []
    if not files:
        missing.append("maps/*.nii.gz")
    elif "z" not in files:
        missing.append("maps/z.nii.gz")
    for name in ("clusters.csv", "params.json"):
        if not (folder / name).is_file():
            missing.append(name)
    if missing:
        raise ReportError(
            f"run folder {str(folder)!r} is incomplete: missing {', '.join(missing)}; "
            "re-run `glmkit run ... --force` to write a complete folder"
        )
    try:
        params = json.loads((folder / "params.json").read_text(encoding="utf-8"))
        clusters = pd.read_csv(folder / "clusters.csv")
    except (OSError, ValueError) as exc:
        raise ReportError(f"run folder {str(folder)!r}: cannot read "
                          f"params.json/clusters.csv: {exc}") from exc
    specs: dict[str, dict] = {}
    if "mask" in files:
        specs["mask"] = {"image": files["mask"]}
    two_sided = params.get("two_sided")
    for name in (n for n in _PARAMETRIC if n in files):
        spec: dict[str, Any] = {"image": files[name], "kind": _PARAMETRIC[name]}
        if spec["kind"] == "z" and two_sided is not None:
            spec["two_sided"] = bool(two_sided)
        if name == "z_fdr":
            spec["methods_from"] = "z"
            spec["label"] = "z, FDR-thresholded"
        elif name == "logp_bonferroni":
            spec["label"] = "-log10 p, Bonferroni"
        specs[name] = spec
    for stat in statistic_names():  # the permutation maps of the registered statistics
        map_name = get_statistic(stat).map_name
        if map_name in files:
            specs[map_name] = fwer_map_spec(stat, files[map_name])
    return specs, clusters, params



class Explorer(widgets.VBox):
    """The explorer layout; its state is readable for tests and scripts.

    Attributes (read-only properties): ``map_name``, ``method``, ``alpha``, ``threshold``,
    ``extent``, ``mode``, ``cut_coords`` (mm), ``n_suprathreshold``, ``cluster_frame``,
    ``image_bytes`` (PNG), ``message``, ``methods`` (the method choices for the current map),
    ``render_seconds`` (last render). ``controls`` maps control names to their widgets
    (``map``, ``method``, ``alpha``, ``threshold``, ``threshold_text``, ``extent``, ``x``,
    ``y``, ``z``, ``peak``, ``mode``), so traits can be driven from Python.

    A value the explorer puts into a control is never taken back as the user's edit: a
    browser may send it back rounded to the control's step (a slider snaps to its grid), and
    such an echo (within half a step of what was shown) changes nothing. Displayed in a
    notebook, the explorer also carries its current image (``image/png``) and status
    (``text/plain``), which are what a saved notebook shows without a kernel or trust.
    """

    def __init__(self, maps: list[ViewerMap], mask: np.ndarray, affine: np.ndarray, *,
                 clusters: pd.DataFrame | None = None, cut_coords=DEFAULT_CUT_COORDS,
                 debounce: float = 0.08, connectivity: int = 6, zoom: int = 4,
                 background: Any = None, default_map: str | None = None):
        self._maps = {m.name: m for m in maps}
        if default_map is not None and default_map not in self._maps:
            raise ParameterError(f"default_map {default_map!r} is not one of the maps "
                                 f"{list(self._maps)}")
        self._mask = mask
        self._background = background_u8(background, mask.shape, np.asarray(affine), mask)
        self._affine = np.asarray(affine)
        self._vs = np.abs(np.diag(self._affine)[:3])
        self._report_clusters = clusters
        self._debounce = float(debounce)
        self._connectivity = connectivity
        self._zoom = int(zoom)
        self._handle = None
        self._busy = False
        self._note = ""
        self._message = ""
        self._shown: dict[str, Any] = {}  # control -> the value the explorer last put in it
        self.cut_note = ""  # why the initial cut was moved (explore() sets it)
        self._state = {"threshold": 0.0, "method": "value", "alpha": 0.05, "extent": 0}
        self._labels = np.zeros(mask.shape, np.int32)
        self._table = pd.DataFrame()
        self.image_bytes = b""
        self.render_seconds = 0.0
        self.render_count = 0
        any_fwer = any("fwer" in m.methods for m in maps)
        self._all_methods = [(label, key) for key, label in METHODS.items()
                             if key == "value" or key != "fwer" or any_fwer]
        self.controls = self._make_controls(maps)
        self._status = widgets.HTML()
        self._status.add_class("glmkit-status")
        self._image = widgets.Image(format="png")
        self._image.add_class("glmkit-image")
        self._table_html = widgets.HTML()
        c = self.controls
        super().__init__([
            widgets.HBox([c["map"], c["method"], c["alpha"]]),
            widgets.HBox([c["threshold"], c["threshold_text"], c["extent"]]),
            widgets.HBox([c["x"], c["y"], c["z"]]),
            widgets.HBox([c["mode"], c["peak"]]),
            self._status, self._image, self._table_html,
        ])
        self.add_class("glmkit-explorer")
        # initial state, then observers
        self._set_cut_mm(cut_coords)
        if default_map is not None:
            c["map"].value = default_map
        self._select_map(c["map"].value)
        for name in ("map", "method", "alpha", "threshold", "threshold_text", "extent", "peak"):
            c[name].observe(functools.partial(self._on, name), "value")
        c["mode"].observe(lambda ch: self._schedule(), "value")
        for name in "xyz":
            c[name].observe(functools.partial(self._on_cut, name), "value")
        self.render()

    def _make_controls(self, maps: list[ViewerMap]) -> dict[str, widgets.Widget]:
        style = {"description_width": "initial"}
        wide = widgets.Layout(width="300px")
        lo = self._affine[:3, 3]
        hi = lo + self._affine[[0, 1, 2], [0, 1, 2]] * (np.array(self._mask.shape) - 1)
        c = {
            "map": widgets.Dropdown(options=[(m.label, m.name) for m in maps], description="map",
                                    style=style),
            "method": widgets.Dropdown(options=self._all_methods, description="threshold by",
                                       style=style),
            "alpha": widgets.BoundedFloatText(value=0.05, min=1e-12, max=0.5, step=0.005,
                                              description="alpha", style=style,
                                              layout=widgets.Layout(width="150px")),
            # continuous_update=False: the slider sends a value when the user moves it (drag,
            # click, keys), never while the explorer sets it
            "threshold": widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01,
                                             description="threshold", readout_format=".3f",
                                             continuous_update=False, style=style, layout=wide),
            "threshold_text": widgets.FloatText(value=0.0, description="=", style=style,
                                                layout=widgets.Layout(width="140px")),
            "extent": widgets.BoundedIntText(value=0, min=0, max=10**7,
                                             description="min. cluster size (voxels)",
                                             style=style, layout=widgets.Layout(width="240px")),
            "mode": widgets.ToggleButtons(options=list(MODES), value="ortho", description="view",
                                          style=style),
            "peak": widgets.Dropdown(options=[(PEAK_PROMPT, 0)], value=0, description="peak",
                                     style=style, layout=widgets.Layout(width="340px")),
        }
        for a, name in enumerate("xyz"):
            c[name] = widgets.FloatSlider(value=0.0, min=float(min(lo[a], hi[a])),
                                          max=float(max(lo[a], hi[a])), step=float(self._vs[a]),
                                          description=f"{name} (mm)", style=style,
                                          readout_format=".0f", layout=wide)
        for name, control in c.items():
            control.add_class(f"glmkit-{name.replace('_', '-')}")
        return c

    # ------------------------------------------------------------------ state
    @property
    def map_name(self) -> str:
        return self.controls["map"].value

    @property
    def current_map(self) -> ViewerMap:
        return self._maps[self.map_name]

    @property
    def method(self) -> str:
        return self._state["method"]

    @property
    def alpha(self) -> float:
        return self._state["alpha"]

    @property
    def threshold(self) -> float:
        return self._state["threshold"]

    @property
    def extent(self) -> int:
        return self._state["extent"]

    @property
    def mode(self) -> str:
        return self.controls["mode"].value

    @property
    def methods(self) -> list[str]:
        return [key for _, key in self.controls["method"].options]

    @property
    def cut_coords(self) -> tuple[float, float, float]:
        return tuple(float(self._mm(a, i)) for a, i in enumerate(self._cut_ijk()))

    @property
    def n_suprathreshold(self) -> int:
        return int(self._table["size"].sum()) if len(self._table) else 0

    @property
    def cluster_frame(self) -> pd.DataFrame:
        """Clusters at the current threshold and extent: cluster, sign, size, peak, x, y, z (mm)."""
        t = self._table
        if not len(t):
            return pd.DataFrame(columns=["cluster", "sign", "size", "peak", "x", "y", "z"])
        out = t[["cluster", "sign", "size", "peak"]].copy()
        for a, (name, col) in enumerate(zip("xyz", "ijk")):
            out[name] = self._mm(a, t[col].to_numpy())
        return out.reset_index(drop=True)

    @property
    def message(self) -> str:
        """The status line shown above the image (count, notes, or the no-survivor message)."""
        return self._message

    @property
    def method_label(self) -> str:
        """How the threshold was chosen, as the report's viewer says it: ``value`` or e.g.
        ``FDR q 0.05``."""
        return "value" if self.method == "value" else f"{METHODS[self.method]} {self.alpha:g}"

    # ------------------------------------------------------------------ geometry
    def _mm(self, axis: int, index):
        return self._affine[axis, axis] * np.asarray(index) + self._affine[axis, 3]

    def _index(self, axis: int, mm: float) -> int:
        i = int(round((mm - self._affine[axis, 3]) / self._affine[axis, axis]))
        return min(max(i, 0), self._mask.shape[axis] - 1)

    def _cut_ijk(self) -> tuple[int, int, int]:
        return tuple(self._index(a, self.controls[n].value) for a, n in enumerate("xyz"))

    def _set_cut_mm(self, xyz) -> None:
        try:
            xyz = [float(v) for v in xyz]
            if len(xyz) != 3:
                raise ValueError
        except (TypeError, ValueError):
            raise ParameterError(
                f"cut_coords must be three numbers (x, y, z mm); got {xyz!r}") from None
        for a, name in enumerate("xyz"):
            self._show(name, float(self._mm(a, self._index(a, xyz[a]))))

    def go_to(self, x: float, y: float, z: float) -> None:
        """Move the cut to the voxel nearest (x, y, z) mm and re-render."""
        self._busy = True
        try:
            self._set_cut_mm((x, y, z))
        finally:
            self._busy = False
        self._schedule()

    def go_to_peak(self, cluster: int = 1) -> None:
        """Move the cut to the peak of cluster number ``cluster`` (1 = largest) at this
        threshold."""
        frame = self.cluster_frame
        row = frame[frame["cluster"] == cluster]
        if row.empty:
            raise ParameterError(
                f"cluster {cluster} does not exist at this threshold; clusters: "
                f"{frame['cluster'].tolist()}"
            )
        r = row.iloc[0]
        self.go_to(r["x"], r["y"], r["z"])

    # ------------------------------------------------------------------ events
    def _show(self, name: str, value: Any) -> None:
        """Put ``value`` into control ``name`` and remember it (call with ``_busy`` set)."""
        control = self.controls[name]
        control.value = value
        self._shown[name] = control.value

    def _echo(self, name: str, new: Any) -> bool:
        """Whether ``new`` is the value the explorer showed in ``name``, sent back by a browser
        (rounded to the control's step): then it is no edit, and is now what the control shows."""
        if name not in self._shown:
            return False
        shown = self._shown[name]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (new, shown))
        if numbers:
            control = self.controls[name]
            half = 0.5 * control.step if isinstance(control, widgets.FloatSlider) else 0.0
            same = abs(new - shown) <= half * (1 + 1e-9) + 1e-9 * max(1.0, abs(shown))
        else:
            same = new == shown
        if same:
            self._shown[name] = new
        return same

    def _on(self, what: str, change: dict) -> None:
        if self._busy or self._echo(what, change["new"]):
            return
        self._shown[what] = change["new"]
        c = self.controls
        if what == "map":
            self._select_map(change["new"])
        elif what in ("method", "alpha"):
            self._apply_method(c["method"].value, c["alpha"].value)
        elif what in ("threshold", "threshold_text"):
            self._set_threshold(change["new"], "value")
        elif what == "extent":
            self._state["extent"] = max(int(change["new"] or 0), 0)
            self._recompute()
        elif what == "peak":
            if change["new"]:
                self.go_to_peak(int(change["new"]))
            return
        self._schedule()

    def _on_cut(self, name: str, change: dict) -> None:
        if self._busy or self._echo(name, change["new"]):
            return
        self._shown[name] = change["new"]
        self._schedule()

    def _select_map(self, name: str) -> None:
        m = self._maps[name]
        options = [(label, key) for label, key in self._all_methods
                   if key == "value" or key in m.methods]
        self._busy = True
        try:
            self.controls["method"].options = options
        finally:
            self._busy = False
        if m.threshold is not None:
            self._set_threshold(m.threshold, "value")
        else:
            self._apply_method(m.method, m.alpha)

    def _method_value(self, m: ViewerMap, method: str, alpha: float) -> float:
        table = m.methods.get(method, {})
        for a, t in table.items():
            if abs(a - alpha) <= 1e-12 * max(alpha, 1e-300):
                return float(t)
        ref = self._maps.get(m.reference, m) if m.reference else m
        return method_threshold(ref.values, m.kind, method, alpha, two_sided=m.two_sided,
                                n_tests=int(self._mask.sum()))

    def _apply_method(self, method: str, alpha: float) -> None:
        m = self.current_map
        if method == "value" or method not in m.methods:
            self._set_threshold(self.threshold, "value")
            return
        self._set_threshold(self._method_value(m, method, float(alpha)), method, float(alpha))

    def _checked(self, t: float, method: str, alpha: float | None) -> tuple[float, str]:
        """The threshold to use and a note on it (a value clamped to the map's range, a method
        no voxel passes)."""
        top = self.current_map.max_abs
        label = METHODS[method]
        if method == "value":
            if t is None or not np.isfinite(t):
                return self.threshold, f"threshold {t} is not a number; kept {self.threshold:.4g}"
            if t > top:
                return top, (f"threshold {t:.4g} is above the map's maximum {top:.4g}; "
                             f"clamped to {top:.4g}")
            if t < 0:
                return 0.0, f"threshold {t:.4g} is below 0; clamped to 0"
            return t, ""
        if not np.isfinite(t):
            return t, f"no voxel passes {label} {alpha:g}"
        if t > top:
            return t, f"the {label} threshold is above the map's maximum {top:.4g}"
        return t, ""

    def _set_threshold(self, t: float, method: str, alpha: float | None = None) -> None:
        t, self._note = self._checked(t, method, alpha)
        self._state.update(threshold=float(t), method=method)
        if alpha is not None:
            self._state["alpha"] = alpha
        c = self.controls
        top = max(self.current_map.max_abs, 1e-6)
        self._busy = True
        try:
            self._show("method", method)
            if alpha is not None:
                self._show("alpha", alpha)
            c["alpha"].layout.visibility = "hidden" if method == "value" else "visible"
            slider = c["threshold"]
            with slider.hold_sync():  # range and value reach the browser in one message
                slider.max, slider.step = top, top / 1000
                self._show("threshold", float(min(t, top)) if np.isfinite(t) else top)
            if np.isfinite(t):
                self._show("threshold_text", float(t))
        finally:
            self._busy = False
        self._recompute()

    def _recompute(self) -> None:
        m = self.current_map
        t = self.threshold
        if np.isfinite(t):
            self._labels, self._table = label_clusters(
                m.data, t, two_sided=m.two_sided, extent=self.extent,
                connectivity=self._connectivity)
        else:
            self._labels, self._table = np.zeros(self._mask.shape, np.int32), pd.DataFrame()
        opts = [(PEAK_PROMPT, 0)] + [
            (f"#{r.cluster}: {r.peak:+.2f} at ({r.x:.0f}, {r.y:.0f}, {r.z:.0f}), {r.size} vox",
             int(r.cluster))
            for r in self.cluster_frame.head(50).itertuples()
        ]
        self._busy = True
        try:
            self.controls["peak"].options = opts
            self._show("peak", 0)
        finally:
            self._busy = False
        self._update_text()

    def _update_text(self) -> None:
        m = self.current_map
        n, k = self.n_suprathreshold, len(self._table)
        t = self.threshold
        parts = [f"threshold {t:.4g} ({self.method_label})" if np.isfinite(t)
                 else f"threshold ∞ ({self.method_label})",
                 f"{n} supra-threshold voxels in {k} cluster{'s' if k != 1 else ''}"
                 + (f" of ≥ {self.extent} voxels" if self.extent else "")]
        if n == 0:
            parts.append(EMPTY_MESSAGE)
        if self._note:
            parts.append(self._note)
        if self.cut_note:
            parts.append(self.cut_note)
        self._message = " · ".join(parts)
        data = {"map": m.name, "method": self.method, "alpha": f"{self.alpha:g}",
                "threshold": repr(float(t)), "count": n, "clusters": k,
                "cut": ",".join(f"{c:g}" for c in self.cut_coords)}
        attrs = " ".join(f'data-{key}="{html.escape(str(v))}"' for key, v in data.items())
        self._status.value = (
            f"<div role='status' {attrs} style='font-weight:600'>"
            + " · ".join(html.escape(p) for p in parts[:2])
            + "".join(f" · <span style='color:#a15c00'>{html.escape(p)}</span>" for p in parts[2:])
            + "</div>"
        )
        frame = self.cluster_frame.head(20)
        cap = f"Clusters of {html.escape(m.label)} at this threshold" + (
            f" (20 largest of {k})" if k > 20 else "")
        body = frame.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0) if k else ""
        report = ""
        if self._report_clusters is not None and len(self._report_clusters):
            report = ("<details><summary>cluster table of the report</summary>"
                      + self._report_clusters.to_html(index=False, border=0) + "</details>")
        self._table_html.value = f"<b>{cap}</b>{body}{report}"

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs):
        """The widget view plus a static copy: the current image and the status as text.

        A notebook saved with this output shows the image wherever the widget cannot be drawn
        (no kernel and no saved widget state, an untrusted notebook, GitHub, nbviewer).
        """
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:  # the widget was closed
            return None
        bundle["image/png"] = base64.b64encode(self.image_bytes or self.render()).decode("ascii")
        bundle["text/plain"] = self.text_summary()
        return bundle

    def text_summary(self, rows: int = 5) -> str:
        """The explorer's state as plain text: map, status line and the largest clusters."""
        lines = [f"glmkit explorer: {self.current_map.label} at cut "
                 f"({', '.join(f'{c:.0f}' for c in self.cut_coords)}) mm", self.message]
        frame = self.cluster_frame
        if len(frame):
            shown = frame.head(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}")
            more = f"\n({len(frame) - rows} more clusters)" if len(frame) > rows else ""
            lines.append(shown + more)
        return "\n".join(lines)

    # ------------------------------------------------------------------ rendering
    def _schedule(self) -> None:
        if self._busy:
            return
        if self._debounce <= 0:
            self.render()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.render()
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_later(self._debounce, self.render)

    def render(self) -> bytes:
        """Render the current view to PNG (also put into the Image widget); returns the bytes.

        The picture: the slices (ortho, one axis or an axial mosaic) with their coordinates,
        orientation letters (L/R, A/P; left is left, as nilearn draws), a crosshair at the
        cut, and below them a colour bar from the threshold to the map's maximum.
        """
        from PIL import Image, ImageDraw

        start = time.perf_counter()
        self._handle = None
        self._update_text()  # the status says where the cut is
        rgb, labels = self._compose()
        bar, bar_labels = self._colour_bar(rgb.shape[1])
        img = Image.fromarray(np.vstack([rgb, bar]))
        draw = ImageDraw.Draw(img)
        for (x0, y0), text in labels:
            draw.text((x0 + 3, y0 + 2), text, fill=(255, 255, 255))
        for (x0, y0), text in bar_labels:
            draw.text((x0, rgb.shape[0] + y0), text, fill=(230, 230, 230))
        if self.n_suprathreshold == 0:  # say so in the figure too, not only in the status line
            draw.text((6, rgb.shape[0] - 16), EMPTY_MESSAGE, fill=(255, 200, 60))
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        self.image_bytes = buf.getvalue()
        self._image.value = self.image_bytes
        self.render_count += 1
        self.render_seconds = time.perf_counter() - start
        logger.debug("explore: rendered in %.3f s", self.render_seconds)
        return self.image_bytes

    def _colour_bar(self, width: int) -> tuple[np.ndarray, list]:
        """A strip under the slices: the colours of supra-threshold values, threshold to max
        (negative values too when the map is two-sided), with their values."""
        m = self.current_map
        top, t = m.max_abs, self.threshold
        strip = np.zeros((BAR_HEIGHT, width, 3), np.uint8)
        n = max(min(200, (width - 120) // (2 if m.two_sided else 1)), 16)
        ramp = np.round(40 + 215 * np.linspace(0, 1, n)).astype(np.uint8)
        pos = np.stack([np.full(n, 255), ramp, np.zeros(n)], -1).astype(np.uint8)
        neg = np.stack([np.zeros(n), ramp, np.full(n, 255)], -1).astype(np.uint8)[::-1]
        low = f"{t:.3g}" if np.isfinite(t) else "∞"
        x0, labels = 8, []
        if m.two_sided:
            strip[4:16, x0:x0 + n] = neg
            labels += [((x0, 17), f"-{top:.3g}"), ((x0 + n - 30, 17), f"-{low}")]
            x0 += n + 40
        strip[4:16, x0:x0 + n] = pos
        labels += [((x0, 17), low), ((x0 + n - 30, 17), f"{top:.3g}")]
        labels.append(((x0 + n + 12, 5), f"{m.label}: threshold to maximum"))
        return strip, labels

    def _rgb_volume_slice(self, axis: int, index: int) -> np.ndarray:
        """RGB image of one slice, rows top-down, columns left-to-right (neurological)."""
        m = self.current_map
        sl = [slice(None)] * 3
        sl[axis] = index
        sl = tuple(sl)
        inside = self._mask[sl]
        lab = self._labels[sl]
        val = np.nan_to_num(m.data[sl])
        grey = (self._background[sl] if self._background is not None
                else np.where(inside, 70, 0).astype(np.uint8))
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        on = lab > 0
        if on.any():
            top = m.max_abs
            t = self.threshold
            f = np.clip((np.abs(val) - t) / (top - t), 0, 1) if top > t else np.ones_like(val)
            g = np.round(40 + 215 * f).astype(np.uint8)
            pos = on & (val > 0)
            neg = on & (val < 0)
            rgb[pos] = np.stack([np.full(pos.sum(), 255), g[pos], np.zeros(pos.sum())],
                                -1).astype(np.uint8)
            rgb[neg] = np.stack([np.zeros(neg.sum()), g[neg], np.full(neg.sum(), 255)],
                                -1).astype(np.uint8)
        # (u, v) = first, second remaining axes; display rows = second axis reversed
        return rgb.transpose(1, 0, 2)[::-1]

    def _scale(self, img: np.ndarray, axes: tuple[int, int], zoom: float) -> np.ndarray:
        fu = max(1, int(round(self._vs[axes[0]] / self._vs.min() * zoom)))
        fv = max(1, int(round(self._vs[axes[1]] / self._vs.min() * zoom)))
        return np.repeat(np.repeat(img, fv, axis=0), fu, axis=1)

    def _compose(self):
        if self.mode == "mosaic":
            return self._compose_mosaic()
        ijk = self._cut_ijk()
        axes = (0, 1, 2) if self.mode == "ortho" else ("xyz".index(self.mode),)
        zoom = self._zoom if self.mode == "ortho" else 2 * self._zoom
        panels = []
        for axis in axes:
            others = tuple(a for a in range(3) if a != axis)
            img = self._scale(self._rgb_volume_slice(axis, ijk[axis]), others, zoom)
            # crosshair
            nu, nv = self._mask.shape[others[0]], self._mask.shape[others[1]]
            h, w = img.shape[:2]
            cu = int((ijk[others[0]] + 0.5) * w / nu)
            cv = int((nv - 1 - ijk[others[1]] + 0.5) * h / nv)
            green = np.array([40, 110, 40], np.uint8)
            img[:, min(cu, w - 1)] = img[:, min(cu, w - 1)] // 2 + green
            img[min(cv, h - 1), :] = img[min(cv, h - 1), :] // 2 + green
            panels.append((axis, img))
        height = max(p.shape[0] for _, p in panels)
        gap = 4
        width = sum(p.shape[1] for _, p in panels) + gap * (len(panels) - 1)
        out = np.zeros((height, width, 3), np.uint8)
        labels = []
        x0 = 0
        for axis, p in panels:
            out[: p.shape[0], x0:x0 + p.shape[1]] = p
            labels.append(((x0, 0), f"{'xyz'[axis]}={self._mm(axis, ijk[axis]):.0f}"))
            labels += _orientation_labels(axis, x0, p.shape[1], p.shape[0])
            x0 += p.shape[1] + gap
        return out, labels

    def _compose_mosaic(self):
        ks = np.nonzero(self._mask.any(axis=(0, 1)))[0]
        lo, hi = (ks.min(), ks.max()) if ks.size else (0, self._mask.shape[2] - 1)
        n = min(12, hi - lo + 1)
        slices = [int(round(lo + (s + 1) * (hi - lo) / (n + 1))) for s in range(n)]
        tiles = [self._scale(self._rgb_volume_slice(2, k), (0, 1), max(1, self._zoom - 1))
                 for k in slices]
        h, w = tiles[0].shape[:2]
        cols = 6
        rows = -(-len(tiles) // cols)
        out = np.zeros((rows * h, cols * w, 3), np.uint8)
        labels = _orientation_labels(2, 0, w, h)
        for s, (k, tile) in enumerate(zip(slices, tiles)):
            r, cidx = divmod(s, cols)
            out[r * h:(r + 1) * h, cidx * w:(cidx + 1) * w] = tile
            labels.append(((cidx * w, r * h), f"z={self._mm(2, k):.0f}"))
        return out, labels


def _orientation_labels(axis: int, x0: int, width: int, height: int) -> list:
    """Letters at the left and right edges of a panel cut across ``axis``: the slices are drawn
    with the subject's left on the left (L ... R) and, sagittally, posterior on the left."""
    left, right = ("P", "A") if axis == 0 else ("L", "R")
    return [((x0, height // 2 - 6), left), ((x0 + width - 14, height // 2 - 6), right)]


@checked_arguments(debounce="number", connectivity="number")
def explore(result: Any, *, cut_coords=None, background: Any = "mni152", debounce: float = 0.08,
            connectivity: int = 6) -> Explorer:
    """Explore an analysis live: maps, thresholds, clusters and slices as ipywidgets.

    The explorer opens as the report's viewer does (:func:`glmkit.report.maps.run_view`): on
    the headline map (the first permutation statistic's, else the FDR z map), the corrected
    maps at the run's alpha; for every map, method and alpha its threshold and counts are the
    report's.

    Parameters
    ----------
    result : AnalysisResult or path
        A :class:`glmkit.pipeline.AnalysisResult`, or a run folder ``reports/<run_name>/``
        holding ``maps/*.nii.gz``, ``clusters.csv`` and ``params.json``.
    cut_coords : (x, y, z) mm, optional
        Initial cut (default: the run's ``cut_coords``, else the z map's peak). A cut whose
        slices miss the data moves to the z map's peak, as in the report; the status line says
        so.
    background : image, path, "mni152" or None
        Grey image under the maps (default: nilearn's bundled MNI152 template resampled to the
        maps' grid; None draws the mask in grey).
    debounce : float
        Seconds to wait after the last change before re-rendering (0: render at once).
    connectivity : {6, 18, 26}
        Cluster connectivity (6 = faces, as nilearn and glmkit's cluster tables).

    Returns
    -------
    Explorer
        An ``ipywidgets.VBox``; display it in a notebook cell.

    Raises
    ------
    glmkit.errors.ReportError
        ``result`` is a folder that is missing maps, ``clusters.csv`` or ``params.json``.
    """
    if isinstance(result, (str, os.PathLike)):
        specs, clusters, params = load_run_folder(result)
        default_cut = params.get("cut_coords") or params.get("settings", {}).get("cut_coords")
        alpha = params.get("alpha", 0.05)
        statistics = [name for name in (params.get("statistics") or statistic_names())
                      if name in statistic_names() and get_statistic(name).map_name in specs]
    elif callable(getattr(result, "maps", None)):
        specs, clusters = maps_from_result(result)
        settings = getattr(result, "settings", None)
        default_cut = getattr(settings, "cut_coords", None)
        alpha = getattr(settings, "alpha", 0.05)
        perm = getattr(result, "permutation", None)
        statistics = perm.statistics if perm is not None else ()
    else:
        raise ParameterError(
            f"explore(result): expected an AnalysisResult (glmkit.pipeline) or a run folder path; "
            f"got {type(result).__name__}"
        )
    # the report's viewer opens the same way: corrected maps at the run's alpha, headline first
    specs, default_map = run_view(specs, alpha=float(alpha), statistics=statistics)
    cut = cut_coords if cut_coords is not None else default_cut  # None: the peak, as the report
    vmaps, mask, affine = prepare_maps(specs)
    z = next((m for m in vmaps if m.name == "z"), vmaps[0])  # the report's cut comes from z
    cut, cut_note = cut_in_view(cut, mask, affine, z.data, two_sided=z.two_sided,
                                label=f"{z.label} map")
    if cut_note:
        logger.warning("explore: %s", cut_note)
    explorer = Explorer(vmaps, mask, affine, clusters=clusters, cut_coords=tuple(cut),
                        debounce=debounce, connectivity=connectivity, background=background,
                        default_map=default_map)
    if cut_note:
        explorer.cut_note = cut_note
        explorer._update_text()
    return explorer
