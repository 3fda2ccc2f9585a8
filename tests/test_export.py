"""Results out: the maps' headers and the BIDS-derivatives export.

The maps are checked with nibabel (intent codes and parameters, float32 on disk, the input's
sform/qform codes, the values outside the mask) and against closed forms (t = effect /
sqrt(variance), p from t by scipy); the export against nilearn's own ``save_glm_to_bids`` on
the same data (file names and values) and read back with nilearn's BIDS query.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from glmkit.data.nifti import Space, result_map
from glmkit.errors import ReportError
from glmkit.pipeline import run_analysis
from glmkit.report.export import bids_label
from glmkit.report.runfolder import RunManifest, promised_files, result_maps, write_run_folder

SHAPE = (10, 12, 9)
N = 16
AFFINE = np.array([[-3.0, 0, 0, 15], [0, 3, 0, -18], [0, 0, 3, -12], [0, 0, 0, 1]])


def _cohort(root: Path, *, codes=(4, 4), analyze=False, seed=0) -> tuple[Path, Path]:
    """``N`` maps with an effect of ``score`` in a block, on a brain-shaped box; a table."""
    rng = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, bool)
    brain[1:-1, 1:-1, 1:-1] = True
    block = np.zeros(SHAPE, bool)
    block[3:6, 3:7, 3:6] = True
    score, age = rng.standard_normal(N), rng.integers(20, 60, N).astype(float)
    (root / "maps").mkdir(parents=True)
    for i in range(N):
        data = np.where(brain, 5 + rng.standard_normal(SHAPE) + 2.0 * score[i] * block, 0)
        name = root / "maps" / f"sub-{i + 1:02d}_con.{'hdr' if analyze else 'nii.gz'}"
        if analyze:
            nib.save(nib.AnalyzeImage(data.astype("f4"), AFFINE), name)
            continue
        img = nib.Nifti1Image(data.astype("f4"), AFFINE)
        img.header.set_sform(AFFINE, code=codes[0])
        img.header.set_qform(AFFINE, code=codes[1])
        nib.save(img, name)
    table = root / "participants.tsv"
    pd.DataFrame({"participant_id": [f"sub-{i + 1:02d}" for i in range(N)], "score": score,
                  "age": age}).to_csv(table, sep="\t", index=False)
    return root / "maps", table


def _analysis(root: Path, **changes):
    maps, table = _cohort(root, **{k: changes.pop(k) for k in ("codes", "analyze")
                                   if k in changes})
    options = dict(dataset=str(maps), table=str(table), covariates=["score", "age"],
                   contrast="score - age", smoothing_fwhm=None, n_perm=19, random_state=0,
                   run_name="export-test")
    return run_analysis(**{**options, **changes})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run with ``export: bids`` written by the run folder's writer (the page is a stub:
    the writer, not the report, is under test)."""
    root = tmp_path_factory.mktemp("export")
    result = _analysis(root, export="bids")
    manifest = write_run_folder(root / "run", result, result_maps(result), "<html></html>")
    return result, manifest


# ----------------------------------------------------------------------------- headers
@pytest.mark.parametrize("codes, expected", [((4, 4), (4, 4)), ((2, 0), (2, 0)),
                                             ((3, 1), (3, 1)), ("analyze", (2, 0))])
def test_maps_carry_intents_and_the_inputs_space(tmp_path, codes, expected):
    analyze = codes == "analyze"
    result = _analysis(tmp_path, **({"analyze": True} if analyze else {"codes": codes}))
    dof = N - 3
    write_run_folder(tmp_path / "run", result, result_maps(result), "<html></html>")
    intents = {"z": ("z score", ()), "t": ("t test", (float(dof),)), "p": ("p value", ()),
               "effect": ("estimate", ()), "variance": ("estimate", ()),
               "z_fdr": ("z score", ()), "logp_bonferroni": ("none", ()),
               "logp_maxt": ("none", ()), "mask": ("none", ())}
    mask = np.asarray(nib.load(tmp_path / "run" / "maps" / "mask.nii.gz").dataobj) > 0
    assert mask.sum() == result.n_voxels
    for name, (intent, params) in intents.items():
        img = nib.load(tmp_path / "run" / "maps" / f"{name}.nii.gz")
        assert img.header.get_intent()[:2] == (intent, params), name
        assert img.get_data_dtype() == (np.uint8 if name == "mask" else np.float32), name
        assert img.get_sform(coded=True)[1] == expected[0], name
        assert img.get_qform(coded=True)[1] == expected[1], name
        np.testing.assert_allclose(img.affine, AFFINE if not analyze else
                                   nib.load(result.dataset.maps[0]).affine, atol=1e-6)
        data = np.asarray(img.dataobj)
        assert np.isfinite(data).all(), name
        outside = 1.0 if name == "p" else 0.0  # "p < 0.05" never selects a voxel outside
        assert (data[~mask] == outside).all(), name
    assert nib.load(tmp_path / "run" / "maps" / "logp_maxt.nii.gz").header.get_intent()[2] == \
        "-log10 p"


