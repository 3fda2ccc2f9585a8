"""The shareable report of one analysis: a self-contained HTML page plus maps and tables.

:func:`write_report` turns an :class:`glmkit.pipeline.AnalysisResult` into a run folder:
``report.html`` (one file, readable offline: figures are embedded PNGs, CSS and JavaScript
are inline, opening it makes no network request), the maps, the tables, the parameters and
provenance, and ``manifest.json``; :mod:`glmkit.report.runfolder` lists and writes them.

:func:`recovery` measures how well thresholded maps recover a planted (ground-truth) region;
the report uses it on the demo cohort, whose planted region is known.

Family-wise error (FWER) maps are compared with FWER maps only (Bonferroni, permutation
max-T, cluster and TFCE); the false discovery rate (FDR) map is shown in its own row,
labelled as FDR (nilearn issue #3038).

The page's sections are built in :mod:`glmkit.report.sections`, with the formatting helpers
of :mod:`glmkit.report.markup`; the recovery section stays here, next to :func:`recovery`.
"""

from __future__ import annotations

import datetime as _dt
import os
import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from glmkit.report.markup import _esc, _get, _section, _table, _version
from glmkit.report.sections import (_STATISTIC_LABELS, _STATISTIC_UNITS, _Corrected,
                                     _clusters_section, _design_section, _explore_section,
                                     _how_to_read_section, _methods_section, _null_section,
                                     _provenance_section, _qc_section, _results_section,
                                     _summary_section)
from glmkit._util import logger
from glmkit.errors import ParameterError, ReportError
from glmkit.report.runfolder import RunManifest, notebook_record, result_maps, write_run_folder

__all__ = ["write_report", "recovery"]

_SECTIONS = (
    ("summary", "Summary"), ("how-to-read", "How to read"), ("methods", "Methods"),
    ("qc", "Quality control"), ("design", "Design"), ("results", "Results"),
    ("clusters", "Clusters"), ("null", "Null distributions"), ("recovery", "Recovery"),
    ("explore", "Explore"), ("provenance", "Provenance"),
)


# --------------------------------------------------------------------------------------
# recovery of a planted region
# --------------------------------------------------------------------------------------

def recovery(detected: Mapping[str, np.ndarray], truth: np.ndarray, affine: np.ndarray, *,
             far_mm: float = 10.0) -> pd.DataFrame:
    """Overlap of thresholded maps with a ground-truth region.

    Parameters
    ----------
    detected : mapping of str to ndarray of bool
        Name -> 3-D boolean array of detected (suprathreshold) voxels, on the grid of ``truth``.
    truth : ndarray of bool
        3-D boolean array of the planted region.
    affine : ndarray, shape (4, 4)
        Voxel-to-mm affine of the grid; distances use its voxel sizes.
    far_mm : float
        A false-positive voxel farther than this (in mm) from the planted region counts as far.

    Returns
    -------
    pandas.DataFrame
        One row per map, in input order: ``map``, ``detected`` (voxels), ``hits`` (true
        positives), ``false_positives``, ``far_false_positives``, ``max_distance_mm`` (largest
        distance of a detected voxel from the planted region, 0 if all hits, NaN if nothing
        detected), ``sensitivity`` (hits / planted voxels) and ``dice``
        (2 hits / (detected + planted); NaN when both are empty).

    Examples
    --------
    >>> truth = np.zeros((10, 1, 1), bool); truth[2:4] = True
    >>> found = np.zeros_like(truth); found[3:5] = True; found[9] = True
    >>> table = recovery({"m": found}, truth, np.diag([2.0, 2.0, 2.0, 1.0]), far_mm=5)
    >>> table.loc[0, ["detected", "hits", "false_positives", "far_false_positives"]].tolist()
    [3, 1, 2, 1]
    >>> float(table.loc[0, "dice"]), float(table.loc[0, "max_distance_mm"])
    (0.4, 12.0)
    """
    from scipy import ndimage

    truth = np.asarray(truth, dtype=bool)
    affine = np.asarray(affine, dtype=float)
    if truth.ndim != 3:
        raise ParameterError(
            f"recovery: truth must be a 3-D boolean array; got shape {truth.shape}")
    if affine.shape != (4, 4):
        raise ParameterError(f"recovery: affine must be 4x4; got shape {affine.shape}")
    if not far_mm >= 0:
        raise ParameterError(f"recovery: far_mm must be >= 0 (mm); got {far_mm!r}")
    voxel_size = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    n_true = int(truth.sum())
    if n_true:
        distance = ndimage.distance_transform_edt(~truth, sampling=voxel_size)
    else:
        distance = np.full(truth.shape, np.inf)
    rows = []
    for name, found in detected.items():
        found = np.asarray(found, dtype=bool)
        if found.shape != truth.shape:
            raise ParameterError(
                f"recovery: map {name!r} has shape {found.shape}, expected the truth's "
                f"{truth.shape}; resample it to the ground-truth grid first")
        n_found = int(found.sum())
        hits = int((found & truth).sum())
        false_pos = found & ~truth
        rows.append({
            "map": str(name),
            "detected": n_found,
            "hits": hits,
            "false_positives": int(false_pos.sum()),
            "far_false_positives": int((false_pos & (distance > far_mm)).sum()),
            "max_distance_mm": float(distance[found].max()) if n_found else float("nan"),
            "sensitivity": hits / n_true if n_true else float("nan"),
            "dice": 2 * hits / (n_found + n_true) if n_found + n_true else float("nan"),
        })
    columns = ["map", "detected", "hits", "false_positives", "far_false_positives",
               "max_distance_mm", "sensitivity", "dice"]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["far_mm"] = float(far_mm)
    table.attrs["n_truth"] = n_true
    return table


