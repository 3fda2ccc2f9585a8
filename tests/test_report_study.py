"""The report at real-study size: reproduce and cite, warnings, the mask, every subject at a
glance, long tables folded, and a page that reads at 1400 px and at a phone's 390 px, checked
in headless Chromium (screenshots written next to the test's temporary files)."""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest

from glmkit import write_report
from glmkit.report.study import bibtex
from glmkit.report.templates import ENVIRONMENT
from glmkit.settings import RunSettings

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report(tmp_path_factory, glmkit_data_dir):
    from glmkit.pipeline import run_analysis

    # the runner's temporary folder (output_dir) must appear nowhere in what is written
    result = run_analysis(n_perm=99, statistics=("voxel", "cluster_size"), random_state=3,
                          output_dir="/somewhere/.run.tmp-abc123")
    return result, write_report(result, tmp_path_factory.mktemp("study") / "run").report


def _section(page: str, key: str) -> str:
    start = page.index(f'<section id="{key}">')
    return page[start:page.index("</section>", start)]


def test_command_line_is_shown_and_reproduces_the_settings(report):
    result, path = report
    section = _section(path.read_text(encoding="utf-8"), "reproduce")
    command = re.search(r'<pre class="command">(.*?)</pre>', section, re.S).group(1)
    import html

    argv = shlex.split(html.unescape(command))
    flags = dict(zip(argv[2::2], argv[3::2]))
    again = RunSettings.from_mapping({k[2:]: v for k, v in flags.items()})
    assert again.to_dict(runner=False) == result.settings.to_dict(runner=False)
    assert "@article{winkler2014," in section and "@article{bh1995," in section


def test_bibtex_of_the_references():
    text = bibtex({"smith2009": "Smith SM, Nichols TE (2009). Threshold-free cluster "
                                "enhancement. NeuroImage 44:83-98.",
                   "odd": "A reference in another form"})
    assert "@article{smith2009,\n  author = {Smith, S. M. and Nichols, T. E.},\n" in text
    assert "  pages = {83--98},\n}" in text
    assert "@misc{odd,\n  note = {A reference in another form},\n}" in text


def test_sections_for_a_study(report):
    result, path = report
    page = path.read_text(encoding="utf-8")
    warnings = _section(page, "warnings")
    assert ("None: no stage raised a warning." in warnings) == (not result.warnings)
    subjects = _section(page, "subjects")
    assert subjects.count('<figure class="tile') == len(result.dataset.maps)
    assert subjects.count('class="tile excluded"') == len(result.qc.excluded)
    flagged_only = set(result.qc.flags()["subject"]) - set(result.qc.excluded)
    assert subjects.count('class="tile flagged"') == len(flagged_only) > 0
    mask = _section(page, "mask")
    n_mask = int((np.asarray(result.model.mask_img.dataobj) > 0).sum())
    assert f"{n_mask:,} voxels" in mask and "data:image/png;base64," in mask
    assert '<section id="recovery">' in page  # the demo has a ground truth
    assert ".tmp-" not in page


def test_long_tables_show_twenty_rows_and_fold_the_rest():
    import pandas as pd

    from glmkit.report.markup import table

    t = table(pd.DataFrame({"cluster": range(1, 46), "voxels": range(45, 0, -1)}))
    html = ENVIRONMENT.from_string('{% from "macros.html" import data_table %}'
                                   "{{ data_table(t) }}").render(t=t)
    first, rest = html.split("<details", 1)
    assert first.count("<tr>") == 1 + 20 and rest.count("<tr>") == 1 + 25
    assert "Show the other 25 rows" in rest


@pytest.mark.parametrize("width", [1400, 390])
def test_page_fits_the_screen_and_the_navigation_covers_nothing(browser, report, width,
                                                                tmp_path):
    _, path = report
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(path.as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        nav_bottom = page.evaluate("document.querySelector('nav.toc').getBoundingClientRect()"
                                   ".bottom")
        sticky = page.evaluate("getComputedStyle(document.querySelector('nav.toc')).position")
        assert sticky == ("sticky" if width > 700 else "static")
        keys = page.evaluate("Array.from(document.querySelectorAll('nav.toc a'))"
                             ".map(a => a.getAttribute('href').slice(1))")
        assert {"reproduce", "subjects", "mask", "warnings"} <= set(keys)
        for key in keys:
            page.evaluate(f"document.getElementById('{key}').scrollIntoView()")
            top = page.evaluate(f"document.querySelector('#{key} h2').getBoundingClientRect()"
                                ".top")
            covered = page.evaluate("document.querySelector('nav.toc').getBoundingClientRect()"
                                    ".bottom") if sticky == "sticky" else 0
            assert top >= covered - 1, (key, top, covered, nav_bottom)
        qc_rows = page.evaluate("Array.from(document.querySelectorAll('#qc table.data tbody tr'))"
                                ".filter(r => r.offsetParent !== null).length")
        assert qc_rows <= 20 + 20  # per-subject table folded (checks table rows are few)
        page.evaluate("document.getElementById('subjects').scrollIntoView()")
        shot = tmp_path / f"report_{width}.png"
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
    finally:
        page.close()


def test_a_folder_without_cut_coords_is_cut_at_its_peak_not_at_the_demos(tmp_path):
    """The demo's reference cut (38, -17, -3) is a built-in dataset's default: a folder of maps
    whose effect lies elsewhere is shown at its own z peak (report figures and viewer alike),
    and no 'cut moved' note is written, since none was asked for."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from glmkit import RunSettings, run_analysis, write_report
    from glmkit.data import DEFAULT_CUT_COORDS

    rng = np.random.default_rng(8)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -40.0  # a 21^3 grid from -40 to 40 mm: the demo's cut is inside it
    g = np.indices((21, 21, 21))
    blob = np.exp(-((g - np.array([4, 15, 16])[:, None, None, None]) ** 2).sum(0) / 4.0)
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(10):
        data = rng.standard_normal((21, 21, 21)) + 4 * blob
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), maps / f"sub-{i:02d}.nii.gz")
    pd.DataFrame({"subject": [f"sub-{i:02d}" for i in range(10)]}).to_csv(
        tmp_path / "t.tsv", sep="\t", index=False)
    settings = RunSettings(dataset=str(maps), table=str(tmp_path / "t.tsv"), covariates=(),
                           contrast="intercept", smoothing_fwhm=None, n_perm=19, random_state=0)
    assert settings.cut_coords is None
    result = run_analysis(settings)
    z = result.contrast.to_nifti("z")
    peak = np.unravel_index(int(np.nanargmax(z.get_fdata())), z.shape)
    peak_mm = tuple(float(v) for v in (z.affine @ np.r_[peak, 1.0])[:3])
    assert peak_mm != DEFAULT_CUT_COORDS
    html = write_report(result, tmp_path / "run").report.read_text(encoding="utf-8")
    shown = ", ".join(f"{round(c, 1):g}" for c in peak_mm)
    assert f"Slices at ({shown}) mm" in html
    assert "38, -17, -3" not in html and "lies outside the data" not in html
