"""Tests of glmkit.data.qc on small synthetic NIfTI cohorts, then on the demo."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glmkit.errors import DataFileNotFoundError, DatasetError, ImageError, ParameterError, QCError
from glmkit.data.qc import CHECKS, QCPolicy, QCResult, run_qc, scale_checks

SHAPE = (10, 11, 9)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
AFFINE[:3, 3] = [-15.0, -15.0, -12.0]


@dataclasses.dataclass(frozen=True, eq=False)
class StandIn:
    """Minimal Dataset stand-in (maps, table, subset) so these tests only need run_qc."""

    maps: tuple
    table: pd.DataFrame
    name: str = "toy"

    def subset(self, subjects):
        keep = [i for i, s in enumerate(self.table["subject"]) if s in set(subjects)]
        return StandIn(tuple(self.maps[i] for i in keep),
                       self.table.iloc[keep].reset_index(drop=True))


def _brain() -> np.ndarray:
    ijk = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1) / 2
    r = np.sqrt(sum((ijk[a] - centre[a]) ** 2 / (SHAPE[a] / 2.2) ** 2 for a in range(3)))
    return r <= 1.0


BRAIN = _brain()


def _cohort(tmp_path: Path, rng, n=12, *, scales=None, outside=0.0, edit=None, table_edit=None):
    """n maps: standard normal noise in the 'brain' ellipsoid, `outside` elsewhere.

    ``scales[i]`` multiplies map i; ``edit(i, data) -> data or (data, affine)`` plants defects.
    """
    base = rng.normal(size=(n, *SHAPE))
    maps = []
    for i in range(n):
        data = base[i] * (1.0 if scales is None else scales[i])
        data[~BRAIN] = outside
        affine = AFFINE
        if edit is not None:
            out = edit(i, data)
            if isinstance(out, tuple):
                data, affine = out
            elif out is not None:
                data = out
        path = tmp_path / f"sub{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
        maps.append(str(path))
    table = pd.DataFrame({
        "subject": [f"sub{i:02d}" for i in range(n)],
        "pseudo": np.arange(n, dtype=float) + 10,
        "age": rng.integers(20, 40, n).astype(float),
    })
    if table_edit is not None:
        table = table_edit(table)
    return StandIn(tuple(maps), table)


def _row(qc: QCResult, subject: str, check: str) -> pd.Series:
    rows = qc.table[(qc.table["subject"] == subject) & (qc.table["check"] == check)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# --- clean cohort -----------------------------------------------------------------------


def test_clean_cohort_passes_everything(tmp_path, rng):
    ds = _cohort(tmp_path, rng)
    qc = run_qc(ds, variables=["pseudo", "age"])
    assert qc.kept == tuple(ds.table["subject"]) and qc.excluded == ()
    assert list(qc.table.columns) == ["subject", "check", "value", "verdict", "reason"]
    assert len(qc.table) == 12 * len(CHECKS)
    assert set(qc.table["verdict"]) == {"pass"}
    assert (qc.table.query("check == 'coverage'")["value"] == 1.0).all()
    # a small non-MNI grid: the mask is derived from the data and equals the brain support
    assert "at least half of the maps" in qc.mask_source
    np.testing.assert_array_equal(np.asarray(qc.mask_img.dataobj) > 0, BRAIN)
    assert qc.exclusions().empty
    assert "kept 12, excluded 0" in qc.summary()
    assert qc.apply(ds).maps == ds.maps


def test_nan_outside_brain_is_not_a_defect(tmp_path, rng):
    """SPM maps hold NaN outside the brain: that is background, not bad data."""
    ds = _cohort(tmp_path, rng, outside=np.nan)
    qc = run_qc(ds)
    assert qc.excluded == ()
    assert set(qc.table["verdict"]) == {"pass"}
    np.testing.assert_array_equal(np.asarray(qc.mask_img.dataobj) > 0, BRAIN)


# --- table checks -----------------------------------------------------------------------


def test_missing_values_exclude_with_reason(tmp_path, rng):
    def edit(t):
        t.loc[[2, 5], "pseudo"] = np.nan
        t.loc[5, "age"] = np.nan
        return t

    ds = _cohort(tmp_path, rng, table_edit=edit)
    qc = run_qc(ds, variables="pseudo")  # a single name is fine
    assert qc.excluded == ("sub02", "sub05")
    assert _row(qc, "sub02", "missing_value")["reason"] == "pseudo is missing (n/a)"
    qc2 = run_qc(ds, variables=["pseudo", "age"])
    row = _row(qc2, "sub05", "missing_value")
    assert row["reason"] == "pseudo, age are missing (n/a)" and row["value"] == 2
    qc3 = run_qc(ds)  # no variables: missing values are not QC's business
    assert qc3.excluded == () and "missing_value" not in set(qc3.table["check"])


def test_unknown_variable_fails_before_reading_images(tmp_path, rng):
    ds = _cohort(tmp_path, rng)
    ds = StandIn(tuple(str(tmp_path / f"gone{i}.nii.gz") for i in range(12)), ds.table)
    with pytest.raises(DatasetError, match=r"\['fluency'\] not in the table; use its "
                                           r"columns: \['pseudo', 'age'\]"):
        run_qc(ds, variables=["fluency"])


# --- map checks -------------------------------------------------------------------------


def test_scale_outlier_closed_form(tmp_path, rng):
    """Map i = same noise x scale_i, so log scale_i = log(median|noise|) + log(scale_i) exactly."""
    scales = np.exp(rng.normal(0, 0.3, 12))
    scales[4] *= 100.0
    noise = rng.normal(size=SHAPE)
    ds = _cohort(tmp_path, rng, scales=scales, edit=lambda i, d: np.where(BRAIN, noise * scales[i], 0))
    qc = run_qc(ds)
    logs = np.log(scales)
    med = np.median(logs)
    spread = max(1.4826 * np.median(np.abs(logs - med)), 0.1)
    z = (logs - med) / spread
    got = qc.table.query("check == 'scale_outlier'")["value"].to_numpy()
    np.testing.assert_allclose(got, z, atol=2e-3)  # float32 storage, value rounded to 1e-3
    ratios = qc.table.query("check == 'unit_change'")["value"].to_numpy()
    np.testing.assert_allclose(ratios, np.exp(logs - med), rtol=2e-3)
    assert qc.excluded == ("sub04",)  # the unit change excludes; the z only flags
    assert _row(qc, "sub04", "unit_change")["verdict"] == "exclude"
    assert _row(qc, "sub04", "scale_outlier")["verdict"] == "flag"
    ratio = scales[4] / np.exp(med)
    reason = _row(qc, "sub04", "scale_outlier")["reason"]
    assert f"map scale is {ratio:.3g}x the cohort median (robust z = {z[4]:.1f})" in reason
    reason = _row(qc, "sub04", "unit_change")["reason"]
    assert reason.startswith(f"map scale is {ratio:.3g}x the cohort median (>= 4x): almost "
                             "surely in other units")


def test_scale_outlier_small_map_and_flag_policy(tmp_path, rng):
    ds = _cohort(tmp_path, rng, scales=[1.0] * 5 + [0.01] + [1.0] * 6)
    qc = run_qc(ds)
    assert qc.excluded == ("sub05",)
    assert _row(qc, "sub05", "scale_outlier")["value"] < -5
    row = _row(qc, "sub05", "unit_change")
    assert row["value"] == pytest.approx(0.01, rel=0.05)
    assert re.search(r"map scale is 0\.01\d*x the cohort median \(<= 1/4\): almost surely in "
                     r"other units", row["reason"])
    flagging = QCPolicy(exclude=QCPolicy().exclude - {"unit_change"})
    qc2 = run_qc(ds, policy=flagging)
    assert qc2.excluded == () and _row(qc2, "sub05", "unit_change")["verdict"] == "flag"
    assert "flagged sub05 (unit_change)" in qc2.summary()
    # a lenient ratio passes it; a strict z makes the outlier exclude
    assert run_qc(ds, policy=QCPolicy(unit_ratio=1000)).excluded == ()
    strict = QCPolicy(exclude=QCPolicy().exclude | {"scale_outlier"}, unit_ratio=1000)
    assert run_qc(ds, policy=strict).excluded == ("sub05",)


def test_scale_not_assessed_for_tiny_cohort(tmp_path, rng):
    ds = _cohort(tmp_path, rng, n=4, scales=[1, 1, 1, 100.0])
    qc = run_qc(ds, policy=QCPolicy(min_subjects=1))
    assert qc.excluded == ()
    assert qc.table.query("check == 'scale_outlier'")["reason"].str.contains("not assessed").all()


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_missing_block_of_coverage(tmp_path, rng, fill):
    def edit(i, d):
        if i == 3:
            d[:, :, 5:] = fill  # top of the brain
        return d

    qc = run_qc(_cohort(tmp_path, rng, edit=edit))
    assert qc.excluded == ()  # coverage flags by default: real maps cover 85-95 %
    row = _row(qc, "sub03", "coverage")
    assert row["verdict"] == "flag"
    expected = (BRAIN[:, :, :5]).sum() / BRAIN.sum()
    assert row["value"] == pytest.approx(expected, abs=1e-4)
    assert row["reason"].startswith(f"covers {expected:.0%} of the brain mask (< 80% required); "
                                    "missing block of coverage (")
    excluding = QCPolicy.from_mapping({"exclude": ["coverage"]})
    assert run_qc(_cohort(tmp_path, rng, edit=edit), policy=excluding).excluded == ("sub03",)
    non_finite = _row(qc, "sub03", "non_finite")
    assert non_finite["verdict"] == "pass"  # NaN is "no data", counted by coverage
    if np.isnan(fill):
        assert non_finite["reason"] == (f"no inf; {BRAIN[:, :, 5:].sum()} NaN voxels inside the "
                                        "brain mask, read as no data (see coverage)")


def test_scattered_missing_voxels_and_min_coverage(tmp_path, rng):
    holes = rng.random(SHAPE) < 0.2

    def edit(i, d):
        if i == 0:
            d[holes] = 0.0
        return d

    ds = _cohort(tmp_path, rng, edit=edit)
    qc = run_qc(ds, policy=QCPolicy.from_mapping({"exclude": ["coverage"], "min_coverage": 0.9}))
    assert qc.excluded == ("sub00",)
    assert "scattered" in _row(qc, "sub00", "coverage")["reason"]
    assert run_qc(ds, policy=QCPolicy(min_coverage=0.5, exclude={"coverage"})).excluded == ()


def test_inf_values_exclude(tmp_path, rng):
    def edit(i, d):
        if i == 7:
            d[5, 5, 4] = np.inf
            d[0, 0, 0] = -np.inf  # outside the brain
        return d

    qc = run_qc(_cohort(tmp_path, rng, edit=edit))
    assert qc.excluded == ("sub07",)
    row = _row(qc, "sub07", "non_finite")
    assert row["value"] == 1
    assert row["reason"].startswith("1 voxel inside the brain mask is +/-inf; inf is never")


def test_inf_outside_mask_is_ignored(tmp_path, rng):
    def edit(i, d):
        if i == 7:
            d[0, 0, 0] = np.inf
        return d

    qc = run_qc(_cohort(tmp_path, rng, edit=edit))
    assert qc.excluded == ()
    assert _row(qc, "sub07", "non_finite")["reason"].startswith(
        "1 +/-inf voxel outside the brain mask (ignored)")


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_empty_map(tmp_path, rng, fill):
    qc = run_qc(_cohort(tmp_path, rng, edit=lambda i, d: np.full(SHAPE, fill) if i == 1 else d))
    assert qc.excluded == ("sub01",)
    assert _row(qc, "sub01", "empty_map")["reason"] == (
        "map has no finite non-zero value inside the brain mask (all 0 or NaN)")
    # later map checks are skipped for it, not reported as passing
    assert set(qc.table.query("subject == 'sub01'")["check"]) == {"non_finite", "empty_map", "grid"}


def test_constant_map(tmp_path, rng):
    qc = run_qc(_cohort(tmp_path, rng, edit=lambda i, d: BRAIN * 1.0 if i == 9 else d))
    assert qc.excluded == ("sub09",)
    assert "have the same value 1; this looks like a mask" in _row(qc, "sub09", "constant_map")["reason"]


def test_two_failures_are_joined_in_exclusions(tmp_path, rng):
    def table_edit(t):
        t.loc[4, "pseudo"] = np.nan
        return t

    ds = _cohort(tmp_path, rng, scales=[1] * 4 + [100.0] + [1] * 7, table_edit=table_edit)
    ex = run_qc(ds, variables=["pseudo"]).exclusions()
    assert ex["subject"].tolist() == ["sub04"]
    assert ex.loc[0, "checks"] == "missing_value, unit_change"
    assert ex.loc[0, "reasons"].startswith("pseudo is missing (n/a); map scale is")


def test_apply_keeps_order(tmp_path, rng):
    def table_edit(t):
        t.loc[[0, 6], "age"] = np.nan
        return t

    ds = _cohort(tmp_path, rng, table_edit=table_edit)
    qc = run_qc(ds, variables=["age"])
    sub = qc.apply(ds)
    assert tuple(sub.table["subject"]) == qc.kept == tuple(
        s for s in ds.table["subject"] if s not in ("sub00", "sub06"))


# --- grid -------------------------------------------------------------------------------


def _shifted(i, d):
    if i == 2:
        a = AFFINE.copy()
        a[:3, 3] += [3.0, 0.0, 0.0]
        return d, a
    return d


def test_grid_mismatch_is_an_error_naming_files_and_affines(tmp_path, rng):
    ds = _cohort(tmp_path, rng, edit=_shifted)
    with pytest.raises(ImageError) as exc:
        run_qc(ds)
    msg = str(exc.value)
    assert "1 map(s) are not on the grid of the first map (sub00:" in msg
    assert "sub02.nii.gz" in msg and "sub00.nii.gz" in msg
    assert "[   3.000    0.000    0.000  -15.000]" in msg  # reference affine, readable
    assert "[   3.000    0.000    0.000  -12.000]" in msg  # the shifted one
    assert "on_grid_mismatch='resample'" in msg


def test_grid_mismatch_resample_flags(tmp_path, rng):
    ds = _cohort(tmp_path, rng, edit=_shifted)
    qc = run_qc(ds, policy=QCPolicy(on_grid_mismatch="resample"))
    assert qc.excluded == () and qc.resampled == ("sub02",)
    row = _row(qc, "sub02", "grid")
    assert row["verdict"] == "flag"
    assert row["reason"] == ("map is on another grid than the first map (affines differ by up "
                             "to 3 mm); resampled to the first map's grid (continuous "
                             "interpolation)")
    # shifted by one voxel: the resampled map misses one slab of the brain
    assert 0.8 < _row(qc, "sub02", "coverage")["value"] < 1.0
    qc2 = run_qc(ds, policy=QCPolicy(on_grid_mismatch="resample",
                                     exclude=QCPolicy().exclude | {"grid"}))
    assert qc2.excluded == ("sub02",)


def test_shape_mismatch_is_an_error(tmp_path, rng):
    ds = _cohort(tmp_path, rng, edit=lambda i, d: d[:-1] if i == 5 else d)
    with pytest.raises(ImageError, match=r"sub05: .*\n    shape \(9, 11, 9\)"):
        run_qc(ds)


# --- bad images -------------------------------------------------------------------------


def test_four_d_map(tmp_path, rng):
    ds = _cohort(tmp_path, rng, edit=lambda i, d: np.stack([d, d], -1) if i == 3 else d)
    with pytest.raises(ImageError, match=r"subject 'sub03' .* has shape \(10, 11, 9, 2\); "
                                         r"expected one 3-D map per subject. Split"):
        run_qc(ds)


def test_four_d_single_volume_is_accepted(tmp_path, rng):
    ds = _cohort(tmp_path, rng, edit=lambda i, d: d[..., None] if i == 3 else d)
    assert run_qc(ds).excluded == ()


def test_missing_and_corrupt_files(tmp_path, rng):
    ds = _cohort(tmp_path, rng)
    Path(ds.maps[3]).unlink()
    with pytest.raises(DataFileNotFoundError, match=r"map of subject 'sub03' not found: .*sub03"):
        run_qc(ds)
    Path(ds.maps[3]).write_bytes(b"not a nifti at all")
    with pytest.raises(ImageError, match=r"map of subject 'sub03' cannot be read"):
        run_qc(ds)


def test_truncated_file(tmp_path, rng):
    ds = _cohort(tmp_path, rng)
    raw = nib.load(ds.maps[6])
    path = tmp_path / "trunc.nii"
    nib.save(nib.Nifti1Image(raw.get_fdata(), raw.affine), path)
    path.write_bytes(path.read_bytes()[:2000])
    ds = StandIn(ds.maps[:6] + (str(path),) + ds.maps[7:], ds.table)
    with pytest.raises(ImageError, match=r"truncated or corrupt"):
        run_qc(ds)


def test_table_map_count_mismatch(tmp_path, rng):
    ds = _cohort(tmp_path, rng)
    with pytest.raises(DatasetError, match=r"11 maps but 12 table rows"):
        run_qc(StandIn(ds.maps[:-1], ds.table))


# --- mask -------------------------------------------------------------------------------


def test_user_mask_on_other_grid_is_resampled(tmp_path, rng):
    ds = _cohort(tmp_path, rng)
    # same brain on a 2x finer grid covering the same field of view
    fine = np.repeat(np.repeat(np.repeat(BRAIN, 2, 0), 2, 1), 2, 2).astype(np.uint8)
    aff = AFFINE.copy()
    aff[:3, :3] /= 2
    aff[:3, 3] -= 0.75
    nib.save(nib.Nifti1Image(fine, aff), tmp_path / "mask.nii.gz")
    qc = run_qc(ds, mask_img=tmp_path / "mask.nii.gz")
    assert "resampled (nearest)" in qc.mask_source
    np.testing.assert_array_equal(np.asarray(qc.mask_img.dataobj) > 0, BRAIN)
    assert qc.excluded == ()


def test_mask_larger_than_data_lowers_coverage(tmp_path, rng):
    ds = _cohort(tmp_path, rng)
    full = nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE)
    qc = run_qc(ds, mask_img=full)  # every map flagged, nobody dropped by default
    assert qc.excluded == () and (qc.flags()["check"] == "coverage").all()
    with pytest.raises(QCError, match=r"Most maps fail coverage against the analysis mask"):
        run_qc(ds, mask_img=full, policy=QCPolicy(exclude={"coverage"}))


@pytest.mark.parametrize(
    "mask, exc, match",
    [
        (nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), ImageError, r"mask_img is empty"),
        (nib.Nifti1Image(np.ones((*SHAPE, 2), np.uint8), AFFINE), ImageError, r"must be 3-D"),
        ("nowhere/mask.nii.gz", DataFileNotFoundError, r"mask_img not found"),
        (np.ones(SHAPE), ParameterError, r"expected a path or a Nifti1Image, found ndarray"),
    ],
)
def test_bad_masks(tmp_path, rng, mask, exc, match):
    with pytest.raises(exc, match=match):
        run_qc(_cohort(tmp_path, rng), mask_img=mask)


# --- policy and too-few-subjects --------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(exclude={"scale", "coverage"}), r"unknown check\(s\) \['scale'\]; known checks: "
                                              r"\['missing_value', 'non_finite',"),
        (dict(exclude=3), r"expected a set of check names"),
        (dict(scale_z_max=0), r"scale_z_max: expected a positive finite number"),
        (dict(scale_z_max=float("nan")), r"scale_z_max"),
        (dict(min_coverage=1.5), r"min_coverage: expected a fraction between 0 and 1"),
        (dict(min_coverage="90%"), r"min_coverage"),
        (dict(on_grid_mismatch="drop"), r"on_grid_mismatch: expected one of \['error', 'resample'\]"),
        (dict(min_subjects=0), r"min_subjects: expected None or a positive integer"),
    ],
)
def test_policy_validation(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        QCPolicy(**kwargs)


def test_policy_defaults():
    p = QCPolicy()
    assert p.exclude == frozenset(CHECKS) - {"grid", "scale_outlier", "coverage"}
    assert (p.scale_z_max, p.unit_ratio, p.min_coverage, p.on_grid_mismatch) == (
        5.0, 4.0, 0.8, "error")
    assert p.keep == frozenset()
    assert QCPolicy(exclude=["coverage"]).exclude == frozenset({"coverage"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.min_coverage = 0.5


def test_grid_actions_are_declared_once():
    """Settings validate on_grid_mismatch against QC's own tuple (not a copy), and QC
    accepts each of its actions."""
    import glmkit.data.qc as qc_module
    import glmkit.settings

    assert glmkit.settings.GRID_ACTIONS is qc_module.GRID_ACTIONS
    for action in qc_module.GRID_ACTIONS:
        assert QCPolicy(on_grid_mismatch=action).on_grid_mismatch == action


def test_bad_policy_type(tmp_path, rng):
    with pytest.raises(ParameterError, match=r"expected a QCPolicy"):
        run_qc(_cohort(tmp_path, rng), policy={"min_coverage": 0.5})


def test_too_few_subjects_left(tmp_path, rng):
    def table_edit(t):
        t.loc[2:, "pseudo"] = np.nan
        return t

    ds = _cohort(tmp_path, rng, n=6, table_edit=table_edit)
    with pytest.raises(QCError, match=r"QC keeps 2 of 6 subjects; at least 4 are needed") as exc:
        run_qc(ds, variables=["pseudo"])
    assert "sub05: pseudo is missing (n/a)" in str(exc.value)
    assert run_qc(ds, variables=["pseudo"], policy=QCPolicy(min_subjects=2)).kept == ("sub00", "sub01")


# --- the demo ---------------------------------------------------------------------------


def test_demo_qc_reports_exactly_the_planted_problems(demo):
    qc = run_qc(demo, variables=["pseudo"])
    defects = demo.provenance["defects"]
    missing = {"S15", "S38", "S62", "S81", "S87"}
    units = {s for s, kind in defects.items() if kind == "scale_x100"}
    assert set(qc.excluded) == missing | units  # a unit change excludes
    assert set(qc.flags()["subject"]) == set(defects)  # both defects caught
    assert len(qc.kept) == 94 - 5 - len(units)
    assert "MNI152" in qc.mask_source
    ex = qc.exclusions().set_index("subject")
    for s in missing:
        assert ex.loc[s, "checks"] == "missing_value"
        assert ex.loc[s, "reasons"] == "pseudo is missing (n/a)"
    for s, kind in defects.items():
        if kind == "scale_x100":
            assert ex.loc[s, "checks"] == "unit_change"
            reason = ex.loc[s, "reasons"]
            assert "the cohort median" in reason and "other units" in reason
            ratio = float(reason.split("map scale is ")[1].split("x")[0])
            assert 70 < ratio < 140
            assert _row(qc, s, "scale_outlier")["verdict"] == "flag"
        else:
            assert kind == "missing_coverage"
            row = _row(qc, s, "coverage")
            assert row["verdict"] == "flag" and "missing block of coverage" in row["reason"]
    # everyone else sits well inside the thresholds
    others = qc.table[~qc.table["subject"].isin(defects)]
    assert others.query("check == 'scale_outlier'")["value"].abs().max() < 3
    assert others.query("check == 'coverage'")["value"].min() > 0.97


# --- more bad tables --------------------------------------------------------------------


@pytest.mark.parametrize(
    "table_edit, variables, match",
    [
        (lambda t: t.assign(iq=np.nan), ["pseudo", "iq"],
         r"variable 'iq' is missing \(n/a\) for all 12 subjects"),
        (lambda t: t.assign(subject=["sub01"] + t["subject"].tolist()[1:]), [],
         r"subject ids must be unique; duplicated: \['sub01'\]"),
    ],
)
def test_bad_tables(tmp_path, rng, table_edit, variables, match):
    with pytest.raises(DatasetError, match=match):
        run_qc(_cohort(tmp_path, rng, table_edit=table_edit), variables=variables)


# --- default mask on an MNI-like grid -----------------------------------------------------


def test_mni_like_grid_mask_ignores_outside_brain_and_cohort_dropout(tmp_path, rng):
    """4 mm MNI grid: data everywhere in the FOV (unmasked maps), a dropout slab shared by
    every map, and one map with its own missing block. Only that map is excluded."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    shape = (46, 55, 46)
    mni = np.asarray(resample_img(load_mni152_brain_mask(resolution=2), target_affine=affine,
                                  target_shape=shape, interpolation="nearest",
                                  force_resample=True, copy_header=True).dataobj) > 0
    z_mm = affine[2, 2] * np.arange(shape[2]) + affine[2, 3]
    dropout = np.zeros(shape, bool)
    dropout[:, :, z_mm < -40] = True  # below the temporal poles: no data in any map
    top = np.zeros(shape, bool)
    top[:, :, z_mm > 40] = True
    maps = []
    for i in range(8):
        data = rng.normal(size=shape)  # not masked: data outside the brain too
        data[dropout] = np.nan
        if i == 6:
            data[top] = 0.0
        path = tmp_path / f"m{i}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
        maps.append(str(path))
    table = pd.DataFrame({"subject": [f"m{i}" for i in range(8)]})
    qc = run_qc(StandIn(tuple(maps), table), policy=QCPolicy(min_coverage=0.9))
    assert qc.mask_source.startswith("MNI152 brain mask")
    mask = np.asarray(qc.mask_img.dataobj) > 0
    np.testing.assert_array_equal(mask, mni & ~dropout)
    assert qc.excluded == () and qc.flags()["subject"].tolist() == ["m6"]
    cov = _row(qc, "m6", "coverage")["value"]
    assert cov == pytest.approx(1 - (mask & top).sum() / mask.sum(), abs=1e-4)
    others = qc.table.query("check == 'coverage' and subject != 'm6'")["value"]
    assert (others == 1.0).all()


