"""The designs researchers run, through the run layer (settings -> pipeline stages): one-sample,
two or more groups (categorical covariates, contrasts by level name), ANCOVA and F tests;
the analyst's mask and QC policy. z and F maps equal nilearn's SecondLevelModel; the
permutation nulls equal a plain numpy loop written here. Data are skewed, one subject at 3x.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from glmkit import pipeline
from glmkit.data.datasets import Dataset
from glmkit.errors import ContrastError, DatasetError, DesignError, ImageError, ParameterError
from glmkit.settings import RunSettings

SHAPE = (12, 12, 10)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
N = 24


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """24 maps: smooth skewed noise, a group effect and an age effect in two blobs."""
    rng = np.random.default_rng(10)
    root = tmp_path_factory.mktemp("designs")
    brain = np.zeros(SHAPE, bool)
    brain[1:-1, 1:-1, 1:-1] = True
    group = np.array(["control", "patient", "sibling"] * (N // 3))
    age = rng.uniform(20, 60, N).round(1)
    blob_g = np.zeros(SHAPE)
    blob_g[3:6, 3:6, 3:6] = 1.0
    blob_a = np.zeros(SHAPE)
    blob_a[7:10, 6:9, 5:8] = 1.0
    maps = []
    for i in range(N):
        noise = ndimage.gaussian_filter(rng.gamma(1.5, size=SHAPE) - 1.5, 1.0) * 3
        data = noise + 1.2 * (group[i] == "patient") * blob_g + 0.05 * (age[i] - 40) * blob_a
        data += 0.8  # a mean effect for the one-sample test
        data *= 3.0 if i == 5 else 1.0  # one subject at 3x scale
        data[~brain] = 0.0
        path = root / f"sub-{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), path)
        maps.append(str(path))
    table = pd.DataFrame({"subject": [f"sub-{i:02d}" for i in range(N)], "group": group,
                          "age": age, "site": np.repeat(["a", "b"], N // 2)})
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    return Dataset("designs", tuple(maps), table), root


def _settings(root: Path, **changes) -> RunSettings:
    base = dict(dataset=str(root), table=str(root / "participants.tsv"), covariates=(),
                rename={}, contrast="intercept",
                smoothing_fwhm=4.0, n_perm=99, random_state=3, statistics=("voxel",))
    return RunSettings(**{**base, **changes})


def _stages(dataset, settings):
    qc = pipeline.quality_control(dataset, settings)
    design = pipeline.build_design(dataset, qc, settings)
    model = pipeline.fit_model(dataset, design, settings)
    contrast = pipeline.compute_contrast(model, settings)
    return design, model, contrast


def _nilearn(dataset, design, model, contrast_def, stat_type, smoothing):
    from nilearn.glm.second_level import SecondLevelModel

    slm = SecondLevelModel(smoothing_fwhm=smoothing, mask_img=model.mask_img)
    by = dict(zip(dataset.table["subject"], dataset.maps))
    maps = [by[s] for s in design.matrix.index]
    slm.fit(maps, design_matrix=design.matrix.reset_index(drop=True))
    z = slm.compute_contrast(contrast_def, second_level_stat_type=stat_type,
                             output_type="z_score")
    stat = slm.compute_contrast(contrast_def, second_level_stat_type=stat_type,
                                output_type="stat")
    mask = np.asarray(model.mask_img.dataobj) > 0
    return np.asarray(z.dataobj)[mask], np.asarray(stat.dataobj)[mask]


@pytest.mark.parametrize("changes, nilearn_contrast, stat_type", [
    ({"covariates": (), "contrast": "intercept"}, [1.0], "t"),
    ({"covariates": ("group",), "contrast": "patient - control"}, [1.0, 0, 0], "t"),
    ({"covariates": ("group",), "contrast": "sibling - patient"}, [-1.0, 1, 0], "t"),
    ({"covariates": ("group", "age"), "contrast": "patient - control", "center": True},
     [1.0, 0, 0, 0], "t"),
    ({"covariates": ("age", "group"), "contrast": "[age, patient]"},
     [[1.0, 0, 0, 0], [0, 1, 0, 0]], "F"),
    ({"formula": "C(group) + age", "contrast": "patient - control"}, [1.0, 0, 0, 0], "t"),
], ids=["one-sample", "two-group", "level-difference", "ancova", "F", "formula"])
def test_z_and_f_maps_equal_nilearn(cohort, changes, nilearn_contrast, stat_type):
    dataset, root = cohort
    settings = _settings(root, **changes)
    design, model, contrast = _stages(dataset, settings)
    assert contrast.stat_type == stat_type
    z, stat = _nilearn(dataset, design, model, np.array(nilearn_contrast), stat_type, 4.0)
    np.testing.assert_allclose(contrast.z, z, atol=1e-6)
    np.testing.assert_allclose(contrast.stat, stat, rtol=1e-6, atol=1e-6)
    assert np.abs(contrast.z).max() > 3  # the planted effects are there: not a test of noise


def test_design_columns_and_levels(cohort):
    dataset, root = cohort
    settings = _settings(root, covariates=("group", "age"), contrast="patient")
    design, _, contrast = _stages(dataset, settings)
    assert design.columns == ("group[patient]", "group[sibling]", "age", "intercept")
    assert design.levels == {"group": {"control": None, "patient": "group[patient]",
                                       "sibling": "group[sibling]"}}
    np.testing.assert_array_equal(contrast.contrast, [1.0, 0, 0, 0])
    text = pipeline.preview(settings)
    assert "group: levels control (reference, n=8), patient (n=8), sibling (n=8)" in text


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
def test_group_permutation_null_equals_a_refit_loop(cohort, scheme):
    """Permutation of a two-group ANCOVA: null maxima from a plain refit per permutation."""
    from glmkit.stats.permutation import permutation_test

    dataset, root = cohort
    settings = _settings(root, covariates=("group", "age"), contrast="patient - control",
                         scheme=scheme)
    design, model, _ = _stages(dataset, settings)
    rng = np.random.default_rng(1)
    perms = np.array([rng.permutation(N) for _ in range(30)])
    res = permutation_test(model.Y, design, "patient - control", n_perm=30, scheme=scheme,
                           _permutations=perms, verbose=False)
    X = design.matrix.to_numpy()
    c = np.array([1.0, 0, 0, 0])
    Z = X[:, 1:]
    reduced = Z if scheme == "freedman_lane" else X
    fitted = reduced @ np.linalg.lstsq(reduced, model.Y, rcond=None)[0]
    resid = model.Y - fitted
    if scheme == "ter_braak":
        fitted = np.zeros_like(fitted)
    xtx = np.linalg.inv(X.T @ X)
    maxima = []
    for perm in perms:
        Yp = fitted + resid[perm]
        beta, rss = np.linalg.lstsq(X, Yp, rcond=None)[:2]
        maxima.append(((c @ beta) / np.sqrt(rss / (N - 4) * (c @ xtx @ c))).max())
    np.testing.assert_allclose(res.null_max["voxel"][1:], maxima, rtol=1e-8)


def test_one_sample_run_sign_flips(cohort):
    dataset, root = cohort
    settings = _settings(root)
    design, model, _ = _stages(dataset, settings)
    perm = pipeline.run_permutation(model, settings, dataset=dataset)
    assert design.columns == ("intercept",) and perm.method == "sign_flip"


def test_exact_enumeration_through_the_run_layer(cohort):
    dataset, root = cohort
    small = Dataset("small", dataset.maps[:8], dataset.table.iloc[:8].reset_index(drop=True))
    settings = _settings(root, n_perm=1000)
    _, model, _ = _stages(small, settings)
    perm = pipeline.run_permutation(model, settings, dataset=small)
    assert perm.exact and perm.n_perm == 2**8 - 1


# ----------------------------------------------------------------------------- the mask
def test_mni152_mask_and_a_mask_file(cohort, tmp_path):
    dataset, root = cohort
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:10, 2:10, 2:8] = 1
    path = tmp_path / "roi.nii.gz"
    nib.save(nib.Nifti1Image(mask, AFFINE), path)
    settings = _settings(root, mask=str(path))
    _, model, contrast = _stages(dataset, settings)
    np.testing.assert_array_equal(np.asarray(model.mask_img.dataobj) > 0, mask > 0)
    assert contrast.z.size == int(mask.sum())
    info = pipeline.analysis_mask(dataset, settings)
    assert info.source == "roi.nii.gz" and info.n_voxels == mask.sum() and not info.resampled


def test_mask_at_another_resolution_is_resampled_nearest(cohort, tmp_path):
    dataset, root = cohort
    fine = np.zeros((24, 24, 20), np.uint8)
    fine[4:20, 4:20, 4:16] = 1
    path = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(fine, np.diag([1.5, 1.5, 1.5, 1.0])), path)
    info = pipeline.analysis_mask(dataset, _settings(root, mask=str(path)))
    assert info.resampled and info.img.shape == SHAPE
    expected = np.zeros(SHAPE, bool)
    expected[2:10, 2:10, 2:8] = True
    np.testing.assert_array_equal(np.asarray(info.img.dataobj) > 0, expected)


# ----------------------------------------------------------------------------- QC policy
def test_qc_parameter_reaches_quality_control(cohort):
    dataset, root = cohort
    qc = pipeline.quality_control(dataset, _settings(root, qc={"exclude": ["scale_outlier"],
                                                               "scale_z_max": 2.0}))
    assert "sub-05" in qc.excluded  # the 3x subject, excluded on request
    kept = pipeline.quality_control(dataset, _settings(
        root, qc={"exclude": ["scale_outlier"], "scale_z_max": 2.0, "keep": ["sub-05"]}))
    assert "sub-05" in kept.kept and kept.kept_by_request == ("sub-05",)
    default = pipeline.quality_control(dataset, _settings(root))
    assert "sub-05" in default.kept  # 3x is plausible: flagged at most, never excluded


# ----------------------------------------------------------------------------- bad input
def _one_subject_group(t):
    t = t.copy()
    t.loc[0, "group"] = "alone"
    return t


def _one_level(t):
    t = t.copy()
    t["group"] = "patient"
    return t


@pytest.mark.parametrize("changes, table_edit, error, message", [
    ({"covariates": ("group",), "contrast": "patient - control"}, _one_subject_group,
     DesignError, r"column 'group': level\(s\) \['alone'\] have a single subject "
                  r"\(\{'alone': \['sub-00'\]\}\); a group needs at least 2"),
    ({"covariates": ("group",), "contrast": "intercept"}, _one_level,
     DesignError, r"column 'group' is categorical with a single level \('patient'"),
    ({"covariates": ("group",), "contrast": "patient - contrl"}, None,
     ContrastError, r"contrast 'patient - contrl' names 'contrl', which is not a design "
                    r"column: .* and levels group: control \(reference\), patient, sibling "
                    r"\(did you mean 'control'\?\)"),
    ({"covariates": ("group",), "contrast": "control"}, None,
     ContrastError, r"contrast 'control' is zero with this design: \['control'\] is the "
                    r"reference level of 'group', absorbed by the intercept; compare levels"),
    ({"covariates": ("group", "age"), "contrast": "[patient, 2*patient]"}, None,
     ContrastError, r"linearly dependent"),
    ({"covariates": ("group", "site"), "contrast": "a"}, None,
     ContrastError, r"contrast 'a' is zero with this design: \['a'\] is the reference level "
                    r"of 'site'.*e\.g\. 'b - a'"),
], ids=["group-of-one", "one-level", "unknown-level", "reference-alone", "dependent-F-rows",
        "reference-of-another-factor"])
def test_design_errors_before_any_map_is_read(cohort, changes, table_edit, error, message,
                                              monkeypatch):
    dataset, root = cohort
    if table_edit is not None:
        dataset = Dataset(dataset.name, dataset.maps, table_edit(dataset.table))
    settings = _settings(root, **changes)

    def no_read(*args, **kwargs):  # any image read would mean the check came too late
        raise AssertionError("a map was read before the design error")

    monkeypatch.setattr(nib, "load", no_read)
    with pytest.raises(error, match=message):
        pipeline.quality_control(dataset, settings)


def test_level_name_of_two_factors_is_ambiguous(cohort):
    dataset, root = cohort
    table = dataset.table.assign(arm=np.where(np.arange(N) % 4 < 2, "patient", "other"))
    ds = Dataset(dataset.name, dataset.maps, table)
    with pytest.raises(ContrastError, match=r"'patient', a level of several factors \(group, "
                                            r"arm\); name the column instead"):
        pipeline.quality_control(ds, _settings(root, covariates=("group", "arm"),
                                               contrast="patient - other"))


@pytest.mark.parametrize("make, error, message", [
    (lambda p: nib.save(nib.Nifti1Image(np.full(SHAPE, 0.5, np.float32), AFFINE), p),
     ImageError, r"mask 'm.nii.gz' is not binary: it holds values such as 0.5"),
    (lambda p: nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), p),
     ImageError, r"mask 'm.nii.gz' is empty"),
    (lambda p: nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8),
                                        np.diag([3.0, 3, 3, 1]) + np.eye(4) * 0
                                        + _shift(300.0)), p),
     ImageError, r"does not overlap the maps' field of view"),
    (lambda p: nib.save(nib.Nifti1Image(np.ones((*SHAPE, 2), np.uint8), AFFINE), p),
     ImageError, r"has shape \(12, 12, 10, 2\): expected a 3-D image"),
    (lambda p: p.write_text("not an image"), ImageError, r"is not a readable NIfTI"),
    (None, Exception, r"does not exist: expected a NIfTI mask file or 'mni152'"),
], ids=["non-binary", "empty", "other-space", "4-D", "not-an-image", "missing"])
def test_mask_errors(cohort, tmp_path, make, error, message):
    dataset, root = cohort
    path = tmp_path / "m.nii.gz"
    if make is not None:
        make(path)
    with pytest.raises(error, match=message):
        pipeline.analysis_mask(dataset, _settings(root, mask=str(path)))


def _shift(mm):
    out = np.zeros((4, 4))
    out[:3, 3] = mm
    return out


def test_mask_that_barely_overlaps_the_data_is_another_space(cohort, tmp_path):
    dataset, root = cohort
    shell = np.ones(SHAPE, np.uint8)  # the border of the field of view, where maps are 0
    shell[1:-1, 1:-1, 1:-1] = 0
    shell[5, 5, 5] = 1
    path = tmp_path / "shell.nii.gz"
    nib.save(nib.Nifti1Image(shell, AFFINE), path)
    with pytest.raises(ImageError, match=r"overlaps the data of the first map in only "
                                         r"\d+\.\d% of its voxels: it is probably in another"):
        pipeline.analysis_mask(dataset, _settings(root, mask=str(path)))


@pytest.mark.parametrize("changes, error, message", [
    ({"contrast": "[age, score]", "two_sided": True}, ContrastError,
     r"is a list of contrasts, an F test, and two_sided=true has no meaning"),
    ({"within": "session", "contrast": "[post, pre]"}, ContrastError,
     r"a repeated-measures F test is not supported"),
    ({"qc": {"exclud": ["coverage"]}}, ParameterError, r"qc: unknown key\(s\) \['exclud'\]"),
    ({"qc": "{keep: [S1]"}, ParameterError, r"qc="),
], ids=["F-two-sided", "within-F", "qc-key", "qc-yaml"])
def test_settings_errors(changes, error, message):
    with pytest.raises(error, match=message):
        RunSettings(**changes)


def test_qc_errors_name_the_check_and_the_subject(cohort):
    dataset, root = cohort
    with pytest.raises(ParameterError, match=r"qc's exclude: unknown check\(s\) "
                                             r"\['coverge'\]; known checks: \['missing_value'"):
        pipeline.quality_control(dataset, _settings(root, qc={"exclude": ["coverge"]}))
    with pytest.raises(DatasetError, match=r"qc keep names subject\(s\) \['S99'\]"):
        pipeline.quality_control(dataset, _settings(root, qc={"keep": ["S99"]}))


# ----------------------------------------------------------------------------- paired
@pytest.fixture(scope="module")
def paired_study(tmp_path_factory):
    """8 subjects x 2 sessions in sub-XX/ses-<level>/ folders; post - pre has an effect."""
    rng = np.random.default_rng(21)
    root = tmp_path_factory.mktemp("paired")
    blob = np.zeros(SHAPE)
    blob[3:7, 3:7, 3:6] = 1.0
    rows = []
    for i in range(8):
        base = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.0) * 2
        for level in ("pre", "post"):
            noise = ndimage.gaussian_filter(rng.gamma(1.5, size=SHAPE) - 1.5, 1.0)
            data = base + noise + (1.5 * blob if level == "post" else 0.0)
            data *= 3.0 if i == 2 else 1.0
            folder = root / "maps" / f"sub-{i:02d}" / f"ses-{level}"
            folder.mkdir(parents=True)
            nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), folder / "con.nii.gz")
            rows.append({"participant_id": f"sub-{i:02d}", "session": level, "age": 20.0 + i})
    table = root / "sessions.tsv"
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    return root


def _paired_settings(root, **changes):
    base = dict(dataset=str(root / "maps"), table=str(root / "sessions.tsv"),
                subject_column="participant_id", within="session", covariates=(),
                contrast="post - pre", smoothing_fwhm=None, n_perm=1000, two_sided=True,
                random_state=1)
    return RunSettings(**{**base, **changes})


def test_paired_design_is_a_one_sample_test_of_differences(paired_study):
    """z equals nilearn's one-sample test of the post - pre maps (computed here), and the
    sign flips are all 2^8 of them, with p-values equal to a brute-force loop."""
    import itertools

    from nilearn.glm.second_level import SecondLevelModel
    from scipy import stats

    settings = _paired_settings(paired_study)
    dataset = pipeline.load_data(settings)
    assert len(dataset.maps) == 16 and {"sub-00:post", "sub-00:pre"} <= set(dataset.subjects)
    qc = pipeline.quality_control(dataset, settings)
    design = pipeline.build_design(dataset, qc, settings)
    assert design.columns == ("intercept",) and len(design.subjects) == 8
    model = pipeline.fit_model(dataset, design, settings)
    contrast = pipeline.compute_contrast(model, settings)
    diffs = []
    for s in design.subjects:
        post = nib.load(paired_study / "maps" / s / "ses-post" / "con.nii.gz")
        pre = nib.load(paired_study / "maps" / s / "ses-pre" / "con.nii.gz")
        diffs.append(nib.Nifti1Image(post.get_fdata() - pre.get_fdata(), AFFINE))
    slm = SecondLevelModel(mask_img=model.mask_img).fit(
        diffs, design_matrix=pd.DataFrame({"intercept": np.ones(8)}))
    mask = np.asarray(model.mask_img.dataobj) > 0
    z = np.asarray(slm.compute_contrast("intercept", output_type="z_score").dataobj)[mask]
    np.testing.assert_allclose(contrast.z, z, atol=1e-6)
    perm = pipeline.run_permutation(model, settings, dataset=dataset)
    assert perm.method == "sign_flip" and perm.exact and perm.n_perm == 2**8 - 1
    Y = np.stack([np.asarray(d.dataobj)[mask] for d in diffs])
    t_obs = np.abs(stats.ttest_1samp(Y, 0.0).statistic)
    null = [np.abs(stats.ttest_1samp(np.array(s)[:, None] * Y, 0.0).statistic).max()
            for s in itertools.product([1, -1], repeat=8)]
    p = np.array([np.sum(np.array(null) >= v * (1 - 1e-9)) for v in t_obs]) / 2**8
    np.testing.assert_allclose(10 ** -perm.logp_fwer["voxel"], p, rtol=1e-9)
    assert contrast.name == "post - pre"


def test_paired_with_a_covariate_and_qc_exclusion(paired_study):
    settings = _paired_settings(paired_study, covariates=("age",), qc={"flag": []},
                                n_perm=50)
    dataset = pipeline.load_data(settings)
    qc = pipeline.quality_control(dataset, settings)
    design = pipeline.build_design(dataset, qc, settings)
    assert design.columns == ("age", "intercept")
    assert abs(design.matrix["age"].mean()) < 1e-12  # centred: the intercept is the mean change


@pytest.mark.parametrize("edit, error, message", [
    (lambda t: t[~((t.participant_id == "sub-03") & (t.session == "pre"))], DatasetError,
     r"within='session': 1 subject\(s\) lack a level the contrast uses \(sub-03 lacks "
     r"\['pre'\]\)"),
    (lambda t: pd.concat([t, t.iloc[[0]]]), DatasetError,
     r"the table has several rows for \['sub-00:pre'\]"),
    (lambda t: t.drop(columns="session"), DatasetError,
     r"within='session' is not a column of the subject table"),
], ids=["missing-level", "duplicate-row", "no-column"])
def test_paired_bad_tables(paired_study, tmp_path, edit, error, message):
    table = edit(pd.read_csv(paired_study / "sessions.tsv", sep="\t"))
    path = tmp_path / "t.tsv"
    table.to_csv(path, sep="\t", index=False)
    settings = _paired_settings(paired_study, table=str(path))
    with pytest.raises(error, match=message):
        dataset = pipeline.load_data(settings)
        pipeline.quality_control(dataset, settings)


def test_paired_within_column_is_not_a_covariate(paired_study):
    with pytest.raises(ParameterError, match=r"within='session' is also in covariates"):
        _paired_settings(paired_study, covariates=("session",))


def test_paired_contrast_must_name_levels(paired_study):
    settings = _paired_settings(paired_study, contrast="post - baseline")
    with pytest.raises(ContrastError, match=r"names \['baseline'\], which is not a level of "
                                            r"within='session': its levels are \['post', 'pre'\]"):
        pipeline.load_data(settings)  # before any map is listed
