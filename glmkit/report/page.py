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

The page is the template ``templates/report.html``: a list of
:class:`~glmkit.report.markup.Section` (built in :mod:`glmkit.report.sections`; the recovery
section here, next to :func:`recovery`) from which the navigation is derived.
:func:`_render_page` renders it without writing anything.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from glmkit._util import logger
from glmkit.errors import GlmkitError, ParameterError, ReportError, checked_arguments
from glmkit.report.maps import cut_in_view
from glmkit.report.markup import Section, attr, table, version
from glmkit.report.runfolder import RunManifest, notebook_record, result_maps, write_run_folder
from glmkit.report.sections import (Corrected, Threshold, clusters_section, design_section,
                                    explore_section, how_to_read_section, methods_citations,
                                    methods_section, null_section, provenance_section,
                                    qc_section, results_section, summary_section)
from glmkit.report.study import (mask_section, reproduce_section, subjects_section,
                                 warnings_section)
from glmkit.report.templates import render
from glmkit.report.words import TestWords, describe_test
from glmkit.stats.statistics import get_statistic

__all__ = ["write_report", "recovery"]


# --------------------------------------------------------------------------------------
# recovery of a planted region
# --------------------------------------------------------------------------------------

@checked_arguments(detected="mapping", truth="array", affine="affine", far_mm="number")
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


def _fwer_item(key: str, label: str, map_name: str, threshold: Threshold, images, mask, z,
               logp_alpha: float, **fields) -> Corrected:
    significant = mask & (np.asarray(images[map_name].get_fdata()) >= logp_alpha - 1e-12)
    return Corrected.of(significant, z, key=key, label=label, error_rate="FWER",
                        map_name=map_name, threshold=threshold, **fields)


def _collect_corrected(result, images: Mapping, alpha: float, z: np.ndarray) -> list[Corrected]:
    """The corrected maps of the run at ``alpha``: Bonferroni, each permutation statistic, FDR.

    Significance is read from the result's maps and thresholds (nothing is re-thresholded
    here); each statistic's label, units and level come from its registry entry.
    """
    mask = np.asarray(images["mask"].get_fdata()) > 0
    logp_alpha = -np.log10(alpha)
    thresholds = result.thresholds or {}
    z_bonf = attr(thresholds.get("bonferroni"), "threshold")
    items = [_fwer_item(
        "bonferroni", "Bonferroni (parametric)", "logp_bonferroni",
        Threshold(logp=f"{logp_alpha:.2f}", sub="Bonf",
                  z=None if z_bonf is None else f"{z_bonf:.2f}"),
        images, mask, z, logp_alpha, kind="parametric")]
    perm = result.permutation
    for stat in perm.statistics if perm is not None else ():
        spec = get_statistic(stat)
        if spec.map_name not in images:
            raise ReportError(f"write_report: result.maps() has no {spec.map_name!r} for "
                              f"permutation statistic {stat!r}; found {sorted(images)}")
        crit = float(perm.critical_value(stat, alpha=alpha))
        label, short, units = spec.words(attr(perm, "stat_type", "t"))
        items.append(_fwer_item(
            stat, label, spec.map_name,
            Threshold(logp=f"{logp_alpha:.2f}", sub="FWER", critical=f"{crit:.3g}", units=units),
            images, mask, z, logp_alpha, kind="permutation", short=short, level=spec.level))
    z_fdr = attr(thresholds.get("fdr"), "threshold")
    passes = z_fdr is not None and np.isfinite(z_fdr)
    items.append(Corrected.of(
        mask & (np.asarray(images["z_fdr"].get_fdata()) != 0), z, key="fdr",
        label="Benjamini-Hochberg FDR (parametric)", error_rate="FDR", kind="parametric",
        map_name="z_fdr", threshold=Threshold(z=f"{z_fdr:.2f}" if passes else None)))
    return items


def _ground_truth(result, reference_img):
    path = attr(result.dataset, "ground_truth")
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
    """The planted effect in words (plain text), from the demo's provenance."""
    region = prov.get("planted_region")
    if not isinstance(region, dict) or "center_mm" not in region:
        planted = {k: v for k, v in prov.items() if "plant" in str(k).lower()}
        return ("; ".join(f"{k} = {v}" for k, v in planted.items())
                if planted else "see the dataset description")
    centre = ", ".join(f"{float(c):g}" for c in region["center_mm"])
    radius = float(region.get("radius_mm", float("nan")))
    text = f"a sphere of radius {radius:g} mm centred at ({centre}) mm"
    if "n_voxels" in region:
        text += f", {int(region['n_voxels'])} voxels of the grid"
    if "effect_size" in prov:
        units = prov.get("effect_units", "")
        text += f"; effect {float(prov['effect_size']):g}" + (f" {units}" if units else "")
    return text


