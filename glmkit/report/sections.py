"""The sections of the report page (:mod:`glmkit.report`), one builder per section.

Each ``_<name>_section`` returns one ``<section>`` of HTML; :func:`glmkit.report.write_report`
assembles them. The methods section numbers its citations with :func:`_cite`.
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

from glmkit.report.markup import (_cluster_summary, _coords, _esc, _figure, _fmt, _get, _mm,
                          _n_clusters, _section, _settings_dict, _table, _version)

_STATISTIC_LABELS = {
    "voxel": "permutation max-T (voxel level)",
    "cluster_size": "permutation cluster size",
    "cluster_mass": "permutation cluster mass",
    "tfce": "permutation TFCE",
}
_STATISTIC_SHORT = {
    "voxel": "max-T", "cluster_size": "cluster-size", "cluster_mass": "cluster-mass",
    "tfce": "TFCE",
}
_STATISTIC_UNITS = {
    "voxel": "maximum t over voxels",
    "cluster_size": "largest cluster size (voxels)",
    "cluster_mass": "largest cluster mass (sum of t)",
    "tfce": "maximum TFCE score",
}
_REFERENCES = {
    "nilearn": "Abraham A, Pedregosa F, Eickenberg M, et al. (2014). Machine learning for "
               "neuroimaging with scikit-learn. Front Neuroinform 8:14 (nilearn).",
    "nichols2002": "Nichols TE, Holmes AP (2002). Nonparametric permutation tests for functional "
                   "neuroimaging: a primer with examples. Hum Brain Mapp 15:1-25.",
    "winkler2014": "Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE (2014). Permutation "
                   "inference for the general linear model. NeuroImage 92:381-397.",
    "smith2009": "Smith SM, Nichols TE (2009). Threshold-free cluster enhancement: addressing "
                 "problems of smoothing, threshold dependence and localisation in cluster "
                 "inference. NeuroImage 44:83-98.",
    "bh1995": "Benjamini Y, Hochberg Y (1995). Controlling the false discovery rate: a practical "
              "and powerful approach to multiple testing. J R Stat Soc B 57:289-300.",
    "freedman1983": "Freedman D, Lane D (1983). A nonstochastic interpretation of reported "
                    "significance levels. J Bus Econ Stat 1:292-298.",
    "terbraak1992": "ter Braak CJF (1992). Permutation versus bootstrap significance tests in "
                    "multiple regression and ANOVA. In: Bootstrapping and Related Techniques, "
                    "Springer, 79-86.",
}
_SOFTWARE = ("glmkit", "nilearn", "numpy", "scipy", "nibabel", "pandas", "matplotlib")


@dataclasses.dataclass(frozen=True, eq=False)
class _Corrected:
    """One corrected (thresholded) map of the report."""

    key: str            # "fdr", "bonferroni", or a permutation statistic
    label: str          # human label
    error_rate: str     # "FWER" or "FDR"
    map_name: str       # file in maps/
    threshold: str      # the threshold in words
    significant: np.ndarray  # 3-D bool


# --------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------

def _describe(item: _Corrected, z: np.ndarray, affine: np.ndarray) -> tuple[int, int, str]:
    n = int(item.significant.sum())
    if not n:
        return 0, 0, ""
    values = np.where(item.significant, z, 0.0)
    peak = np.unravel_index(int(np.argmax(np.abs(values))), values.shape)
    return n, _n_clusters(item.significant), (
        f"peak z = {values[peak]:.1f} at {_mm(_coords(affine, peak))} mm")  # used as a clause


def _summary_section(result, items, z, affine, alpha, contrast_name,
                     recovered: pd.DataFrame | None = None) -> str:
    ds = result.dataset
    qc = result.qc
    kept, excluded = tuple(_get(qc, "kept", ())), tuple(_get(qc, "excluded", ()))
    n_total = len(kept) + len(excluded)
    design_cols = list(result.design.matrix.columns)
    formula = _get(result.design, "formula")
    perm = result.permutation
    two_sided = bool(_get(result.settings, "two_sided", False))
    verb = "are associated with" if two_sided else "show a positive association with"
    pct = f"{100 * alpha:g}%"

    lines = []
    for item in items:
        n, k, peak = _describe(item, z, affine)
        if item.key == "fdr":
            how = (f"FDR {pct} (Benjamini-Hochberg; a false discovery rate, not a family-wise "
                   f"error rate)")
        elif item.key == "bonferroni":
            how = f"FWER {pct} (Bonferroni, parametric)"
        else:
            how = (f"FWER {pct} ({_STATISTIC_SHORT.get(item.key, item.key)} permutation, "
                   f"{perm.n_perm} permutations)")
        if n and item.key in ("cluster_size", "cluster_mass"):
            # cluster-level inference speaks of clusters, not of each voxel in them
            verb1 = verb.replace("are ", "is ").replace("show ", "shows ") if k == 1 else verb
            text = (f"At {how}, {k} cluster{'s' if k != 1 else ''} ({n} voxels in all) {verb1} "
                    f"{_esc(contrast_name)} as a whole (a cluster-level statement, not one about "
                    f"each voxel); {peak}.")
        elif n:
            text = (f"At {how}, {n} voxel{'s' if n != 1 else ''} in {k} "
                    f"cluster{'s' if k != 1 else ''} {verb} {_esc(contrast_name)}; {peak}.")
        else:
            text = f"At {how}, no voxel {verb.replace('are ', 'is ').replace('show ', 'shows ')} " \
                   f"{_esc(contrast_name)}."
        lines.append((item, text))
    # the headline is the first permutation FWER map, else Bonferroni (parametric FWER)
    first = next((i for i, (it, _) in enumerate(lines)
                  if it.error_rate == "FWER" and it.key != "bonferroni"), 0)
    head_item, headline = lines[first]
    others = "".join(
        f'<li class="{"fdr" if it.error_rate == "FDR" else "fwer"}">{t}</li>'
        for i, (it, t) in enumerate(lines) if i != first)
    if recovered is not None and len(recovered):
        row = recovered.iloc[first]
        n_truth, far_mm = recovered.attrs.get("n_truth", "?"), recovered.attrs.get("far_mm", 10.0)
        others += (
            f'<li class="recovery">Simulated data with a planted effect: the '
            f"{_esc(head_item.label)} map finds {int(row['hits'])} of the {n_truth} planted voxels "
            f"(Dice {row['dice']:.2f}) with {int(row['false_positives'])} false-positive voxels, "
            f"{int(row['far_false_positives'])} of them farther than {far_mm:g} mm from it "
            f'(see <a href="#recovery">Recovery</a>).</li>')
    excluded_text = (f"{len(excluded)} excluded by quality control "
                     f"({', '.join(_esc(s) for s in excluded)})"
                     if excluded else "none excluded by quality control")
    body = (
        f"<p><b>Dataset</b>: {_esc(_get(ds, 'name', '?'))} &mdash; {n_total} subjects, "
        f"{len(kept)} analysed, {excluded_text}.</p>"
        f"<p><b>Design</b>: columns "
        f"{', '.join('<code>' + _esc(c) + '</code>' for c in design_cols)}"
        + (f" (formula <code>{_esc(formula)}</code>)" if formula else "")
        + f"; contrast <code>{_esc(contrast_name)}</code>, "
        f"{'two' if two_sided else 'one'}-sided; smoothing "
        f"{_fmt(_get(result.settings, 'smoothing_fwhm'))} mm FWHM.</p>"
        f'<p class="headline">{headline}</p>'
        f"<ul>{others}</ul>"
    )
    if perm is None:
        body += ('<p class="note">No permutation inference was run; only the parametric '
                 "Bonferroni map controls the FWER.</p>")
    return _section("summary", "Summary", body)


def _how_to_read_section(alpha: float, n_vox: int) -> str:
    a = f"{alpha:g}"
    body = f"""