def test_maps_are_streamed_one_at_a_time(tmp_path, rng, monkeypatch):
    """Memory stays flat in n_subjects: when a map is read, no earlier map is still alive."""
    import weakref

    import glmkit.data.qc as qc_module

    alive_at_read = []
    refs = []
    original = qc_module._read_data

    def tracking(img):
        alive_at_read.append(sum(r() is not None for r in refs))
        data = original(img)
        refs.append(weakref.ref(data))
        return data

    monkeypatch.setattr(qc_module, "_read_data", tracking)
    run_qc(_cohort(tmp_path, rng, n=10))
    assert len(alive_at_read) == 20  # mask pass + check pass
    assert max(alive_at_read) == 0


# ----------------------------------------------------------------------- the analyst's policy
def _unit_verdicts(log_scales, policy=QCPolicy()):
    rows = scale_checks(dict(enumerate(log_scales)), policy)
    return np.array([failed for _, check, _, failed, _ in rows if check == "unit_change"])


def test_unit_rule_keeps_real_spread_and_catches_unit_errors():
    """The default rule, by simulation: 30-subject cohorts with log-normal scales (SD 0.5,
    the spread of real cohorts), 2000 of them. Fewer than 1 % of real subjects are excluded;
    every x10, x100, x1000 (and 1/10, 1/100) unit error of a subject within one SD of the
    typical scale is caught, and x100 / x1000 of any subject."""
    rng = np.random.default_rng(2026)
    n, reps, sd = 30, 2000, 0.5
    false = 0
    caught = {f: 0 for f in (10, 100, 1000, 0.1, 0.01)}
    caught_any = {f: 0 for f in (100, 1000)}
    for _ in range(reps):
        logs = rng.normal(0.0, sd, n)
        false += int(_unit_verdicts(logs).sum())
        typical = rng.uniform(-sd, sd)
        for factor in caught:
            bad = logs.copy()
            bad[0] = typical + np.log(factor)
            caught[factor] += bool(_unit_verdicts(bad)[0])
        for factor in caught_any:
            bad = logs.copy()
            bad[0] += np.log(factor)
            caught_any[factor] += bool(_unit_verdicts(bad)[0])
    assert false / (n * reps) < 0.01
    assert caught == {f: reps for f in caught}
    assert caught_any == {f: reps for f in caught_any}


