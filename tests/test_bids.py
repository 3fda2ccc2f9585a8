"""Data in: BIDS derivatives, SPM/fMRIPrep/FitLins layouts, globs, lists, Python objects.

Every map written here holds one constant, its subject's number, so a map paired with the
wrong table row is seen at once (``_value``). Entities are checked against nilearn's own
BIDS file-name parser. The bad inputs check their messages: what, where, and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glmkit import pipeline
from glmkit.data import bids
from glmkit.data.datasets import Dataset, load_bids, load_dataset, load_folder
from glmkit.errors import DataFileNotFoundError, DatasetError, ParameterError
from glmkit.settings import RunSettings

SHAPE = (4, 5, 3)
SPACE = "MNI152NLin2009cAsym"


def _map(path: Path, value: float, *, code: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.full(SHAPE, value, dtype="f4"), np.diag([3.0, 3.0, 3.0, 1.0]))
    img.header.set_sform(img.affine, code=code)
    img.header.set_qform(img.affine, code=code)
    nib.save(img, path)
    return path


def _value(path: str) -> float:
    return float(np.asarray(nib.load(path).dataobj).mean())


def _participants(path: Path, labels, *, prefix="sub-", column="participant_id") -> Path:
    frame = pd.DataFrame({column: [f"{prefix}{s}" for s in labels],
                          "score": [float(int(s)) for s in labels],
                          "age": [20 + int(s) for s in labels]})
    frame.to_csv(path, sep="\t", index=False)
    return path


def _derivatives(root: Path, labels=("01", "02", "03"), *, table=True) -> Path:
    """An fMRIPrep/FitLins-like derivatives root: per subject, effect and variance maps of two
    contrasts in two spaces, a JSON sidecar and a confounds TSV that are not maps."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "toy", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    for label in labels:
        folder = root / f"sub-{label}" / "func"
        for desc in ("fluency", "motor"):
            for space in (SPACE, "T1w"):
                for suffix in ("effect", "variance"):
                    value = int(label) + (100 if desc == "motor" else 0) + (
                        1000 if space == "T1w" else 0) + (0.5 if suffix == "variance" else 0)
                    _map(folder / f"sub-{label}_task-loc_space-{space}_desc-{desc}_"
                                  f"{suffix}.nii.gz", value)
        (folder / f"sub-{label}_task-loc_desc-confounds_timeseries.tsv").write_text("a\n1\n")
        (folder / f"sub-{label}_task-loc_space-{SPACE}_desc-fluency_effect.json").write_text("{}")
    _map(root / f"desc-brain_space-{SPACE}_mask.nii.gz", 1)  # group-level, no subject
    if table:
        _participants(root / "participants.tsv", labels)
    return root


FILTER = {"desc": "fluency", "space": SPACE, "suffix": "effect"}


# ----------------------------------------------------------------------------- entities
@pytest.mark.parametrize("where", [
    "sub-01/func/sub-01_task-loc_space-MNI152NLin2009cAsym_desc-fluency_effect.nii.gz",
    "node-subject/sub-02/sub-02_contrast-fluency_stat-effect_statmap.nii.gz",
    "sub-03/ses-2/anat/sub-03_ses-2_acq-fast_run-1_T1w.nii",
    "group/contrast-scoreMinusAge_stat-z_statmap.nii.gz",
])
def test_entities_agree_with_nilearns_parser(where):
    from nilearn.interfaces.bids import parse_bids_filename

    ours = bids.entities(PurePosixPath(where))
    theirs = parse_bids_filename(where)
    name_entities = {k: v for k, v in ours.items() if k not in ("suffix", "extension")
                     and f"{k}-{v}" in Path(where).name}
    assert name_entities == theirs["entities"]
    assert ours["suffix"] == theirs["suffix"]
    assert ours["extension"] == "." + theirs["extension"]


def test_subject_labels_in_folders_and_names():
    P = PurePosixPath
    assert bids.subject_labels(P("spm/sub-07/con_0001.nii")) == ["07"]
    assert bids.subject_labels(P("sub-07.feat/stats/cope1.nii.gz")) == ["07"]  # FSL
    assert bids.subject_labels(P("sub-07/func/sub-07_x.nii")) == ["07"]
    assert bids.subject_labels(P("sub-07/sub-08_x.nii")) == ["07", "08"]
    assert bids.subject_labels(P("presub-07/x.nii")) == []


