"""The sections of the report page (:mod:`glmkit.report`), one builder per section.

Each ``*_section`` builder gathers what its template (``templates/sections/<name>.html``)
shows, as plain values, and returns a :class:`~glmkit.report.markup.Section`;
:func:`glmkit.report.page.render_page` lists them and the page's navigation follows the list.
Statistic names, labels, units, levels, methods text and citations come from the registry of
:mod:`glmkit.stats.statistics`; thresholds, clusters and null distributions from the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from glmkit.errors import ReportError
from glmkit.report.maps import label_clusters
from glmkit.report.markup import Section, attr, coords, fmt, mm, settings_dict, table, version
from glmkit.report.templates import render

from glmkit.stats.statistics import REFERENCES, get_statistic, statistic_names
from glmkit.stats.tail import TAIL_THRESHOLD

INTERCEPT = "intercept"

__all__ = ["Threshold", "Corrected", "Citations", "methods_citations", "summary_section",
           "how_to_read_section",
           "methods_section", "qc_section", "design_section", "results_section",
           "clusters_section", "null_section", "explore_section", "provenance_section"]

#: the report's own citations (the statistics' are in :data:`glmkit.stats.statistics.REFERENCES`)
CITATIONS = {
    "nilearn": "Abraham A, Pedregosa F, Eickenberg M, et al. (2014). Machine learning for "
               "neuroimaging with scikit-learn. Front Neuroinform 8:14 (nilearn).",
    "bh1995": "Benjamini Y, Hochberg Y (1995). Controlling the false discovery rate: a practical "
              "and powerful approach to multiple testing. J R Stat Soc B 57:289-300.",
}
_SOFTWARE = ("glmkit", "nilearn", "numpy", "scipy", "nibabel", "pandas", "matplotlib")


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A corrected map's threshold, as the ``threshold`` macro writes it.

    FWER maps: ``-log10 p<sub>{sub}</sub> >= {logp}`` then `` (z > {z})`` and
    ``; critical {units} = {critical}`` when known; FDR (``logp`` None): ``z > {z}``, or "no
    voxel passes" when ``z`` is None. Numbers are already formatted.
    """

    logp: str | None = None
    sub: str = ""
    z: str | None = None
    critical: str | None = None
    units: str = ""


@dataclasses.dataclass(frozen=True, eq=False)
class Corrected:
    """One corrected (thresholded) map of the report, with its clusters."""

    key: str            # "fdr", "bonferroni", or a permutation statistic
    label: str          # human label
    error_rate: str     # "FWER" or "FDR"
    kind: str           # "parametric" or "permutation"
    map_name: str       # file in maps/
    threshold: Threshold
    significant: np.ndarray  # 3-D bool
    clusters: pd.DataFrame   # maps.label_clusters of the significant voxels, 1 = largest
    short: str = ""          # name in sentences ("max-T"), permutation statistics
    level: str = "voxel"     # "cluster": a significant result speaks of clusters as wholes

    @classmethod
    def of(cls, significant: np.ndarray, z: np.ndarray, **fields) -> Corrected:
        """A corrected map whose clusters are labelled on ``z`` (positive and negative apart)."""
        _, clusters = label_clusters(np.where(significant, z, 0.0), 0.0, two_sided=True)
        return cls(significant=significant, clusters=clusters, **fields)

    @property
    def n_voxels(self) -> int:
        return int(self.significant.sum())

    def peak(self, z: np.ndarray, affine: np.ndarray) -> tuple[float, str]:
        """The largest |z| of the significant voxels and its position, "(x, y, z)" mm."""
        values = np.where(self.significant, z, 0.0)
        at = np.unravel_index(int(np.argmax(np.abs(values))), values.shape)
        return float(values[at]), mm(coords(affine, at))