# --------------------------------------------------------------------------------------
# what the report needs from an AnalysisResult, gathered once
# --------------------------------------------------------------------------------------

def _check_result(result) -> None:
    missing = [name for name in ("settings", "dataset", "qc", "design", "contrast", "thresholds",
                                 "permutation", "clusters", "timings", "maps")
               if not hasattr(result, name)]
    if missing:
        raise ParameterError(
            f"write_report: result must be a glmkit.pipeline.AnalysisResult; the object given "
            f"({type(result).__name__}) lacks {', '.join(missing)}. Run "
            f"glmkit.pipeline.run_analysis(settings) and pass its result.")


def _prepare_out_dir(out_dir) -> Path:
    out = Path(out_dir)
    try:
        (out / "maps").mkdir(parents=True, exist_ok=True)
        probe = out / ".glmkit-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ReportError(
            f"write_report: cannot write the report folder {out} ({exc.strerror or exc}); "
            f"choose a writable out_dir or fix its permissions") from exc
    return out


def _collect_corrected(result, images: Mapping, alpha: float) -> list[_Corrected]:
    mask = np.asarray(images["mask"].get_fdata()) > 0
    logp_alpha = -np.log10(alpha)
    thresholds = result.thresholds or {}
    items: list[_Corrected] = []

    bonf = thresholds.get("bonferroni")
    z_bonf = _get(bonf, "threshold")
    items.append(_Corrected(
        "bonferroni", "Bonferroni (parametric)", "FWER", "logp_bonferroni",
        f"-log10 p<sub>Bonf</sub> &ge; {logp_alpha:.2f}"
        + (f" (z &gt; {z_bonf:.2f})" if z_bonf is not None else ""),
        mask & (np.asarray(images["logp_bonferroni"].get_fdata()) >= logp_alpha - 1e-12)))

    from glmkit.stats.statistics import get_statistic

    perm = result.permutation
    if perm is not None:
        for stat in perm.statistics:
            name = get_statistic(stat).map_name
            if name not in images:
                raise ReportError(f"write_report: result.maps() has no {name!r} for permutation "
                                  f"statistic {stat!r}; found {sorted(images)}")
            crit = float(perm.critical_value(stat, alpha=alpha))
            crit_text = f"; critical {_STATISTIC_UNITS.get(stat, stat)} = {crit:.3g}"
            items.append(_Corrected(
                stat, _STATISTIC_LABELS.get(stat, f"permutation {stat}"), "FWER", name,
                f"-log10 p<sub>FWER</sub> &ge; {logp_alpha:.2f}{crit_text}",
                mask & (np.asarray(images[name].get_fdata()) >= logp_alpha - 1e-12)))

    fdr = thresholds.get("fdr")
    z_fdr = _get(fdr, "threshold")
    items.append(_Corrected(
        "fdr", "Benjamini-Hochberg FDR (parametric)", "FDR", "z_fdr",
        f"z &gt; {z_fdr:.2f}" if z_fdr is not None and np.isfinite(z_fdr) else "no voxel passes",
        mask & (np.asarray(images["z_fdr"].get_fdata()) != 0)))
    return items