<ul>
<li><b>z map</b>: for every voxel, the strength of the tested effect in standard-normal units
(positive = larger values with higher covariate). It is not corrected for the {n_vox:,}
voxels tested at once.</li>
<li><b>Family-wise error rate (FWER)</b>: the chance of <i>any</i> false positive voxel (or cluster)
in the whole map. Bonferroni, permutation max-T, cluster-size, cluster-mass and TFCE maps all
control it at {a}, so they can be compared with one another (rows shaded blue).</li>
<li><b>False discovery rate (FDR)</b>: the expected <i>proportion</i> of false positives among the
voxels reported. It is a weaker, different guarantee, shown in its own row (shaded orange); an FDR
map finding more voxels than an FWER map does not make it better: it answers another question
(nilearn's gallery example sets the two side by side; nilearn issue #3038).</li>
<li><b>-log10 p</b>: maps in <code>maps/logp_*.nii.gz</code> hold -log10 of the corrected p value;
{-np.log10(alpha):.2f} corresponds to p = {a}, 1 to p = 0.1, 2 to p = 0.01. Permutation p values
cannot go below 1/(number of permutations + 1).</li>
<li><b>Cluster-level statistics</b> (size, mass) say that a cluster as a whole contains signal,
not that every voxel in it does; TFCE and max-T make voxel-level statements.</li>
<li><b>Null distribution</b>: the largest statistic over the brain in each random relabelling;
its {100 * (1 - alpha):g}th percentile (red line) is the FWER threshold.</li>
</ul>"""
    return _section("how-to-read", "How to read this report", body)


def _cite(paragraph: str) -> tuple[str, list[str]]:
    """Replace ``[@key]`` / ``[@a,@b]`` markers with numbers in order of first use."""
    order: list[str] = []

    def number(match) -> str:
        keys = [k.strip().lstrip("@") for k in match.group(1).split(",")]
        for key in keys:
            if key not in order:
                order.append(key)
        return "[" + ", ".join(str(order.index(k) + 1) for k in keys) + "]"

    return re.sub(r"\[(@[^\]]+)\]", number, paragraph), order


def _methods_section(result, images, alpha, contrast_name) -> str:
    s = result.settings
    kept = tuple(_get(result.qc, "kept", ()))
    excluded = tuple(_get(result.qc, "excluded", ()))
    n_vox = int((np.asarray(images["mask"].get_fdata()) > 0).sum())
    cols = list(result.design.matrix.columns)
    formula = _get(result.design, "formula")
    perm = result.permutation
    two_sided = bool(_get(s, "two_sided", False))
    v = {p: _version(p) for p in _SOFTWARE}
    text = [
        f"Subject-level maps of {len(kept) + len(excluded)} subjects (dataset "
        f"<i>{_esc(_get(result.dataset, 'name', '?'))}</i>) were checked for missing covariates, "
        f"non-finite, empty or constant maps, grid mismatches, scale outliers and brain coverage; "
        f"{len(excluded)} were excluded and {len(kept)} analysed.",
        f"A mass-univariate general linear model (ordinary least squares) with design columns "
        f"{', '.join(_esc(c) for c in cols)}"
        + (f" (formula {_esc(formula)})" if formula else "")
        + f" was fitted at each of {n_vox:,} in-mask voxels after Gaussian smoothing of "
        f"{_fmt(_get(s, 'smoothing_fwhm'))} mm FWHM, using glmkit {v['glmkit']}, whose maps "
        f"equal those of nilearn's SecondLevelModel (nilearn {v['nilearn']}) [@nilearn].",
        f"The contrast <i>{_esc(contrast_name)}</i> was tested with a "
        f"{'two' if two_sided else 'one'}-sided t test and converted to z.",
        f"Parametric inference used the Benjamini-Hochberg false discovery rate at q = {alpha:g} "
        f"[@bh1995] and Bonferroni family-wise error control at {alpha:g} over {n_vox:,} voxels.",
    ]
    if perm is not None:
        scheme = str(_get(perm, "scheme", None) or _get(s, "scheme", "freedman_lane"))
        method = _get(perm, "method", None)
        if method == "sign_flip" or (method is None and (
                list(cols) == [contrast_name] or contrast_name.lower() == "intercept")):
            scheme_text = "sign-flipping of the data (one-sample test)"
        elif scheme == "freedman_lane":
            scheme_text = ("the Freedman-Lane scheme (permuting the residuals of the model "
                           "without the tested regressor, as nilearn's permuted_ols, FSL "
                           "randomise and PALM do) [@freedman1983,@winkler2014]")
        else:
            scheme_text = ("ter Braak's scheme (permuting the residuals of the full model) "
                           "[@terbraak1992,@winkler2014]")
        blocks = (_get(perm, "info", None) or {}).get("exchangeability_blocks")
        if blocks and method != "sign_flip" and _get(s, "groups", None):
            scheme_text += (f", within {blocks} exchangeability blocks defined by "
                            f"<i>{_esc(_get(s, 'groups'))}</i>")
        stats = []
        for stat in perm.statistics:
            if stat == "voxel":
                stats.append("voxel-wise maximum t (max-T)")
            elif stat in ("cluster_size", "cluster_mass"):
                stats.append(f"{stat.replace('_', ' ')} with a cluster-forming threshold of "
                             f"p &lt; {_fmt(_get(s, 'cluster_threshold', None) or 0.001)}")
            elif stat == "tfce":
                tfce = _get(s, "tfce") or {}
                e = tfce.get("E", 0.5) if isinstance(tfce, Mapping) else 0.5
                h = tfce.get("H", 2.0) if isinstance(tfce, Mapping) else 2.0
                stats.append(f"threshold-free cluster enhancement (TFCE, E = {e:g}, H = {h:g}) "
                             f"[@smith2009]")
            else:
                stats.append(_esc(stat))
        text.append(
            f"Non-parametric inference [@nichols2002,@winkler2014] used {perm.n_perm:,} "
            f"permutations (random_state = "
            f"{_esc(_get(perm, 'random_state', None) or _get(s, 'random_state'))}) with "
            f"{scheme_text}; statistics: {'; '.join(stats)}. Family-wise error corrected p values "
            f"compare each observed statistic with the distribution of the maximum over the brain "
            f"across permutations (the observed labelling included) and are reported as -log10 p.")
    text.append(f"Maps are thresholded at FWER or FDR {alpha:g}; FWER and FDR are different "
                f"error rates and are reported in separate rows.")
    paragraph, order = _cite(" ".join(text))
    software = ", ".join(f"{p} {_esc(v[p])}" for p in _SOFTWARE)
    body = (f"<p>{paragraph}</p><p class='note'>Software: {software}; Python "
            f"{_esc(platform.python_version())}.</p><h3>References</h3><ol class='refs'>"
            + "".join(f"<li>{_esc(_REFERENCES[key])}</li>" for key in order) + "</ol>")
    return _section("methods", "Methods", body)


def _qc_section(result) -> str:
    qc = result.qc
    table = _get(qc, "table")
    excluded = list(_get(qc, "excluded", ()))
    if table is None or len(table) == 0:
        return _section("qc", "Quality control", "<p>No quality-control table was recorded.</p>")
    table = table.copy()
    table["subject"] = table["subject"].astype(str)
    problems = table[table["verdict"].astype(str) != "pass"]
    rows = []
    for subject in dict.fromkeys(table["subject"]):
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
    per_subject = per_subject.assign(_rank=rank).sort_values(
        ["_rank"], kind="stable").drop(columns="_rank").reset_index(drop=True)
    counts = per_subject["status"].value_counts()
    classes = [s if s in ("excluded", "flagged") else "" for s in per_subject["status"]]
    checks = (table.assign(verdict=table["verdict"].astype(str))
              .groupby(["check", "verdict"]).size().unstack(fill_value=0).reset_index())
    problem = (per_subject["status"] != "kept").to_numpy()
    clean = per_subject[~problem]
    body = (
        f"<p>{counts.get('excluded', 0)} excluded, {counts.get('flagged', 0)} flagged but kept, "
        f"{counts.get('kept', 0)} passed every check. Excluded subjects come first; every check "
        f"of every subject is in <code>qc.csv</code>.</p>"
        + (_table(per_subject[problem], row_classes=[c for c, p in zip(classes, problem) if p])
           if problem.any() else "<p>No subject was excluded or flagged.</p>")
        + (f"<details><summary>{len(clean)} subjects passed every check</summary>"
           f"<p>{', '.join(_esc(s) for s in clean['subject'])}</p></details>" if len(clean) else "")
        + "<h3>Checks</h3>" + _table(checks)
    )
    return _section("qc", "Quality control", body)


def _design_section(result) -> str:
    from glmkit.report import figures as _figures

    design = result.design
    matrix = design.matrix
    try:
        corr = design.correlation()
    except Exception:  # noqa: BLE001 - fall back to the plain correlation of the columns
        corr = matrix.corr()
    vif = _get(design, "vif")
    fig = _figures.design_figure(matrix, corr)
    body = (
        _figure(fig, "Design matrix (one row per analysed subject, columns rescaled for display) "
                     "and correlations between columns.", "design matrix")
        + f"<p>{len(matrix)} subjects &times; {matrix.shape[1]} columns; the full matrix, indexed "
          f"by subject id, is in <code>design.csv</code>.</p>"
        + "<h3>Column summary</h3>"
        + _table(pd.DataFrame({
            "column": [str(c) for c in matrix.columns],
            "mean": matrix.mean().to_numpy(float), "sd": matrix.std().to_numpy(float),
            "min": matrix.min().to_numpy(float), "max": matrix.max().to_numpy(float),
            "VIF": [float(vif[c]) if vif is not None and c in vif.index else float("nan")
                    for c in matrix.columns]}))
        + '<p class="note">VIF (variance inflation factor) above ~10 means a column is largely '
          "explained by the others; its effect is then estimated imprecisely. n/a: intercept.</p>"
        + ("<h3>Correlations</h3>" + _table(corr.astype(float).rename_axis("column"), index=True)
           if len(corr) > 1 else
           "<p class='note'>One covariate besides the intercept: no correlation to show.</p>")
    )
    return _section("design", "Design", body)


def _results_section(result, images, items, z, affine, alpha, cut_coords,
                     cut_note: str | None = None) -> str:
    from glmkit.report import figures as _figures

    rows = []
    fwer = [it for it in items if it.error_rate == "FWER"]
    fdr = [it for it in items if it.error_rate == "FDR"]
    for group, members in ((f"Family-wise error rate (FWER) {alpha:g}: compare these rows with "
                            "each other", fwer),
                           (f"False discovery rate (FDR) {alpha:g}: a different error rate, "
                            "not comparable with the FWER rows", fdr)):
        rows.append(f'<tr class="group"><th colspan="7">{_esc(group)}</th></tr>')
        for it in members:
            n, k, _ = _describe(it, z, affine)
            if n:
                values = np.where(it.significant, z, 0.0)
                peak = np.unravel_index(int(np.argmax(np.abs(values))), values.shape)
                peak_z, peak_mm = f"{values[peak]:.2f}", _mm(_coords(affine, peak))
            else:
                peak_z = peak_mm = "&ndash;"
            cls = "fdr" if it.error_rate == "FDR" else "fwer"
            kind = "parametric" if it.key in ("fdr", "bonferroni") else "permutation"
            rows.append(
                f'<tr class="{cls}"><td>{it.error_rate}</td><td>{_esc(it.label)}</td>'
                f"<td>{kind}</td><td>{it.threshold}</td><td class='num'>{n}</td>"
                f"<td class='num'>{k}</td><td class='num'>{peak_z} {peak_mm}</td></tr>")
    comparison = (
        '<table class="data" id="comparison"><thead><tr><th>error rate</th><th>method</th>'
        "<th>kind</th><th>threshold</th><th>voxels</th><th>clusters</th>"
        "<th>peak z (x, y, z mm)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")

    logp_alpha = -np.log10(alpha)
    z_img = images["z"]
    two_sided = bool(_get(result.settings, "two_sided", False))
    z_abs = float(np.nanmax(np.abs(z))) if z.size else 1.0
    cut = ", ".join(f"{round(c, 1):g}" for c in cut_coords)

    def card(it: _Corrected) -> str:
        img = images[it.map_name]
        if it.key == "fdr":
            thr = float(_get(result.thresholds.get("fdr"), "threshold", 0.0) or 0.0)
            if not np.isfinite(thr):
                thr = z_abs + 1
            title, unit = f"FDR {alpha:g}: z", "z"
            kwargs = dict(threshold=thr, vmax=z_abs)
            cmap, symmetric = "RdBu_r", True
        else:
            title, unit = f"FWER {alpha:g}: {it.label}", "-log10 p"
            data = np.asarray(img.get_fdata())
            kwargs = dict(threshold=logp_alpha, vmax=max(float(np.nanmax(data)), logp_alpha + 0.1))
            cmap, symmetric = "autumn_r", False
        n = int(it.significant.sum())
        slices = _figures.stat_map_figure(img, cut_coords=cut_coords, title=title, cmap=cmap,
                                          symmetric=symmetric, **kwargs)
        glass = _figures.glass_brain_figure(
            img, title=title, two_sided=two_sided and it.key == "fdr",
            cmap=None if it.key == "fdr" else "autumn_r", **kwargs)
        caption = (f"<b>{it.error_rate} &ndash; {_esc(it.label)}</b>: {n} voxels pass "
                   f"({it.threshold}). Slices at ({cut}) mm and glass brain; colour = {unit}. "
                   f"File: <code>maps/{_esc(it.map_name)}.nii.gz</code>.")
        return (f'<figure class="{it.error_rate.lower()}">'
                f'<img src="{slices}" alt="{_esc(title)} slices">'
                f'<img src="{glass}" alt="{_esc(title)} glass brain">'
                f"<figcaption>{caption}</figcaption></figure>")

    uncorrected = _figures.stat_map_figure(
        z_img, cut_coords=cut_coords, threshold=3.09, vmax=z_abs,
        title="z (uncorrected, |z| > 3.09)")
    body = (
        "<p>Parametric (Bonferroni) and permutation maps control the same error rate (FWER) and "
        "are compared in the blue rows; the FDR map is a different error rate and has its own "
        "row.</p>" + comparison
        + (f'<p class="note" id="cut-note">Figures: {_esc(cut_note[0].upper() + cut_note[1:])} '
           "(the field of view of these maps does not contain the requested cut_coords).</p>"
           if cut_note else "")
        + "<h3>Family-wise error rate maps</h3><div class='grid'>"
        + "".join(card(it) for it in fwer) + "</div>"
        + "<h3>False discovery rate map</h3><div class='grid'>"
        + "".join(card(it) for it in fdr)
        + _figure(uncorrected, f"For orientation only: z map at |z| &gt; 3.09 (p &lt; 0.001 "
                               f"uncorrected), slices at ({cut}) mm; not an inference.",
                  "uncorrected z map")
        + "</div>"
    )
    return _section("results", "Results: parametric and permutation side by side", body)


def _clusters_section(result, items, z, affine) -> str:
    parts = []
    clusters = result.clusters
    if clusters is not None and len(clusters):
        control = _get(result.settings, "height_control", None) or "fdr"
        primary = (result.thresholds or {}).get(control)
        thr = _get(primary, "threshold")
        what = (f"clusters of the z map above the {_esc(control)} threshold"
                + (f" (z &gt; {thr:.2f})" if thr is not None else ""))
        parts.append(f"<h3>Cluster table of the run</h3><p class='note'>The run's "
                     f"<code>clusters.csv</code>: {what}, with sub-peaks.</p>"
                     + _table(clusters, max_rows=60))
    else:
        parts.append("<p>The run's cluster table (<code>clusters.csv</code>) is empty.</p>")
    for it in items:
        summary = _cluster_summary(it.significant, z, affine)
        head = f"<h3>{it.error_rate} &ndash; {_esc(it.label)}</h3>"
        parts.append(head + (_table(summary, max_rows=30) if len(summary)
                             else "<p>No significant voxel.</p>"))
    return _section("clusters", "Clusters", "".join(parts))


def _null_section(result, alpha: float) -> str:
    from glmkit.report import figures as _figures

    perm = result.permutation
    if perm is None:
        return _section("null", "Null distributions",
                        "<p>No permutation inference was run for this analysis.</p>")
    figures = []
    rows = []
    for stat in perm.statistics:
        null = np.asarray(perm.null_max[stat], dtype=float)
        crit = float(perm.critical_value(stat, alpha=alpha))
        observed = _observed_max(perm, stat, null)
        label = _STATISTIC_LABELS.get(stat, stat)
        uri = _figures.null_distribution_figure(
            null, critical_value=crit, observed=observed, alpha=alpha,
            title=label, xlabel=_STATISTIC_UNITS.get(stat, stat))
        figures.append(_figure(uri, f"{_esc(label)}: {null.size} maxima (observed labelling "
                                    f"included); red = critical value at FWER {alpha:g}.",
                               f"null distribution of {label}"))
        rows.append({"statistic": label, "permutations": int(perm.n_perm),
                     "critical value": crit, "observed maximum": observed,
                     "FWER p of observed maximum": _p_of(observed, null)})
    body = (_table(pd.DataFrame(rows)) + "<div class='grid'>" + "".join(figures) + "</div>")
    return _section("null", "Null distributions", body)


def _observed_max(perm, stat: str, null: np.ndarray) -> float:
    """The observed maximum: glmkit's null distributions hold it first (identity labelling)."""
    return float(null[0]) if null.size else float("nan")


def _p_of(observed: float, null: np.ndarray) -> float:
    if not null.size or not np.isfinite(observed):
        return float("nan")
    return float(np.mean(null >= observed - 1e-12 * max(1.0, abs(observed))))


def _explore_section(result, cut_coords, contrast_name: str) -> str:
    """The kernel-free viewer of :mod:`glmkit.report.viewer`, fed with the run's maps."""
    from glmkit.report import viewer

    specs, clusters = viewer.maps_from_result(result)
    alpha = float(_get(result.settings, "alpha", 0.05))
    if alpha in viewer.ALPHAS:  # open the corrected maps at the report's alpha
        for spec in specs.values():
            if spec.get("kind") in ("logp_bonferroni", "logp_fwer"):
                spec["alpha"] = alpha
    default = next((name for name in ("logp_maxt", "z_fdr", "z") if name in specs), None)
    fragment = viewer.viewer_html(
        specs, clusters=clusters, cut_coords=tuple(cut_coords), default_map=default,
        background="mni152", title=f"{contrast_name}: maps of this run")
    body = (
        "<p>Browse slices and re-threshold any map of this run (by value, or by a correction "
        "method and alpha), filter clusters by extent, and click a cluster row to jump to its "
        "peak. Everything runs in this page, without a Python kernel or a network connection. "
        "The figures above do not depend on it.</p>" + fragment)
    return _section("explore", "Explore the maps", body)


def _provenance_section(result, notebook_path, page_note: str) -> str:
    s = result.settings
    ds = result.dataset
    prov = _get(ds, "provenance", {}) or {}
    hashes = {}
    for key, value in prov.items():
        if isinstance(value, Mapping) and value and all(
                isinstance(h, str) and len(h) == 64 for h in value.values()):
            hashes.update({str(k): str(h) for k, h in value.items()})
    combined = hashlib.sha256("\n".join(f"{k} {hashes[k]}" for k in sorted(hashes)).encode()
                              ).hexdigest() if hashes else None
    versions = pd.DataFrame({
        "package": [*_SOFTWARE, "python"],
        "version": [_version(p) for p in _SOFTWARE] + [platform.python_version()]})
    timings = pd.DataFrame({"stage": list(result.timings),
                            "seconds": [float(t) for t in result.timings.values()]})
    settings = pd.DataFrame({"parameter": list(_settings_dict(s)),
                             "value": [repr(v) for v in _settings_dict(s).values()]})
    other = {k: v for k, v in prov.items() if not isinstance(v, Mapping)}
    parts = [
        f"<p>random_state = <b>{_esc(_get(s, 'random_state'))}</b>; "
        + (f"{len(hashes)} input files hashed (SHA-256); digest of all hashes "
           f"<code>{combined[:16]}&hellip;</code> (sha256 of the sorted 'file hash' lines)."
           if hashes else "no input hashes recorded.")
        + "</p>",
        "<h3>Software</h3>" + _table(versions),
        "<h3>Timings</h3>" + _table(timings),
        "<h3>Parameters</h3>" + _table(settings),
    ]
    if other:
        parts.append("<h3>Dataset</h3>" + _table(pd.DataFrame(
            {"field": list(other), "value": [str(v) for v in other.values()]})))
    if hashes:
        frame = pd.DataFrame({"file": [Path(k).name for k in sorted(hashes)],
                              "sha256": [hashes[k] for k in sorted(hashes)]})
        parts.append(f"<details><summary>All {len(hashes)} input hashes</summary>"
                     + _table(frame) + "</details>")
    if notebook_path is not None:
        nb = Path(notebook_path)
        digest = _sha256_or_none(nb)
        parts.append(f"<p>Notebook: <code>{_esc(nb.name)}</code>"
                     + (f" (sha256 <code>{digest[:16]}&hellip;</code>)" if digest else "") + "</p>")
    parts.append(f"<p class='note'>{page_note}</p>")
    return _section("provenance", "Provenance", "".join(parts))


def _sha256_or_none(path: Path) -> str | None:
    from glmkit._util import sha256_file

    try:
        return sha256_file(path)
    except OSError:
        return None
