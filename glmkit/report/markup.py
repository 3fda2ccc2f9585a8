"""Formatting helpers of the report page (:mod:`glmkit.report`).

Escaping, number formatting, HTML tables, figures and sections, and the small lookups the
section builders share (mm coordinates, cluster summaries, package versions, attributes of
an optional object).
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping, Sequence
from importlib import metadata

import numpy as np
import pandas as pd


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------

def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (np.ndim(value) == 0 and not isinstance(value, (str, float, np.floating))
                         and pd.isna(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "n/a" if np.isnan(value) else str(value)
        return f"{value:.{digits}g}"
    return str(value)


def _table(frame: pd.DataFrame, *, index: bool = False, row_classes: Sequence[str] | None = None,
           max_rows: int | None = None) -> str:
    """An escaped HTML table of ``frame`` (numbers right-aligned)."""
    if index:
        frame = frame.reset_index()
    shown = frame if max_rows is None else frame.head(max_rows)
    head = "".join(f"<th>{_esc(c)}</th>" for c in shown.columns)
    body = []
    for i, row in enumerate(shown.itertuples(index=False)):
        cells = []
        for value in row:
            is_num = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, (bool, np.bool_))
            cells.append(f'<td class="num">{_esc(_fmt(value))}</td>' if is_num
                         else f"<td>{_esc(_fmt(value))}</td>")
        cls = row_classes[i] if row_classes is not None else ""
        cls = f' class="{_esc(cls)}"' if cls else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    more = ""
    if max_rows is not None and len(frame) > max_rows:
        more = (f'<p class="note">First {max_rows} of {len(frame)} rows; all rows are in the CSV '
                f"file.</p>")
    return (f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table>{more}")


def _figure(uri: str, caption: str, alt: str) -> str:
    return (f'<figure><img src="{uri}" alt="{_esc(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _version(package: str) -> str:
    if package == "glmkit":
        from glmkit._version import __version__
        return __version__
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _coords(affine: np.ndarray, ijk) -> tuple[float, float, float]:
    xyz = affine @ np.r_[np.asarray(ijk, dtype=float), 1.0]
    return tuple(float(v) for v in xyz[:3])


def _mm(xyz) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in xyz) + ")"


def _n_clusters(mask: np.ndarray) -> int:
    from scipy import ndimage

    if not mask.any():
        return 0
    return int(ndimage.label(mask, ndimage.generate_binary_structure(3, 1))[1])


def _cluster_summary(mask: np.ndarray, z: np.ndarray, affine: np.ndarray) -> pd.DataFrame:
    """Clusters (6-connectivity, as nilearn's tables) of a significance mask with their z peaks."""
    from scipy import ndimage

    columns = ["cluster", "voxels", "volume_mm3", "peak_z", "peak_x", "peak_y", "peak_z_mm"]
    if not mask.any():
        return pd.DataFrame(columns=columns)
    labels, n = ndimage.label(mask, ndimage.generate_binary_structure(3, 1))
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    rows = []
    for k in range(1, n + 1):
        idx = np.argwhere(labels == k)
        values = z[tuple(idx.T)]
        peak = idx[int(np.argmax(np.abs(values)))]
        x, y, zz = _coords(affine, peak)
        rows.append([0, len(idx), len(idx) * voxel_volume, float(z[tuple(peak)]), x, y, zz])
    frame = pd.DataFrame(rows, columns=columns).sort_values("voxels", ascending=False,
                                                              kind="stable")
    frame["cluster"] = np.arange(1, len(frame) + 1)
    return frame.rename(columns={"peak_z_mm": "peak_z (mm)", "peak_x": "peak_x (mm)",
                                 "peak_y": "peak_y (mm)"}).reset_index(drop=True)


def _settings_dict(settings) -> dict:
    if dataclasses.is_dataclass(settings):
        return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    if isinstance(settings, Mapping):
        return dict(settings)
    return dict(vars(settings))


def _get(obj, name: str, default=None):
    return getattr(obj, name, default) if obj is not None else default


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_esc(title)}</h2>\n{body}\n</section>'
