"""Tests of glmkit.report: the self-contained HTML report of a run.

The report is built once per module from the real pipeline on the demo cohort (a few hundred
permutations of glmkit's engine), then inspected: files, sections, FWER-vs-FWER labelling,
self-containment (parsed, and loaded in headless Chromium with the network blocked), page
size, and recovery of the demo's planted region.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glmkit.errors import ParameterError, ReportError
from glmkit.report import recovery, write_report

# the file names the contract promises in maps/ (one per permutation statistic)
STATISTIC_MAPS = {"voxel": "logp_maxt", "cluster_size": "logp_cluster_size",
                  "cluster_mass": "logp_cluster_mass", "tfce": "logp_tfce"}
N_PERM = 300
STATISTICS = ("voxel", "cluster_size", "cluster_mass", "tfce")
MAX_PAGE_MB = 10.0
FAR_MM = 10.0


# --------------------------------------------------------------------------------------
# recovery: closed cases
# --------------------------------------------------------------------------------------

def _box(shape=(12, 12, 12)):
    return np.zeros(shape, dtype=bool)


def test_recovery_perfect_and_disjoint():
    truth = _box()
    truth[4:6, 4:6, 4:6] = True  # 8 voxels
    far = _box()
    far[10, 10, 10] = True
    near = _box()
    near[6, 4, 4] = True  # one voxel beside the region
    table = recovery({"same": truth, "far": far, "near": near, "none": _box()}, truth,
                     np.diag([3.0, 3.0, 3.0, 1.0]), far_mm=FAR_MM).set_index("map")
    assert table.loc["same", ["detected", "hits", "false_positives", "far_false_positives"]
                     ].tolist() == [8, 8, 0, 0]
    assert table.loc["same", "dice"] == 1.0 and table.loc["same", "sensitivity"] == 1.0
    assert table.loc["same", "max_distance_mm"] == 0.0
    # (10,10,10) is 5 voxels from (5,5,5) along each axis: sqrt(3) * 5 * 3 mm
    assert table.loc["far", "max_distance_mm"] == pytest.approx(np.sqrt(3) * 15)
    far_counts = table.loc["far", ["hits", "false_positives", "far_false_positives"]]
    assert far_counts.tolist() == [0, 1, 1]
    assert table.loc["far", "dice"] == 0.0
    assert table.loc["near", "max_distance_mm"] == pytest.approx(3.0)
    assert table.loc["near", ["false_positives", "far_false_positives"]].tolist() == [1, 0]
    assert table.loc["none", "detected"] == 0 and np.isnan(table.loc["none", "max_distance_mm"])
    assert table.loc["none", "dice"] == 0.0


def test_recovery_dice_and_anisotropic_distance():
    truth = _box((20, 1, 1))
    truth[0:4] = True
    found = _box((20, 1, 1))
    found[2:8] = True  # 2 hits, 4 false positives at 1..4 voxels from the region
    affine = np.diag([2.5, 1.0, 1.0, 1.0])
    row = recovery({"m": found}, truth, affine, far_mm=5.0).iloc[0]
    assert row["dice"] == pytest.approx(2 * 2 / (6 + 4))
    assert row["sensitivity"] == pytest.approx(0.5)
    assert row["max_distance_mm"] == pytest.approx(4 * 2.5)
    assert row["far_false_positives"] == 2  # 7.5 mm and 10 mm are farther than 5 mm


def test_recovery_empty_truth_and_bad_inputs():
    row = recovery({"m": _box()}, _box(), np.eye(4)).iloc[0]
    assert np.isnan(row["dice"]) and np.isnan(row["sensitivity"])
    with pytest.raises(ParameterError, match="shape"):
        recovery({"m": _box((3, 3, 3))}, _box(), np.eye(4))
    with pytest.raises(ParameterError, match="3-D"):
        recovery({}, np.zeros((3, 3)), np.eye(4))
    with pytest.raises(ParameterError, match="far_mm"):
        recovery({}, _box(), np.eye(4), far_mm=-1)


# --------------------------------------------------------------------------------------
# the real pipeline on the demo, once per module
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def analysis(demo):
    from glmkit.pipeline import run_analysis
    from glmkit.settings import RunSettings

    settings = RunSettings(dataset="demo", n_perm=N_PERM, statistics=STATISTICS,
                           random_state=2026, n_jobs=1)
    return run_analysis(settings)


@pytest.fixture(scope="module")
def manifest(analysis, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "demo"
    notebook = out.parent / "notebook.ipynb"
    notebook.write_text("{}")
    return write_report(analysis, out, notebook_path=notebook)


@pytest.fixture(scope="module")
def report(manifest) -> Path:
    return manifest.report


@pytest.fixture(scope="module")
def page(report) -> str:
    return report.read_text(encoding="utf-8")


class _Refs(HTMLParser):
    """Collect every URL-bearing attribute, tags and ids of a page."""

    URL_ATTRS = {"src", "href", "srcset", "poster", "data", "action", "formaction",
                 "background", "xlink:href", "manifest", "codebase", "cite", "ping"}

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[tuple[str, dict]] = []
        self.ids: set[str] = set()
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name, value in attrs.items():
            if name in self.URL_ATTRS and value is not None:
                self.urls.append((tag, name, value))
            if name == "style" and value:
                self.styles.append(value)
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def _parse(page: str) -> _Refs:
    parser = _Refs()
    parser.feed(page)
    return parser


def test_report_files(analysis, report):
    out = report.parent
    expected = {"mask", "z", "p", "effect", "z_fdr", "logp_bonferroni",
                *(STATISTIC_MAPS[s] for s in STATISTICS)}
    assert {p.name.removesuffix(".nii.gz") for p in (out / "maps").glob("*.nii.gz")} >= expected
    for name in expected:
        data = nib.load(out / "maps" / f"{name}.nii.gz").get_fdata()
        assert data.ndim == 3 and np.isfinite(data).all(), name
    design = pd.read_csv(out / "design.csv", index_col=0)
    assert design.index.name == "subject"
    assert list(design.index.astype(str)) == list(analysis.qc.kept)
    assert list(design.columns) == list(analysis.design.matrix.columns)
    qc = pd.read_csv(out / "qc.csv")
    assert {"subject", "check", "verdict", "reason"} <= set(qc.columns)
    pd.read_csv(out / "clusters.csv")
    assert not list(out.glob(".*tmp*"))


def test_manifest_lists_every_file_written_with_its_size_and_sha256(analysis, manifest):
    import hashlib
    import json

    from glmkit.report.runfolder import RunManifest, promised_files

    out = manifest.folder
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == set(manifest.paths) | {"manifest.json"}  # nothing else, nothing left out
    assert set(manifest.paths) == set(promised_files(STATISTICS))
    for record in manifest.files:
        data = (out / record.path).read_bytes()
        assert (record.size, record.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert manifest.report == out / "report.html" and manifest.paths[-1] == "report.html"
    on_disk = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in on_disk["files"]] == list(manifest.paths)
    assert RunManifest.read(out) == manifest and manifest.check() is manifest


def test_manifest_finds_changed_and_missing_files(manifest, tmp_path):
    from glmkit.report.runfolder import RunManifest

    copy = tmp_path / "copy"
    shutil.copytree(manifest.folder, copy)
    again = RunManifest.read(copy)
    assert again.problems() == []
    (copy / "summary.json").write_text((copy / "summary.json").read_text().replace("1", "2"))
    (copy / "maps" / "z.nii.gz").unlink()
    assert again.problems() == ["maps/z.nii.gz is missing",
                                "summary.json has another sha256 than the manifest's"]
    with pytest.raises(ReportError, match="does not match its manifest.json: maps/z.nii.gz"):
        again.check()
    (copy / "manifest.json").unlink()
    with pytest.raises(ReportError, match="manifest.json' does not exist"):
        RunManifest.read(copy)


def test_records_are_the_results_and_portable(analysis, manifest, report):
    """params.json, provenance.json and summary.json hold the run's settings, provenance
    (with the notebook's hash) and headline; no host name or machine path is recorded."""
    import hashlib
    import json
    import socket

    from glmkit.settings import RunSettings

    out = manifest.folder
    text = (out / "provenance.json").read_text()
    provenance = json.loads(text)
    assert socket.gethostname() not in text
    assert str(analysis.dataset.maps[0]) not in text  # no absolute machine path
    for package in ("glmkit", "numpy", "scipy", "nilearn", "nibabel", "pandas"):
        assert provenance["software"][package]
    assert provenance["python"]
    assert provenance["random_state"] == analysis.settings.random_state
    assert provenance["timings_s"] == analysis.timings
    hashes = provenance["dataset"]["provenance"]["sha256"]
    assert len(hashes) >= 94 and all(len(h) == 64 for h in hashes.values())
    notebook = out.parent / "notebook.ipynb"
    assert provenance["notebook"] == {"name": "notebook.ipynb",
                                      "sha256": hashlib.sha256(notebook.read_bytes()).hexdigest()}
    params = json.loads((out / "params.json").read_text())
    assert RunSettings(**params) == analysis.settings
    assert "output_dir" not in params and "notebook" not in params
    assert json.loads((out / "summary.json").read_text()) == analysis.headline()


def test_notebook_path_must_exist(analysis, tmp_path):
    with pytest.raises(ReportError, match=r"notebook_path=.*nope.ipynb' does not exist"):
        write_report(analysis, tmp_path / "x", notebook_path=tmp_path / "nope.ipynb")
    assert not (tmp_path / "x" / "manifest.json").exists()


SECTIONS = ("summary", "how-to-read", "methods", "qc", "design", "results", "clusters", "null",
            "recovery", "explore", "provenance")


def test_sections_and_headline(analysis, page):
    refs = _parse(page)
    assert set(SECTIONS) <= refs.ids
    # every in-page link points at an existing anchor
    for tag, name, value in refs.urls:
        if value.startswith("#"):
            assert value[1:] in refs.ids, value
    headline = re.search(r'<p class="headline">(.*?)</p>', page, re.S).group(1)
    assert re.search(rf"At FWER 5% \(max-T permutation, {N_PERM} permutations\), "
                     r"\d+ voxels in \d+ clusters? show a positive association with fluency; "
                     r"peak z = \d+\.\d at \(-?\d+, -?\d+, -?\d+\) mm", headline), headline
    # methods: parameters, versions and citations
    methods = page[page.index('id="methods"'):page.index('id="qc"')]
    for needle in (f"{N_PERM:,} permutations", "random_state = 2026", "5 mm FWHM",
                   "Nichols TE, Holmes AP (2002)", "Winkler AM", "Smith SM, Nichols TE (2009)",
                   "Benjamini Y, Hochberg Y (1995)", "Freedman D, Lane D (1983)",
                   "Freedman-Lane scheme", "nilearn 0.", "numpy "):
        assert needle in methods, needle
    # QC: excluded subjects listed first, with their reasons
    excluded = analysis.qc.excluded
    assert excluded, "the demo has defects QC must exclude"
    qc_section = page[page.index('id="qc"'):page.index('id="design"')]
    rows = re.findall(r'<tr( class="(\w+)")?><td>(S\d+)</td><td>(\w+)</td><td>(.*?)</td>',
                      qc_section)
    statuses = [r[3] for r in rows]
    assert statuses[:len(excluded)] == ["excluded"] * len(excluded)
    assert {r[2] for r in rows[:len(excluded)]} == set(excluded)
    assert all(r[4] and r[4] != "all checks passed" for r in rows[:len(excluded)])
    # null distributions with critical values, one per statistic
    null = page[page.index('id="null"'):page.index('id="recovery"')]
    assert null.count("<img") == len(STATISTICS)
    for stat in STATISTICS:
        crit = analysis.permutation.critical_value(stat, alpha=0.05)
        assert f"{crit:.4g}" in null, (stat, crit)
    # the kernel-free viewer, with the run's maps and controls
    explore = page[page.index('id="explore"'):page.index('id="provenance"')]
    for control in ("threshold", "method", "extent", "x", "y", "z", "mode", "map"):
        assert f'data-control="{control}"' in explore, control
    assert '"name":"logp_maxt"' in explore and '"default_map":"logp_maxt"' in explore
    # provenance: seed, versions, timings, hashes
    prov = page[page.index('id="provenance"'):]
    assert "random_state = <b>2026</b>" in prov and "input files hashed" in prov
    assert "notebook.ipynb" in prov


def test_fwer_compared_with_fwer_only(analysis, page):
    table = page[page.index('id="comparison"'):]
    table = table[:table.index("</table>")]
    groups = re.split(r'<tr class="group">', table)[1:]
    assert len(groups) == 2
    fwer_group, fdr_group = groups
    assert "Family-wise error rate (FWER)" in fwer_group
    assert "False discovery rate (FDR)" in fdr_group and "not comparable" in fdr_group
    fwer_rows = re.findall(r'<tr class="(\w+)"><td>(\w+)</td><td>(.*?)</td>', fwer_group)
    fdr_rows = re.findall(r'<tr class="(\w+)"><td>(\w+)</td><td>(.*?)</td>', fdr_group)
    assert {(c, e) for c, e, _ in fwer_rows} == {("fwer", "FWER")}
    assert [(c, e) for c, e, _ in fdr_rows] == [("fdr", "FDR")]
    methods = [m for _, _, m in fwer_rows]
    assert methods[0].startswith("Bonferroni")
    assert len(methods) == 1 + len(STATISTICS)
    assert not any("FDR" in m or "Benjamini" in m for m in methods)
    # no sentence of the page calls FDR more powerful than an FWER method
    assert not re.search(r"FDR[^.]*more powerful", page)
    summary = page[page.index('id="summary"'):page.index('id="how-to-read"')]
    fdr_line = re.search(r"<li class=\"fdr\">(.*?)</li>", summary).group(1)
    assert "not a family-wise error rate" in fdr_line


def test_self_contained(page):
    refs = _parse(page)
    assert refs.urls, "the parser found no URL at all: the test would be vacuous"
    for tag, name, value in refs.urls:
        assert value.startswith(("data:", "#")), (tag, name, value[:80])
    assert not [t for t, a in refs.tags if t == "link"]
    assert not [a for t, a in refs.tags if t == "script" and "src" in a]
    assert not [t for t, a in refs.tags if t in ("iframe", "object", "embed", "base")]
    css = "\n".join(refs.styles)
    assert "@import" not in css
    for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css):
        assert url.startswith(("data:", "#")), url
    # nothing that a script could fetch either
    assert not re.search(r"""https?://[^\s"'<>]*\.(js|css|png|jpg|svg|woff2?)""", page)
    assert not re.search(r"XMLHttpRequest|new WebSocket|importScripts|fetch\(\s*['\"]https?:", page)
    # figures are embedded PNGs; static figures do not need JavaScript
    images = [a.get("src", "") for t, a in refs.tags if t == "img"]
    assert len(images) >= 2 * (2 + len(STATISTICS)) + len(STATISTICS)
    assert all(src.startswith("data:image/png;base64,") for src in images)


