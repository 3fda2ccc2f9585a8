"""Tests of glmkit.stats.glm: closed forms, nilearn as a second implementation, bad inputs."""

from __future__ import annotations

import re
import warnings
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from glmkit.errors import (
    ContrastError,
    DataFileNotFoundError,
    DatasetError,
    DesignError,
    ImageError,
    ParameterError,
)
from glmkit.stats.pvalues import log_sf_t, logp_from_log, logp_from_p
from glmkit.stats.glm import (
    P_FLOOR,
    compute_contrast,
    contrast_vector,
    fit_second_level,
    ols_fit,
)

SHAPE = (12, 14, 10)
AFFINE = np.array([[3.0, 0, 0, -20], [0, 3.0, 0, -25], [0, 0, 3.0, -15], [0, 0, 0, 1]])


def _synthetic(rng, n=24, effect=0.8):
    """n subject maps with a zero border (so the background mask is not trivial) and a design."""
    x = rng.normal(size=n)
    imgs = []
    for i in range(n):
        data = rng.normal(size=SHAPE) + effect * x[i] * np.linspace(0, 1, SHAPE[0])[:, None, None]
        data[:2], data[-1], data[:, 0], data[:, -1], data[..., 0], data[..., -1] = 0, 0, 0, 0, 0, 0
        imgs.append(nib.Nifti1Image(data.astype("float32"), AFFINE))
    design = pd.DataFrame(
        {"fluency": x, "age": rng.normal(size=n), "intercept": 1.0},
        index=pd.Index([f"S{i:02d}" for i in range(n)], name="subject"),
    )
    return imgs, design


@pytest.fixture(scope="module")
def synth():
    return _synthetic(np.random.default_rng(7))


def _nilearn_maps(imgs, design, contrast, *, smoothing_fwhm=None, mask_img=None, stat_type=None):
    from nilearn.glm.second_level import SecondLevelModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SecondLevelModel(smoothing_fwhm=smoothing_fwhm, mask_img=mask_img)
        model.fit(list(imgs), design_matrix=design)
        out = model.compute_contrast(contrast, second_level_stat_type=stat_type, output_type="all")
    mask = np.asarray(model.masker_.mask_img_.dataobj).astype(bool)
    # read values at mask voxels (never through the smoothing masker)
    return {k: v.get_fdata()[mask] for k, v in out.items()}, mask


def _max_diffs(res, ref):
    pairs = {
        "z": "z_score",
        "p": "p_value",
        "stat": "stat",
        "effect": "effect_size",
        "variance": "effect_variance",
    }
    return {k: float(np.max(np.abs(res.get(k) - ref[v]))) for k, v in pairs.items()}


# ------------------------------------------------------------------ closed forms
def test_simple_regression_matches_linregress(rng):
    x = rng.normal(size=40)
    Y = 0.5 * x[:, None] + rng.normal(size=(40, 5))
    fit = ols_fit(Y, pd.DataFrame({"x": x, "intercept": 1.0}))
    res = compute_contrast(fit, "x")
    for v in range(5):
        lr = stats.linregress(x, Y[:, v])
        assert res.effect[v] == pytest.approx(lr.slope, rel=1e-10)
        assert np.sqrt(res.variance[v]) == pytest.approx(lr.stderr, rel=1e-10)
        assert res.stat[v] == pytest.approx(lr.slope / lr.stderr, rel=1e-10)
        assert res.p_two_sided[v] == pytest.approx(lr.pvalue, rel=1e-8)
    assert res.dof == 38