class Citations:
    """Citation numbers in order of first use, for one methods section.

    ``cite("a,b")`` returns ``"[1, 2]"``; ``cite.text(s)`` replaces the ``[@key]`` markers of a
    trusted text (a statistic's methods text); ``cite.references()`` lists the cited texts.

    Examples
    --------
    >>> cite = Citations({"a": "A (2001)", "b": "B (2002)"})
    >>> cite("b"), cite.text("x [@a,@b] y"), cite.references()
    ('[1]', 'x [2, 1] y', ['B (2002)', 'A (2001)'])
    """

    def __init__(self, references: Mapping[str, str]) -> None:
        self._references = dict(references)
        self._order: list[str] = []

    def __call__(self, keys: str) -> str:
        numbers = []
        for key in (k.strip().lstrip("@") for k in keys.split(",")):
            if key not in self._references:
                raise ReportError(f"methods text cites [@{key}], which no reference defines; "
                                  f"known keys: {sorted(self._references)}. Add it to the "
                                  "statistic's references")
            if key not in self._order:
                self._order.append(key)
            numbers.append(str(self._order.index(key) + 1))
        return "[" + ", ".join(numbers) + "]"

    def text(self, text: str) -> str:
        return re.sub(r"\[(@[^\]]+)\]", lambda match: self(match.group(1)), text)

    def references(self) -> list[str]:
        return [str(self._references[key]) for key in self._order]

    def cited(self) -> dict[str, str]:
        """Key -> reference text of what was cited, in citation order."""
        return {key: str(self._references[key]) for key in self._order}


# --------------------------------------------------------------------------------------
# summary, how to read, methods
# --------------------------------------------------------------------------------------

def _conjugate(verb: str, n: int) -> str:
    """``"show"``, or ``"shows"`` when ``n`` is 1."""
    return verb + "s" if n == 1 else verb


def _finding(item: Corrected, how: str, phrase: str, z, affine) -> str:
    """One sentence of the summary (plain text): what passes ``how`` and shows ``phrase``."""
    n, k = item.n_voxels, len(item.clusters)
    verb = "show"
    if not n:
        return f"At {how}, no voxel {_conjugate(verb, 1)} {phrase}."
    peak_z, at = item.peak(z, affine)
    peak = f"peak z = {peak_z:.1f} at {at} mm"
    if item.level == "cluster":  # cluster-level inference speaks of clusters, not of each voxel
        return (f"At {how}, {k} cluster{'s' if k != 1 else ''} ({n} voxels in all) "
                f"{_conjugate(verb, k)} {phrase} as a whole (a cluster-level statement, not "
                f"one about each voxel); {peak}.")
    return (f"At {how}, {n} voxel{'s' if n != 1 else ''} in {k} cluster{'s' if k != 1 else ''} "
            f"{_conjugate(verb, n)} {phrase}; {peak}.")


def _how(item: Corrected, pct: str, perm) -> str:
    if item.key == "fdr":
        return (f"FDR {pct} (Benjamini-Hochberg; a false discovery rate, not a family-wise "
                "error rate)")
    if item.key == "bonferroni":
        return f"FWER {pct} (Bonferroni, parametric)"
    return f"FWER {pct} ({item.short} permutation, {perm.n_perm} permutations)"


def summary_section(result, items, z, affine, alpha, contrast_name,
                    recovered: pd.DataFrame | None = None, words=None) -> Section:
    qc, settings = result.qc, result.settings
    kept, excluded = tuple(attr(qc, "kept", ())), tuple(attr(qc, "excluded", ()))
    two_sided = bool(attr(settings, "two_sided", False))
    phrase = words.phrase if words is not None else f"an effect of {contrast_name}"
    pct = f"{100 * alpha:g}%"
    lines = [(it, _finding(it, _how(it, pct, result.permutation), phrase, z, affine))
             for it in items]
    # the headline is the first permutation FWER map, else Bonferroni (parametric FWER)
    first = next((i for i, (it, _) in enumerate(lines)
                  if it.error_rate == "FWER" and it.key != "bonferroni"), 0)
    recovery = None
    if recovered is not None and len(recovered):
        row = recovered.iloc[first]
        recovery = {"label": lines[first][0].label, "hits": int(row["hits"]),
                    "n_truth": recovered.attrs.get("n_truth", "?"), "dice": f"{row['dice']:.2f}",
                    "false_positives": int(row["false_positives"]),
                    "far": int(row["far_false_positives"]),
                    "far_mm": f"{recovered.attrs.get('far_mm', 10.0):g}"}
    excluded_text = (f"{len(excluded)} excluded by quality control ({', '.join(excluded)})"
                     if excluded else "none excluded by quality control")
    body = render(
        "sections/summary.html", dataset=attr(result.dataset, "name", "?"),
        n_total=len(kept) + len(excluded), n_kept=len(kept), excluded=excluded_text,
        columns=[str(c) for c in result.design.matrix.columns],
        formula=attr(result.design, "formula"), contrast=contrast_name,
        tested=phrase,
        test=words.test if words is not None else f"{'two' if two_sided else 'one'}-sided test",
        fwhm=fmt(attr(settings, "smoothing_fwhm") or None), headline=lines[first][1],
        recovery=recovery, permutation=result.permutation is not None,
        others=[("fdr" if it.error_rate == "FDR" else "fwer", text)
                for i, (it, text) in enumerate(lines) if i != first])
    return Section("summary", "Summary", body)


