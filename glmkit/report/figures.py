"""Static figures of the report, rendered off-screen to PNG and returned as ``data:`` URIs.

Every figure is drawn on a :class:`matplotlib.figure.Figure` created here (not through
``pyplot``), so rendering never touches the user's interactive backend and no figure is
left open. Figures are small (moderate dpi, PNG) to keep the report light.
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "png_data_uri",
    "stat_map_figure",
    "glass_brain_figure",
    "design_figure",
    "null_distribution_figure",
    "thumbnail",
    "mask_figure",
]

DPI = 72


def png_data_uri(fig: Figure, *, dpi: int = DPI) -> str:
    """Render ``fig`` to PNG and return it as a ``data:image/png;base64,...`` URI.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(1, 1))
    >>> _ = fig.add_subplot().plot([0, 1])
    >>> png_data_uri(fig).startswith("data:image/png;base64,iVBOR")
    True
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def stat_map_figure(img, *, threshold: float, cut_coords: Sequence[float], title: str,
                    cmap: str = "RdBu_r", symmetric: bool = True, vmax: float | None = None) -> str:
    """Orthogonal slices of ``img`` at ``cut_coords`` (mm) over the MNI template, as a data URI."""
    from nilearn import plotting

    fig = Figure(figsize=(7.5, 2.6))
    plotting.plot_stat_map(
        img, cut_coords=tuple(float(c) for c in cut_coords), display_mode="ortho",
        threshold=float(threshold), title=title, figure=fig, cmap=cmap,
        symmetric_cbar=symmetric, vmax=vmax, black_bg=True, draw_cross=False, annotate=True,
    )
    return png_data_uri(fig)


def glass_brain_figure(img, *, threshold: float, title: str, two_sided: bool = False,
                       cmap: str | None = None, vmax: float | None = None) -> str:
    """Glass-brain projection of ``img`` (values above ``threshold``), as a data URI."""
    from nilearn import plotting

    fig = Figure(figsize=(7.5, 2.6))
    with _patch_limits_unused():
        plotting.plot_glass_brain(
            img, threshold=float(threshold), title=title, figure=fig, colorbar=True,
            plot_abs=not two_sided, cmap=cmap, vmax=vmax, symmetric_cbar=two_sided,
        )
    return png_data_uri(fig)


@contextlib.contextmanager
def _patch_limits_unused() -> Iterator[None]:
    """Skip matplotlib's data-limit update for each patch added meanwhile.

    A glass brain's schematic is ~800 patches, and updating the axes' data limits for each
    costs about a third of the figure; nilearn then sets every glass-brain axes' limits itself
    (``ax.axis(bounds)``), so those limits are never used: the PNG is byte-identical
    (tests/test_report_figures.py). The class attribute is restored on exit.
    """
    original = Axes._update_patch_limits
    Axes._update_patch_limits = lambda self, patch: None
    try:
        yield
    finally:
        Axes._update_patch_limits = original


