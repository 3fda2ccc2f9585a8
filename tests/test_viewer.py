"""Tests of glmkit.report.maps and .viewer without a browser: thresholds, clusters, encoding, the
HTML fragment.

The browser behaviour is tested in tests/test_viewer_browser.py.
"""

from __future__ import annotations

import base64
import json
import re
import zlib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.stats import norm

from glmkit.errors import ImageError, ParameterError
from glmkit.report.maps import ALPHAS, infer_kind, label_clusters, method_threshold, prepare_maps
from glmkit.report.viewer import viewer_html, viewer_payload

AFFINE = np.array([[3.0, 0, 0, -78], [0, 3, 0, -111], [0, 0, 3, -51], [0, 0, 0, 1]])
SHAPE = (53, 63, 46)


def _blob_map(rng, shape=SHAPE, affine=AFFINE, peak_mm=(38, -17, -3), amp=6.0):
    """Smooth noise z map on a brain-like ellipsoid mask, one planted blob at ``peak_mm``."""
    g = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    mask = (((g - c[:, None, None, None]) / (np.array(shape)[:, None, None, None] * 0.45)) ** 2).sum(0) <= 1
    z = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    z /= z[mask].std()
    ijk = np.round(np.linalg.solve(affine, [*peak_mm, 1])[:3])
    z += amp * np.exp(-((g - ijk[:, None, None, None]) ** 2).sum(0) / (2 * 2.5**2))
    z[~mask] = 0.0
    return z, mask


def _decode(m: dict, n: int) -> np.ndarray:
    """Python mirror of the JavaScript decoder (viewer.js decodeMap)."""
    b = np.frombuffer(zlib.decompress(base64.b64decode(m["data"])), dtype=np.uint8)
    delta = (b[:n].astype(np.uint32) << 8) | b[n:]
    codes = np.cumsum(delta) & 0xFFFF
    v = m["offset"] + codes * m["scale"]
    if m["zero_code"] is not None:
        v[codes == m["zero_code"]] = 0.0
    return v


@pytest.mark.parametrize(
    ("name", "kind"),
    [("z", "z"), ("z_fdr", "z"), ("logp_bonferroni", "logp_bonferroni"), ("logp_maxt", "logp_fwer"),
     ("logp_tfce", "logp_fwer"), ("logp_cluster_size", "logp_fwer"), ("logp", "logp"), ("effect", "value")],
)
def test_infer_kind(name, kind):
    assert infer_kind(name) == kind


@pytest.mark.parametrize("two_sided", [True, False])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_method_thresholds_match_nilearn(rng, two_sided, alpha):
    from nilearn.glm import threshold_stats_img

    z, mask = _blob_map(rng)
    img = nib.Nifti1Image(z, AFFINE)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
    vals = z[mask]
    for method, control in (("uncorrected", "fpr"), ("fdr", "fdr"), ("bonferroni", "bonferroni")):
        _, expected = threshold_stats_img(img, mask_img=mask_img, alpha=alpha, height_control=control,
                                          two_sided=two_sided)
        got = method_threshold(vals, "z", method, alpha, two_sided=two_sided)
        assert got == pytest.approx(expected, rel=1e-9), method


def test_method_thresholds_closed_forms():
    v = np.linspace(0, 5, 100)
    assert method_threshold(v, "logp_fwer", "fwer", 0.05) == pytest.approx(-np.log10(0.05))
    assert method_threshold(v, "logp_bonferroni", "bonferroni", 0.1) == pytest.approx(1.0)
    assert method_threshold(v, "z", "uncorrected", 0.001) == pytest.approx(norm.isf(0.001))
    assert method_threshold(v, "z", "bonferroni", 0.05, n_tests=1000) == pytest.approx(norm.isf(0.05 / 1000))
    # FDR on a pure-noise-sized map with nothing significant: no voxel survives -> inf
    assert method_threshold(np.zeros(1000), "z", "fdr", 0.05) == np.inf
    # BH on -log10 p: with p = (1..m)/m * 0.01 all survive at q=0.05 -> threshold = -log10(max p)
    p = np.arange(1, 101) / 100 * 0.01
    assert method_threshold(-np.log10(p), "logp", "fdr", 0.05) == pytest.approx(-np.log10(0.01))