def _and(words: list[str]) -> str:
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def how_to_read_section(alpha: float, n_vox: int) -> Section:
    specs = [get_statistic(name) for name in statistic_names()]
    body = render(
        "sections/how_to_read.html", n_vox=f"{n_vox:,}", alpha=f"{alpha:g}",
        logp_alpha=f"{-np.log10(alpha):.2f}", percentile=f"{100 * (1 - alpha):g}",
        fwer_methods=_and([s.short for s in specs]),
        cluster_level=", ".join(s.short for s in specs if s.level == "cluster"),
        voxel_level=_and([s.short for s in specs if s.level == "voxel"]))
    return Section("how-to-read", "How to read this report", body, nav="How to read")


def _scheme_text(perm, settings, columns: list[str], contrast_name: str) -> str:
    """How the null was built, in words with citation markers: how many resamplings of which
    kind, the seed (unless every one was enumerated) and the scheme."""
    scheme = str(attr(perm, "scheme", None) or attr(settings, "scheme", "freedman_lane"))
    method = attr(perm, "method", None)
    exact = bool(attr(perm, "exact", False))
    seed = attr(perm, "random_state", None) or attr(settings, "random_state")
    how = (f"all {perm.n_perm + 1:,} distinct " if exact else f"{perm.n_perm:,} ")
    when = ("(an exact test: every rearrangement, the observed one included)" if exact
            else f"(random_state = {seed})")
    if method == "sign_flip" and scheme == "sign_flip" and columns != [INTERCEPT]:
        return (f"{how}sign flips of the residuals of the model without the tested regressor "
                f"{when}, assuming independent, symmetric errors (PALM's -ise) [@winkler2014]")
    if method == "sign_flip" or (method is None and (
            columns == [contrast_name] or contrast_name.lower() == INTERCEPT)):
        return f"{how}sign flips of the data {when}, a one-sample test [@winkler2014]"
    if scheme == "freedman_lane":
        return (f"{how}permutations {when} in the Freedman-Lane scheme (permuting the residuals "
                "of the model without the tested regressor, as nilearn's permuted_ols, FSL "
                "randomise and PALM do) [@freedman1983,@winkler2014]")
    return (f"{how}permutations {when} in ter Braak's scheme (permuting the residuals of the "
            "full model) [@terbraak1992,@winkler2014]")


def _permutation_methods(perm, settings, columns: list[str], contrast_name: str) -> dict | None:
    if perm is None:
        return None
    blocks = (attr(perm, "info", None) or {}).get("exchangeability_blocks")
    grouped = blocks and attr(perm, "method", None) != "sign_flip" and attr(settings, "groups")
    nuisance_intercept = INTERCEPT in columns and len(columns) > 1
    return {"n_perm": f"{perm.n_perm:,}", "exact": bool(attr(perm, "exact", False)),
            "random_state": attr(perm, "random_state", None) or attr(settings, "random_state"),
            "scheme": _scheme_text(perm, settings, columns, contrast_name),
            "blocks": blocks if grouped else None, "groups": attr(settings, "groups"),
            "nilearn_note": nuisance_intercept and attr(perm, "method", None) != "sign_flip",
            "statistics": [get_statistic(stat).methods(perm) for stat in perm.statistics],
            "tail": _tail_text(perm)}