# ----------------------------------------------------------------------------- layouts
def test_bids_root_with_filter_pairs_each_subject_with_its_map(tmp_path):
    root = _derivatives(tmp_path / "deriv")
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    table.iloc[::-1].to_csv(root / "participants.tsv", sep="\t", index=False)  # not file order
    ds = load_bids(root, bids_filter=FILTER)
    assert ds.subjects == ("sub-03", "sub-02", "sub-01") and ds.name == "deriv"
    assert [_value(m) for m in ds.maps] == [3.0, 2.0, 1.0]
    assert all(f"space-{SPACE}_desc-fluency_effect" in Path(m).name for m in ds.maps)
    assert ds.provenance["bids_filter"] == {k: [v] for k, v in FILTER.items()}
    # a list of values, pybids' long names, the dispatcher and the run parameters agree
    motor = load_bids(root, bids_filter={"description": ["motor"], "space": SPACE,
                                         "suffix": "variance"})
    assert [_value(m) for m in motor.maps] == [103.5, 102.5, 101.5]
    assert load_dataset(str(root), bids_filter=FILTER).maps == ds.maps
    settings = RunSettings(dataset=str(root), bids_filter=FILTER, covariates="score",
                           contrast="score")
    assert settings.table is None and settings.subject_column is None
    assert pipeline.load_data(settings).maps == ds.maps


def test_bids_ids_without_prefix_and_explicit_table(tmp_path):
    root = _derivatives(tmp_path / "deriv")
    other = _participants(tmp_path / "elsewhere.tsv", ["02", "01"], prefix="", column="id")
    ds = load_bids(root, bids_filter=FILTER, table=other, subject_column="id",
                   on_missing="drop")  # sub-03 has no row: dropped
    assert ds.subjects == ("02", "01") and [_value(m) for m in ds.maps] == [2.0, 1.0]


def test_fitlins_layout_contrast_and_stat_entities(tmp_path):
    root = tmp_path / "fitlins"
    for label in ("1", "2"):
        for stat in ("effect", "variance", "t"):
            _map(root / "node-subjectLevel" / f"sub-{label}" /
                 f"sub-{label}_contrast-fluency_stat-{stat}_statmap.nii.gz",
                 int(label) + {"effect": 0, "variance": 10, "t": 20}[stat])
    (root / "dataset_description.json").write_text("{}")
    _participants(root / "participants.tsv", ["1", "2"])
    ds = load_bids(root, bids_filter={"contrast": "fluency", "stat": "t"})
    assert [_value(m) for m in ds.maps] == [21.0, 22.0]


def test_spm_layout_by_glob_list_and_folder(tmp_path):
    spm = tmp_path / "spm"
    for label in ("01", "02", "03"):
        _map(spm / f"sub-{label}" / "con_0001.nii", int(label))
        _map(spm / f"sub-{label}" / "con_0002.nii", 50 + int(label))
    table = _participants(tmp_path / "participants.tsv", ["01", "02", "03"])
    by_glob = load_folder(str(spm / "sub-*" / "con_0001.nii"), table,
                          subject_column="participant_id")
    assert by_glob.subjects == ("sub-01", "sub-02", "sub-03")
    assert [_value(m) for m in by_glob.maps] == [1.0, 2.0, 3.0]
    files = [spm / f"sub-{s}" / "con_0002.nii" for s in ("03", "01", "02")]
    by_list = load_folder(files, table, subject_column="participant_id")
    assert [_value(m) for m in by_list.maps] == [51.0, 52.0, 53.0]
    recursive = load_folder(str(tmp_path / "**" / "con_0001.nii"), table,
                            subject_column="participant_id")
    assert recursive.maps == by_glob.maps
    # the settings take the glob (the README documents it) and a comma-separated list
    settings = RunSettings(dataset=str(spm / "sub-*" / "con_0001.nii"), table=str(table),
                           subject_column="participant_id", covariates="score",
                           contrast="score")
    assert pipeline.load_data(settings).maps == by_glob.maps
    listed = RunSettings(dataset=",".join(map(str, files)), table=str(table),
                         subject_column="participant_id", covariates="score", contrast="score")
    assert listed.dataset == tuple(map(str, files))
    assert pipeline.load_data(listed).maps == by_list.maps
    assert RunSettings.from_mapping(listed.to_dict()) == listed  # a YAML list round-trips


def test_table_ids_in_parent_folders_without_bids_names(tmp_path):
    for i, subject in enumerate(["S01", "S02"]):
        _map(tmp_path / "maps" / subject / "stats" / "cope1.nii.gz", i + 1)
    table = tmp_path / "t.tsv"
    pd.DataFrame({"subject": ["S02", "S01"], "score": [1.0, 2.0]}).to_csv(table, sep="\t",
                                                                       index=False)
    ds = load_folder(tmp_path / "maps", table)
    assert [_value(m) for m in ds.maps] == [2.0, 1.0]