def test_one_sample_t_matches_ttest_1samp(rng):
    Y = rng.normal(0.3, 1.0, size=(15, 6))
    res = compute_contrast(ols_fit(Y, np.ones((15, 1)), columns=["intercept"]), "intercept")
    ref = stats.ttest_1samp(Y, 0.0, axis=0)
    np.testing.assert_allclose(res.stat, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(res.p_two_sided, ref.pvalue, rtol=1e-8)
    ref_up = stats.ttest_1samp(Y, 0.0, axis=0, alternative="greater")
    np.testing.assert_allclose(res.p, ref_up.pvalue, rtol=1e-8)
    np.testing.assert_allclose(res.z, stats.norm.isf(ref_up.pvalue), rtol=1e-8)


def test_f_one_row_is_t_squared_and_two_rows_is_nested_model_f(rng):
    n = 30
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "intercept": 1.0})
    Y = rng.normal(size=(n, 8)) + X[["a"]].to_numpy()
    fit = ols_fit(Y, X)
    t = compute_contrast(fit, "a")
    f1 = compute_contrast(fit, [1, 0, 0], stat_type="F")
    np.testing.assert_allclose(f1.stat, t.stat**2, rtol=1e-10)
    np.testing.assert_allclose(f1.p, t.p_two_sided, rtol=1e-8)
    # two rows: F of the nested model comparison (full vs intercept only)
    f2 = compute_contrast(fit, ["a", "b"], stat_type="F")
    rss_full = np.sum((Y - X.to_numpy() @ np.linalg.lstsq(X.to_numpy(), Y, rcond=None)[0]) ** 2, 0)
    rss_red = np.sum((Y - Y.mean(0)) ** 2, 0)
    f_ref = ((rss_red - rss_full) / 2) / (rss_full / (n - 3))
    np.testing.assert_allclose(f2.stat, f_ref, rtol=1e-10)
    np.testing.assert_allclose(f2.p, stats.f.sf(f_ref, 2, n - 3), rtol=1e-8)
    assert f2.effect.shape == (2, 8)


def test_expression_contrasts_equal_vectors(rng):
    cols = ["a", "b", "intercept"]
    assert contrast_vector("a - b", cols).tolist() == [1.0, -1.0, 0.0]
    assert contrast_vector("2*a - b/2", cols).tolist() == [2.0, -0.5, 0.0]
    assert contrast_vector("-(a + b) * 3", cols).tolist() == [-3.0, -3.0, 0.0]
    X = pd.DataFrame({"a": rng.normal(size=20), "b": rng.normal(size=20), "intercept": 1.0})
    fit = ols_fit(rng.normal(size=(20, 4)), X)
    np.testing.assert_array_equal(
        compute_contrast(fit, "2*a - b").stat, compute_contrast(fit, [2, -1, 0]).stat
    )


def test_rank_deficient_design_dof_and_estimability(rng):
    n = 12
    a = rng.normal(size=n)
    X = pd.DataFrame({"a": a, "a2": 2 * a, "intercept": 1.0})
    fit = ols_fit(rng.normal(size=(n, 3)), X)
    assert (fit.rank, fit.dof) == (2, n - 2)
    compute_contrast(fit, "intercept")  # estimable
    with pytest.raises(ContrastError, match=r"contrast 'a' is not estimable with the design "
                                            r"\(columns \['a', 'a2', 'intercept'\]\): "
                                            r"the design has rank 2 < 3 columns and 1\*a -0.5\*a2 "
                                            r"= 0 for every subject, so the data cannot separate "
                                            r"\['a', 'a2'\]"):
        compute_contrast(fit, "a")
    # a + 2*a2 lies in the row space: estimable, and its effect is the slope of the fitted
    # values on a (what the data determine), whatever the generalised inverse
    res = compute_contrast(fit, "a + 2*a2")
    slope = np.linalg.lstsq(np.c_[a, np.ones(n)], fit.X @ fit.beta, rcond=None)[0][0]
    np.testing.assert_allclose(res.effect, slope, rtol=1e-9)


def test_scaled_contrast_scales_the_effect_not_the_test(rng):
    """'2*fluency' has twice the effect and variance x4 of 'fluency', and the same t, z, p."""
    n = 25
    X = pd.DataFrame({"fluency": rng.normal(size=n), "intercept": 1.0})
    fit = ols_fit(rng.normal(size=(n, 6)) + X[["fluency"]].to_numpy(), X)
    one, two = compute_contrast(fit, "fluency"), compute_contrast(fit, "2*fluency")
    assert (one.name, two.name) == ("fluency", "2*fluency")
    np.testing.assert_allclose(two.effect, 2 * one.effect, rtol=1e-12)
    np.testing.assert_allclose(two.variance, 4 * one.variance, rtol=1e-12)
    for kind in ("stat", "z", "p"):
        np.testing.assert_allclose(getattr(two, kind), getattr(one, kind), rtol=1e-12)
    vector = compute_contrast(fit, [1, 0])
    assert vector.name == "[1, 0]"
    np.testing.assert_array_equal(vector.stat, one.stat)