@pytest.mark.parametrize(("kind", "method"), [("logp_fwer", "fdr"), ("z", "fwer"), ("value", "uncorrected")])
def test_method_not_available_for_kind(kind, method):
    with pytest.raises(ParameterError, match="not available"):
        method_threshold(np.ones(3), kind, method, 0.05)


@pytest.mark.parametrize("alpha", [0, -0.1, 1.5])
def test_method_threshold_bad_alpha(alpha):
    with pytest.raises(ParameterError, match="alpha"):
        method_threshold(np.ones(3), "z", "fdr", alpha)


@pytest.mark.parametrize("extent", [0, 5, 20])
@pytest.mark.parametrize("two_sided", [True, False])
def test_label_clusters_matches_nilearn_threshold_img(rng, extent, two_sided):
    from nilearn.image import threshold_img

    z, mask = _blob_map(rng)
    img = nib.Nifti1Image(z, AFFINE)
    expected = threshold_img(img, threshold=2.3, cluster_threshold=extent, two_sided=two_sided,
                             copy_header=True).get_fdata() != 0
    labels, table = label_clusters(z, 2.3, two_sided=two_sided, extent=extent)
    np.testing.assert_array_equal(labels > 0, expected)
    assert table["size"].sum() == expected.sum()
    assert (table["size"] >= extent).all()
    assert list(table["size"]) == sorted(table["size"], reverse=True)
    # the peak of every cluster is inside it and is its largest |value|
    for row in table.itertuples():
        inside = labels == row.cluster
        assert inside[row.i, row.j, row.k]
        assert abs(row.peak) == pytest.approx(np.abs(z[inside]).max())


def test_label_clusters_connectivity():
    a = np.zeros((4, 4, 4))
    a[1, 1, 1] = a[2, 2, 1] = a[2, 2, 2] = 5.0  # (1,1,1)-(2,2,1) share an edge; (2,2,1)-(2,2,2) a face
    sizes = {c: sorted(label_clusters(a, 1.0, connectivity=c)[1]["size"]) for c in (6, 18, 26)}
    assert sizes == {6: [1, 2], 18: [3], 26: [3]}
    with pytest.raises(ParameterError, match="connectivity"):
        label_clusters(a, 1.0, connectivity=8)


def test_higher_threshold_fewer_voxels(rng):
    z, _ = _blob_map(rng)
    counts = [int((label_clusters(z, t, two_sided=True)[0] > 0).sum()) for t in (2.0, 3.0, 4.0, 5.0)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] > 0


def test_encoding_round_trip(rng):
    z, mask = _blob_map(rng)
    zf = np.where(np.abs(z) > 3, z, 0.0)
    payload = viewer_payload({"z": (z, AFFINE), "z_fdr": (zf, AFFINE)}, cut_coords=(0, 0, 0))
    n = payload["n_mask"]
    assert n == mask.sum()
    bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(payload["mask"])), np.uint8))
    np.testing.assert_array_equal(bits[: mask.size].reshape(SHAPE).astype(bool), mask)
    for m, truth in zip(payload["maps"], (z, zf)):
        got = _decode(m, n)
        # half a step, 1.5 steps for tiny non-zeros pushed off the reserved code of 0
        np.testing.assert_allclose(got, truth[mask], atol=1.5 * m["scale"] + 1e-12)
        # zeros stay exact zeros (sub-threshold voxels of a thresholded map never light up)
        np.testing.assert_array_equal(got[truth[mask] == 0], 0.0)
        assert np.count_nonzero(got) == np.count_nonzero(truth[mask])