def test_page_size(report, record_property):
    size_mb = report.stat().st_size / 1e6
    record_property("report_size_mb", round(size_mb, 3))
    assert size_mb < MAX_PAGE_MB, f"report.html is {size_mb:.1f} MB; keep it under {MAX_PAGE_MB} MB"


def _detections(analysis, report) -> dict[str, np.ndarray]:
    """Significance masks read back from the written maps (independent of the report's code)."""
    maps = report.parent / "maps"
    mask = nib.load(maps / "mask.nii.gz").get_fdata() > 0
    logp_alpha = -np.log10(0.05)
    out = {"FDR": mask & (nib.load(maps / "z_fdr.nii.gz").get_fdata() != 0),
           "Bonferroni": mask & (nib.load(maps / "logp_bonferroni.nii.gz").get_fdata()
                                 >= logp_alpha)}
    for stat in STATISTICS:
        data = nib.load(maps / f"{STATISTIC_MAPS[stat]}.nii.gz").get_fdata()
        out[stat] = mask & (data >= logp_alpha)
    return out


def test_recovers_planted_region(analysis, report, page):
    """FWER maps must find the planted region and nothing far from it (demo ground truth)."""
    ref = nib.load(report.parent / "maps" / "mask.nii.gz")
    truth_img = nib.load(analysis.dataset.ground_truth)
    assert truth_img.shape[:3] == ref.shape[:3] and np.allclose(truth_img.affine, ref.affine)
    truth = (truth_img.get_fdata() > 0) & (ref.get_fdata() > 0)
    assert truth.sum() > 10
    table = recovery(_detections(analysis, report), truth, ref.affine, far_mm=FAR_MM)
    table = table.set_index("map")
    print("\n" + table.to_string())
    for name in ("Bonferroni", *STATISTICS):
        row = table.loc[name]
        assert row["hits"] > 0, f"{name} found nothing in the planted region"
        assert row["far_false_positives"] == 0, (name, row.to_dict())
        assert row["max_distance_mm"] <= 15.0, (name, row.to_dict())
        assert row["hits"] / row["detected"] >= 0.5, (name, row.to_dict())
    assert table.loc["voxel", "dice"] > 0.2
    # the report shows the same numbers
    section = page[page.index('id="recovery"'):page.index('id="explore"')]
    assert "far" in section
    hits = int(table.loc["voxel", "hits"])
    assert re.search(rf"max-T \(voxel level\)</td><td class=\"num\">\d+</td>"
                     rf"<td class=\"num\">{hits}</td>", section)