def _ground_truth(result, reference_img):
    path = _get(result.dataset, "ground_truth")
    if not path:
        return None
    import nibabel as nib

    truth_img = nib.load(os.fspath(path))
    if truth_img.shape[:3] != reference_img.shape[:3] or not np.allclose(
            truth_img.affine, reference_img.affine):
        from nilearn.image import resample_to_img

        truth_img = resample_to_img(truth_img, reference_img, interpolation="nearest",
                                    force_resample=True, copy_header=True)
    return np.asarray(truth_img.get_fdata()).reshape(reference_img.shape[:3]) > 0


# the recovery section: built here because it calls recovery (above)

def _planted_text(prov: dict) -> str:
    """The planted effect in words, from the demo's provenance (generic when unknown)."""
    region = prov.get("planted_region")
    if not isinstance(region, dict) or "center_mm" not in region:
        planted = {k: v for k, v in prov.items() if "plant" in str(k).lower()}
        return ("; ".join(f"{_esc(k)} = {_esc(v)}" for k, v in planted.items())
                if planted else "see the dataset description")
    centre = ", ".join(f"{float(c):g}" for c in region["center_mm"])
    radius = float(region.get("radius_mm", float("nan")))
    text = f"a sphere of radius {radius:g} mm centred at ({centre}) mm"
    if "n_voxels" in region:
        text += f", {int(region['n_voxels'])} voxels of the grid"
    if "effect_size" in prov:
        units = prov.get("effect_units", "")
        text += f"; effect {float(prov['effect_size']):g}" + (f" {_esc(units)}" if units else "")
    return text


def _recovery_section(result, items, images, far_mm: float) -> tuple[str, pd.DataFrame | None]:
    truth = _ground_truth(result, images["mask"])
    if truth is None:
        text = "<p>This dataset has no ground truth (only the simulated demo does).</p>"
        return _section("recovery", "Recovery of the planted effect", text), None
    mask = np.asarray(images["mask"].get_fdata()) > 0
    truth_in = truth & mask
    table = recovery({f"{it.error_rate}: {it.label}": it.significant for it in items},
                     truth_in, images["mask"].affine, far_mm=far_mm)
    prov = _get(result.dataset, "provenance", {}) or {}
    detail = _planted_text(prov)
    body = (
        f"<p>The demo cohort is simulated with a known planted association ({detail}). "
        f"{int(truth_in.sum())} planted voxels lie inside the analysis mask. For each corrected "
        f"map: voxels detected, hits (true positives), false positives, false positives farther "
        f"than {far_mm:g} mm from the planted region, the largest distance of a detected voxel "
        f"from it, sensitivity and Dice overlap. Smoothing spreads the effect beyond its border, "
        f"so near false positives are expected; far ones are not.</p>" + _table(table))
    return _section("recovery", "Recovery of the planted effect", body), table


# --------------------------------------------------------------------------------------
# the public entry point
# --------------------------------------------------------------------------------------

def _cut(settings, images, z: np.ndarray) -> tuple[tuple[float, float, float], str | None]:
    """The figures' cut: the run's ``cut_coords`` if its slices cross the mask, else the peak."""
    from glmkit.report.viewer import cut_in_view

    requested = tuple(_get(settings, "cut_coords", None) or (38, -17, -3))
    mask = np.asarray(images["mask"].get_fdata()) > 0
    cut, note = cut_in_view(requested, mask, images["z"].affine, z,
                            two_sided=bool(_get(settings, "two_sided", False)), label="z map")
    if note:
        logger.warning("report: %s", note)
    return cut, note