def _tail_text(perm) -> str | None:
    """Tail acceleration in words (``accel="tail"``): which statistics' small p-values come
    from the fitted tail, or None when the run was not accelerated."""
    if attr(perm, "accel", None) != "tail":
        return None
    fitted, kept = [], []
    for stat in perm.statistics:
        fit = perm.tail_fit(stat)
        label = get_statistic(stat).short
        if fit is None:
            kept.append(label)
        else:
            fitted.append(f"{label} (the top {fit.tail_fraction:.1%} of its null maxima, shape "
                          f"{fit.shape:.3g})")
    text = (f"FWER p values below {TAIL_THRESHOLD:g} were computed from a generalised Pareto "
            "distribution fitted to the upper tail of the null maxima (tail acceleration) "
            f"[@winkler2016], so they can be below 1/(n_perm + 1) = "
            f"{1 / (perm.n_perm + 1):.2g}")
    if fitted:
        text += f"; fitted for {_and(fitted)}"
    if kept:
        text += (f"; for {_and(kept)} no fit passed the goodness-of-fit test and the "
                 "permutation p values were kept")
    return text


def methods_citations(result) -> Citations:
    """The citation numbering of a run's methods: the report's, the engine's and every
    statistic's references."""
    perm = result.permutation
    references = {**CITATIONS, **REFERENCES}
    for stat in perm.statistics if perm is not None else ():
        references.update(get_statistic(stat).all_references)
    return Citations(references)


def methods_section(result, n_vox: int, alpha: float, contrast_name: str, words=None,
                    cite: Citations | None = None) -> Section:
    """The methods paragraph; ``cite`` numbers its citations (and keeps what was cited)."""
    settings, perm = result.settings, result.permutation
    kept = tuple(attr(result.qc, "kept", ()))
    excluded = tuple(attr(result.qc, "excluded", ()))
    columns = [str(c) for c in result.design.matrix.columns]
    body = render(
        "sections/methods.html", cite=cite if cite is not None else methods_citations(result),
        n_total=len(kept) + len(excluded), n_excluded=len(excluded), n_kept=len(kept),
        dataset=attr(result.dataset, "name", "?"), columns=columns,
        formula=attr(result.design, "formula"), n_vox=f"{n_vox:,}",
        fwhm=fmt(attr(settings, "smoothing_fwhm") or None), contrast=contrast_name,
        phrase=words.phrase if words is not None else None,
        test=words.test if words is not None else (
            f"{'two' if attr(settings, 'two_sided', False) else 'one'}-sided t test"),
        stat_type=attr(result.contrast, "stat_type", "t"), alpha=f"{alpha:g}",
        mask=attr(settings, "mask", None), qc_policy=attr(result.qc, "policy", None),
        permutation=_permutation_methods(perm, settings, columns, contrast_name),
        versions={p: version(p) for p in _SOFTWARE}, python=platform.python_version())
    return Section("methods", "Methods", body)


# --------------------------------------------------------------------------------------
# quality control and design
# --------------------------------------------------------------------------------------

def _qc_per_subject(qc_table: pd.DataFrame, excluded: list) -> pd.DataFrame:
    """One row per subject: status (excluded, flagged, kept) and reasons, excluded first."""
    problems = qc_table[qc_table["verdict"].astype(str) != "pass"]
    rows = []
    for subject in dict.fromkeys(qc_table["subject"]):
        sub = problems[problems["subject"] == subject]
        if subject in excluded or (sub["verdict"] == "exclude").any():
            status = "excluded"
        elif len(sub):
            status = "flagged"
        else:
            status = "kept"
        reasons = "; ".join(f"{c}: {r}" for c, r in zip(sub["check"], sub["reason"].astype(str)))
        rows.append({"subject": subject, "status": status,
                     "reasons": reasons or "all checks passed"})
    per_subject = pd.DataFrame(rows)
    rank = per_subject["status"].map({"excluded": 0, "flagged": 1, "kept": 2})
    return per_subject.assign(_rank=rank).sort_values(
        ["_rank"], kind="stable").drop(columns="_rank").reset_index(drop=True)


