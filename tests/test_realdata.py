"""glmkit on the forms real datasets come in, not only on the demo cohort.

Small synthetic cohorts are written into ``tmp_path`` in the shapes and formats published
second-level data take -- the MNI 2 mm grid, anisotropic voxels with a flipped and oblique
affine, Analyze 7.5 pairs, int16 maps with ``scl_slope``/``scl_inter``, float64, NaN outside
the brain, one 4-D file, a field of view without the report's reference cut, BIDS subject ids
with TSV and CSV tables, and a null effect -- then run through the path a user takes:
``load_folder`` / ``load_dataset``, ``run_qc``, ``run_analysis(RunSettings(dataset=folder,
table=...))`` and ``write_report``. A sphere of known centre and radius is planted where it
makes sense; the corrected maps must find it and nothing far from it. The GLM z map is compared
with nilearn's ``SecondLevelModel`` on the oblique anisotropic grid.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from glmkit.data.datasets import load_dataset, load_folder
from glmkit.errors import DatasetError, ImageError
from glmkit.pipeline import run_analysis
from glmkit.data.qc import QCPolicy, run_qc
from glmkit.report import write_report
from glmkit.settings import RunSettings

N_SUBJECTS = 24
N_PERM = 50
SMOOTHING_FWHM = 5.0
NOISE_FWHM = 6.0
SPHERE_RADIUS_MM = 10.0
#: a detected voxel farther than this from the planted sphere's surface is a far false
#: positive (smoothing of 5 mm data + 6 mm noise spreads the sphere by a few mm)
FAR_MM = 12.0
REFERENCE_CUT = (38.0, -17.0, -3.0)

# 2 mm MNI grid as FSL writes it (x step negative: LAS storage)
MNI2_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def _oblique_affine(zooms, angle_deg, translation, flip_x=True):
    """Rotation about z (oblique) times voxel sizes, x flipped (LPI-like), odd translation."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    scale = np.diag([-zooms[0] if flip_x else zooms[0], zooms[1], zooms[2]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ scale
    affine[:3, 3] = translation
    return affine


# --------------------------------------------------------------------------------------
# cohort generator
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cohort:
    """What a generated cohort holds, and the truth to check results against."""

    maps: Path              # folder of maps, or the 4-D file
    table: Path
    subject_column: str
    subjects: tuple[str, ...]
    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    affine: np.ndarray      # as nibabel reads it back
    brain: np.ndarray       # bool, where maps hold data
    truth: np.ndarray       # bool, planted sphere (empty when effect == 0)
    centre_mm: np.ndarray
    covariate: np.ndarray   # per subject, in table order


def _smooth_noise(rng, shape, zooms, fwhm):
    sigma = fwhm / np.sqrt(8 * np.log(2)) / np.asarray(zooms, dtype=float)
    impulse = np.zeros((21, 21, 21))
    impulse[10, 10, 10] = 1.0
    norm = np.sqrt(np.sum(ndimage.gaussian_filter(impulse, sigma, mode="constant") ** 2))
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="constant") / norm