def _recovery_section(result, items, images, far_mm: float
                      ) -> tuple[Section | None, pd.DataFrame | None]:
    """The recovery of a planted effect, when the dataset has a ground truth (else None)."""
    title = "Recovery of the planted effect"
    truth = _ground_truth(result, images["mask"])
    if truth is None:
        return None, None
    truth_in = truth & (np.asarray(images["mask"].get_fdata()) > 0)
    found = recovery({f"{it.error_rate}: {it.label}": it.significant for it in items},
                     truth_in, images["mask"].affine, far_mm=far_mm)
    body = render("sections/recovery.html", table=table(found), far_mm=f"{far_mm:g}",
                  planted=_planted_text(attr(result.dataset, "provenance", {}) or {}),
                  n_inside=int(truth_in.sum()))
    return Section("recovery", title, body, nav="Recovery"), found


# --------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------

def _cut(settings, images, z: np.ndarray) -> tuple[tuple[float, float, float], str | None]:
    """The figures' cut: the run's ``cut_coords`` if its slices cross the mask, else (or when
    the run sets none, as for a folder of maps) the peak of the z map."""
    requested = attr(settings, "cut_coords", None)
    mask = np.asarray(images["mask"].get_fdata()) > 0
    cut, note = cut_in_view(requested, mask, images["z"].affine, z,
                            two_sided=bool(attr(settings, "two_sided", False)), label="z map")
    if note:
        logger.warning("report: %s", note)
    return cut, note


def _sections(result, images, *, far_mm: float) -> list[Section]:
    """Every section but the provenance, in page order."""
    settings = result.settings
    alpha = float(attr(settings, "alpha", 0.05))
    contrast_name = str(attr(result.contrast, "name", attr(settings, "contrast", "contrast")))
    z = np.asarray(images["z"].get_fdata())
    affine = images["z"].affine
    n_vox = int((np.asarray(images["mask"].get_fdata()) > 0).sum())
    cut_coords, cut_note = _cut(settings, images, z)
    items = _collect_corrected(result, images, alpha, z)
    recovery_section, recovered = _recovery_section(result, items, images, far_mm)
    words = run_words(result)
    cite = methods_citations(result)
    methods = methods_section(result, n_vox, alpha, contrast_name, words, cite=cite)
    sections = [
        summary_section(result, items, z, affine, alpha, contrast_name, recovered, words),
        how_to_read_section(alpha, n_vox),
        methods,
        reproduce_section(result, cite.cited()),
        qc_section(result),
        subjects_section(result, cut_coords),
        mask_section(result, images),
        design_section(result),
        results_section(result, images, items, z, affine, alpha, cut_coords, cut_note),
        clusters_section(result, items, z, affine),
        null_section(result, alpha),
        recovery_section,
        explore_section(result, cut_coords, words.short),
        warnings_section(result),
    ]
    return [section for section in sections if section is not None]


def run_words(result) -> TestWords:
    """What the run tested, in words (a hand-built result with an odd contrast: its name)."""
    settings = result.settings
    contrast = attr(settings, "contrast", None) or attr(result.contrast, "name", "contrast")
    try:
        return describe_test([str(c) for c in result.design.matrix.columns], contrast,
                             two_sided=bool(attr(settings, "two_sided", False)),
                             levels=attr(result.design, "levels", None) or {},
                             within=attr(settings, "within", None))
    except GlmkitError:
        name = str(attr(result.contrast, "name", contrast))
        return TestWords(f"a positive value of the contrast {name}", name, "t test", "contrast")


def _render_page(result, images, *, notebook_path=None, far_mm: float = 10.0) -> str:
    """The report page of ``result`` (``images``: ``result.maps()``) as one HTML string."""
    settings = result.settings
    contrast_name = str(attr(result.contrast, "name", attr(settings, "contrast", "contrast")))
    sections = _sections(result, images, far_mm=far_mm)
    short = run_words(result).short
    run_name = attr(settings, "run_name", "")
    dataset_name = attr(result.dataset, "name", "")
    n_kept = len(tuple(attr(result.qc, "kept", ())))
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def page(provenance_note: str) -> str:
        return str(render(
            "report.html", sections=[*sections, provenance_section(result, notebook_path,
                                                                   provenance_note)],
            title=f"glmkit report: {short}" + (f" ({run_name})" if run_name else ""),
            subtitle=f"dataset {dataset_name} · contrast {contrast_name} · {n_kept} subjects",
            glmkit_version=version("glmkit"), generated=generated))

    size_mb = len(page("").encode("utf-8")) / 1e6
    return page(f"This page weighs about {size_mb:.1f} MB (figures and viewer data included).")


@checked_arguments(result="result", out_dir="path", notebook_path="path?")
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