def qc_section(result) -> Section:
    qc_table = attr(result.qc, "table")
    if qc_table is None or len(qc_table) == 0:
        return Section("qc", "Quality control", render("sections/qc.html", checks=None))
    qc_table = qc_table.copy()
    qc_table["subject"] = qc_table["subject"].astype(str)
    per_subject = _qc_per_subject(qc_table, list(attr(result.qc, "excluded", ())))
    counts = per_subject["status"].value_counts()
    problem = (per_subject["status"] != "kept").to_numpy()
    checks = (qc_table.assign(verdict=qc_table["verdict"].astype(str))
              .groupby(["check", "verdict"]).size().unstack(fill_value=0).reset_index())
    body = render(
        "sections/qc.html", n_excluded=counts.get("excluded", 0),
        n_flagged=counts.get("flagged", 0), n_passed=counts.get("kept", 0),
        problems=table(per_subject[problem], row_classes=list(per_subject["status"][problem]))
        if problem.any() else None,
        clean=list(per_subject["subject"][~problem]), checks=table(checks))
    return Section("qc", "Quality control", body)


def design_section(result) -> Section:
    from glmkit.report import figures

    design = result.design
    matrix = design.matrix
    try:
        corr = design.correlation()
    except Exception:  # noqa: BLE001 - fall back to the plain correlation of the columns
        corr = matrix.corr()
    vif = attr(design, "vif")
    summary = pd.DataFrame({
        "column": [str(c) for c in matrix.columns],
        "mean": matrix.mean().to_numpy(float), "sd": matrix.std().to_numpy(float),
        "min": matrix.min().to_numpy(float), "max": matrix.max().to_numpy(float),
        "VIF": [float(vif[c]) if vif is not None and c in vif.index else float("nan")
                for c in matrix.columns]})
    body = render(
        "sections/design.html", figure_uri=figures.design_figure(
            matrix, corr, contrast=attr(result.contrast, "contrast"),
            contrast_name=str(attr(result.contrast, "name", ""))),
        n_rows=len(matrix), n_columns=matrix.shape[1], summary=table(summary),
        correlations=table(corr.astype(float).rename_axis("column"), index=True)
        if len(corr) > 1 else None)
    return Section("design", "Design", body)


# --------------------------------------------------------------------------------------
# results, clusters, null distributions
# --------------------------------------------------------------------------------------

def _card(item: Corrected, images, result, *, alpha, z_abs, cut_coords, two_sided) -> dict:
    """The slices and glass brain of one corrected map."""
    from glmkit.report import figures

    img = images[item.map_name]
    logp_alpha = -np.log10(alpha)
    if item.key == "fdr":
        thr = float(attr(result.thresholds.get("fdr"), "threshold", 0.0) or 0.0)
        if not np.isfinite(thr):
            thr = z_abs + 1
        title, unit, cmap, symmetric = f"FDR {alpha:g}: z", "z", "RdBu_r", True
        kwargs = dict(threshold=thr, vmax=z_abs)
    else:
        title, unit = f"FWER {alpha:g}: {item.label}", "-log10 p"
        cmap, symmetric = "autumn_r", False
        data = np.asarray(img.get_fdata())
        kwargs = dict(threshold=logp_alpha, vmax=max(float(np.nanmax(data)), logp_alpha + 0.1))
    slices = figures.stat_map_figure(img, cut_coords=cut_coords, title=title, cmap=cmap,
                                     symmetric=symmetric, **kwargs)
    glass = figures.glass_brain_figure(img, title=title, two_sided=two_sided and item.key == "fdr",
                                       cmap=None if item.key == "fdr" else "autumn_r", **kwargs)
    return {"item": item, "title": title, "unit": unit, "n": item.n_voxels, "slices": slices,
            "glass": glass}


