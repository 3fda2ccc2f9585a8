"""The kernel-free viewer in real headless Chromium (Playwright), with every request blocked.

Each page is a standalone file holding viewer_html(...) fragments. Network requests other than
the page itself and data: URIs are aborted and recorded; the tests require none and no console
error. Screenshots go to the test's tmp folder (their paths are printed; run with -s to see).
"""

from __future__ import annotations

import base64
import re
import zlib

import numpy as np
import pandas as pd
import pytest

from glmkit.report.maps import label_clusters
from glmkit.report.viewer import result_viewer_html, viewer_html, viewer_payload

# Playwright and Chromium come from the ``browser`` fixture (tests/conftest.py): it skips
# outside CI when they are missing and fails in CI, so nothing is skipped here at import time.
pytestmark = pytest.mark.browser

AFFINE = np.array([[3.0, 0, 0, -78], [0, 3, 0, -111], [0, 0, 3, -51], [0, 0, 0, 1]])
SHAPE = (53, 63, 46)
PEAKS = ((38, -17, -3), (-40, -60, 20))
CLUSTERS = pd.DataFrame({"Cluster ID": ["1", "2"], "X": [39.0, -39.0], "Y": [-18.0, -60.0],
                         "Z": [-3.0, 21.0], "Peak Stat": [7.0, 5.0]})


@pytest.fixture(scope="module")
def synth(planted_z):
    z, mask = planted_z(np.random.default_rng(7), SHAPE, AFFINE, PEAKS)
    maps = {
        "mask": (mask.astype(float), AFFINE),
        "z": {"image": (z, AFFINE), "two_sided": False},
        "z_fdr": {"image": (np.where(z > 4.0, z, 0.0), AFFINE), "two_sided": False, "methods_from": "z"},
        "logp_bonferroni": (np.clip(z - 4.5, 0, None), AFFINE),
        "weak": {"image": (np.where(mask, 0.5, 0.0), AFFINE), "kind": "logp_fwer"},
    }
    return z, mask, maps


def _page(path, *fragments, title="glmkit viewer test"):
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>" + title
                    + "</title></head><body>" + "".join(fragments) + "</body></html>", encoding="utf-8")
    return path