# --------------------------------------------------------------------------------------
# a statistic registered by this module alone reaches every part of the report
# --------------------------------------------------------------------------------------

TOY_LABEL, TOY_SHORT, TOY_UNITS = "permutation max |t| (toy)", "max-|t|", "maximum |t| (toy units)"
TOY_REFERENCE = "Toy A, Test B (2026). A statistic registered by a test. J Tests 1:1-2."


@pytest.fixture
def toy_statistic():
    """A toy "maxabs" statistic in the registry for one test (removed afterwards)."""
    from glmkit.stats.statistics import StatisticSpec, register_statistic, unregister_statistic

    spec = register_statistic(StatisticSpec(
        name="maxabs", label=TOY_LABEL, short=TOY_SHORT, units=TOY_UNITS, level="cluster",
        observed=lambda t, ctx, cache=None: np.abs(t),
        null_max=lambda maps, ctx, cache: np.abs(maps).max(axis=1),
        methods=lambda result: "voxel-wise maximum of |t| (toy) [@toy2026]",
        references={"toy2026": TOY_REFERENCE}))
    yield spec
    unregister_statistic("maxabs")


class _WithStatistic:
    """An analysis result whose permutation stage also holds a hand-built statistic."""

    def __init__(self, base, permutation, maps):
        self._base, self.permutation, self._maps = base, permutation, maps

    def __getattr__(self, name):
        return getattr(self._base, name)

    def maps(self):
        return {**self._base.maps(), **self._maps}