def test_t_variance_and_p_maps_follow_the_closed_forms(tmp_path):
    result = _analysis(tmp_path)
    maps = result.maps()
    mask = np.asarray(maps["mask"].dataobj) > 0
    effect, variance, t, p, z = (np.asarray(maps[k].get_fdata())[mask]
                                 for k in ("effect", "variance", "t", "p", "z"))
    dof = N - 3
    np.testing.assert_allclose(t, effect / np.sqrt(variance), rtol=1e-10)
    np.testing.assert_allclose(p, stats.t.sf(t, dof), rtol=1e-8, atol=1e-300)
    np.testing.assert_allclose(z, stats.norm.isf(stats.t.sf(t, dof)), rtol=1e-6, atol=1e-8)
    # and against an independent OLS per voxel, by lstsq, at a few voxels
    design = result.design.matrix.to_numpy(dtype=float)
    c = np.array([1.0, -1.0, 0.0])  # score - age, intercept
    Y = result.model.Y
    for v in (0, Y.shape[1] // 2, Y.shape[1] - 1):
        beta, rss, *_ = np.linalg.lstsq(design, Y[:, v], rcond=None)
        var = rss[0] / dof * c @ np.linalg.inv(design.T @ design) @ c
        assert effect[v] == pytest.approx(c @ beta, rel=1e-8)
        assert variance[v] == pytest.approx(var, rel=1e-8)


def test_f_map_header_holds_both_dofs():
    img = nib.Nifti1Image(np.ones((2, 2, 2)), np.eye(4))
    out = result_map(img, "F", dof=(2, 30), space=Space(4, 0))
    assert out.header.get_intent() == ("f test", (2.0, 30.0), "F")
    assert (out.get_sform(coded=True)[1], out.get_qform(coded=True)[1]) == (4, 0)


# ----------------------------------------------------------------------------- export
def test_export_is_nilearns_naming_and_values(exported, tmp_path):
    from nilearn.glm import save_glm_to_bids
    from nilearn.glm.second_level import SecondLevelModel

    result, manifest = exported
    ours = manifest.folder / "bids"
    design = result.design.matrix
    maps = [nib.load(m) for m in result.dataset.maps]
    by_subject = dict(zip(result.dataset.subjects, maps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SecondLevelModel(mask_img=result.model.mask_img, minimize_memory=False).fit(
            [by_subject[s] for s in design.index], design_matrix=design.reset_index(drop=True))
        save_glm_to_bids(model, ["score - age"], out_dir=tmp_path / "nilearn")
    theirs = tmp_path / "nilearn"
    label = bids_label("score - age")
    assert label == "scoreMinusAge"

    def statmaps(root):
        return sorted(p.relative_to(root).as_posix()
                      for p in root.rglob("contrast-*statmap.nii.gz"))

    assert statmaps(ours) == statmaps(theirs) == [
        f"group/contrast-{label}_stat-{s}_statmap.nii.gz" for s in sorted(
            ["effect", "variance", "t", "z", "p"])]
    assert (ours / "group" / f"contrast-{label}_clusters.tsv").is_file()
    assert (theirs / "group" / f"contrast-{label}_clusters.tsv").is_file()
    mask = np.asarray(result.model.mask_img.dataobj) > 0
    for stat in ("effect", "variance", "t", "z", "p"):
        name = f"group/contrast-{label}_stat-{stat}_statmap.nii.gz"
        mine = nib.load(ours / name).get_fdata()[mask]
        reference = nib.load(theirs / name).get_fdata()[mask]
        np.testing.assert_allclose(mine, reference, rtol=2e-5, atol=1e-6, err_msg=stat)
    description = json.loads((ours / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "glmkit"


def test_export_reads_back_with_nilearns_bids_query(exported):
    from nilearn.image import load_img
    from nilearn.interfaces.bids import get_bids_files, parse_bids_filename

    result, manifest = exported
    group = manifest.folder / "bids" / "group"
    found = get_bids_files(group, file_tag="statmap", file_type="nii.gz", sub_folder=False,
                           filters=[("contrast", "scoreMinusAge"), ("stat", "z")])
    assert [Path(f).name for f in found] == ["contrast-scoreMinusAge_stat-z_statmap.nii.gz"]
    assert parse_bids_filename(found[0])["entities"] == {"contrast": "scoreMinusAge",
                                                        "stat": "z"}
    z = load_img(found[0])
    np.testing.assert_array_equal(z.get_fdata(), nib.load(
        manifest.folder / "maps" / "z.nii.gz").get_fdata())
    assert z.header.get_intent()[0] == "z score" and z.get_sform(coded=True)[1] == 4


def test_export_sidecars_name_design_contrast_software_and_parameters(exported):
    result, manifest = exported
    group = manifest.folder / "bids" / "group"
    sidecar = json.loads((group / "contrast-scoreMinusAge_stat-t_statmap.json").read_text())
    assert sidecar["Statistic"] == "t"
    assert sidecar["Design"]["Columns"] == ["score", "age", "intercept"]
    assert sidecar["Design"]["NumberOfSubjects"] == N
    assert sidecar["Contrast"] == {
        "Name": "score - age", "Label": "scoreMinusAge", "Test": "t",
        "Weights": [1.0, -1.0, 0.0], "ConditionList": ["score", "age", "intercept"],
        "DegreesOfFreedom": N - 3, "Tail": "p and z are one-sided (upper tail)"}
    assert sidecar["Software"]["glmkit"] and sidecar["Software"]["nibabel"]
    assert sidecar["Parameters"] == result.settings.to_dict(runner=False)
    assert sidecar["Parameters"]["export"] == "bids"
    design = pd.read_csv(group / "design.tsv", sep="\t", dtype={"participant_id": str})
    assert list(design.columns) == ["participant_id", "score", "age", "intercept"]
    assert list(design["participant_id"]) == list(map(str, result.design.matrix.index))
    clusters = pd.read_csv(group / "contrast-scoreMinusAge_clusters.tsv", sep="\t")
    assert len(clusters) == len(result.clusters)
    for path in manifest.folder.rglob("*.json"):
        assert ".tmp-" not in path.read_text(), path  # no temporary path anywhere


def test_export_is_in_the_manifest_and_nothing_else_is_left(exported):
    _, manifest = exported
    exported_files = sorted(p.relative_to(manifest.folder).as_posix()
                            for p in (manifest.folder / "bids").rglob("*") if p.is_file())
    assert len(exported_files) == 16  # description, statmap.json, design, mask, 5 x 2, 2
    assert set(exported_files) <= set(manifest.paths)
    assert set(promised_files(("voxel",), export="bids")) <= set(manifest.paths)
    assert RunManifest.read(manifest.folder).check() == RunManifest.read(manifest.folder)
    assert not [p for p in manifest.folder.iterdir() if p.name.startswith(".")]


def test_bad_export_folder_that_exists_is_refused_before_anything_is_written(exported,
                                                                              tmp_path):
    result, _ = exported
    out = tmp_path / "run"
    (out / "bids").mkdir(parents=True)
    (out / "bids" / "mine.txt").write_text("keep")
    with pytest.raises(ReportError, match=r"export folder '.*run/bids' already exists: refusing "
                                          r"to overwrite or merge into it \(nothing was "
                                          r"written\); remove it"):
        write_run_folder(out, result, result_maps(result), "<html></html>")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "bids", "bids/mine.txt"]