def test_ids_above_the_folder_searched_do_not_count(tmp_path):
    base = tmp_path / "S01_study"  # holds a table id, above the maps folder
    _map(base / "maps" / "S01_con.nii", 1)
    _map(base / "maps" / "S02_con.nii", 2)
    table = tmp_path / "t.tsv"
    pd.DataFrame({"subject": ["S01", "S02"], "x": [0.0, 1.0]}).to_csv(table, sep="\t",
                                                                   index=False)
    assert [_value(m) for m in load_folder(base / "maps", table).maps] == [1.0, 2.0]


# ----------------------------------------------------------------------------- Python objects
def test_images_and_mappings_from_python(tmp_path, glmkit_data_dir):
    table = pd.DataFrame({"subject": ["a", "b", "c"], "score": [1.0, 2.0, 3.0]})
    images = [nib.Nifti1Image(np.full(SHAPE, v, "f4"), np.eye(4)) for v in (7.0, 8.0, 9.0)]
    ds = load_folder(images, table)
    assert ds.subjects == ("a", "b", "c") and [_value(m) for m in ds.maps] == [7.0, 8.0, 9.0]
    assert all(Path(m).is_relative_to(glmkit_data_dir / "images") for m in ds.maps)
    assert load_folder(images, table).maps == ds.maps  # written once
    by_id = load_folder({"c": images[0], "a": images[2], "b": _map(tmp_path / "b.nii", 5)},
                        table)
    assert [_value(m) for m in by_id.maps] == [9.0, 5.0, 7.0]
    assert "rows" not in repr(ds) and len(repr(ds)) < 100  # never the whole table


def test_run_analysis_takes_a_dataset_or_maps_and_a_dataframe(tmp_path):
    rng = np.random.default_rng(3)
    n = 12
    score = rng.standard_normal(n)
    table = pd.DataFrame({"subject": [f"s{i}" for i in range(n)], "score": score})
    brain = np.zeros((8, 8, 6), bool)
    brain[1:7, 1:7, 1:5] = True
    images = []
    for value in score:
        data = np.where(brain, 10 + 2 * value + rng.standard_normal(brain.shape), 0)
        images.append(nib.Nifti1Image(data.astype("f4"), np.diag([3.0, 3.0, 3.0, 1.0])))
    options = dict(covariates=["score"], contrast="score", n_perm=9, smoothing_fwhm=None,
                   random_state=0)
    by_maps = pipeline.run_analysis(images, table=table, **options)
    dataset = load_folder(images, table)
    by_dataset = pipeline.run_analysis(dataset, **options)
    np.testing.assert_array_equal(by_maps.contrast.z, by_dataset.contrast.z)
    assert by_dataset.settings.to_dict()["dataset"] == dataset.name
    assert by_dataset.settings.rename == {} and by_dataset.settings.cut_coords is None
    # the demo's defaults come with the demo Dataset object, not with a folder's
    assert RunSettings(dataset=dataset, covariates="score", contrast="score").rename == {}
    with pytest.raises(ParameterError, match=r"covariates is not set: dataset 'images' \(given "
                                             r"from Python\) has no default design"):
        pipeline.run_analysis(dataset, contrast="score")


# ----------------------------------------------------------------------------- bad input
def test_bad_bids_root_without_participants(tmp_path):
    root = _derivatives(tmp_path / "deriv", table=False)
    with pytest.raises(DataFileNotFoundError, match=r"BIDS root .*deriv has no participants.tsv: "
                                                    r"pass the subject table \(table=\.\.\."):
        load_bids(root, bids_filter=FILTER)
    with pytest.raises(DataFileNotFoundError, match=r"dataset='.*deriv' is a BIDS root \(it has "
                                                    r"dataset_description.json\) without "
                                                    r"participants.tsv: pass "
                                                    r"table=<subject table>"):
        RunSettings(dataset=str(root), covariates="score", contrast="score")


def test_bad_bids_filter_matching_nothing_lists_what_is_there(tmp_path):
    root = _derivatives(tmp_path / "deriv")
    with pytest.raises(DatasetError) as raised:
        load_bids(root, bids_filter={"desc": "fluenci", "space": SPACE})
    message = str(raised.value)
    assert re.search(r"bids_filter \{desc: fluenci, space: MNI152NLin2009cAsym\} matches none "
                     r"of the 24 maps in BIDS root \S+deriv", message)
    assert "the maps have {desc: [fluency, motor], space: [MNI152NLin2009cAsym, T1w]}" in message