class Session:
    """One page with blocked, recorded requests and collected console errors."""

    def __init__(self, browser, path, *, javascript=True):
        self.requests, self.errors = [], []
        self.uri = path.as_uri()
        self.context = browser.new_context(java_script_enabled=javascript,
                                           viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.page.route("**/*", self._route)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(self.uri, wait_until="load")
        if javascript:
            self.page.wait_for_selector(".glmkit-viewer[data-ready='1']", timeout=15000)

    def _route(self, route):
        url = route.request.url
        if url.startswith("data:") or url == self.uri:  # only the page itself and data: URIs
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    def close(self):
        self.context.close()
        assert self.requests == [], f"the page tried to load {self.requests}"
        assert self.errors == [], self.errors


@pytest.fixture
def session(browser, synth, tmp_path):
    _, _, maps = synth
    path = _page(tmp_path / "viewer.html",
                 viewer_html(maps, clusters=CLUSTERS, cut_coords=PEAKS[0], title="synthetic"))
    s = Session(browser, path)
    yield s
    s.close()


# ------------------------------------------------------------------------ helpers


def root(page, n=0):
    return page.locator(".glmkit-viewer").nth(n)


def ctl(page, name, kind=None, n=0):
    sel = f'[data-control="{name}"]' if kind is None else f'input[type={kind}][data-control="{name}"]'
    return root(page, n).locator(sel)


def count(page, n=0) -> int:
    return int(root(page, n).locator('[data-role="count"]').get_attribute("data-count"))


def canvas_url(page, view, n=0) -> str:
    return root(page, n).locator(f'canvas[data-view="{view}"]').evaluate("c => c.toDataURL()")


def cut(page, n=0) -> tuple[float, ...]:
    return tuple(float(v) for v in root(page, n).get_attribute("data-cut").split(","))


def set_threshold(page, value, n=0):
    box = ctl(page, "threshold", "number", n)
    box.fill(str(value))
    box.dispatch_event("change")


def decoded_values(maps, name):
    """The map's values as the page decodes them (float32), to predict exact counts."""
    payload = viewer_payload(maps)
    m = next(m for m in payload["maps"] if m["name"] == name)
    n = payload["n_mask"]
    b = np.frombuffer(zlib.decompress(base64.b64decode(m["data"])), np.uint8)
    codes = np.cumsum((b[:n].astype(np.uint32) << 8) | b[n:]) & 0xFFFF
    v = (m["offset"] + codes * m["scale"]).astype(np.float32)
    if m["zero_code"] is not None:
        v[codes == m["zero_code"]] = 0
    return v


# ------------------------------------------------------------------------ tests


def test_loads_offline_without_errors(session):
    page = session.page
    assert root(page).locator('[data-role="app"]').is_visible()
    for name in ("map", "method", "extent", "x", "y", "z", "mode"):
        assert ctl(page, name).count() == 1, name
    assert ctl(page, "threshold").count() == 2  # slider + number
    assert count(page) > 0
    assert root(page).locator('[data-role="empty"]').is_hidden()


def test_threshold_changes_pixels_and_count(session, synth):
    page = session.page
    z, mask, maps = synth
    values = decoded_values(maps, "z")
    seen = []
    for t in (2.5, 3.5, 5.0):
        set_threshold(page, t)
        expected = int(((values >= np.float32(t)) & (values != 0)).sum())
        assert count(page) == expected, t
        # the same count as the Python explorer's clusters on the original float values (+-1 voxel)
        assert abs(count(page) - int((label_clusters(z, t)[0] > 0).sum())) <= 1
        text = root(page).locator('[data-role="count"]').inner_text()
        assert text.startswith(f"{expected} supra-threshold voxels")
        seen.append((count(page), canvas_url(page, "z"), canvas_url(page, "x")))
    assert seen[0][0] > seen[1][0] > seen[2][0] > 0
    assert len({s[1] for s in seen}) == 3 and len({s[2] for s in seen}) == 3
    # the slider moves the threshold too
    ctl(page, "threshold", "range").fill("1.0")
    assert float(root(page).get_attribute("data-threshold")) == pytest.approx(1.0, abs=0.01)  # slider step
    assert count(page) > seen[0][0]


def test_sliders_move_the_cut(session):
    page = session.page
    assert cut(page) == (39.0, -18.0, -3.0)  # (38, -17, -3) -> nearest voxel centre
    before = {v: canvas_url(page, v) for v in "xyz"}
    ctl(page, "x").fill("-30")
    assert cut(page)[0] == -30.0
    assert canvas_url(page, "x") != before["x"]
    assert root(page).locator('[data-role="x-value"]').inner_text() == "-30"
    ctl(page, "y").fill("3")
    ctl(page, "z").fill("30")
    assert cut(page) == (-30.0, 3.0, 30.0)
    assert canvas_url(page, "y") != before["y"] and canvas_url(page, "z") != before["z"]


def test_cluster_rows_jump_to_peak(session):
    page = session.page
    ctl(page, "x").fill("0")
    rows = root(page).locator('tr[data-role="cluster-row"][data-source="report"]')
    assert rows.count() == 2
    rows.nth(1).click()
    assert cut(page) == (-39.0, -60.0, 21.0)
    # the live table (clusters at the current threshold) jumps too
    set_threshold(page, 3.0)
    live = root(page).locator('tr[data-role="cluster-row"][data-source="live"]')
    assert live.count() >= 2
    first = live.first
    xyz = tuple(float(first.get_attribute(f"data-{a}")) for a in "xyz")
    first.click()
    assert cut(page) == xyz
    assert min(np.abs(np.subtract(xyz, p)).max() for p in PEAKS) <= 3


def test_method_switch_updates_threshold(session, synth):
    from glmkit.report.maps import method_threshold

    page = session.page
    z, mask, _ = synth
    ctl(page, "method").select_option("uncorrected")
    ctl(page, "alpha").select_option("0.001")
    shown = float(ctl(page, "threshold", "number").input_value())
    assert shown == pytest.approx(method_threshold(z[mask], "z", "uncorrected", 0.001), abs=1e-4)
    assert "uncorrected p 0.001" in root(page).locator('[data-role="threshold-value"]').inner_text()
    ctl(page, "method").select_option("fdr")
    ctl(page, "alpha").select_option("0.05")
    fdr = method_threshold(z[mask], "z", "fdr", 0.05)
    assert float(ctl(page, "threshold", "number").input_value()) == pytest.approx(fdr, abs=1e-4)
    # no permutation map for z: the FWER entry exists (the "weak" map has one) but is hidden here
    fwer = ctl(page, "method").locator('option[value="fwer"]')
    assert fwer.count() == 1 and fwer.evaluate("o => o.hidden && o.disabled")
    ctl(page, "map").select_option(label="weak")
    assert not fwer.evaluate("o => o.hidden")


def test_no_permutation_map_no_fwer_option(browser, synth, tmp_path):
    _, _, maps = synth
    no_perm = {k: v for k, v in maps.items() if k != "weak"}
    s = Session(browser, _page(tmp_path / "noperm.html", viewer_html(no_perm)))
    options = ctl(s.page, "method").locator("option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["value", "uncorrected", "fdr", "bonferroni"]
    s.close()


def test_no_survivor_message_and_clamp(session):
    page = session.page
    empty = root(page).locator('[data-role="empty"]')
    ctl(page, "map").select_option(label="weak")  # 0.5 everywhere: FWER 0.1 needs > 1
    assert count(page) == 0
    assert empty.is_visible() and empty.inner_text() == "no voxel survives this threshold"
    ctl(page, "map").select_option(label="z")
    assert empty.is_hidden()
    set_threshold(page, 1000)
    note = root(page).locator('[data-role="note"]')
    assert note.is_visible() and "clamped" in note.inner_text()
    top = float(ctl(page, "threshold", "number").input_value())
    assert top < 1000 and count(page) == 1  # the peak voxel itself
    set_threshold(page, -2)
    assert "clamped to 0" in note.inner_text()


def test_extent_filter(session):
    page = session.page
    set_threshold(page, 3.0)
    n_all = count(page)
    sizes = [int(v) for v in root(page).locator('tr[data-source="live"] td:nth-child(2)').all_inner_texts()]
    box = ctl(page, "extent")
    box.fill(str(sizes[1] + 1))
    assert count(page) == sizes[0] < n_all
    box.fill(str(sizes[0] + 1))
    assert count(page) == 0 and root(page).locator('[data-role="empty"]').is_visible()


def test_hover_and_modes(session, tmp_path):
    page = session.page
    canvas = root(page).locator('canvas[data-view="z"]')
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    hover = root(page).locator('[data-role="hover"]').inner_text()
    assert re.search(r"x=-?\d+ y=-?\d+ z=-?\d+ mm\s+z = ", hover), hover
    for mode in ("x", "y", "z", "mosaic", "ortho"):
        ctl(page, "mode").select_option(mode)
        visible = [v for v in ("x", "y", "z", "mosaic")
                   if root(page).locator(f'canvas[data-view="{v}"]').is_visible()]
        assert visible == (["x", "y", "z"] if mode == "ortho" else [mode])
    ctl(page, "mode").select_option("mosaic")
    shot = tmp_path / "viewer_mosaic.png"
    root(page).screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 5_000


def test_two_viewers_coexist(browser, synth, tmp_path):
    _, _, maps = synth
    path = _page(tmp_path / "two.html", viewer_html(maps, title="one"), viewer_html(maps, title="two"))
    s = Session(browser, path)
    page = s.page
    assert page.locator(".glmkit-viewer[data-ready='1']").count() == 2
    before = count(page, 1)
    set_threshold(page, 2.0, n=0)
    assert count(page, 0) != before and count(page, 1) == before
    s.close()


def test_readable_without_javascript(browser, synth, tmp_path):
    _, _, maps = synth
    path = _page(tmp_path / "nojs.html", "<h1>Report</h1><p>static figures here</p>", viewer_html(maps))
    s = Session(browser, path, javascript=False)
    page = s.page
    assert page.locator("h1").inner_text() == "Report"
    assert "needs JavaScript" in page.locator(".glmkit-viewer").inner_text()
    assert root(page).locator('[data-role="app"]').is_hidden()
    s.close()


def test_screenshot_synthetic(session, tmp_path):
    page = session.page
    set_threshold(page, 3.0)
    shot = tmp_path / "viewer_synthetic.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


# ------------------------------------------------------------------------ the demo run


@pytest.fixture(scope="module")
def demo_result(glmkit_data_dir):
    from glmkit.pipeline import run_analysis

    return run_analysis(dataset="demo", n_perm=50, statistics=("voxel",), run_name="viewer-test")


@pytest.mark.slow
def test_demo_viewer(browser, demo_result, tmp_path):
    r = demo_result
    fragment = result_viewer_html(r, title="demo", background="mni152")
    print(f"demo viewer fragment: {len(fragment.encode()) / 1e3:.0f} kB")
    assert len(fragment.encode()) < 1_000_000
    s = Session(browser, _page(tmp_path / "demo.html", fragment))
    page = s.page
    fdr = r.thresholds["fdr"]
    assert ctl(page, "method").input_value() == "fdr"
    assert float(root(page).get_attribute("data-threshold")) == pytest.approx(fdr.threshold, rel=1e-9)
    assert count(page) == fdr.n_suprathreshold
    before = canvas_url(page, "z")
    set_threshold(page, 3.0)
    assert count(page) > fdr.n_suprathreshold and canvas_url(page, "z") != before
    row = root(page).locator('tr[data-role="cluster-row"][data-source="report"]').first
    xyz = tuple(float(row.get_attribute(f"data-{a}")) for a in "xyz")
    row.click()
    assert np.allclose(cut(page), xyz, atol=1.5 * 3)
    shot = tmp_path / "viewer_demo.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    s.close()


@pytest.mark.slow
def test_viewer_inside_report(browser, demo_result, tmp_path):
    """The same controls inside the real report.html written by glmkit.report."""
    from glmkit.report import write_report

    report = write_report(demo_result, tmp_path / "demo").report
    text = report.read_text(encoding="utf-8")
    assert 'class="glmkit-viewer"' in text, "report.html does not embed the viewer"
    s = Session(browser, report)
    page = s.page
    assert page.locator(".glmkit-viewer").count() == 1
    ctl(page, "map").select_option("0")  # z
    set_threshold(page, 3.5)
    n1, img1 = count(page), canvas_url(page, "x")
    set_threshold(page, 4.5)
    assert count(page) < n1 and canvas_url(page, "x") != img1
    ctl(page, "z").fill("30")
    assert cut(page)[2] == pytest.approx(30, abs=1.5)
    row = root(page).locator('tr[data-role="cluster-row"]').first
    xyz = tuple(float(row.get_attribute(f"data-{a}")) for a in "xyz")
    row.click()
    assert np.allclose(cut(page), xyz, atol=1.5 * 3)
    shot = tmp_path / "report_viewer.png"
    page.locator("#explore").screenshot(path=str(shot)) if page.locator("#explore").count() else \
        page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    s.close()


def test_request_recorder_can_fail(browser, tmp_path):
    """The blocking/recording route really sees external requests (so the zero-request checks mean something)."""
    path = _page(tmp_path / "leaky.html", '<img src="https://example.invalid/x.png" alt="x">')
    s = Session(browser, path, javascript=False)
    s.page.wait_for_timeout(200)
    assert s.requests == ["https://example.invalid/x.png"]
    assert any("ERR_FAILED" in e for e in s.errors)  # the aborted load is a console error too
    s.requests.clear()
    s.errors.clear()
    s.close()