# ---------------------------------------------------------------- finite output
def test_logp_helpers_closed_form():
    """-log10 p: exact decades, finite at p = 0 (no log10(0)), exact log beyond floats."""
    with np.errstate(all="raise"):  # a log10(0), a 0 * inf or an overflow would raise
        out = logp_from_p([1.0, 0.1, 1e-300, 5e-324, 0.0])
        from_log = logp_from_log([0.0, 1e-17, np.log(1e-300), -1000 * np.log(10.0)])
    floor = -np.log10(P_FLOOR)
    np.testing.assert_allclose(out, [0.0, 1.0, 300.0, floor, floor], rtol=1e-15, atol=0)
    assert floor == pytest.approx(307.6526555685888, rel=1e-15)
    # log p >= 0 (p = 1, or above 1 by rounding) gives 0; p = 1e-1000 is not capped
    np.testing.assert_allclose(from_log, [0.0, 0.0, 300.0, 1000.0], rtol=1e-14, atol=0)


def _log_sf_t_closed_form(t: float, dof: int) -> float:
    """Natural log of the t upper tail for dof 1 (Cauchy) and 2, in logs (no underflow)."""
    if dof == 1:  # sf = arctan(1/t) / pi
        return float(np.log(np.arctan(1.0 / t)) - np.log(np.pi))
    u = 2.0 / t**2 if t < 1e150 else 0.0  # sf = 1 / (s (s + t)), s = sqrt(t^2 + 2)
    return float(-(2 * np.log(t) + 0.5 * np.log1p(u) + np.log1p(np.sqrt(1.0 + u))))


@pytest.mark.parametrize(
    ("t", "dof"),
    [
        (10.0, 1), (1e100, 1), (10.0, 2), (1e3, 2), (1e152, 2), (1e154, 2),
        (1e200, 2), (1e305, 1),
    ],
)
def test_t_tail_log_p_and_logp_closed_form(t, dof):
    """Exact log p of t also where sf underflows (p < 1e-300), and -log10 p from it."""
    expected = _log_sf_t_closed_form(t, dof)
    sf = stats.t.sf(t, dof)
    if sf > 1e-300:  # the closed form itself, against scipy where scipy does not underflow
        assert expected == pytest.approx(np.log(sf), rel=1e-12)
    log_p = log_sf_t(np.array([t]), dof)
    np.testing.assert_allclose(log_p, [expected], rtol=1e-12)
    np.testing.assert_allclose(logp_from_log(log_p), [-expected / np.log(10.0)], rtol=1e-12)


def test_far_tail_is_finite_monotone_and_clipped():
    n = 60
    x = np.arange(n, dtype=float)
    noise = np.random.default_rng(0).normal(size=n)
    # slopes with growing signal-to-noise: t from ~1 to ~1e11, p underflows to 0 in float
    Y = np.column_stack([s * x + noise for s in [0.001, 0.1, 1, 10, 1e3, 1e5, 1e7, 1e9]])
    res = compute_contrast(ols_fit(Y, np.c_[x, np.ones(n)], columns=["x", "intercept"]), "x")
    assert stats.t.sf(res.stat[-1], res.dof) == 0.0  # nilearn would give p = 0 / z = 37.04 here
    for arr in (res.stat, res.z, res.p, res.logp, res.p_two_sided):
        assert np.all(np.isfinite(arr))
    assert np.all(res.p >= P_FLOOR) and np.all(res.p_two_sided >= P_FLOOR)
    assert np.all(np.diff(res.z) > 0) and np.all(np.diff(res.logp) > 0)
    assert res.z[-1] > 38  # beyond nilearn's saturation, still finite
    # in the ordinary range z equals the normal quantile of p
    np.testing.assert_allclose(
        res.z[:3], stats.norm.isf(stats.t.sf(res.stat[:3], res.dof)), rtol=1e-12
    )