def test_bad_bids_filter_leaving_two_maps_per_subject_names_the_difference(tmp_path):
    root = _derivatives(tmp_path / "deriv")
    with pytest.raises(DatasetError) as raised:
        load_bids(root, bids_filter={"desc": "fluency", "space": SPACE})
    message = str(raised.value)
    assert "subjects with several maps: [\"sub-01 -> ['sub-01/func/sub-01_task-loc_space-" in (
        message)
    assert "their BIDS entities differ in {'suffix': ['effect', 'variance']" in message
    assert "add one to bids_filter" in message


def test_bad_bids_filter_key_and_value(tmp_path):
    root = _derivatives(tmp_path / "deriv")
    with pytest.raises(DatasetError, match=r"bids_filter keys \['contrast'\] are entities of none "
                                           r"of the 24 maps .*their entities are \['desc', "
                                           r"'extension', 'space', 'sub', 'suffix', 'task'\]"):
        load_bids(root, bids_filter={"contrast": "fluency"})
    with pytest.raises(ParameterError, match=r"bids_filter: desc=\{'a': 1\} is not an entity "
                                             r"value: expected a string or a list of strings"):
        RunSettings(dataset=str(root), bids_filter={"desc": {"a": 1}}, covariates="score",
                    contrast="score")


def test_bad_subject_folder_without_maps(tmp_path):
    spm = tmp_path / "spm"
    _map(spm / "sub-01" / "con_0001.nii", 1)
    _map(spm / "sub-02" / "con_0001.nii", 2)
    (spm / "sub-03").mkdir()
    (spm / "sub-03" / "SPM.mat").write_bytes(b"x")
    table = _participants(tmp_path / "participants.tsv", ["01", "02", "03"])
    with pytest.raises(DatasetError) as raised:
        load_folder(spm, table, subject_column="participant_id")
    message = str(raised.value)
    assert "rows without a map: ['sub-03']" in message
    assert "subject folders without a map: sub-03/ holds ['SPM.mat']" in message
    assert "on_missing='drop'" in message
    assert load_folder(spm, table, subject_column="participant_id",
                       on_missing="drop").subjects == ("sub-01", "sub-02")


def test_bad_ids_found_twice_in_a_path(tmp_path):
    _map(tmp_path / "m" / "sub-01" / "sub-02_con.nii", 1)
    _map(tmp_path / "m" / "sub-03" / "sub-03_con.nii", 3)
    _map(tmp_path / "n" / "S01" / "S02_con.nii", 1)
    table = _participants(tmp_path / "p.tsv", ["01", "02", "03"])
    with pytest.raises(DatasetError, match=r"ambiguous subject/map matches: paths holding several "
                                           r"subject ids: \[\"sub-01/sub-02_con.nii -> "
                                           r"\['sub-01', 'sub-02'\]\"\]"):
        load_folder(tmp_path / "m", table, subject_column="participant_id")
    plain = tmp_path / "plain.tsv"
    pd.DataFrame({"subject": ["S01", "S02"], "x": [1.0, 2.0]}).to_csv(plain, sep="\t",
                                                                   index=False)
    with pytest.raises(DatasetError, match=r"S01/S02_con.nii -> \['S01', 'S02'\]"):
        load_folder(tmp_path / "n", plain)


def test_bad_glob_matching_nothing(tmp_path):
    table = _participants(tmp_path / "p.tsv", ["01"])
    pattern = str(tmp_path / "spm" / "sub-*" / "con_0001.nii")
    with pytest.raises(DataFileNotFoundError, match=r"dataset='.*con_0001.nii' is a glob that "
                                                    r"matches no file: check the pattern"):
        RunSettings(dataset=pattern, table=str(table), covariates="score", contrast="score")
    with pytest.raises(DataFileNotFoundError, match=r"maps glob '.*con_0001.nii' matches no file"):
        load_folder(pattern, table, subject_column="participant_id")