def test_a_real_3x_subject_is_flagged_not_excluded():
    """A published 30-subject cohort holds a subject at 3.1x the median (robust z 6.4)."""
    rng = np.random.default_rng(4)
    logs = np.sort(rng.normal(0.0, 0.12, 30))
    logs -= np.median(logs)
    logs[-1] = np.log(3.1)
    rows = {(s, c): (failed, value) for s, c, value, failed, _ in
            scale_checks(dict(enumerate(logs)), QCPolicy())}
    assert rows[(29, "scale_outlier")][0] and rows[(29, "scale_outlier")][1] > 5
    assert not rows[(29, "unit_change")][0]
    assert sum(failed for (s, c), (failed, _) in rows.items() if c == "unit_change") == 0


def test_keep_overrides_map_checks_and_is_reported(tmp_path, rng):
    ds = _cohort(tmp_path, rng, scales=[1.0] * 3 + [100.0] + [1.0] * 8)
    qc = run_qc(ds, policy=QCPolicy.from_mapping({"keep": ["sub03"]}))
    assert qc.excluded == () and qc.kept_by_request == ("sub03",)
    row = _row(qc, "sub03", "unit_change")
    assert row["verdict"] == "flag" and row["reason"].endswith("[kept by request: qc keep]")
    assert "kept by request (qc keep): sub03" in qc.summary()
    # keep does nothing to a subject that passes
    assert run_qc(ds, policy=QCPolicy(keep={"sub01"}, unit_ratio=1000)).kept_by_request == ()