def test_constant_voxel_gives_finite_zero_t(rng):
    n = 15
    Y = np.c_[np.full(n, 3.0), rng.normal(size=n)]
    X = pd.DataFrame({"x": rng.normal(size=n), "intercept": 1.0})
    res = compute_contrast(ols_fit(Y, X), "x")
    assert res.stat[0] == 0.0 and res.z[0] == 0.0 and res.p[0] == 0.5
    res_i = compute_contrast(ols_fit(Y, X), "intercept")  # non-zero effect, zero variance
    assert res_i.stat[0] == 0.0 and res_i.p[0] == 0.5
    res_f = compute_contrast(ols_fit(Y, X), ["x", "intercept"], stat_type="F")
    assert res_f.stat[0] == 0.0 and res_f.p[0] == 1.0
    for res in (res_i, res_f):
        assert all(
            np.isfinite(getattr(res, k)).all() for k in ("stat", "z", "p", "p_two_sided", "logp")
        )


# ----------------------------------------------------------- nilearn parity
@pytest.mark.parametrize("smoothing_fwhm", [None, 5.0])
def test_parity_with_nilearn_synthetic_default_mask(synth, smoothing_fwhm):
    imgs, design = synth
    model = fit_second_level(imgs, design, smoothing_fwhm=smoothing_fwhm)
    res = model.compute_contrast("fluency")
    ref, mask = _nilearn_maps(imgs, design, "fluency", smoothing_fwhm=smoothing_fwhm)
    np.testing.assert_array_equal(np.asarray(model.mask_img.dataobj).astype(bool), mask)
    assert 0 < mask.sum() < mask.size  # the background mask removed the zero border
    diffs = _max_diffs(res, ref)
    assert max(diffs.values()) < 1e-6, diffs


def test_parity_with_nilearn_explicit_mask_expression_and_f(synth):
    imgs, design = synth
    mask = np.zeros(SHAPE, dtype="uint8")
    mask[3:10, 2:12, 2:9] = 1
    mask_img = nib.Nifti1Image(mask, AFFINE)
    model = fit_second_level(imgs, design, mask_img=mask_img)
    assert model.Y.shape == (len(imgs), mask.sum())
    ref, _ = _nilearn_maps(imgs, design, "fluency - age", mask_img=mask_img)
    assert max(_max_diffs(model.compute_contrast("fluency - age"), ref).values()) < 1e-6
    C = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    ref_f, _ = _nilearn_maps(imgs, design, C, mask_img=mask_img, stat_type="F")
    res_f = model.compute_contrast(C, stat_type="F")
    for mine, theirs in [("stat", "stat"), ("p", "p_value"), ("z", "z_score")]:
        np.testing.assert_allclose(res_f.get(mine), ref_f[theirs], atol=1e-6)


def test_outputs_as_images_and_unmask(synth):
    imgs, design = synth
    model = fit_second_level(imgs, design)
    res = model.compute_contrast("fluency")
    mask = np.asarray(model.mask_img.dataobj).astype(bool)
    for kind in ("stat", "z", "p", "p_two_sided", "effect", "variance", "logp"):
        img = res.to_nifti(kind)
        assert img.shape == SHAPE
        np.testing.assert_allclose(img.get_fdata()[mask], res.get(kind))
        assert np.all(np.isfinite(img.get_fdata()))
    np.testing.assert_allclose(model.unmask(res.z).get_fdata()[mask], res.z)
    assert res.to_frame().shape[0] == mask.sum()
    assert "fluency" in res.summary() and "dof 21" in res.summary()
    with pytest.raises(ParameterError, match="kind must be one of"):
        res.to_nifti("beta")