def test_bad_folder_dataset_without_design_contrast_or_table(tmp_path):
    _map(tmp_path / "maps" / "sub-01_con.nii", 1)
    table = str(_participants(tmp_path / "p.tsv", ["01"]))
    folder = str(tmp_path / "maps")
    with pytest.raises(ParameterError, match=re.escape(
            "covariates is not set: a folder dataset has no default design; pass "
            "covariates=['age', 'score'] or formula=")):
        RunSettings(dataset=folder, table=table)
    with pytest.raises(ParameterError, match=r"contrast is not set: a folder dataset has no "
                                             r"default contrast; pass what is tested, e\.g\. "
                                             r"contrast='score'"):
        RunSettings(dataset=folder, table=table, covariates="score")
    with pytest.raises(ParameterError, match=r"table is not set: the folder of maps '.*maps' "
                                             r"needs a subject table; pass "
                                             r"table='participants.tsv'"):
        RunSettings(dataset=folder, covariates="score", contrast="score")
    # a formula is a design: no covariates needed
    assert RunSettings(dataset=folder, table=table, formula="score + age",
                       contrast="score").covariates is None


@pytest.mark.parametrize("changes, match", [
    ({"table": "{table}"}, r"table given with dataset the built-in 'demo': it brings its own"),
    ({"bids_filter": {"desc": "x"}}, r"bids_filter given with dataset the built-in 'demo'"),
    ({"export": "nifti"}, r"export='nifti' is not a known export format: expected one of "
                          r"\['bids'\]"),
    ({"on_missing": "skip"}, r"on_missing='skip' is not a known value: expected one of "
                             r"\['error', 'drop'\]"),
])
def test_bad_options_for_the_dataset(tmp_path, changes, match):
    table = _participants(tmp_path / "p.tsv", ["01"])
    changes = {k: str(table) if v == "{table}" else v for k, v in changes.items()}
    with pytest.raises(ParameterError, match=match):
        RunSettings(**changes)


def test_bad_lists_and_python_objects(tmp_path):
    table = pd.DataFrame({"subject": ["a", "b"], "score": [1.0, 2.0]})
    img = nib.Nifti1Image(np.zeros(SHAPE, "f4"), np.eye(4))
    with pytest.raises(DatasetError, match=r"maps: 1 nibabel images for 2 table rows; images are "
                                           r"taken in table order, one per row"):
        load_folder([img], table)
    with pytest.raises(DatasetError, match=r"maps mixes nibabel images and other items"):
        load_folder([img, str(tmp_path / "b.nii")], table)
    with pytest.raises(DatasetError, match=r"ids not in the table: \['z'\]; rows without a map: "
                                           r"\['b'\]"):
        load_folder({"a": img, "z": img}, table)
    with pytest.raises(ParameterError, match=r"dataset='.*nowhere' is neither one of"):
        RunSettings(dataset=f"{tmp_path},{tmp_path / 'nowhere'}", table=str(tmp_path / "x"))
    with pytest.raises(ParameterError, match=r"run_analysis\(maps, \.\.\.\) needs the subject "
                                             r"table: pass table="):
        pipeline.run_analysis([img, img], covariates="score", contrast="score")


def test_bad_bids_root_without_subject_maps(tmp_path):
    root = tmp_path / "deriv"
    _map(root / "group_mask.nii.gz", 1)
    (root / "dataset_description.json").write_text("{}")
    _participants(root / "participants.tsv", ["01"])
    with pytest.raises(DatasetError, match=r"holds no map with a sub-<label> entity"):
        load_bids(root)


def test_errors_never_print_the_whole_table(tmp_path):
    n = 200
    table = pd.DataFrame({"participant": [f"p{i}" for i in range(n)],
                          "score": np.arange(n, dtype=float), "age": np.arange(n) + 20})
    images = [nib.Nifti1Image(np.zeros(SHAPE, "f4"), np.eye(4))] * n
    with pytest.raises(DatasetError) as raised:
        pipeline.run_analysis(images, table=table, covariates="score", contrast="score")
    message = str(raised.value)
    assert ("no subject column 'subject' or 'participant_id'; its columns are ['participant', "
            "'score', 'age']") in message
    assert len(message) < 400 and "p150" not in message and "rows x" not in message
    with pytest.raises(ParameterError) as raised:  # a table where a path is expected
        RunSettings(dataset=str(tmp_path), table=table, covariates="score", contrast="score")
    assert "table=<DataFrame of shape (200, 3)> has the wrong type" in str(raised.value)
    with pytest.raises(ParameterError, match=r"run_analysis\(table=<DataFrame>\) without maps"):
        pipeline.run_analysis(table=table, covariates="score", contrast="score")
    ds = Dataset("many", tuple(f"/x/p{i}.nii" for i in range(n)),
                 table.rename(columns={"participant": "subject"}))
    with pytest.raises(ParameterError) as raised:
        RunSettings(dataset=ds, covariates="score", contrast="nope - nope")
    assert "p150" not in str(raised.value) and "p150" not in repr(ds)
