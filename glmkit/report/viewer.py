"""The kernel-free viewer's HTML/JS encoder: one HTML fragment, plain inline JavaScript.

:func:`viewer_html` turns a few 3-D maps on one grid into a ``<div>`` that re-thresholds
and browses slices in any browser without a kernel or a network: the in-mask voxels of
every map are quantised to uint16, delta-coded, deflated and base64-encoded into the page;
the JavaScript (``templates/viewer.js``) decodes them once and draws slices on canvases.
The fragment is the template ``templates/viewer.html``; the data travel as JSON through
jinja2's ``tojson`` (safe inside ``<script>``).

What is shown (maps, kinds, method thresholds, clusters, the cut) is decided by
:mod:`glmkit.report.maps`, which the ipywidgets explorer (:mod:`glmkit.widgets`) shares, so
the numbers in the notebook and in the report agree.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from glmkit._util import logger
from glmkit.data import DEFAULT_CUT_COORDS
from glmkit.errors import ParameterError, checked_arguments
from glmkit.report.maps import (CONNECTIVITY, METHODS, background_u8, cut_in_view,
                                maps_from_result, prepare_maps)
from glmkit.report.templates import Markup, render

__all__ = ["viewer_html", "viewer_payload", "result_viewer_html"]

_uid_counter = itertools.count()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _encode_values(values: np.ndarray, cuts=(), two_sided: bool = False
                   ) -> tuple[str, float, float, int | None]:
    """uint16 codes, delta-coded, high/low byte planes, zlib: (base64, offset, scale, zero code).

    Value = offset + code * scale; 0 has its own exact code (returned) when 0 is in range.
    ``cuts`` are the method thresholds the page offers: a value on one side of a cut is
    decoded on the same side (its code moves by one step if rounding crossed it), so the page
    counts exactly the voxels the report counts at every method threshold.
    """
    if values.size == 0:
        return _b64(zlib.compress(b"", 9)), 0.0, 1.0, None
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        scale = 1.0
    else:
        scale = (hi - lo) / 65534.0
        if lo < 0 < hi:  # make 0 an exact code
            k = max(1, round(-lo / scale))
            scale = -lo / k
            if lo + 65535 * scale < hi:
                scale = (hi - lo) / 65534.0
    codes = np.clip(np.rint((values - lo) / scale), 0, 65535).astype(np.int64)
    zero = None
    if lo <= 0 <= hi:
        # the code of 0 is reserved for exact zeros (outside a thresholded map's clusters)
        zero = int(np.rint(-lo / scale))
        tiny = (codes == zero) & (values != 0)
        codes[tiny] += np.where(values[tiny] > 0, 1, -1)
        codes = np.clip(codes, 0, 65535)
    codes = _keep_sides(codes, values, lo, scale, cuts, two_sided, zero)
    codes = codes.astype(np.uint16)
    delta = np.diff(codes, prepend=np.uint16(0)).astype(np.uint16)  # wraps mod 2**16
    planes = np.concatenate([(delta >> 8).astype(np.uint8), (delta & 0xFF).astype(np.uint8)])
    return _b64(zlib.compress(planes.tobytes(), 9)), lo, scale, zero


def _keep_sides(codes, values, lo, scale, cuts, two_sided, zero):
    """Codes nudged so that ``decoded >= cut`` exactly when ``value >= cut`` (|.| two-sided),
    the comparison the page makes (decoding in float64 as the JavaScript does)."""
    for cut in (float(c) for c in cuts if c is not None and np.isfinite(c)):
        for sign in ((1.0, -1.0) if two_sided else (1.0,)):
            v = sign * values
            for _ in range(3):  # one step fixes rounding; a few more are harmless
                decoded = sign * (lo + codes * scale)
                low = (v >= cut) & (decoded < cut)
                high = (v < cut) & (decoded >= cut)
                if not (low.any() or high.any()):
                    break
                codes = codes + sign * (low.astype(np.int64) - high.astype(np.int64))
                codes = np.clip(codes, 0, 65535)
                if zero is not None:  # the zero code stays reserved for exact zeros
                    clash = (codes == zero) & (values != 0)
                    codes[clash] += np.where(values[clash] > 0, 1, -1)
    return codes.astype(np.int64)


def _encode_bits(mask: np.ndarray) -> str:
    return _b64(zlib.compress(np.packbits(mask.ravel(order="C")).tobytes(), 9))


def _json_number(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _cluster_rows(df: pd.DataFrame | None) -> dict | None:
    """Columns and rows of a cluster table, with the x/y/z peak columns found."""
    if df is None:
        return None
    df = pd.DataFrame(df)
    cols = {c.lower().strip(): c for c in df.columns.astype(str)}
    xyz = []
    for axis in ("x", "y", "z"):
        names = (axis, f"{axis}_mm", f"{axis} (mm)", f"peak_{axis}")
        found = next((cols[k] for k in names if k in cols), None)
        if found is None:
            raise ParameterError(
                f"clusters: expected columns X, Y, Z (peak coordinates in mm); got "
                f"{list(df.columns)}"
            )
        xyz.append(found)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if v is None or (np.ndim(v) == 0 and pd.isna(v)):
                cells.append("")
            elif isinstance(v, (float, np.floating)):
                cells.append("" if not np.isfinite(v) else f"{v:.4g}")
            else:
                cells.append(str(v))
        rows.append({"cells": cells, "xyz": [float(r[c]) for c in xyz]})
    return {"columns": [str(c) for c in df.columns], "rows": rows}



@checked_arguments(maps="mapping", clusters="tables?", thresholds="mapping?",
                   connectivity="number")
def viewer_payload(
    maps: Mapping[str, Any], *, clusters: Any = None, thresholds: Mapping[str, Any] | None = None,
    default_map: str | None = None, cut_coords: tuple[float, float, float] = DEFAULT_CUT_COORDS,
    background: Any = None, title: str | None = None, connectivity: int = 6,
) -> dict:
    """The JSON-able data the viewer embeds (see :func:`viewer_html` for the parameters)."""
    if connectivity not in CONNECTIVITY:
        raise ParameterError(f"connectivity must be 6, 18 or 26; got {connectivity!r}")
    vmaps, mask, affine = prepare_maps(maps, thresholds=thresholds)
    names = [m.name for m in vmaps]
    if default_map is None:
        default_map = names[0]
    if default_map not in names:
        raise ParameterError(f"default_map {default_map!r} is not one of the maps {names}")
    shown = next(m for m in vmaps if m.name == default_map)
    cut, cut_note = cut_in_view(cut_coords, mask, affine, shown.data, two_sided=shown.two_sided,
                                label=f"{shown.label} map")
    if cut_note:
        logger.warning("viewer: %s", cut_note)
    cut = list(cut)
    bg = background_u8(background, mask.shape, affine, mask)
    if bg is not None:
        bg = _b64(zlib.compress(bg.ravel(order="C").tobytes(), 9))
    if isinstance(clusters, Mapping):
        cl = {k: _cluster_rows(v) for k, v in clusters.items()}
        unknown = set(cl) - set(names)
        if unknown:
            raise ParameterError(f"clusters names maps {sorted(unknown)} not in maps {names}")
    else:
        cl = {"*": _cluster_rows(clusters)} if clusters is not None else {}
    out_maps = []
    for m in vmaps:
        vals = m.data[mask]
        vals = np.nan_to_num(vals, nan=0.0)
        cuts = [t for tab in m.methods.values() for t in tab.values()]
        b64, offset, scale, zero = _encode_values(vals, cuts, m.two_sided)
        vmin = float(vals.min()) if vals.size else 0.0
        vmax = float(vals.max()) if vals.size else 0.0
        out_maps.append({
            "name": m.name, "label": m.label, "kind": m.kind, "two_sided": m.two_sided,
            "data": b64, "offset": offset, "scale": scale, "zero_code": zero, "vmin": vmin,
            "vmax": vmax, "max_abs": m.max_abs,
            "methods": {meth: {f"{a:g}": _json_number(t)
                               for a, t in sorted(tab.items(), reverse=True)}
                        for meth, tab in m.methods.items()},
            "method": m.method, "alpha": f"{m.alpha:g}", "threshold": m.threshold,
            "clusters": cl.get(m.name, cl.get("*")),
        })
    return {
        "version": 1, "title": title or "", "shape": list(mask.shape),
        "affine": np.asarray(affine).round(6).tolist(), "mask": _encode_bits(mask),
        "n_mask": int(mask.sum()), "background": bg, "maps": out_maps, "default_map": default_map,
        "cut": cut, "cut_note": cut_note, "connectivity": connectivity,
        "method_labels": METHODS,
    }


@checked_arguments(maps="mapping", clusters="tables?", thresholds="mapping?",
                   connectivity="number")
def viewer_html(
    maps: Mapping[str, Any], *, clusters: Any = None, thresholds: Mapping[str, Any] | None = None,
    default_map: str | None = None, cut_coords: tuple[float, float, float] = DEFAULT_CUT_COORDS,
    background: Any = None, title: str | None = None, connectivity: int = 6,
) -> Markup:
    """A self-contained HTML fragment: an interactive slice viewer that needs no kernel.

    Parameters
    ----------
    maps : mapping
        name -> (3-D array, 4x4 affine), nibabel image, path, or a dict spec (see
        :func:`glmkit.report.maps.prepare_maps`) giving ``kind`` (``"z"``, ``"logp"``,
        ``"logp_bonferroni"``, ``"logp_fwer"``, ``"value"``; guessed from the name otherwise),
        ``two_sided``, ``label``, initial ``threshold`` or ``method``/``alpha``, ``methods``
        tables and ``methods_from`` (the map whose values set the method thresholds). All maps
        share one grid; a ``"mask"`` entry is the mask.
    clusters : DataFrame or dict name -> DataFrame, optional
        Cluster table(s) with peak columns X, Y, Z (mm); clicking a row jumps to its peak.
    thresholds : mapping, optional
        name -> initial threshold, or name -> {method: threshold | {alpha: threshold}}.
    default_map : str, optional
        Map shown first (default: the first).
    cut_coords : (x, y, z)
        Initial cut in mm; when its slices miss the data (another field of view), the viewer
        opens at the default map's peak instead (see :func:`glmkit.report.maps.cut_in_view`)
        and the payload's ``cut_note`` says so.
    background : image, (array, affine), path or "mni152", optional
        Anatomical/mean image drawn in grey under the map, resampled to the maps' grid;
        ``"mni152"`` uses nilearn's bundled MNI152 template (about +80 kB on the demo grid).
        Default: the mask in grey.
    title : str, optional
    connectivity : {6, 18, 26}
        Cluster connectivity for the extent filter (6 = faces, as nilearn/glmkit tables).

    Returns
    -------
    markupsafe.Markup
        ``<div class="glmkit-viewer">`` with inline ``<style>``, a JSON data block, the
        ``<script>`` and a ``<noscript>`` note. Two fragments can share a page.

    Examples
    --------
    >>> z = np.zeros((8, 9, 7)); z[2:6, 2:7, 1:6] = 1.0; z[4, 4, 3] = 5.0
    >>> frag = viewer_html({"z": (z, np.eye(4))}, cut_coords=(4, 4, 3))
    >>> frag.startswith('<div class="glmkit-viewer"') and 'data-control="threshold"' in frag
    True
    """
    payload = viewer_payload(
        maps, clusters=clusters, thresholds=thresholds, default_map=default_map,
        cut_coords=cut_coords, background=background, title=title, connectivity=connectivity,
    )
    digest = hashlib.sha1(str(next(_uid_counter)).encode())
    for m in payload["maps"]:
        digest.update(m["data"].encode("ascii"))
    return render("viewer.html", uid="glmkit-viewer-" + digest.hexdigest()[:10],
                  title=title or "", payload=payload)


@checked_arguments(result="result")
def result_viewer_html(result: Any, *, title: str | None = None, **kwargs: Any) -> Markup:
    """:func:`viewer_html` for an :class:`glmkit.pipeline.AnalysisResult`: what the report embeds.

    Shows z, the FDR-thresholded z, the Bonferroni -log10 p map and each permutation
    -log10 FWER p map, with the run's cluster table and cut coordinates; ``kwargs`` go to
    :func:`viewer_html` (e.g. ``background=``, ``cut_coords=``).
    """
    specs, clusters = maps_from_result(result)
    settings = getattr(result, "settings", None)
    kwargs.setdefault("cut_coords", getattr(settings, "cut_coords", None))  # None: the peak
    if clusters is not None and len(clusters) == 0:
        clusters = None
    return viewer_html(specs, clusters=clusters, title=title, **kwargs)