def test_dataset_maps_are_aligned_by_subject(synth):
    imgs, design = synth
    order = np.random.default_rng(1).permutation(len(imgs))
    dataset = SimpleNamespace(
        maps=tuple(imgs[i] for i in order),
        table=pd.DataFrame({"subject": [design.index[i] for i in order]}),
    )
    a = fit_second_level(dataset, design).compute_contrast("fluency")
    b = fit_second_level(imgs, design).compute_contrast("fluency")
    np.testing.assert_array_equal(a.z, b.z)


def test_design_object_with_matrix_attribute(synth):
    imgs, design = synth
    model = fit_second_level(imgs, SimpleNamespace(matrix=design))
    assert model.subjects == tuple(design.index)
    assert model.compute_contrast("age").name == "age"
    assert model.compute_contrast(["age", "fluency"], stat_type="F").name == "age, fluency"
    assert "24 maps" in model.summary() and "dof 21" in model.summary()


# ------------------------------------------------------------------ bad inputs
@pytest.fixture(scope="module")
def small_fit():
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"fluency": rng.normal(size=10), "intercept": 1.0})
    return ols_fit(rng.normal(size=(10, 4)), X)


@pytest.mark.parametrize(
    ("contrast", "kwargs", "message"),
    [
        ("pseudo", {}, r"'pseudo'.*not a design column.*\['fluency', 'intercept'\]"),
        ([1, 0, 0], {}, "expected 2 weights, got 3"),
        ("fluency - age", {}, r"'age', which is not a design column"),
        ("fluency * intercept", {}, "multiplies two columns"),
        ("fluency + 1", {}, "adds a number to a column"),
        ("__import__('os').getcwd()", {}, "not allowed"),
        ("fluency -", {}, "neither a design column nor a valid expression"),
        ([0, 0], {}, "all zeros"),
        ("fluency - fluency", {}, r"'fluency - fluency' is all zeros \(fluency: 0\)"),
        ("0*fluency", {}, r"'0\*fluency' is all zeros"),
        ("C(sex)[M]", {}, r"neither a design column nor a valid expression \(it contains "
                          r"brackets"),
        ([[1, 0, 0], [0, 1, 0]], {"stat_type": "F"}, r"expected 2 weights, got 3"),
        ([[1, 0], [0, 1]], {}, "pass stat_type='F'"),
        ([[1, 0], [2, 0]], {"stat_type": "F"}, "rows are linearly dependent"),
        ([1, np.nan], {}, "NaN"),
    ],
)
def test_bad_contrasts(small_fit, contrast, kwargs, message):
    with pytest.raises(ContrastError, match=message):
        compute_contrast(small_fit, contrast, **kwargs)


def test_bad_stat_type(small_fit):
    with pytest.raises(ParameterError, match="stat_type must be 't' or 'F'; got 'z'"):
        compute_contrast(small_fit, "fluency", stat_type="z")


def test_design_rows_must_match_maps(synth):
    imgs, design = synth
    with pytest.raises(
        DatasetError, match=f"design has {len(design)} rows but {len(imgs) - 1} maps"
    ):
        fit_second_level(imgs[:-1], design)


def test_dataset_without_design_subjects(synth):
    imgs, design = synth
    ds = SimpleNamespace(
        maps=tuple(imgs[:-2]), table=pd.DataFrame({"subject": list(design.index[:-2])})
    )
    with pytest.raises(DatasetError, match=r"are not in the dataset"):
        fit_second_level(ds, design)


def test_bad_images_and_parameters(synth, tmp_path):
    imgs, design = synth
    with pytest.raises(ParameterError, match="smoothing_fwhm must be None or a finite number >= 0"):
        fit_second_level(imgs, design, smoothing_fwhm=-2)
    missing = [str(tmp_path / "nope.nii.gz")] + list(imgs[1:])
    with pytest.raises(DataFileNotFoundError, match="nope.nii.gz"):
        fit_second_level(missing, design)
    four_d = [nib.Nifti1Image(np.zeros((*SHAPE, 2), "float32"), AFFINE)] + list(imgs[1:])
    with pytest.raises(ImageError, match="expected one 3-D image per subject"):
        fit_second_level(four_d, design)
    other_grid = [nib.Nifti1Image(np.zeros((5, 5, 5), "float32"), AFFINE)] + list(imgs[1:])
    with pytest.raises(ImageError, match="not all on the same grid"):
        fit_second_level(other_grid, design)
    with pytest.raises(ImageError, match="list of 3-D images or paths"):
        fit_second_level(str(tmp_path), design)