def test_registered_statistic_appears_in_the_report(analysis, toy_statistic, tmp_path):
    """Label, units, level, methods text, citation, null figure and viewer map of a statistic
    known only to the registry (glmkit/report/ names no statistic)."""
    perm = analysis.permutation
    null = 2.0 * np.asarray(perm.null_max["voxel"])  # the toy's own null: twice max-T's
    toy_perm = dataclasses.replace(
        perm, statistics=(*perm.statistics, "maxabs"),
        null_max={**perm.null_max, "maxabs": null},
        logp_fwer={**perm.logp_fwer, "maxabs": perm.logp_fwer["voxel"]},
        observed={**perm.observed, "maxabs": np.abs(perm.t)})
    image = analysis.model.unmask(np.asarray(perm.logp_fwer["voxel"]))
    result = _WithStatistic(analysis, toy_perm, {toy_statistic.map_name: image})
    page = write_report(result, tmp_path / "toy").report.read_text(encoding="utf-8")
    assert (tmp_path / "toy" / "maps" / "logp_maxabs.nii.gz").is_file()
    crit = toy_perm.critical_value("maxabs", alpha=0.05)
    assert crit == pytest.approx(2 * perm.critical_value("voxel", alpha=0.05))
    comparison = page[page.index('id="comparison"'):]
    row = re.search(rf'<tr class="fwer"><td>FWER</td><td>{re.escape(TOY_LABEL)}</td>'
                    r"<td>permutation</td><td>(.*?)</td>", comparison).group(1)
    assert row.endswith(f"; critical {TOY_UNITS} = {crit:.3g}")
    summary = page[page.index('id="summary"'):page.index('id="how-to-read"')]
    assert f"At FWER 5% ({TOY_SHORT} permutation, {N_PERM} permutations), " in summary
    assert "as a whole (a cluster-level statement" in summary.split(TOY_SHORT + " permutation")[1]
    assert TOY_SHORT in page[page.index('id="how-to-read"'):page.index('id="methods"')]
    methods = page[page.index('id="methods"'):page.index('id="qc"')]
    cited = re.search(r"voxel-wise maximum of \|t\| \(toy\) \[(\d+)\]", methods)
    refs = re.findall(r"<li>(.*?)</li>", methods[methods.index('class="refs"'):])
    assert cited and refs[int(cited.group(1)) - 1] == TOY_REFERENCE
    null_section = page[page.index('id="null"'):page.index('id="recovery"')]
    assert f'alt="null distribution of {TOY_LABEL}"' in null_section
    assert f"<td>{TOY_LABEL}</td><td class=\"num\">{N_PERM}</td>" \
           f"<td class=\"num\">{crit:.4g}</td>" in null_section
    explore = page[page.index('id="explore"'):page.index('id="provenance"')]
    assert f'"name":"logp_maxabs","label":"-log10 p, FWER ({TOY_SHORT}, permutation)"' in explore