def _render_page(result, images, *, notebook_path=None, far_mm: float = 10.0) -> str:
    settings = result.settings
    alpha = float(_get(settings, "alpha", 0.05))
    contrast_name = str(_get(result.contrast, "name", _get(settings, "contrast", "contrast")))
    z = np.asarray(images["z"].get_fdata())
    affine = images["z"].affine
    cut_coords, cut_note = _cut(settings, images, z)
    items = _collect_corrected(result, images, alpha)
    recovery_html, recovered = _recovery_section(result, items, images, far_mm)
    sections = [
        _summary_section(result, items, z, affine, alpha, contrast_name, recovered),
        _how_to_read_section(alpha, int((np.asarray(images["mask"].get_fdata()) > 0).sum())),
        _methods_section(result, images, alpha, contrast_name),
        _qc_section(result),
        _design_section(result),
        _results_section(result, images, items, z, affine, alpha, cut_coords, cut_note),
        _clusters_section(result, items, z, affine),
        _null_section(result, alpha),
        recovery_html,
        _explore_section(result, cut_coords, contrast_name),
    ]
    nav = "".join(f'<a href="#{key}">{_esc(title)}</a>' for key, title in _SECTIONS)
    template = string.Template(
        resources.files("glmkit.report").joinpath("templates/report.html").read_text("utf-8"))
    css = resources.files("glmkit.report").joinpath("templates/report.css").read_text("utf-8")
    run_name = _get(settings, "run_name", "")
    title = f"glmkit report: {contrast_name}" + (f" ({run_name})" if run_name else "")
    dataset_name = _get(result.dataset, "name", "")

    def page(provenance_note: str) -> str:
        return template.substitute(
            title=_esc(title), css=css, nav=nav,
            subtitle=_esc(f"dataset {dataset_name} · contrast {contrast_name} · "
                          f"{len(tuple(_get(result.qc, 'kept', ())))} subjects"),
            body="\n".join(sections + [_provenance_section(result, notebook_path,
                                                           provenance_note)]),
            glmkit_version=_esc(_version("glmkit")),
            generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    draft = page("")
    size_mb = len(draft.encode("utf-8")) / 1e6
    return page(f"This page weighs about {size_mb:.1f} MB (figures and viewer data included).")


def write_report(result, out_dir, *, notebook_path=None) -> RunManifest:
    """Write the run folder of an analysis (report, maps, tables, records) and its manifest.

    The one writer of a run folder: ``glmkit run``'s notebook calls it, and the runner checks
    what it wrote against the manifest it returns.

    Parameters
    ----------
    result : glmkit.pipeline.AnalysisResult
        The finished analysis (from :func:`glmkit.pipeline.run_analysis`).
    out_dir : str or path-like
        Folder to write into (created if needed). Writes ``report.html``, ``params.json``,
        ``provenance.json``, ``summary.json``, ``design.csv`` (indexed by subject id),
        ``qc.csv``, ``clusters.csv``, ``maps/*.nii.gz`` (``mask``, ``z``, ``p``, ``effect``,
        ``z_fdr``, ``logp_bonferroni`` and one FWER map per permutation statistic, named by
        the registry: ``logp_maxt``, ``logp_cluster_size``, ``logp_cluster_mass``,
        ``logp_tfce``, ...) and, last, ``manifest.json``.
    notebook_path : str or path-like, optional
        The executed notebook of the run; its name and sha256 are recorded in
        ``provenance.json`` and shown in the report's provenance.

    Returns
    -------
    glmkit.report.runfolder.RunManifest
        Every file written with its size and sha256 (``manifest.report`` is the page's path).

    Raises
    ------
    ParameterError
        ``result`` is not an analysis result.
    ReportError
        ``out_dir`` cannot be written, ``notebook_path`` does not exist, or a map the folder
        promises is missing from ``result.maps()``.

    Notes
    -----
    The page is self-contained: figures are PNG ``data:`` URIs, CSS and JavaScript are inline,
    and it requests nothing from the network. FWER maps (Bonferroni, permutation max-T, cluster,
    TFCE) are compared with each other; the FDR map is reported on its own row.
    """
    _check_result(result)
    out = _prepare_out_dir(out_dir)
    notebook = notebook_record(notebook_path)
    images = result_maps(result)
    page = _render_page(result, images, notebook_path=notebook_path)
    manifest = write_run_folder(out, result, images, page, notebook=notebook)
    logger.info("report written to %s (%.1f MB; %s)", manifest.report,
                manifest.report.stat().st_size / 1e6, manifest.summary())
    return manifest