def _ellipsoid(shape, fraction=0.42):
    grid = np.indices(shape, dtype=float)
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    radii = fraction * np.asarray(shape, dtype=float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _mni_brain(shape, affine):
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    res = resample_img(load_mni152_brain_mask(resolution=2), target_affine=affine,
                       target_shape=shape, interpolation="nearest", force_resample=True,
                       copy_header=True)
    return np.asarray(res.dataobj) > 0


def make_cohort(root: Path, *, shape, affine, n=N_SUBJECTS, fmt="nii.gz", dtype="float32",
                slope_inter=None, units=1.0, outside="zero", nan_inside=0, brain="ellipsoid",
                ids="bids2", table_format="tsv", effect=1.5, centre_voxel=(0.62, 0.6, 0.55),
                scale_outlier=None, seed=0) -> Cohort:
    """Write ``n`` subject maps and a participants table under ``root``.

    Map of subject s = ``units * (1 + effect * x_s * sphere + smooth noise)`` inside the brain,
    0 or NaN outside; ``x`` is the standardised covariate (the table holds ``50 + 10 x``).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    affine = np.asarray(affine, dtype=float)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    mask = _mni_brain(shape, affine) if brain == "mni" else _ellipsoid(shape)
    centre_ijk = np.round(np.asarray(centre_voxel) * (np.asarray(shape) - 1))
    ijk = np.indices(shape, dtype=float).reshape(3, -1).T
    distance = np.linalg.norm((ijk - centre_ijk) @ affine[:3, :3].T, axis=1).reshape(shape)
    sphere = (distance <= SPHERE_RADIUS_MM) & mask
    assert sphere.sum() > 20 or not effect, "the planted sphere must lie inside the brain"

    x = rng.standard_normal(n)
    x = (x - x.mean()) / x.std()
    width = 3 if ids == "bids3" else 2
    subjects = [f"sub-{i + 1:0{width}d}" for i in range(n)]
    maps_dir = root / "maps"
    maps_dir.mkdir(parents=True)
    volumes = []
    for i in range(n):
        data = 1.0 + effect * x[i] * sphere + _smooth_noise(rng, shape, zooms, NOISE_FWHM)
        data = units * data * (100.0 if i == scale_outlier else 1.0)
        data[~mask] = np.nan if outside == "nan" else 0.0
        if nan_inside:
            inside = np.flatnonzero(mask & ~sphere)
            data.flat[rng.choice(inside, nan_inside, replace=False)] = np.nan
        volumes.append(data)

    def name(subject):
        return (f"{subject}_task-x_con_0001" if ids == "bids3" else f"{subject}_con")

    files = []
    if fmt == "4d":
        path = maps_dir / "all_subjects_con.nii.gz"
        nib.save(nib.Nifti1Image(np.stack(volumes, axis=-1).astype(dtype), affine), path)
        files.append(path)
    for subject, data in zip(subjects, volumes):
        if fmt == "4d":
            break
        if fmt == "analyze":
            path = maps_dir / f"{name(subject)}.img"
            nib.save(nib.AnalyzeImage(data.astype(dtype), affine), path)
            files.append(path.with_suffix(".hdr"))
            continue
        path = maps_dir / f"{name(subject)}.{fmt}"
        if slope_inter == "auto":  # nibabel picks each file's scl_slope/scl_inter
            img = nib.Nifti1Image(data, affine)
            img.set_data_dtype(np.int16)
        elif slope_inter is not None:  # raw int16 on disk, decoded as raw * slope + inter
            slope, inter = slope_inter
            raw = np.round((np.nan_to_num(data) - inter) / slope)
            assert np.abs(raw).max() < 32000, "int16 range exceeded: change slope"
            img = nib.Nifti1Image(raw.astype(np.int16), affine)
            img.header.set_slope_inter(slope, inter)
        else:
            img = nib.Nifti1Image(data.astype(dtype), affine)
        nib.save(img, path)
        files.append(path)

    read_back = nib.load(files[0])
    table = pd.DataFrame({
        "participant_id": subjects,
        "score": np.round(50 + 10 * x, 6),
        "age": rng.integers(20, 60, n),
    })
    sep = "," if table_format == "csv" else "\t"
    table_path = root / f"participants.{table_format}"
    table.to_csv(table_path, sep=sep, index=False, na_rep="n/a")
    return Cohort(
        maps=files[0] if fmt == "4d" else maps_dir, table=table_path,
        subject_column="participant_id", subjects=tuple(subjects), files=tuple(files),
        shape=shape, affine=read_back.affine, brain=mask,
        truth=sphere if effect else np.zeros(shape, bool),
        centre_mm=nib.affines.apply_affine(read_back.affine, centre_ijk), covariate=x,
    )


def settings_for(cohort: Cohort, root: Path, run_name: str, **changes) -> RunSettings:
    values = dict(dataset=str(cohort.maps), table=str(cohort.table),
                  subject_column=cohort.subject_column, covariates=("score",), rename={},
                  contrast="score", cut_coords=REFERENCE_CUT, smoothing_fwhm=SMOOTHING_FWHM,
                  n_perm=N_PERM,
                  statistics=("voxel",), random_state=0, run_name=run_name,
                  reports_dir=str(root / "reports"))
    values.update(changes)
    return RunSettings(**values)


def run_form(cohort: Cohort, root: Path, run_name="run", **changes):
    settings = settings_for(cohort, root, run_name, **changes)
    result = run_analysis(settings)
    report = write_report(result, root / "reports" / run_name).report
    return result, report


# --------------------------------------------------------------------------------------
# the forms
# --------------------------------------------------------------------------------------


def _shifted(zooms, translation):
    return np.array([[zooms[0], 0, 0, translation[0]], [0, zooms[1], 0, translation[1]],
                     [0, 0, zooms[2], translation[2]], [0, 0, 0, 1.0]])


FORMS = {
    # FSL's MNI152 2 mm grid (x step negative), cropped to 76 x 92 x 76 to stay fast; brain =
    # the MNI152 mask; gzipped float32; sub-01 ids; TSV
    "mni2mm": dict(shape=(76, 92, 76), affine=_shifted((-2, 2, 2), (76, -110, -56)),
                   brain="mni", centre_voxel=(0.3, 0.45, 0.5)),
    # 2 x 2 x 3.5 mm voxels, x flipped (LPI-like), rotated 12 deg about z (oblique), a
    # translation that is not MNI's; int16 with scl_slope/scl_inter in odd units; CSV table;
    # sub-001_task-x_con_0001 file names
    "oblique_int16": dict(shape=(48, 56, 30),
                          affine=_oblique_affine((2, 2, 3.5), 12, (60.0, -70.0, -40.0)),
                          slope_inter="auto", units=0.05, ids="bids3",
                          table_format="csv"),
    # Analyze 7.5 .hdr/.img pairs
    "analyze": dict(shape=(40, 48, 36), affine=np.diag([3.0, 3.0, 3.0, 1.0]), fmt="analyze"),
    # one 4-D file, one volume per table row (the planted effect is only found if volumes
    # are matched to the right rows)
    "four_d": dict(shape=(40, 48, 36), affine=_shifted((-3, 3, 3), (60, -78, -45)), fmt="4d"),
    # a field of view far from (38, -17, -3): x from -150 to -45 mm; float64 .nii with NaN
    # outside the brain and a few NaN voxels inside every map
    "fov_no_cut": dict(shape=(36, 40, 30), affine=_shifted((3, 3, 3), (-150, -60, -40)),
                       fmt="nii", dtype="float64", outside="nan", nan_inside=2),
    # a tiny effect: nothing survives any correction
    "null": dict(shape=(30, 36, 28), affine=_shifted((3, 3, 3), (-45, -70, -30)), effect=0.05,
                 seed=3),
}
#: forms whose run also writes the report (the report is the slow part: ~15 s each)
REPORTED = ("oblique_int16", "fov_no_cut", "null")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """``analysed(form) -> (cohort, result, report_path or None, warnings)``, run once each."""
    cache = {}

    def get(form):
        if form not in cache:
            root = tmp_path_factory.mktemp(form)
            cohort = make_cohort(root, **FORMS[form])
            result = run_analysis(settings_for(cohort, root, form))
            report, caught = None, []
            if form in REPORTED:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    report = write_report(result, root / "reports" / form).report
            cache[form] = (cohort, result, report, [str(w.message) for w in caught])
        return cache[form]

    return get


def _unmask(result, values):
    return np.asarray(result.model.unmask(np.asarray(values, dtype=float)).dataobj)


def _mm_distance(affine, ijk, centre_mm):
    return np.linalg.norm(nib.affines.apply_affine(affine, ijk) - centre_mm, axis=-1)


# --------------------------------------------------------------------------------------
# ground truth on every form with a planted effect
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["mni2mm", "oblique_int16", "analyze", "four_d", "fov_no_cut"])
def test_corrected_maps_find_the_planted_sphere_and_nothing_far(analysed, form):
    cohort, result, _, _ = analysed(form)
    assert len(result.qc.kept) == N_SUBJECTS and not result.qc.excluded
    z_img = result.maps()["z"]
    assert z_img.shape == cohort.shape
    np.testing.assert_allclose(z_img.affine, cohort.affine, atol=1e-5)  # no reorientation
    mask = _unmask(result, np.ones(result.n_voxels)) > 0
    truth = cohort.truth & mask
    assert truth.sum() > 20

    # FWER 5%: the sphere is found, and voxels far from it are at most a chance handful (an
    # FWER map has a chance far false positive in 5% of cohorts, so "none" cannot be asked at
    # 5%); at FWER 0.1% (Bonferroni), where chance has no room, nothing far at all
    cut = -np.log10(result.settings.alpha)
    fwer = result.fwer_maps()
    assert set(fwer) == {"bonferroni", "perm_voxel"}
    far_away = _mm_distance(cohort.affine, np.indices(cohort.shape).reshape(3, -1).T,
                            cohort.centre_mm).reshape(cohort.shape) > SPHERE_RADIUS_MM + FAR_MM
    for name, logp in fwer.items():
        detected = _unmask(result, logp) >= cut
        hits = int((detected & truth).sum())
        assert hits >= 0.3 * truth.sum(), (form, name, hits, int(truth.sum()))
        assert (detected & far_away).sum() <= 0.05 * detected.sum(), (form, name)
    strict = _unmask(result, fwer["bonferroni"]) >= 3.0
    assert strict.any() and not (strict & far_away).any(), form
    peak_z, peak_mm = result.peak()
    assert peak_z > 5
    assert np.linalg.norm(np.asarray(peak_mm) - cohort.centre_mm) <= SPHERE_RADIUS_MM


# --------------------------------------------------------------------------------------
# nilearn parity on an odd grid
# --------------------------------------------------------------------------------------

def test_z_map_equals_nilearn_on_oblique_anisotropic_int16_grid(analysed, record_property):
    from nilearn.glm.second_level import SecondLevelModel

    cohort, result, _, _ = analysed("oblique_int16")
    design = result.design.matrix
    by_subject = dict(zip(result.dataset.subjects, result.dataset.maps))
    maps = [nib.load(by_subject[str(s)]) for s in design.index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SecondLevelModel(smoothing_fwhm=SMOOTHING_FWHM).fit(maps, design_matrix=design)
        z_ref = model.compute_contrast("score", output_type="z_score")
    mask_ref = np.asarray(model.masker_.mask_img_.dataobj).astype(bool)
    mask = np.asarray(result.model.mask_img.dataobj).astype(bool)
    np.testing.assert_array_equal(mask, mask_ref)
    z = np.asarray(result.maps()["z"].dataobj)[mask]
    diff = float(np.max(np.abs(z - z_ref.get_fdata()[mask])))
    record_property("nilearn_max_abs_diff_z", diff)
    print(f"oblique int16 grid: max |z - z_nilearn| = {diff:.3g} over {mask.sum()} voxels")
    assert diff <= 1e-6


# --------------------------------------------------------------------------------------
# the report on odd grids
# --------------------------------------------------------------------------------------

def _viewer_payload(page: str) -> dict:
    import json

    found = re.search(r'<script type="application/json" data-role="viewer-data">(.*?)</script>',
                      page, flags=re.S)
    assert found, "the report has no viewer data"
    return json.loads(found.group(1).replace("<\\/", "</").replace("<\\!--", "<!--"))


@pytest.mark.parametrize("form", REPORTED)
def test_report_files_keep_the_input_grid_and_are_finite(analysed, form):
    cohort, result, report, caught = analysed(form)
    out = report.parent
    for name in ("report.html", "design.csv", "qc.csv", "clusters.csv"):
        assert (out / name).is_file(), name
    maps = sorted((out / "maps").glob("*.nii.gz"))
    assert {m.name for m in maps} >= {"mask.nii.gz", "z.nii.gz", "logp_maxt.nii.gz"}
    for path in maps:
        img = nib.load(path)
        assert img.shape == cohort.shape, path.name
        np.testing.assert_allclose(img.affine, cohort.affine, atol=1e-5, err_msg=path.name)
        assert np.isfinite(img.get_fdata()).all(), f"{path.name} holds non-finite values"
    qc = pd.read_csv(out / "qc.csv")
    assert (qc["verdict"] == "pass").all(), qc[qc["verdict"] != "pass"]  # odd units, NaN: fine
    design = pd.read_csv(out / "design.csv", index_col="subject", dtype={"subject": str})
    assert list(design.index) == list(cohort.subjects)
    np.testing.assert_allclose(design["score"], 50 + 10 * cohort.covariate, atol=1e-5)
    page = report.read_text()
    assert "out of the image bounds" not in " ".join(caught)  # nilearn: cut misses the data
    payload = _viewer_payload(page)
    if np.count_nonzero(np.round(cohort.affine[:3, :3], 6)) == 3:  # flips only: exact
        assert payload["n_mask"] == result.n_voxels
    else:  # oblique: the viewer resamples (nearest) to a canonical grid
        assert payload["n_mask"] == pytest.approx(result.n_voxels, rel=0.02)


def test_report_falls_back_to_the_peak_when_the_reference_cut_is_outside(analysed):
    from glmkit.widgets import explore

    cohort, result, report, caught = analysed("fov_no_cut")
    assert result.settings.cut_coords == REFERENCE_CUT
    x_range = sorted(nib.affines.apply_affine(cohort.affine, [[0, 0, 0], [cohort.shape[0] - 1,
                                                                          0, 0]])[:, 0])
    assert not x_range[0] <= REFERENCE_CUT[0] <= x_range[1]  # the form is what it says
    page = report.read_text()
    note = re.search(r'<p class="note" id="cut-note">(.*?)</p>', page, flags=re.S)
    assert note, "the report does not say that the reference cut is outside the data"
    _, peak_mm = result.peak()
    assert "(38, -17, -3) mm lies outside the data" in note.group(1)
    assert "peak of the z map" in note.group(1)
    assert ", ".join(f"{c:.0f}" for c in peak_mm) in note.group(1)
    # the figures were drawn at the peak (nilearn warns when a cut misses the image)
    assert not [w for w in caught if "out of the image bounds" in w], caught
    cut_text = ", ".join(f"{round(c, 1):g}" for c in peak_mm)
    assert f"Slices at ({cut_text}) mm" in page
    # the kernel-free viewer opens at the peak and says why
    payload = _viewer_payload(page)
    np.testing.assert_allclose(payload["cut"], peak_mm, atol=1e-6)
    # the live explorer too
    explorer = explore(result, background=None, debounce=0)
    np.testing.assert_allclose(explorer.cut_coords, peak_mm, atol=1e-6)
    assert "lies outside the data" in explorer.message
    # an explicit cut inside the data is kept
    inside = explore(result, cut_coords=peak_mm, background=None, debounce=0)
    assert "outside" not in inside.message


def test_reference_cut_kept_when_inside_the_data(analysed):
    _, result, report, _ = analysed("oblique_int16")
    page = report.read_text()
    assert 'id="cut-note"' not in page
    assert "Slices at (38, -17, -3) mm" in page
    assert _viewer_payload(page)["cut_note"] is None


def test_nothing_survives_report_says_so_and_cluster_table_is_empty(analysed):
    _, result, report, _ = analysed("null")
    supra = result.headline()["suprathreshold"]
    assert set(supra) >= {"fdr", "bonferroni", "perm_voxel"}
    assert all(count == 0 for count in supra.values()), supra
    out = report.parent
    header = (out / "clusters.csv").read_text().splitlines()
    assert len(header) == 1 and "," in header[0], header  # a header, no row
    assert pd.read_csv(out / "clusters.csv").empty
    page = report.read_text()
    summary = re.search(r'<section id="summary">(.*?)</section>', page, flags=re.S).group(1)
    for method in ("Bonferroni, parametric", "max-T permutation", "Benjamini-Hochberg"):
        sentence = re.search(rf"At [^.]*{re.escape(method)}[^<]*", summary)
        assert sentence and "no voxel shows a positive association with" in sentence.group(0), (
            method, summary)
    results = re.search(r'<section id="results">(.*?)</section>', page, flags=re.S).group(1)
    counts = re.findall(r"</b>: (\d+) voxels pass", results)
    assert counts == ["0", "0", "0"], counts  # Bonferroni, max-T, FDR figure captions


# --------------------------------------------------------------------------------------
# subject ids and tables
# --------------------------------------------------------------------------------------

SMALL = dict(shape=(12, 14, 11), affine=_shifted((3, 3, 3), (-18, -21, -15)), n=12, effect=0.0)


@pytest.mark.parametrize("ids, table_format, prefix", [
    ("bids2", "tsv", True),    # participants.tsv 'sub-01' <-> sub-01_con.nii.gz
    ("bids3", "csv", True),    # 'sub-001' <-> sub-001_task-x_con_0001.nii.gz ('0001' is not it)
    ("bids3", "tsv", False),   # '001' (leading zeros kept) <-> sub-001_task-x_con_0001.nii.gz
])
def test_bids_subject_ids_match_maps_in_table_order(tmp_path, ids, table_format, prefix):
    cohort = make_cohort(tmp_path, ids=ids, table_format=table_format, **SMALL)
    sep = "," if table_format == "csv" else "\t"
    table = pd.read_csv(cohort.table, sep=sep, dtype={"participant_id": str})
    table = table.sample(frac=1.0, random_state=1).reset_index(drop=True)  # not in file order
    if not prefix:
        table["participant_id"] = table["participant_id"].str.removeprefix("sub-")
    table.to_csv(cohort.table, sep=sep, index=False)

    ds = load_folder(cohort.maps, cohort.table, subject_column="participant_id")
    assert ds.subjects == tuple(table["participant_id"])
    for subject, path in zip(ds.subjects, ds.maps):
        name = Path(path).name
        assert name.startswith(f"{'' if prefix else 'sub-'}{subject}_"), (subject, name)
        assert name.endswith("_task-x_con_0001.nii.gz" if ids == "bids3" else "_con.nii.gz")
    np.testing.assert_allclose(ds.table["score"], table["score"])
    same = load_dataset(str(cohort.maps), table=str(cohort.table), subject_column="participant_id")
    assert same.maps == ds.maps and same.subjects == ds.subjects
    # no subject_column: a table without 'subject' is read by its BIDS 'participant_id'
    assert load_folder(cohort.maps, cohort.table).maps == ds.maps
    table.rename(columns={"participant_id": "pid"}).to_csv(cohort.table, sep=sep, index=False)
    with pytest.raises(DatasetError, match=r"no subject column 'subject' or 'participant_id'; "
                                           r"its columns are \['pid', 'score', 'age'\]"):
        load_folder(cohort.maps, cohort.table)


# --------------------------------------------------------------------------------------
# quality control on these forms
# --------------------------------------------------------------------------------------

def test_qc_int16_maps_in_odd_units_pass_and_one_map_in_x100_units_is_caught(tmp_path):
    outlier = 5
    cohort = make_cohort(tmp_path, slope_inter="auto", units=0.003, scale_outlier=outlier,
                         **SMALL)
    headers = [nib.load(f) for f in cohort.files]
    assert {img.get_data_dtype() for img in headers} == {np.dtype(np.int16)}
    slopes = {round(float(img.dataobj.slope), 12) for img in headers}
    assert len(slopes) > 2  # every file has its own scl_slope: QC must decode them
    ds = load_folder(cohort.maps, cohort.table, subject_column="participant_id")
    qc = run_qc(ds, variables=("score",))
    unit = qc.table[qc.table["check"] == "unit_change"].set_index("subject")
    odd = cohort.subjects[outlier]
    assert unit.loc[odd, "verdict"] == "exclude"  # QC's default: a unit change excludes
    assert "other units" in unit.loc[odd, "reason"] and unit.loc[odd, "value"] > 50
    assert (unit.drop(index=odd)["verdict"] == "pass").all()
    scale = qc.table[qc.table["check"] == "scale_outlier"].set_index("subject")
    assert scale.loc[odd, "verdict"] == "flag" and scale.loc[odd, "value"] > 5  # flags only
    assert qc.excluded == (odd,)
    assert (qc.table.loc[qc.table["subject"] != odd, "verdict"] == "pass").all()


def test_qc_reads_nan_as_no_data(analysed):
    _, result, _, _ = analysed("fov_no_cut")
    table = result.qc.table
    non_finite = table[table["check"] == "non_finite"]
    assert (non_finite["verdict"] == "pass").all()
    assert non_finite["reason"].str.contains("2 NaN voxels inside the brain mask").all()
    coverage = table[table["check"] == "coverage"]
    assert (coverage["value"] >= 0.99).all() and (coverage["verdict"] == "pass").all()


@pytest.mark.parametrize("change", ["affine", "shape"])
def test_grid_mismatch_names_the_file_or_resamples_on_request(tmp_path, change):
    cohort = make_cohort(tmp_path, **SMALL)
    odd, subject = cohort.files[4], cohort.subjects[4]
    img = nib.load(odd)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if change == "affine":  # one voxel off in x, as after a bad re-export
        moved = nib.Nifti1Image(data, img.affine @ _shifted((1, 1, 1), (1, 0, 0)))
    else:
        moved = nib.Nifti1Image(data[:-1], img.affine)
    nib.save(moved, odd)
    ds = load_folder(cohort.maps, cohort.table, subject_column="participant_id")
    with pytest.raises(ImageError) as raised:
        run_qc(ds, variables=("score",))
    message = str(raised.value)
    assert str(odd) in message and subject in message and str(cohort.files[0]) in message
    assert "on_grid_mismatch='resample'" in message
    # the user's path stops at QC, before any model is fitted, with the same message
    with pytest.raises(ImageError, match=re.escape(str(odd))):
        run_analysis(settings_for(cohort, tmp_path, "mismatch"))
    qc = run_qc(ds, variables=("score",), policy=QCPolicy(on_grid_mismatch="resample"))
    assert qc.resampled == (subject,)
    grid = qc.table[qc.table["check"] == "grid"].set_index("subject")
    assert grid.loc[subject, "verdict"] == "flag" and "resampled" in grid.loc[subject, "reason"]
    assert subject in qc.kept and (grid.drop(index=subject)["verdict"] == "pass").all()
    # ... and the user's path does the same with --on-grid-mismatch resample: the map is
    # resampled for QC and for the fit alike, so the subject stays in the model
    result = run_analysis(settings_for(cohort, tmp_path, "resampled",
                                       on_grid_mismatch="resample"))
    assert result.qc.resampled == (subject,)
    assert subject in set(map(str, result.design.matrix.index))
    assert len(result.design.matrix) == len(cohort.subjects)
    first = nib.load(cohort.files[0])
    z = result.maps()["z"]
    assert z.shape == first.shape[:3] and np.allclose(z.affine, first.affine)
    assert np.isfinite(np.asarray(z.dataobj)).all()