def test_bad_designs(synth):
    imgs, design = synth
    with_nan = design.copy()
    with_nan.iloc[3, 0] = np.nan
    with pytest.raises(DesignError, match=re.escape("rows ['S03']")):
        fit_second_level(imgs, with_nan)
    with pytest.raises(DesignError, match="not numeric"):
        fit_second_level(imgs, design.assign(site="a"))
    with pytest.raises(DesignError, match="Design.*or a pandas DataFrame"):
        fit_second_level(imgs, "fluency")
    with pytest.raises(DesignError, match="no residual degrees of freedom"):
        ols_fit(np.zeros((2, 3)), np.c_[[1.0, 2.0], [1.0, 1.0]])


# ------------------------------------------------------------------ demo parity
@pytest.fixture(scope="module")
def demo_fit(demo):
    keep = demo.table["pseudo"].notna().to_numpy()
    maps = [m for m, k in zip(demo.maps, keep, strict=True) if k]
    table = demo.table[keep]
    design = pd.DataFrame(
        {"fluency": table["pseudo"].to_numpy(dtype=float), "intercept": 1.0},
        index=pd.Index(table["subject"].astype(str), name="subject"),
    )
    model = fit_second_level(maps, design, smoothing_fwhm=5.0)  # from paths
    # nilearn gets the same maps loaded once in memory (reading the .nii.gz files again for
    # every step makes it ~3x slower; the values are the same bytes)
    imgs = [nib.load(m) for m in maps]
    imgs = [nib.Nifti1Image(np.asarray(i.dataobj), i.affine, i.header) for i in imgs]
    return imgs, design, model


def test_demo_parity_with_nilearn_reference_analysis(demo_fit):
    maps, design, model = demo_fit
    assert len(maps) == 89 and list(design.columns) == ["fluency", "intercept"]
    res = model.compute_contrast("fluency")
    ref, mask = _nilearn_maps(maps, design, "fluency", smoothing_fwhm=5.0)
    print("demo parity, smoothing 5 mm, default mask:", _max_diffs(res, ref))
    np.testing.assert_array_equal(np.asarray(model.mask_img.dataobj).astype(bool), mask)
    diffs = _max_diffs(res, ref)
    assert max(diffs.values()) < 1e-6, diffs
    assert np.all(np.isfinite(res.logp))


def test_demo_parity_without_smoothing_explicit_mask(demo_fit):
    maps, design, model = demo_fit
    mask_img = model.mask_img
    plain = fit_second_level(maps, design, mask_img=mask_img)
    ref, mask = _nilearn_maps(maps, design, "fluency", mask_img=mask_img)
    np.testing.assert_array_equal(np.asarray(plain.mask_img.dataobj).astype(bool), mask)
    diffs = _max_diffs(plain.compute_contrast("fluency"), ref)
    print("demo parity, no smoothing, explicit mask:", diffs)
    assert max(diffs.values()) < 1e-6, diffs


def test_demo_dataset_and_design_objects_are_aligned_by_subject(demo, demo_fit):
    """The whole 94-map Dataset with the 89-row reference Design: maps are picked by subject id."""
    from glmkit.stats.design import make_design

    _, _, model = demo_fit
    kept = demo.subset(demo.table.loc[demo.table["pseudo"].notna(), "subject"])
    design = make_design(kept, ["pseudo"], rename={"pseudo": "fluency"})
    assert list(design.matrix.columns) == ["fluency", "intercept"]
    aligned = fit_second_level(demo, design, smoothing_fwhm=5.0)
    assert aligned.subjects == tuple(design.matrix.index)
    np.testing.assert_allclose(
        aligned.compute_contrast("fluency").z,
        model.compute_contrast("fluency").z,
        rtol=0,
        atol=1e-10,
    )