def _comparison_row(item: Corrected, z, affine) -> dict:
    row = {"item": item, "n": item.n_voxels, "k": len(item.clusters)}
    if row["n"]:
        peak_z, row["peak_mm"] = item.peak(z, affine)
        row["peak_z"] = f"{peak_z:.2f}"
    return row


def results_section(result, images, items, z, affine, alpha, cut_coords,
                    cut_note: str | None = None) -> Section:
    from glmkit.report import figures

    fwer = [it for it in items if it.error_rate == "FWER"]
    fdr = [it for it in items if it.error_rate == "FDR"]
    groups = [(f"Family-wise error rate (FWER) {alpha:g}: compare these rows with each other",
               [_comparison_row(it, z, affine) for it in fwer]),
              (f"False discovery rate (FDR) {alpha:g}: a different error rate, not comparable "
               "with the FWER rows", [_comparison_row(it, z, affine) for it in fdr])]
    z_abs = float(np.nanmax(np.abs(z))) if z.size else 1.0
    options = dict(alpha=alpha, z_abs=z_abs, cut_coords=cut_coords,
                   two_sided=bool(attr(result.settings, "two_sided", False)))
    uncorrected = figures.stat_map_figure(images["z"], cut_coords=cut_coords, threshold=3.09,
                                          vmax=z_abs, title="z (uncorrected, |z| > 3.09)")
    body = render(
        "sections/results.html", groups=groups,
        cut=", ".join(f"{round(c, 1):g}" for c in cut_coords),
        cut_note=cut_note[0].upper() + cut_note[1:] if cut_note else None,
        fwer_cards=[_card(it, images, result, **options) for it in fwer],
        fdr_cards=[_card(it, images, result, **options) for it in fdr], uncorrected=uncorrected)
    return Section("results", "Results: parametric and permutation side by side", body,
                   nav="Results")


def _cluster_summary(item: Corrected, z: np.ndarray, affine: np.ndarray) -> pd.DataFrame:
    """The clusters of a corrected map: size, volume and z peak (mm), largest first."""
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    peaks = np.array([coords(affine, ijk) for ijk in
                      item.clusters[["i", "j", "k"]].to_numpy()]).reshape(-1, 3)
    return pd.DataFrame({
        "cluster": item.clusters["cluster"].to_numpy(),
        "voxels": item.clusters["size"].to_numpy(),
        "volume_mm3": item.clusters["size"].to_numpy() * voxel_volume,
        "peak_z": item.clusters["peak"].to_numpy(dtype=float),
        "peak_x (mm)": peaks[:, 0], "peak_y (mm)": peaks[:, 1], "peak_z (mm)": peaks[:, 2]})


def clusters_section(result, items, z, affine) -> Section:
    clusters = result.clusters
    control = attr(result.settings, "height_control", None) or "fdr"
    control_z = attr((result.thresholds or {}).get(control), "threshold")
    body = render(
        "sections/clusters.html", control=control,
        control_z=None if control_z is None else f"{control_z:.2f}",
        run_table=table(clusters, max_rows=60) if clusters is not None and len(clusters)
        else None,
        per_map=[(it, table(_cluster_summary(it, z, affine), max_rows=30)
                  if len(it.clusters) else None) for it in items])
    return Section("clusters", "Clusters", body)


def null_section(result, alpha: float) -> Section:
    from glmkit.report import figures

    perm = result.permutation
    if perm is None:
        return Section("null", "Null distributions", render("sections/null.html", rows=None))
    shown, rows = [], []
    for stat in perm.statistics:
        label, _, units = get_statistic(stat).words(attr(perm, "stat_type", "t"))
        null = np.asarray(perm.null_max[stat], dtype=float)
        crit = float(perm.critical_value(stat, alpha=alpha))
        observed = float(null[0]) if null.size else float("nan")  # identity labelling first
        uri = figures.null_distribution_figure(null, critical_value=crit, observed=observed,
                                               alpha=alpha, title=label, xlabel=units)
        shown.append({"uri": uri, "label": label, "n": null.size})
        rows.append({"statistic": label, "permutations": int(perm.n_perm),
                     "critical value": crit, "observed maximum": observed,
                     "FWER p of observed maximum": _p_of(observed, null)})
    body = render("sections/null.html", rows=table(pd.DataFrame(rows)), figures=shown,
                  alpha=f"{alpha:g}")
    return Section("null", "Null distributions", body)