def test_prepare_maps_mask_from_data_and_explicit(rng):
    z, mask = _blob_map(rng)
    vm, m1, aff = prepare_maps({"z": (z, AFFINE)})
    np.testing.assert_array_equal(m1, mask & (z != 0))
    np.testing.assert_array_equal(aff, AFFINE)
    big = np.ones(SHAPE)
    vm, m2, _ = prepare_maps({"mask": (big, AFFINE), "z": (z, AFFINE)})
    assert m2.all() and [m.name for m in vm] == ["z"]
    assert np.isfinite(vm[0].data).all()


def test_prepare_maps_reorients_to_ras(rng):
    z, _ = _blob_map(rng)
    flipped = np.diag([-3.0, 3, 3, 1])
    flipped[:3, 3] = [78, -111, -51]
    img = nib.Nifti1Image(z[::-1].copy(), flipped)  # same world content, x stored backwards
    vm, _, aff = prepare_maps({"z": img})
    np.testing.assert_allclose(aff, AFFINE)
    np.testing.assert_allclose(np.nan_to_num(vm[0].data), z)


def test_prepare_maps_defaults_and_overrides(rng):
    z, _ = _blob_map(rng)
    logp = np.clip(z, 0, None)
    vm, _, _ = prepare_maps(
        {"z": (z, AFFINE), "logp_maxt": (logp, AFFINE), "effect": (z / 2, AFFINE)},
        thresholds={"z": {"fdr": {0.05: 3.5}}, "effect": 1.25},
    )
    by = {m.name: m for m in vm}
    assert by["z"].method == "fdr" and by["z"].methods["fdr"][0.05] == 3.5
    assert set(by["z"].methods["uncorrected"]) == set(ALPHAS)
    assert by["logp_maxt"].method == "fwer" and by["logp_maxt"].alpha == 0.1
    assert by["logp_maxt"].methods["fwer"][0.1] == pytest.approx(1.0)
    assert by["effect"].method == "value" and by["effect"].threshold == 1.25


def test_fragment_structure(rng):
    z, mask = _blob_map(rng)
    clusters = pd.DataFrame({"Cluster ID": [1], "X": [38.0], "Y": [-17.0], "Z": [-3.0], "Peak Stat": [6.1],
                             "Cluster Size (mm3)": [270]})
    frag = viewer_html({"z": (z, AFFINE), "logp_bonferroni": (np.clip(z, 0, None), AFFINE)},
                       clusters=clusters, title="A <b>title</b>")
    assert frag.startswith('<div class="glmkit-viewer" id="glmkit-viewer-') and frag.endswith("</div>")
    for control in ("map", "threshold", "method", "extent", "x", "y", "z", "mode"):
        assert f'data-control="{control}"' in frag, control
    for role in ("count", "empty", "note", "hover", "cluster-table"):
        assert f'data-role="{role}"' in frag, role
    assert "no voxel survives this threshold" in frag
    assert "<noscript>" in frag and "A &lt;b&gt;title&lt;/b&gt;" in frag
    assert not re.search(r"https?://|<link|src=", frag), "the fragment must not reference anything external"
    data = re.search(r'<script type="application/json" data-role="viewer-data">(.*?)</script>', frag, re.S)
    payload = json.loads(data.group(1))
    assert [m["name"] for m in payload["maps"]] == ["z", "logp_bonferroni"]
    assert payload["maps"][0]["clusters"]["rows"][0]["xyz"] == [38.0, -17.0, -3.0]
    # no permutation map: nothing offers FWER
    assert all("fwer" not in m["methods"] for m in payload["maps"])


def test_two_fragments_have_distinct_ids(rng):
    z, _ = _blob_map(rng)
    ids = {re.match(r'<div class="glmkit-viewer" id="([^"]+)"', viewer_html({"z": (z, AFFINE)})).group(1)
           for _ in range(2)}
    assert len(ids) == 2


def test_script_end_tag_in_labels_is_escaped(rng):
    z, _ = _blob_map(rng)
    frag = viewer_html({"z": {"image": (z, AFFINE), "label": "</script><script>alert(1)</script>"}})
    assert frag.count("</script>") == 2  # only the data block's and the code's own end tags


