"""Tests of glmkit.stats.threshold: nilearn as second implementation, closed forms, bad inputs."""

from __future__ import annotations

import dataclasses
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from glmkit.errors import ImageError, ParameterError
from glmkit.stats.threshold import (
    HEIGHT_CONTROLS,
    bonferroni_logp,
    cluster_table,
    fdr_threshold,
    threshold_map,
)

SHAPE = (20, 22, 18)
AFFINE = np.array([[-3.0, 0, 0, 30], [0, 3.0, 0, -33], [0, 0, 3.0, -27], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def zmap():
    """A smooth z-like field in an ellipsoid mask with a positive and a negative blob."""
    rng = np.random.default_rng(11)
    field = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.0)
    field /= field.std()
    ii, jj, kk = np.indices(SHAPE)
    mask = ((ii - 10) / 9.0) ** 2 + ((jj - 11) / 10.0) ** 2 + ((kk - 9) / 8.0) ** 2 <= 1
    field += 6.0 * np.exp(-((ii - 6) ** 2 + (jj - 8) ** 2 + (kk - 9) ** 2) / 6.0)
    field -= 8.0 * np.exp(-((ii - 14) ** 2 + (jj - 15) ** 2 + (kk - 8) ** 2) / 8.0)
    field[~mask] = 0
    mask_img = nib.Nifti1Image(mask.astype("uint8"), AFFINE)
    stat_img = nib.Nifti1Image(field, AFFINE)
    return field[mask], mask, mask_img, stat_img


def _nilearn_threshold(stat_img, mask_img, **kwargs):
    from nilearn.glm import threshold_stats_img

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img, thr = threshold_stats_img(stat_img, mask_img=mask_img, **kwargs)
    return img.get_fdata(), float(thr)


def _nilearn_clusters(stat_img, **kwargs):
    from nilearn.reporting import get_clusters_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_clusters_table(stat_img, **kwargs)


def _assert_same_clusters(
    mine: pd.DataFrame, ref: pd.DataFrame, voxel_volume: float, peak_sign: float = 1.0
):
    assert len(mine) == len(ref)
    # same rows in the same order (peak vs sub-peak); glmkit numbers clusters 1..K where
    # nilearn's negative clusters continue from the number of *rows* (ids skip numbers)
    ref_is_sub = [str(c)[-1].isalpha() for c in ref["Cluster ID"]]
    assert [c[-1].isalpha() for c in mine["cluster_id"]] == ref_is_sub
    peaks = mine.loc[~np.array(ref_is_sub, dtype=bool), "cluster_id"].astype(int).tolist()
    assert peaks == list(range(1, len(peaks) + 1))
    if (
        not ref["Cluster ID"].astype(str).str.contains("[a-z]").any()
        or len(set(np.sign(ref["Peak Stat"]))) == 1
    ):
        assert mine["cluster_id"].tolist() == [str(c) for c in ref["Cluster ID"]]
    np.testing.assert_array_equal(
        mine[["x", "y", "z"]].to_numpy(float), ref[["X", "Y", "Z"]].to_numpy(float)
    )
    np.testing.assert_array_equal(
        mine["peak_stat"].to_numpy(float), peak_sign * ref["Peak Stat"].to_numpy(float)
    )
    main = ref["Cluster Size (mm3)"] != ""
    assert (
        mine["size_mm3"][main.to_numpy()].astype(int).tolist()
        == ref["Cluster Size (mm3)"][main].astype(int).tolist()
    )
    assert mine["size_mm3"][~main.to_numpy()].isna().all()
    sizes = mine["size_voxels"].dropna().astype(int).to_numpy()
    np.testing.assert_array_equal(
        (sizes * voxel_volume).astype(int), mine["size_mm3"].dropna().astype(int)
    )


# ------------------------------------------------------------- nilearn parity
@pytest.mark.parametrize("height_control", ["fpr", "fdr", "bonferroni", None])
@pytest.mark.parametrize("two_sided", [True, False])
@pytest.mark.parametrize("cluster_threshold", [0, 6])
def test_threshold_map_equals_threshold_stats_img(
    zmap, height_control, two_sided, cluster_threshold
):
    z, mask, mask_img, stat_img = zmap
    alpha = 0.05 if height_control == "fdr" else 0.001
    kw = {"threshold": 2.5} if height_control is None else {"alpha": alpha}
    res = threshold_map(
        z,
        height_control=height_control,
        two_sided=two_sided,
        cluster_threshold=cluster_threshold,
        mask_img=mask_img,
        **kw,
    )
    ref_map, ref_thr = _nilearn_threshold(
        stat_img,
        mask_img,
        height_control=height_control,
        two_sided=two_sided,
        cluster_threshold=cluster_threshold,
        **kw,
    )
    assert res.threshold == ref_thr
    np.testing.assert_array_equal(res.thresholded, ref_map[mask])
    np.testing.assert_array_equal(res.to_nifti().get_fdata(), ref_map)
    assert res.n_suprathreshold == np.count_nonzero(ref_map)
    assert 0 < res.n_suprathreshold < mask.sum()
    if two_sided:
        assert (res.thresholded < 0).any()  # the negative blob survives


def test_negative_one_sided_threshold_equals_nilearn(zmap):
    z, mask, mask_img, stat_img = zmap
    res = threshold_map(
        z,
        height_control=None,
        threshold=-2.5,
        two_sided=False,
        cluster_threshold=3,
        mask_img=mask_img,
    )
    ref_map, _ = _nilearn_threshold(
        stat_img,
        mask_img,
        height_control=None,
        threshold=-2.5,
        two_sided=False,
        cluster_threshold=3,
    )
    np.testing.assert_array_equal(res.thresholded, ref_map[mask])
    assert (res.thresholded <= 0).all() and res.n_suprathreshold > 0


def test_threshold_map_accepts_image_and_contrast_like(zmap):
    z, mask, mask_img, stat_img = zmap
    a = threshold_map(stat_img, alpha=0.05, height_control="fdr", mask_img=mask_img)
    b = threshold_map(z, alpha=0.05, height_control="fdr", mask_img=mask_img)
    np.testing.assert_array_equal(a.thresholded, b.thresholded)


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize(("cluster_threshold", "min_distance"), [(0, 8.0), (10, 8.0), (0, 4.0)])
def test_cluster_table_equals_get_clusters_table(zmap, two_sided, cluster_threshold, min_distance):
    _, _, _, stat_img = zmap
    kw = dict(
        stat_threshold=2.3,
        cluster_threshold=cluster_threshold,
        two_sided=two_sided,
        min_distance=min_distance,
    )
    mine = cluster_table(stat_img, **kw)
    ref = _nilearn_clusters(stat_img, **kw)
    _assert_same_clusters(mine, ref, 27.0)
    assert len(mine) >= 2
    if two_sided:
        assert (mine["peak_stat"] < 0).any()


def test_cluster_table_negative_one_sided_and_empty(zmap):
    _, _, _, stat_img = zmap
    kw = dict(stat_threshold=-2.3, two_sided=False)
    mine = cluster_table(stat_img, **kw)
    # same clusters and peaks; nilearn reports |peak| here, glmkit the signed value
    _assert_same_clusters(mine, _nilearn_clusters(stat_img, **kw), 27.0, peak_sign=-1.0)
    assert (mine["peak_stat"] < -2.3).all() and len(mine) > 0
    empty = cluster_table(stat_img, stat_threshold=100.0)
    assert empty.empty and "size_mm3" in empty.columns


def test_cluster_table_atlas_label(zmap):
    _, _, _, stat_img = zmap
    atlas = np.zeros(SHAPE, dtype="int16")
    atlas[:10] = 1
    atlas[10:] = 2
    atlas_img = nib.Nifti1Image(atlas, AFFINE)
    table = cluster_table(
        stat_img,
        stat_threshold=3.0,
        two_sided=True,
        atlas=(atlas_img, ["background", "left", "right"]),
    )
    assert "label" in table.columns
    top = table.iloc[0]
    assert top["peak_stat"] > 0 and top["label"] == "left"  # the positive blob is centred at i=6
    neg = table[table["peak_stat"] < 0].iloc[0]
    assert neg["label"] == "right"  # the negative blob is centred at i=14
    table_dict = cluster_table(stat_img, stat_threshold=3.0, atlas=(atlas_img, {1: "L"}))
    assert table_dict["label"].iloc[0] == "L"
    assert "label" not in cluster_table(stat_img, stat_threshold=3.0).columns


# --------------------------------------------------------------- closed forms
def test_fdr_threshold_is_benjamini_hochberg(rng):
    z = np.r_[rng.normal(size=2000), rng.normal(4.0, 1.0, size=200)]
    alpha = 0.05
    thr = fdr_threshold(z, alpha)
    p = stats.norm.sf(z)
    rejected = stats.false_discovery_control(p, method="bh") <= alpha
    assert int(np.sum(z >= thr)) == int(rejected.sum())
    assert z[rejected].min() == pytest.approx(thr + 1e-12, abs=1e-9)
    assert fdr_threshold(rng.normal(size=50) - 10, alpha) == np.inf


def test_fdr_with_nothing_significant_keeps_nothing(rng):
    z = rng.normal(size=500) * 0.1
    res = threshold_map(z, alpha=0.05, height_control="fdr")
    assert res.threshold == np.inf and res.n_suprathreshold == 0 and np.all(res.thresholded == 0)


def test_bonferroni_logp_closed_form_and_finite():
    p = np.array([0.0, 1e-320, 1e-12, 1e-4, 0.2, 1.0])
    out = bonferroni_logp(p)
    assert np.all(np.isfinite(out)) and np.all(out >= 0)
    np.testing.assert_allclose(out[2:], -np.log10(np.minimum(1, p[2:] * p.size)))
    assert out[0] == out[1] == pytest.approx(-np.log10(np.finfo(float).tiny * 6))
    assert bonferroni_logp([1e-6], n_tests=1000).tolist() == pytest.approx([3.0])


def test_bonferroni_threshold_matches_bonferroni_logp(zmap):
    z, _, mask_img, _ = zmap
    res = threshold_map(
        z, alpha=0.05, height_control="bonferroni", two_sided=False, mask_img=mask_img
    )
    logp = bonferroni_logp(stats.norm.sf(z))
    np.testing.assert_array_equal(res.thresholded != 0, logp > -np.log10(0.05))


def test_result_is_frozen_and_summarised(zmap):
    z, _, mask_img, _ = zmap
    res = threshold_map(z, alpha=0.05, height_control="fdr", two_sided=False, mask_img=mask_img)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.threshold = 0.0
    assert res.method == "fdr" and res.alpha == 0.05
    assert "fdr at alpha 0.05 (one-sided)" in res.summary()
    assert res.to_frame().loc[0, "n_suprathreshold"] == res.n_suprathreshold
    assert res.to_nifti(mask_img).shape == SHAPE
    none = threshold_map(z, height_control="none", threshold=3.0)
    assert none.method == "none" and none.alpha is None
    with pytest.raises(ParameterError, match="no mask known"):
        none.to_nifti()


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, "0.05", True, float("nan")])
def test_alpha_outside_unit_interval(alpha):
    with pytest.raises(
        ParameterError, match=r"alpha must be a number strictly between 0 and 1.*got"
    ):
        threshold_map(np.ones(10), alpha=alpha, height_control="fdr")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"height_control": "holm"},
            r"height_control must be one of \['fdr', 'bonferroni', 'fpr', None\]; got 'holm'",
        ),
        (
            {"cluster_threshold": -1},
            r"cluster_threshold must be a whole number of voxels >= 0.*got -1",
        ),
        ({"cluster_threshold": 2.5}, r"cluster_threshold must be a whole number"),
        (
            {"height_control": "fdr", "threshold": 3.0},
            r"threshold=3.0 was given with height_control='fdr'",
        ),
        ({"height_control": None}, r"height_control=None needs an explicit threshold"),
        (
            {"height_control": None, "threshold": -1.0},
            r"threshold must be >= 0 when two_sided=True",
        ),
        ({"height_control": None, "threshold": float("inf")}, r"threshold must be a finite number"),
        ({"cluster_threshold": 5}, r"cluster_threshold > 0 needs mask_img"),
        ({"two_sided": "yes"}, r"two_sided must be True or False"),
    ],
)
def test_bad_threshold_parameters(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        threshold_map(np.linspace(-4, 4, 30), **kwargs)


def test_bad_z_inputs(zmap):
    _, _, mask_img, _ = zmap
    with pytest.raises(ParameterError, match=r"z has 7 values but mask_img has \d+ voxels"):
        threshold_map(np.ones(7), mask_img=mask_img)
    with pytest.raises(ParameterError, match="NaN or infinite"):
        threshold_map(np.array([1.0, np.nan]))
    with pytest.raises(ParameterError, match="1-D array over the mask"):
        threshold_map(np.ones((3, 3)))


def test_height_controls_are_declared_once():
    """Settings validate against the very tuple threshold_map checks (not a copy)."""
    import glmkit.settings

    assert glmkit.settings.HEIGHT_CONTROLS is HEIGHT_CONTROLS
    assert set(HEIGHT_CONTROLS) == {"fpr", "fdr", "bonferroni", None}


def test_settings_import_stays_light():
    """The choice lists settings import come from light modules: no numpy/scipy/nibabel."""
    import subprocess
    import sys

    code = ("import sys, glmkit.settings; "
            "print(sorted(m for m in ('numpy', 'scipy', 'pandas', 'nibabel', 'nilearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_bad_cluster_table_and_bonferroni_inputs(zmap, tmp_path):
    _, _, _, stat_img = zmap
    with pytest.raises(ParameterError, match="min_distance must be a positive number"):
        cluster_table(stat_img, stat_threshold=3.0, min_distance=0)
    with pytest.raises(ParameterError, match="stat_threshold must be >= 0 when two_sided=True"):
        cluster_table(stat_img, stat_threshold=-3.0, two_sided=True)
    with pytest.raises(ParameterError, match="stat_threshold must be a finite number"):
        cluster_table(stat_img, stat_threshold=None)
    with pytest.raises(ParameterError, match="atlas must be a pair"):
        cluster_table(stat_img, stat_threshold=3.0, atlas="aal")
    with pytest.raises(ImageError, match="does not exist"):
        cluster_table(tmp_path / "missing.nii.gz", stat_threshold=3.0)
    with pytest.raises(ParameterError, match=r"p must hold finite values in \[0, 1\]"):
        bonferroni_logp([0.5, 1.2])
    with pytest.raises(ParameterError, match="n_tests must be a positive integer"):
        bonferroni_logp([0.5], n_tests=0)


# ------------------------------------------------------------------ demo parity
@pytest.fixture(scope="module")
def demo_z(request):
    from glmkit.stats.glm import fit_second_level

    demo = request.getfixturevalue("demo")
    # the reference analysis after QC: no missing pseudo, no planted defect subjects
    defects = set(demo.provenance["defects"])
    keep = (demo.table["pseudo"].notna() & ~demo.table["subject"].isin(defects)).to_numpy()
    maps = [m for m, k in zip(demo.maps, keep, strict=True) if k]
    design = pd.DataFrame({"fluency": demo.table["pseudo"][keep].to_numpy(float), "intercept": 1.0})
    model = fit_second_level(maps, design, smoothing_fwhm=5.0)
    res = model.compute_contrast("fluency")
    return res, model.mask_img


@pytest.mark.parametrize(
    ("height_control", "alpha", "two_sided", "cluster_threshold"),
    [
        ("fdr", 0.05, False, 0),
        ("fdr", 0.05, True, 10),
        ("bonferroni", 0.05, False, 0),
        ("fpr", 0.001, True, 10),
    ],
)
def test_demo_thresholds_equal_nilearn(demo_z, demo, height_control, alpha, two_sided,
                                      cluster_threshold):
    res, mask_img = demo_z
    mine = threshold_map(
        res,
        alpha=alpha,
        height_control=height_control,
        two_sided=two_sided,
        cluster_threshold=cluster_threshold,
    )
    mask = np.asarray(mask_img.dataobj).astype(bool)
    ref_map, ref_thr = _nilearn_threshold(
        res.to_nifti("z"),
        mask_img,
        alpha=alpha,
        height_control=height_control,
        two_sided=two_sided,
        cluster_threshold=cluster_threshold,
    )
    assert mine.threshold == ref_thr
    np.testing.assert_array_equal(mine.thresholded, ref_map[mask])
    # the planted association is found where it was planted, and nothing far from it
    truth_img = nib.load(demo.ground_truth)
    truth = truth_img.get_fdata() > 0
    detected = np.zeros(mask.shape, bool)
    detected[mask] = mine.thresholded != 0
    hits = int((detected & truth).sum())
    distance = ndimage.distance_transform_edt(~truth, sampling=truth_img.header.get_zooms()[:3])
    assert hits > 20 and hits >= 0.5 * detected.sum(), (hits, int(detected.sum()))
    assert distance[detected].max() <= 15.0  # mm from the planted sphere


def test_demo_cluster_table_equals_nilearn(demo_z):
    res, _ = demo_z
    z_img = res.to_nifti("z")
    kw = dict(stat_threshold=3.0, cluster_threshold=10, two_sided=True)
    mine = cluster_table(z_img, **kw)
    _assert_same_clusters(mine, _nilearn_clusters(z_img, **kw), 27.0)
    assert len(mine) > 0