def _p_of(observed: float, null: np.ndarray) -> float:
    if not null.size or not np.isfinite(observed):
        return float("nan")
    return float(np.mean(null >= observed - 1e-12 * max(1.0, abs(observed))))


# --------------------------------------------------------------------------------------
# explore and provenance
# --------------------------------------------------------------------------------------

def explore_section(result, cut_coords, contrast_name: str) -> Section:
    """The kernel-free viewer of :mod:`glmkit.report.viewer`, fed with the run's maps."""
    from glmkit.report import maps, viewer

    specs, clusters = maps.maps_from_result(result)
    perm = result.permutation
    # the corrected maps at the run's alpha, opening on the headline map (as the explorer)
    specs, default = maps.run_view(specs, alpha=float(attr(result.settings, "alpha", 0.05)),
                                   statistics=perm.statistics if perm is not None else ())
    fragment = viewer.viewer_html(
        specs, clusters=clusters, cut_coords=tuple(cut_coords), default_map=default,
        background="mni152", title=f"{contrast_name}: maps of this run")
    return Section("explore", "Explore the maps", render("sections/explore.html",
                                                         fragment=fragment), nav="Explore")


def _input_hashes(prov: Mapping) -> dict[str, str]:
    """file -> sha256 of the dataset's provenance (its mappings of 64-hex-digit values)."""
    hashes = {}
    for value in prov.values():
        if isinstance(value, Mapping) and value and all(
                isinstance(h, str) and len(h) == 64 for h in value.values()):
            hashes.update({str(k): str(h) for k, h in value.items()})
    return hashes


def provenance_section(result, notebook_path, page_note: str) -> Section:
    settings = result.settings
    prov = attr(result.dataset, "provenance", {}) or {}
    hashes = _input_hashes(prov)
    combined = hashlib.sha256("\n".join(f"{k} {hashes[k]}" for k in sorted(hashes)).encode()
                              ).hexdigest() if hashes else None
    # the analysis parameters (the runner's own fields, such as its temporary output folder,
    # are not parameters of the analysis and are left out)
    fields = (settings.to_dict(runner=False) if hasattr(settings, "to_dict")
              else settings_dict(settings))
    other = {k: v for k, v in prov.items() if not isinstance(v, Mapping)}
    notebook = None
    if notebook_path is not None:
        digest = _sha256_or_none(Path(notebook_path))
        notebook = {"name": Path(notebook_path).name, "digest": digest[:16] if digest else None}
    body = render(
        "sections/provenance.html", random_state=attr(settings, "random_state"),
        n_hashes=len(hashes), digest=combined[:16] if combined else None,
        versions=table(pd.DataFrame({
            "package": [*_SOFTWARE, "python"],
            "version": [version(p) for p in _SOFTWARE] + [platform.python_version()]})),
        timings=table(pd.DataFrame({"stage": list(result.timings),
                                    "seconds": [float(t) for t in result.timings.values()]})),
        parameters=table(pd.DataFrame({"parameter": list(fields),
                                       "value": [repr(v) for v in fields.values()]})),
        dataset=table(pd.DataFrame({"field": list(other),
                                    "value": [str(v) for v in other.values()]})) if other else None,
        hashes=table(pd.DataFrame({"file": [Path(k).name for k in sorted(hashes)],
                                   "sha256": [hashes[k] for k in sorted(hashes)]}))
        if hashes else None,
        notebook=notebook, page_note=page_note)
    return Section("provenance", "Provenance", body)


def _sha256_or_none(path: Path) -> str | None:
    from glmkit._util import sha256_file

    try:
        return sha256_file(path)
    except OSError:
        return None
