"""The pipeline stages on the demo cohort: what AnalysisResult holds and says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glmkit import pipeline
from glmkit.errors import ContrastError, ImageError, ParameterError
from glmkit.settings import RunSettings

STAGES = ["load", "qc", "design", "fit", "contrast", "thresholds", "permutation", "collect"]


@pytest.fixture(scope="module")
def result(glmkit_data_dir):
    settings = RunSettings(n_perm=30, run_name="pipeline-test")
    timings: dict[str, float] = {}
    dataset = pipeline.load_data(settings, timings=timings)
    qc = pipeline.quality_control(dataset, settings, timings=timings)
    design = pipeline.build_design(dataset, qc, settings, timings=timings)
    model = pipeline.fit_model(dataset, design, settings, timings=timings)
    contrast = pipeline.compute_contrast(model, settings, timings=timings)
    thresholds = pipeline.apply_thresholds(contrast, model, settings, timings=timings)
    permutation = pipeline.run_permutation(model, settings, timings=timings)
    return pipeline.collect(settings, dataset=dataset, qc=qc, design=design, model=model,
                            contrast=contrast, thresholds=thresholds, permutation=permutation,
                            timings=timings)


def test_every_stage_is_timed(result):
    assert list(result.timings) == STAGES
    assert all(t >= 0 for t in result.timings.values())


def test_maps_are_the_contract_set_and_finite(result):
    maps = result.maps()
    assert set(maps) == {"mask", "z", "t", "p", "effect", "variance", "z_fdr", "logp_bonferroni",
                         "logp_maxt"}
    mask = np.asarray(maps["mask"].dataobj) > 0
    for name, img in maps.items():
        data = np.asarray(img.dataobj)
        assert data.shape == mask.shape, name
        assert np.isfinite(data).all(), name
    assert mask.sum() == result.n_voxels


def test_bonferroni_map_is_the_closed_form(result):
    p = np.asarray(result.contrast.p, dtype=float)
    expected = -np.log10(np.minimum(1.0, p * p.size))
    np.testing.assert_allclose(result.logp_bonferroni, expected, rtol=1e-10, atol=1e-12)


def test_qc_and_design_subjects(result):
    missing = set(result.dataset.table.loc[result.dataset.table["pseudo"].isna(), "subject"])
    assert len(missing) == 5
    defects = result.dataset.provenance["defects"]
    units = {s for s, kind in defects.items() if kind == "scale_x100"}
    assert set(result.qc.excluded) == missing | units  # a unit change excludes ...
    assert set(result.qc.flags()["subject"]) == set(defects)  # ... a coverage gap flags
    assert list(result.design.matrix.index) == list(result.qc.kept)
    assert list(result.design.columns) == ["fluency", "intercept"]
    assert result.model.Y.shape[0] == len(result.qc.kept)


def test_headline_counts_are_recomputable(result):
    head = result.headline()
    json.dumps(head)  # JSON-able
    z = np.asarray(result.contrast.z)
    assert head["n_subjects"] == 94
    assert head["n_kept"] == 94 - head["n_excluded"] == len(result.design.matrix)
    fdr = result.thresholds["fdr"].threshold
    assert head["suprathreshold"]["fdr"] == int(np.count_nonzero(z >= fdr))  # one-sided
    logp = np.asarray(result.permutation.logp_fwer["voxel"])
    assert head["suprathreshold"]["perm_voxel"] == int(np.count_nonzero(logp > -np.log10(0.05)))
    # FWER controls more strictly than FDR: it never passes more voxels here
    assert head["suprathreshold"]["bonferroni"] <= head["suprathreshold"]["fdr"]
    assert head["n_perm"] == 30 and head["random_state"] == result.settings.random_state


def test_peak_is_the_z_maximum_near_the_planted_region(result):
    z_img = result.maps()["z"]
    data = np.asarray(z_img.dataobj)
    ijk = np.unravel_index(np.argmax(data), data.shape)
    xyz = (z_img.affine @ np.r_[ijk, 1.0])[:3]
    peak_z, peak_xyz = result.peak()
    assert peak_z == pytest.approx(data.max())
    np.testing.assert_allclose(peak_xyz, xyz)
    centre = np.asarray(result.dataset.provenance["planted_region"]["center_mm"])
    radius = result.dataset.provenance["planted_region"]["radius_mm"]
    assert np.linalg.norm(np.asarray(peak_xyz) - centre) <= radius


def test_summary_mentions_fdr_and_fwer_separately(result):
    text = result.summary()
    assert "excluded by QC" in text
    assert "(FDR 0.05)" in text and "(FWER 0.05)" in text
    perm = result.permutation
    text = result.permutation_summary()
    assert text.startswith(f"Permutation test of 'fluency': {perm.n_perm} permutations")
    assert f"random_state={result.settings.random_state}" in text
    n_sig = int(np.sum(perm.logp_fwer["voxel"] >= -np.log10(0.05) - 1e-12))
    assert f"{n_sig} voxels with FWER p <= 0.05" in text


def test_no_permutation_when_no_statistic(result):
    settings = result.settings.replace(statistics=())
    assert pipeline.run_permutation(result.model, settings) is None
    bare = pipeline.collect(settings, dataset=result.dataset, qc=result.qc,
                            design=result.design, model=result.model,
                            contrast=result.contrast, thresholds=result.thresholds,
                            permutation=None)
    assert "logp_maxt" not in bare.maps()
    assert "no permutation" in bare.permutation_summary()
    assert set(bare.headline()["suprathreshold"]) == {"fdr", "bonferroni"}


def test_cluster_table_of_the_headline_threshold(result):
    clusters = result.clusters
    assert {"x", "y", "z", "peak_stat", "size_voxels"} <= set(clusters.columns)
    fdr = result.thresholds["fdr"]
    assert (clusters["peak_stat"] >= fdr.threshold).all()
    peak_z, peak_xyz = result.peak()
    assert clusters["peak_stat"].max() == pytest.approx(peak_z, rel=1e-5)


def test_nothing_survives_gives_empty_cluster_table_with_columns(result):
    settings = result.settings.replace(alpha=1e-12)
    thresholds = pipeline.apply_thresholds(result.contrast, result.model, settings)
    bare = pipeline.collect(settings, dataset=result.dataset, qc=result.qc,
                            design=result.design, model=result.model,
                            contrast=result.contrast, thresholds=thresholds, permutation=None)
    assert bare.headline()["suprathreshold"]["fdr"] == 0
    assert bare.clusters.empty and "peak_stat" in bare.clusters.columns


def test_unknown_contrast_with_formula_fails_before_fit(result):
    settings = RunSettings(formula="pseudo + age", contrast="fluensy")
    with pytest.raises(ContrastError, match=r"contrast 'fluensy' names 'fluensy', which is not "
                                            r"a design column: the design of the 88 subjects QC "
                                            r"kept has columns \['fluency', 'age', 'intercept'\] "
                                            r"\(did you mean 'fluency'\?\)"):
        pipeline.build_design(result.dataset, result.qc, settings)


def test_fpr_height_control_adds_its_threshold(result):
    settings = result.settings.replace(height_control="fpr", alpha=0.001)
    thresholds = pipeline.apply_thresholds(result.contrast, result.model, settings)
    assert list(thresholds) == ["fdr", "bonferroni", "fpr"]
    from scipy.stats import norm

    assert thresholds["fpr"].threshold == pytest.approx(norm.isf(0.001), rel=1e-6)


# ------------------------------------------------------------------ exchangeability blocks
def test_groups_permute_within_site_blocks(result):
    """groups=site: the run's null equals the engine's with the kept subjects' sites, each
    permutation keeps every subject within its site, and it differs from free permutations."""
    from glmkit.stats.permutation import _draw, permutation_test

    settings = RunSettings(n_perm=30, run_name="pipeline-test", groups="site")
    assert "site" in settings.design_variables()
    perm = pipeline.run_permutation(result.model, settings, dataset=result.dataset)
    table = result.dataset.table.set_index("subject")
    sites = table.loc[list(result.design.matrix.index), "site"].to_numpy()
    direct = permutation_test(result.model.Y, result.design.matrix, "fluency", n_perm=30,
                              groups=sites, random_state=settings.random_state, verbose=False)
    np.testing.assert_array_equal(perm.null_max["voxel"], direct.null_max["voxel"])
    assert perm.info["exchangeability_blocks"] == len(set(sites)) > 1
    perms, _ = _draw(settings.random_state, 30, len(sites), False, sites)
    assert all(np.array_equal(sites[p], sites) for p in perms)
    assert not np.array_equal(perm.null_max["voxel"], result.permutation.null_max["voxel"])


def test_groups_bad_column_fails_before_the_fit(result):
    settings = RunSettings(n_perm=30, groups="scanner")
    with pytest.raises(ParameterError, match=r"groups='scanner' is not a column .*site"):
        pipeline.build_design(result.dataset, result.qc, settings)
    with pytest.raises(ParameterError, match="needs the dataset"):
        pipeline.run_permutation(result.model, RunSettings(n_perm=30, groups="site"))
    with pytest.raises(ParameterError, match="every subject in its own block"):
        pipeline.build_design(result.dataset, result.qc, settings.replace(groups="subject"))


# ------------------------------------------------------------------ contrasts
@pytest.mark.parametrize(("contrast", "scale"), [("2*fluency", 2.0), ((1, 0), 1.0),
                                                  ("[1, 0]", 1.0)])
def test_documented_contrasts_run_through_the_stages(result, contrast, scale):
    """'2*fluency' and the vector [1, 0] (as a tuple or as the CLI's text) give the 'fluency'
    run's z and permutation maps exactly, and scale the effect."""
    settings = result.settings.replace(contrast=contrast)
    assert pipeline.check_contrast(result.dataset, settings).columns == ("fluency", "intercept")
    design = pipeline.build_design(result.dataset, result.qc, settings)
    assert design.columns == result.design.columns
    con = pipeline.compute_contrast(result.model, settings)
    np.testing.assert_array_equal(con.z, result.contrast.z)
    np.testing.assert_allclose(con.effect, scale * result.contrast.effect, rtol=1e-12)
    perm = pipeline.run_permutation(result.model, settings)
    np.testing.assert_array_equal(perm.null_max["voxel"], result.permutation.null_max["voxel"])
    np.testing.assert_array_equal(perm.logp_fwer["voxel"], result.permutation.logp_fwer["voxel"])
    assert result.permutation.logp_fwer["voxel"].max() > 1  # the effect is there to compare
    expected = "2*fluency" if contrast == "2*fluency" else "[1, 0]"
    assert con.name == perm.contrast == expected


def _folder_study(tmp_path, *, n=12):
    """A folder dataset: n small maps, a table with score, a 3-level group and age; the
    subjects of group 'c' all lack their score."""
    import nibabel as nib

    rng = np.random.default_rng(11)
    maps = tmp_path / "maps"
    maps.mkdir()
    rows = ["subject\tscore\tgroup\tage"]
    for i in range(n):
        subject = f"sub-{i:02d}"
        data = rng.normal(size=(6, 6, 6)).astype("f4") + 10
        nib.save(nib.Nifti1Image(data, np.eye(4)), maps / f"{subject}_con.nii.gz")
        group = "abc"[i % 3]
        score = "n/a" if group == "c" else f"{rng.normal():.3f}"
        rows.append(f"{subject}\t{score}\t{group}\t{20 + i}")
    table = tmp_path / "participants.tsv"
    table.write_text("\n".join(rows) + "\n")
    return maps, table


def _unreadable(dataset) -> None:
    """Overwrite every map of a loaded dataset with bytes no image reader accepts."""
    for path in dataset.maps:
        with open(path, "wb") as handle:
            handle.write(b"not an image")


def test_contrast_on_a_level_qc_removes_fails_before_any_map_is_read(tmp_path, monkeypatch):
    """Group 'c' only has subjects without a score: QC would exclude them all, so the column
    of level c does not exist. The error comes before quality_control reads a map: the maps
    are unreadable by then, and nibabel.load is watched."""
    import nibabel as nib

    maps, table = _folder_study(tmp_path)
    settings = RunSettings(dataset=str(maps), table=str(table), formula="score + C(group)",
                           rename={}, contrast="C(group)[T.c]")
    dataset = pipeline.load_data(settings)
    _unreadable(dataset)
    loads = []
    real_load = nib.load
    monkeypatch.setattr(nib, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    with pytest.raises(ContrastError) as info:
        pipeline.quality_control(dataset, settings)
    assert loads == []
    assert str(info.value) == (
        "contrast 'C(group)[T.c]' is neither a design column nor a valid expression (it "
        "contains brackets [...], which is not allowed: use column names, numbers, +, -, * and "
        "/ (quote other names with backticks, e.g. `C(sex)[T.M]`)): the design of the 8 "
        "subjects that have every design variable ['score', 'group'] (QC excludes the 4 "
        "others) has columns ['score', 'C(group)[T.b]', 'intercept'] and levels group: a "
        "(reference), b (did you mean 'C(group)[T.b]'?); pass a design column, an expression of columns such as 'a - b' or "
        "'2*a', or one weight per column.")
    with pytest.raises(ContrastError, match=r"names 'C\(group\)\[T.c\]', which is not a design "
                                            r"column: the design of the 8 subjects"):
        pipeline.quality_control(dataset, settings.replace(
            contrast="`C(group)[T.c]` - `C(group)[T.b]`"))
    assert loads == []
    # the control: a contrast the design has goes on to QC, which does read the maps
    with pytest.raises(ImageError, match="cannot be read as a NIfTI/Analyze image"):
        pipeline.quality_control(dataset, settings.replace(contrast="C(group)[T.b]"))
    assert loads


def test_run_analysis_with_a_level_present_runs_and_contrasts_it(tmp_path):
    """The same study with readable maps: a level the design has is tested end to end."""
    maps, table = _folder_study(tmp_path)
    settings = RunSettings(dataset=str(maps), table=str(table), formula="score + C(group)",
                           rename={}, contrast="`C(group)[T.b]` + 0*score", n_perm=19,
                           smoothing_fwhm=None, cut_coords=(2, 2, 2))
    out = pipeline.run_analysis(settings)
    assert out.design.columns == ("score", "C(group)[T.b]", "intercept")
    assert out.headline()["contrast"] == "`C(group)[T.b]` + 0*score"
    assert len(out.qc.kept) == 8 and out.permutation.n_perm == 19
    ref = out.model.compute_contrast([0, 1, 0])
    np.testing.assert_array_equal(out.contrast.z, ref.z)