# strings that would run, load or be evaluated if a template or the page read them as code
SCRIPT, IMG, END, JINJA, DOLLAR = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>',
                                   "</script>", "{{ 7*7 }}", "${7*7}")
EVIL = (SCRIPT, IMG, END, JINJA, DOLLAR)
EXTERNAL = '<img src="http://example.com/x.png">'


class _Text(HTMLParser):
    """The page's text (outside scripts and styles), its tags and the text of its <title>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.title = ""
        self.tags: list[tuple[str, dict]] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style", "title"):
            self._stack.append(tag)

    def handle_endtag(self, tag):
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data):
        if not self._stack:
            self.text.append(data)
        elif self._stack[-1] == "title":
            self.title += data


def _text(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


def _evil_settings(settings, **fields):
    """A copy of run settings holding strings RunSettings would refuse (as an attacker's)."""
    import copy

    out = copy.copy(settings)
    for name, value in fields.items():
        object.__setattr__(out, name, value)
    return out


@pytest.fixture(scope="module")
def evil_report(analysis, tmp_path_factory) -> Path:
    """The demo run with every user string hostile; no permutation, no ground truth."""
    column, contrast = f"fluency{IMG}", f"fluency{IMG}"
    subjects = list(analysis.qc.excluded) + list(analysis.qc.kept)
    ids = {s: s + EVIL[i % len(EVIL)] for i, s in enumerate(subjects[:10])}
    qc_table = analysis.qc.table.copy()
    qc_table["subject"] = qc_table["subject"].astype(str).map(lambda s: ids.get(s, s))
    qc_table.loc[qc_table.index[0], ["verdict", "reason"]] = ["flag", SCRIPT + EXTERNAL]
    matrix = analysis.design.matrix.rename(columns={"fluency": column},
                                           index=lambda s: ids.get(str(s), str(s)))
    design = dataclasses.replace(analysis.design, matrix=matrix, formula=f"{column} + {DOLLAR}",
                                 vif=analysis.design.vif.rename({"fluency": column}))
    dataset_path = f"/data/{DOLLAR}{JINJA}{SCRIPT}"
    result = dataclasses.replace(
        analysis, permutation=None, design=design,
        contrast=dataclasses.replace(analysis.contrast, name=contrast),
        clusters=analysis.clusters.assign(**{IMG: SCRIPT}),
        settings=_evil_settings(analysis.settings, run_name=f"run{SCRIPT}{JINJA}",
                                dataset=dataset_path, contrast=contrast),
        dataset=dataclasses.replace(analysis.dataset, name=dataset_path, ground_truth=None),
        qc=dataclasses.replace(analysis.qc, table=qc_table,
                               kept=tuple(ids.get(s, s) for s in analysis.qc.kept),
                               excluded=tuple(ids.get(s, s) for s in analysis.qc.excluded)))
    return write_report(result, tmp_path_factory.mktemp("evil") / "evil").report


def test_user_strings_escaped_and_no_permutation(evil_report):
    """Subject ids, column names, the contrast, the run name and the dataset path are text."""
    page = evil_report.read_text(encoding="utf-8")
    parsed = _text(page)
    text = "".join(parsed.text)
    for evil in (SCRIPT, IMG):
        assert evil not in page  # escaped everywhere, the viewer's JSON included
    assert page.count(END) == 2  # the viewer's own data and code blocks
    for evil in EVIL:  # ... and shown as the text they are
        assert evil in text, evil
    assert "run" + SCRIPT + JINJA in parsed.title
    assert f"fluency{IMG}" in text and f"/data/{DOLLAR}{JINJA}{SCRIPT}" in text
    assert "49" not in parsed.title  # {{ 7*7 }} was not evaluated
    assert not [a for t, a in parsed.tags if t == "img" and not a["src"].startswith("data:")]
    assert "example.com" not in repr(_parse(page).urls)
    # the only scripts are the viewer's, inside the Explore section
    explore = page.index('id="explore"'), page.index('id="provenance"')
    scripts = [m.start() for m in re.finditer(r"<script\b", page)]
    assert len(scripts) == 2 and all(explore[0] < s < explore[1] for s in scripts)
    assert "No permutation inference was run" in page
    assert 'id="recovery"' not in page  # no ground truth: no recovery section
    assert not (evil_report.parent / "maps" / "logp_maxt.nii.gz").exists()
    comparison = page[page.index('id="comparison"'):]
    comparison = comparison[:comparison.index("</table>")]
    assert comparison.count('<tr class="fwer">') == 1  # Bonferroni only
    assert comparison.count('<tr class="fdr">') == 1


def _dialogs_and_text(browser, path: Path) -> tuple[list[str], str, int, str]:
    """Open ``path``: the dialogs it raised, its body text, foreign <img> count, its title."""
    dialogs: list[str] = []
    context = browser.new_context()
    page = context.new_page()
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("data:", "file:"))
               else r.abort())
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_timeout(300)  # let onerror handlers and the viewer run
    text = page.locator("body").inner_text()
    foreign = page.evaluate("Array.from(document.images).filter(i => "
                            "!i.getAttribute('src').startsWith('data:')).length")
    title = page.title()
    context.close()
    return dialogs, text, foreign, title