def design_figure(matrix: pd.DataFrame, correlation: pd.DataFrame | None = None,
                  contrast: np.ndarray | None = None, contrast_name: str = "") -> str:
    """The design matrix (rows = subjects, rescaled per column) with the contrast's weights
    under it, beside its column correlations."""
    from nilearn.plotting import plot_design_matrix

    ncols = 2 if correlation is not None and len(correlation) > 1 else 1
    fig = Figure(figsize=(3.2 * ncols + 0.6, 4.8 if contrast is not None else 4.2),
                 layout="constrained")
    grid = fig.add_gridspec(2, ncols, height_ratios=[6, 1] if contrast is not None else [6, 0.01])
    design_ax = fig.add_subplot(grid[0, 0])
    plot_design_matrix(matrix.reset_index(drop=True), axes=design_ax)
    design_ax.set_ylabel(f"subjects (n = {len(matrix)})")
    design_ax.set_title("design matrix", fontsize=10)
    if contrast is not None:
        weights = np.atleast_2d(np.asarray(contrast, dtype=float))
        ax = fig.add_subplot(grid[1, 0])
        limit = float(np.abs(weights).max()) or 1.0
        ax.imshow(weights, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
        for (i, j), w in np.ndenumerate(weights):
            if w:
                ax.text(j, i, f"{w:g}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(weights.shape[1]), [])
        ax.set_yticks([])
        ax.set_title(f"contrast {contrast_name}"[:60], fontsize=9)
    if ncols == 2:
        ax = fig.add_subplot(grid[0, 1])
        values = correlation.to_numpy(dtype=float)
        image = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r")
        labels = [str(c) for c in correlation.columns]
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title("column correlations", fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.7)
    return png_data_uri(fig)


def thumbnail(data: np.ndarray, *, colors: int = 16) -> str:
    """A small image of a 2-D slice (scaled to its 99th percentile of |value|, anterior up,
    ``colors`` levels of a diverging map), as a data URI of about 2 kB: cheap enough for
    every subject of a study.

    Examples
    --------
    >>> thumbnail(np.arange(20.0).reshape(4, 5)).startswith("data:image/png;base64,")
    True
    """
    from matplotlib import colormaps
    from PIL import Image

    data = np.asarray(data, dtype=float).T[::-1]  # rows = y (anterior up), columns = x
    top = float(np.percentile(np.abs(data), 99)) or 1.0
    rgb = colormaps["RdBu_r"]((np.clip(data / top, -1, 1) + 1) / 2)[..., :3]
    image = Image.fromarray((rgb * 255).astype(np.uint8)).quantize(colors=colors)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def mask_figure(mask: np.ndarray, coverage: np.ndarray | None = None, *, n_slices: int = 10,
                zoom: int = 2) -> str:
    """Axial slices of a 3-D mask through its extent, each voxel coloured by ``coverage``
    (the share of subjects with data there, 0-1; grey-blue when not given), outside black; a
    data URI (numpy and PIL only: no template to resample, so it costs milliseconds).

    Examples
    --------
    >>> m = np.zeros((6, 6, 4), bool); m[1:5, 1:5, 1:3] = True
    >>> mask_figure(m).startswith("data:image/png;base64,")
    True
    """
    from matplotlib import colormaps
    from PIL import Image

    mask = np.asarray(mask, dtype=bool)
    values = np.where(mask, 1.0 if coverage is None else np.asarray(coverage, float), np.nan)
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    ks = ks[np.linspace(0, len(ks) - 1, min(n_slices, len(ks))).round().astype(int)] if len(
        ks) else np.array([mask.shape[2] // 2])
    tiles = [values[:, :, k].T[::-1] for k in ks]  # anterior up, left of the image = x low
    strip = np.concatenate([np.pad(t, ((0, 0), (0, 1)), constant_values=np.nan) for t in tiles],
                           axis=1)
    rgb = colormaps["viridis"](np.nan_to_num(strip, nan=0.0))[..., :3]
    rgb[np.isnan(strip)] = 0.0
    rgb = np.kron(rgb, np.ones((zoom, zoom, 1)))
    buffer = io.BytesIO()
    Image.fromarray((rgb * 255).astype(np.uint8)).quantize(colors=64).save(
        buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def null_distribution_figure(null_max: np.ndarray, *, critical_value: float, observed: float,
                             title: str, xlabel: str, alpha: float) -> str:
    """Histogram of permutation maxima with the critical value and the observed maximum marked."""
    values = np.asarray(null_max, dtype=float)
    values = values[np.isfinite(values)]
    fig = Figure(figsize=(4.6, 2.9), layout="constrained")
    ax = fig.add_subplot()
    if values.size:
        ax.hist(values, bins=min(60, max(10, values.size // 20)), color="#8da0cb",
                edgecolor="white", linewidth=0.3)
    if np.isfinite(critical_value):
        ax.axvline(critical_value, color="#d62728", linewidth=1.6,
                   label=f"critical value ({100 * (1 - alpha):g}th pct) = {critical_value:.3g}")
    else:  # alpha below the smallest attainable p, 1 / (n_perm + 1): nothing can pass
        ax.plot([], [], color="#d62728", label="critical value: none (too few permutations)")
    if np.isfinite(observed):
        ax.axvline(observed, color="black", linestyle="--", linewidth=1.2,
                   label=f"observed maximum = {observed:.3g}")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("permutations", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    ax.tick_params(labelsize=8)
    return png_data_uri(fig)