def test_page_size_demo_grid(rng):
    """Six maps on the demo grid stay a few hundred KB (measured size in the failure message)."""
    z, mask = _blob_map(rng)
    maps = {"z": (z, AFFINE), "z_fdr": (np.where(np.abs(z) > 3.5, z, 0), AFFINE),
            "logp_bonferroni": (np.clip(z - 4, 0, None), AFFINE), "logp_maxt": (np.clip(z - 3.8, 0, None), AFFINE),
            "logp_cluster_size": (np.clip(z - 3, 0, None) / 2, AFFINE), "effect": (z * 0.4, AFFINE)}
    size = len(viewer_html(maps).encode())
    assert size < 800_000, f"viewer fragment is {size / 1e3:.0f} kB for 6 maps on the demo grid"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"maps": {}}, ParameterError, "non-empty"),
        ({"maps": {"z": np.zeros((3, 3, 3))}}, ImageError, "3-D array, 4x4 affine"),
        ({"maps": {"z": (np.zeros((3, 3)), np.eye(4))}}, ImageError, "3-D array"),
        ({"maps": {"z": (np.zeros((3, 3, 3, 2)), np.eye(4))}}, ImageError, "3-D"),
        ({"maps": {"z": (np.ones((3, 3, 3)), np.eye(4)), "b": (np.ones((4, 3, 3)), np.eye(4))}},
         ImageError, "one grid"),
        ({"maps": {"mask": (np.ones((3, 3, 3)), np.eye(4))}}, ParameterError, "only a 'mask'"),
        ({"maps": {"z": (np.ones((3, 3, 3)), np.eye(4))}, "default_map": "t"}, ParameterError, "default_map"),
        ({"maps": {"z": (np.ones((3, 3, 3)), np.eye(4))}, "thresholds": {"t": 3}}, ParameterError, "thresholds"),
        ({"maps": {"z": (np.ones((3, 3, 3)), np.eye(4))}, "cut_coords": (1, 2)}, ParameterError, "cut_coords"),
        ({"maps": {"z": (np.ones((3, 3, 3)), np.eye(4))}, "clusters": pd.DataFrame({"a": [1]})},
         ParameterError, "X, Y, Z"),
        ({"maps": {"z": {"image": (np.ones((3, 3, 3)), np.eye(4)), "kind": "t"}}}, ParameterError, "kind"),
        ({"maps": {"z": {"image": (np.ones((3, 3, 3)), np.eye(4)), "method": "fwer"}}}, ParameterError,
         "not available"),
        ({"maps": {"z": (np.ones((3, 3, 3)), np.eye(4))}, "connectivity": 4}, ParameterError, "connectivity"),
    ],
)
def test_bad_input(kwargs, error, match):
    maps = kwargs.pop("maps")
    with pytest.raises(error, match=match):
        viewer_html(maps, **kwargs)


def test_background_mni152_and_image(rng):
    z, mask = _blob_map(rng)
    payload = viewer_payload({"z": (z, AFFINE)}, background="mni152")
    bg = np.frombuffer(zlib.decompress(base64.b64decode(payload["background"])), np.uint8).reshape(SHAPE)
    # the template is bright in the brain and dark outside it
    assert bg[SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2 + 5] > 100
    assert bg[0, 0, 0] < 20 and bg[-1, -1, -1] < 20
    # an explicit image on another grid is resampled to the maps' grid
    img = nib.Nifti1Image(rng.random((20, 20, 20)), np.diag([8.0, 8, 8, 1]) @ np.array(
        [[1, 0, 0, -10], [0, 1, 0, -14], [0, 0, 1, -7], [0, 0, 0, 1]]))
    payload = viewer_payload({"z": (z, AFFINE)}, background=img)
    assert len(zlib.decompress(base64.b64decode(payload["background"]))) == np.prod(SHAPE)
    assert viewer_payload({"z": (z, AFFINE)})["background"] is None