@pytest.mark.browser
def test_user_strings_execute_nothing_in_chromium(evil_report, browser):
    dialogs, text, foreign, title = _dialogs_and_text(browser, evil_report)
    assert dialogs == []
    assert foreign == 0
    for evil in EVIL:
        assert evil in text, evil
    assert title == f"glmkit report: fluency{IMG} (run{SCRIPT}{JINJA})"


@pytest.fixture
def evil_index(tmp_path) -> Path:
    """A batch index of two runs with hostile names, parameters and statuses."""
    from glmkit.run import write_index
    from glmkit.settings import RunSettings

    reports = tmp_path / "reports"
    good = _evil_settings(RunSettings(reports_dir=str(reports), n_perm=10),
                          run_name=f"a{IMG}{JINJA}", dataset=f"/data/{DOLLAR}{SCRIPT}")
    bad = _evil_settings(RunSettings(reports_dir=str(reports), n_perm=20),
                         run_name=f"b{SCRIPT}{DOLLAR}", contrast=f"fluency{END}")
    good.run_dir.mkdir(parents=True)
    (good.run_dir / "report.html").write_text("<p>run</p>")
    (good.run_dir / "summary.json").write_text(
        '{"n_kept": 3, "n_subjects": 4, "n_voxels": 10, "suprathreshold": {"fdr": 2}, '
        '"peak_z": 4.5, "peak_xyz_mm": [1, 2, 3]}')
    return write_index(reports, [good, bad], {good.run_name: "ok",
                                              bad.run_name: f"failed: {SCRIPT}{IMG}"})