def test_keep_cannot_keep_a_subject_without_design_variables(tmp_path, rng):
    def table_edit(t):
        t.loc[2, "pseudo"] = np.nan
        return t

    ds = _cohort(tmp_path, rng, table_edit=table_edit)
    with pytest.raises(QCError, match=r"qc keep names 'sub02', but pseudo is missing for it: a "
                                      r"subject without a design variable cannot enter"):
        run_qc(ds, variables=["pseudo"], policy=QCPolicy(keep={"sub02"}))


def test_keep_naming_an_unknown_subject_is_an_error_before_reading_maps(tmp_path, rng):
    ds = _cohort(tmp_path, rng)
    for path in ds.maps:
        Path(path).write_bytes(b"not an image")  # reading any map would fail differently
    with pytest.raises(DatasetError, match=r"qc keep names subject\(s\) \['S99'\] that are not "
                                           r"in the dataset \(12 subjects, e.g."):
        run_qc(ds, policy=QCPolicy(keep={"S99"}))


@pytest.mark.parametrize("mapping, message", [
    ({"exclud": ["coverage"]}, r"qc: unknown key\(s\) \['exclud'\]; known keys: \['exclude', "),
    ({"exclude": ["covrage"]}, r"QCPolicy.exclude: unknown check\(s\) \['covrage'\]; known"),
    ({"flag": ["scale"]}, r"qc.flag: unknown check\(s\) \['scale'\]"),
    ({"exclude": ["coverage"], "flag": ["coverage"]},
     r"qc: \['coverage'\] are both in exclude and in flag"),
    ({"keep": 12}, r"qc.keep: expected a list of names, found 12"),
    ({"min_coverage": 1.5}, r"QCPolicy.min_coverage: expected a fraction between 0 and 1"),
    ({"unit_ratio": 0.5}, r"QCPolicy.unit_ratio: expected a number > 1"),
    ({"scale_z_max": -1}, r"QCPolicy.scale_z_max: expected a positive finite number"),
])
def test_qc_mapping_errors(mapping, message):
    with pytest.raises(ParameterError, match=message):
        QCPolicy.from_mapping(mapping)


def test_qc_mapping_exclude_flag_and_thresholds():
    p = QCPolicy.from_mapping({"exclude": "missing_value, coverage", "min_coverage": 0.7,
                               "keep": "S12,S13"})
    assert p.exclude == {"missing_value", "coverage"} and p.min_coverage == 0.7
    assert p.keep == {"S12", "S13"}
    p = QCPolicy.from_mapping({"flag": ["unit_change", "non_finite"]})
    assert p.exclude == {"missing_value", "empty_map", "constant_map"}
    assert QCPolicy.from_mapping(None) == QCPolicy()