def test_batch_index_escapes_user_strings(evil_index):
    page = evil_index.read_text(encoding="utf-8")
    parsed = _text(page)
    text = "".join(parsed.text)
    for evil in (SCRIPT, IMG, END):
        assert evil not in page
    for evil in EVIL:
        assert evil in text, evil
    assert not [t for t, _ in parsed.tags if t in ("script", "img")]
    links = [a["href"] for t, a in parsed.tags if t == "a"]
    assert links == ["a%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E%7B%7B%207*7%20%7D%7D/report.html"]


@pytest.mark.browser
def test_batch_index_executes_nothing_in_chromium(evil_index, browser):
    dialogs, text, foreign, _ = _dialogs_and_text(browser, evil_index)
    assert dialogs == [] and foreign == 0
    for evil in EVIL:
        assert evil in text, evil


def test_bad_inputs(tmp_path, analysis):
    with pytest.raises(ParameterError, match="AnalysisResult"):
        write_report(object(), tmp_path / "x")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ReportError, match="cannot write the report folder"):
        write_report(analysis, blocker / "sub")


# --------------------------------------------------------------------------------------
# headless browser: zero network requests, no console error, readable without JavaScript
# --------------------------------------------------------------------------------------


@pytest.mark.browser
def test_browser_offline(report, tmp_path, browser):
    requests: list[str] = []
    errors: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(("data:", "file:")):
            r.continue_()
        else:
            requests.append(url)
            r.abort()

    for javascript in (True, False):
        context = browser.new_context(java_script_enabled=javascript,
                                      viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.route("**/*", route)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri(), wait_until="load")
        # every static figure decoded (they are <img>, not drawn by JavaScript)
        n_broken = page.evaluate(
            "Array.from(document.images)"
            ".filter(i => !i.complete || i.naturalWidth === 0).length")
        assert n_broken == 0
        assert page.locator("#summary .headline").inner_text().startswith("At FWER")
        if javascript:
            # the viewer (JavaScript) opens on the max-T FWER map at the report's alpha
            # and must count what the report's table (Python) counts
            status = page.locator('#explore [data-role="count"]').inner_text()
            found = re.search(r"(\d+) supra-threshold voxels in (\d+) cluster", status)
            assert found, status
            row = page.locator("#comparison tr.fwer", has_text="max-T").locator("td")
            assert (int(found.group(1)), int(found.group(2))) == (
                int(row.nth(4).inner_text()), int(row.nth(5).inner_text()))
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            target = os.environ.get("GLMKIT_REPORT_SCREENSHOTS")
            if target:
                folder = Path("reports") if target == "1" else Path(target)
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, folder / "report_test_screenshot.png")
        context.close()
    assert requests == [], f"the report tried to load {requests}"
    assert errors == [], errors


def test_recovery_section_describes_the_planted_region_in_words(report, demo):
    """The planted sphere from the demo's provenance, not a Python dict repr."""
    page = report.read_text()
    section = page[page.index('id="recovery"'):]
    region = demo.provenance["planted_region"]
    centre = ", ".join(f"{float(c):g}" for c in region["center_mm"])
    assert f"a sphere of radius {region['radius_mm']:g} mm centred at ({centre}) mm" in section
    assert "{" not in section[:section.index("<table")]
