"""Boundary cases built on purpose: values exactly at a threshold, where ``<`` and ``<=`` differ.

- cluster extent: a cluster of exactly ``cluster_threshold`` voxels survives, one voxel
  fewer does not (``threshold_map`` and ``cluster_table``, against nilearn);
- height: a value exactly at the threshold is kept (``|z| >= threshold``), as nilearn;
- FDR: a p-value exactly on the Benjamini-Hochberg line ``alpha * k / n`` is not rejected
  (nilearn's strict ``<``), one ulp below it is;
- cluster forming in the permutation kernels: a voxel exactly at the cluster-forming
  threshold is outside (``t > thr``);
- TFCE: values exactly on the threshold grid join the cluster at that height (``t >= h``);
- ties in the null: a permutation that reproduces the observed data counts (``>=``).
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import glmkit
from glmkit.stats import cluster as kernels
from glmkit.stats.threshold import cluster_table, fdr_threshold, threshold_map
from permutation_reference import tfce_map

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (12, 10, 8)


def _volume_with_clusters(k):
    """Positive clusters of exactly k and k - 1 voxels, a negative one of exactly k, and a
    voxel that touches the k-cluster only by a corner (a separate cluster with faces)."""
    vol = np.zeros(SHAPE)
    vol[1, 1, 1:1 + k] = 5.0                 # k voxels in a row
    vol[5, 1, 1:k] = 4.5                      # k - 1 voxels
    vol[9, 5, 1:1 + k] = -5.5                 # negative, k voxels
    vol[2, 2, k + 1] = 6.0                    # corner neighbour of (1, 1, k)
    vol[5, 7, 3] = 3.0                        # exactly at the height threshold below
    mask = np.ones(SHAPE, bool)
    mask[0] = False
    vol[~mask] = 0.0
    return vol, mask


def _nilearn_threshold(vol, mask, **kwargs):
    from nilearn.glm import threshold_stats_img

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img, thr = threshold_stats_img(nib.Nifti1Image(vol, AFFINE),
                                       mask_img=nib.Nifti1Image(mask.astype("uint8"), AFFINE),
                                       **kwargs)
    return img.get_fdata()[mask], float(thr)


@pytest.mark.parametrize("two_sided", [False, True])
def test_cluster_of_exactly_the_extent_threshold_survives(two_sided):
    k = 5
    vol, mask = _volume_with_clusters(k)
    mask_img = nib.Nifti1Image(mask.astype("uint8"), AFFINE)
    for extent, kept in ((k, {5.0, -5.5} if two_sided else {5.0}), (k + 1, set()),
                         (k - 1, {5.0, 4.5, -5.5} if two_sided else {5.0, 4.5})):
        res = threshold_map(vol[mask], height_control=None, threshold=2.0, two_sided=two_sided,
                            cluster_threshold=extent, mask_img=mask_img)
        values = set(np.unique(res.thresholded[res.thresholded != 0]).tolist())
        assert values == kept, (extent, values)
        ref, _ = _nilearn_threshold(vol, mask, height_control=None, threshold=2.0,
                                    two_sided=two_sided, cluster_threshold=extent)
        np.testing.assert_array_equal(res.thresholded, ref)


def test_cluster_table_keeps_a_cluster_of_exactly_the_extent_threshold():
    k = 5
    vol, _ = _volume_with_clusters(k)
    img = nib.Nifti1Image(vol, AFFINE)
    table = cluster_table(img, stat_threshold=2.0, cluster_threshold=k, two_sided=True)
    sizes = sorted(table["size_voxels"].dropna().astype(int).tolist())
    assert sizes == [k, k]
    ref = _nilearn_clusters(img, stat_threshold=2.0, cluster_threshold=k, two_sided=True)
    assert sorted(ref["Peak Stat"].tolist()) == sorted(table["peak_stat"].tolist())
    assert cluster_table(img, stat_threshold=2.0, cluster_threshold=k + 1).empty


def _nilearn_clusters(img, **kwargs):
    from nilearn.reporting import get_clusters_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_clusters_table(img, **kwargs)


def _peaks(table):
    """(x, y, z, peak) rows of a glmkit or nilearn cluster table."""
    cols = ["x", "y", "z", "peak_stat"] if "peak_stat" in table else ["X", "Y", "Z", "Peak Stat"]
    return table[cols].to_numpy(float).tolist()


@pytest.mark.parametrize("min_distance", [8.0, 7.999])
def test_sub_peak_exactly_min_distance_away_is_dropped(min_distance):
    """Sub-peaks must be *more* than ``min_distance`` mm from a higher peak (nilearn)."""
    vol = np.zeros((14, 6, 5))
    vol[1:13, 2:4, 1:4] = 1.0
    vol[3, 2, 2], vol[7, 2, 2], vol[12, 2, 2] = 6.0, 5.0, 4.0  # 8 mm, then 10 mm apart
    img = nib.Nifti1Image(vol, AFFINE)
    mine = cluster_table(img, stat_threshold=0.5, min_distance=min_distance)
    assert (5.0 in mine["peak_stat"].tolist()) == (min_distance < 8.0)
    assert _peaks(mine) == _peaks(_nilearn_clusters(img, stat_threshold=0.5,
                                                    min_distance=min_distance))


def test_peak_of_a_plateau_whose_centre_of_mass_lies_outside_it():
    """A U-shaped plateau of maxima: its centre of mass falls on a lower voxel, so the peak is
    the plateau voxel nearest to it (as nilearn), not the centre of mass."""
    vol = np.zeros((11, 13, 5))
    vol[1:9, 3:11, 1:4] = 2.0
    vol[2, 4:10, 2] = vol[2:8, 4, 2] = vol[7, 4:10, 2] = 5.0  # U open towards +y
    vol[3:7, 5:10, 2] = 4.0
    img = nib.Nifti1Image(vol, AFFINE)
    mine = cluster_table(img, stat_threshold=1.0)
    assert mine["peak_stat"].tolist() == [5.0]
    assert _peaks(mine) == _peaks(_nilearn_clusters(img, stat_threshold=1.0))


def test_cluster_table_of_a_4d_image_with_one_volume():
    vol, _ = _volume_with_clusters(5)
    three = cluster_table(nib.Nifti1Image(vol, AFFINE), stat_threshold=2.0, two_sided=True)
    four = cluster_table(nib.Nifti1Image(vol[..., None], AFFINE), stat_threshold=2.0,
                         two_sided=True)
    pd.testing.assert_frame_equal(three, four)
    assert len(three) >= 3


@pytest.mark.parametrize("two_sided", [False, True])
def test_value_exactly_at_the_height_threshold_is_kept(two_sided):
    vol, mask = _volume_with_clusters(4)
    z = vol[mask]
    res = threshold_map(z, height_control=None, threshold=3.0, two_sided=two_sided)
    assert res.thresholded[z == 3.0].tolist() == [3.0]
    just_below = np.nextafter(3.0, 0.0)
    res2 = threshold_map(np.where(z == 3.0, just_below, z), height_control=None,
                         threshold=3.0, two_sided=two_sided)
    assert res2.n_suprathreshold == res.n_suprathreshold - 1
    ref, _ = _nilearn_threshold(vol, mask, height_control=None, threshold=3.0,
                                two_sided=two_sided)
    np.testing.assert_array_equal(res.thresholded, ref)
    # and the negative side: -threshold is kept two-sided, dropped one-sided
    neg = threshold_map(-z, height_control=None, threshold=3.0, two_sided=two_sided)
    assert neg.thresholded[z == 3.0].tolist() == ([-3.0] if two_sided else [0.0])
    if not two_sided:  # a negative one-sided threshold keeps values <= it, the tie included
        low = threshold_map(-z, height_control=None, threshold=-3.0, two_sided=False)
        assert low.thresholded[z == 3.0].tolist() == [-3.0]
        ref, _ = _nilearn_threshold(-vol, mask, height_control=None, threshold=-3.0,
                                    two_sided=False)
        np.testing.assert_array_equal(low.thresholded, ref)
        # a threshold of exactly 0 is a positive one: it keeps z >= 0
        zero = threshold_map(z, height_control=None, threshold=0.0, two_sided=False)
        assert np.array_equal(zero.thresholded != 0, z > 0) and zero.thresholded.min() >= 0
        ref, _ = _nilearn_threshold(vol, mask, height_control=None, threshold=0.0,
                                    two_sided=False)
        np.testing.assert_array_equal(zero.thresholded, ref)


def _z_with_sf_exactly(target):
    """A z whose ``norm.sf`` is exactly ``target`` (searched among neighbouring floats)."""
    z0 = stats.norm.isf(target)
    for step in range(400):
        for z in (z0 + step * np.spacing(z0), z0 - step * np.spacing(z0)):
            if stats.norm.sf(z) == target:
                return z
    raise AssertionError(f"no float z has norm.sf(z) == {target!r}")


@pytest.mark.parametrize(("n", "rank"), [(4, 2), (8, 4), (7, 3)])
def test_p_exactly_on_the_fdr_line_is_not_rejected(n, rank):
    """BH with nilearn's strict rule ``p_(k) < alpha * k / n``: the p at rank ``rank`` sits
    exactly on the line, so it and everything below it are not rejected."""
    from nilearn.glm import fdr_threshold as nilearn_fdr

    alpha = 0.05
    line = alpha * np.linspace(1 / n, 1, n)
    z_tie = _z_with_sf_exactly(line[rank - 1])
    z = np.r_[np.linspace(6.0, 5.0, rank - 1), z_tie, np.linspace(0.5, -1.0, n - rank)]
    assert stats.norm.sf(np.sort(z)[::-1])[rank - 1] == line[rank - 1]
    thr = fdr_threshold(z, alpha)
    assert thr == nilearn_fdr(z, alpha)
    passed = z >= thr
    assert passed.sum() == rank - 1, (thr, z)
    assert not passed[rank - 1]
    # one float above on the z axis (p just below the line): now it is rejected
    z_in = z.copy()
    z_in[rank - 1] = np.nextafter(z_tie, np.inf)
    assert stats.norm.sf(z_in[rank - 1]) < line[rank - 1]
    thr_in = fdr_threshold(z_in, alpha)
    assert thr_in == nilearn_fdr(z_in, alpha)
    assert (z_in >= thr_in).sum() == rank
    res = threshold_map(z_in, alpha=alpha, height_control="fdr", two_sided=False)
    assert res.n_suprathreshold == rank and res.threshold == thr_in


@pytest.mark.parametrize("cluster_threshold", [0.0, 1.0, -0.01, 1.5])
def test_cluster_forming_p_must_be_inside_the_open_unit_interval(rng, cluster_threshold):
    n = 10
    mask = np.ones((3, 3, 2), bool)
    X = pd.DataFrame({"x": rng.standard_normal(n), "intercept": 1.0})
    with pytest.raises(glmkit.errors.ParameterError, match="cluster_threshold"):
        glmkit.permutation_test(rng.standard_normal((n, 18)), X, "x", n_perm=5,
                                statistics=("cluster_size",), mask_img=mask,
                                cluster_threshold=cluster_threshold, verbose=False)


def _line_mask(n):
    mask = np.zeros((n + 2, 3, 3), bool)
    mask[1:-1, 1, 1] = True
    return mask


def test_cluster_kernels_exclude_values_exactly_at_the_forming_threshold():
    mask = _line_mask(9)
    nbr = kernels.neighbors(mask, 6)
    thr = 2.5
    u = np.array([3.0, thr, 3.0, 3.0, 1.0, 4.0, 4.0, 4.0, -thr])
    labels = kernels.cluster_labels(u, thr, nbr)
    assert (labels >= 0).tolist() == (u > thr).tolist()
    assert len(set(labels[labels >= 0].tolist())) == 3  # {0}, {2, 3}, {5, 6, 7}
    size, mass = np.empty(1, np.int64), np.empty(1)
    kernels.cluster_max(u[None], thr, nbr, False, size, mass)
    assert size[0] == 3 and mass[0] == pytest.approx(3 * (4.0 - thr))
    # two-sided: -thr is not below -thr (the negative part is {0}, {2, 3}), 4.0 x 3 is the
    # largest cluster; one voxel more at exactly -thr would not join the negative ones
    u2 = np.where(np.arange(9) < 4, -u, u)
    kernels.cluster_max(u2[None], thr, nbr, True, size, mass)
    assert size[0] == 3 and mass[0] == pytest.approx(3 * (4.0 - thr))
    u3 = u2.copy()
    u3[5:8] = 0.0
    kernels.cluster_max(u3[None], thr, nbr, True, size, mass)
    assert size[0] == 2 and mass[0] == pytest.approx(2 * (3.0 - thr))


@pytest.mark.parametrize("two_sided", [False, True])
def test_tfce_values_exactly_on_the_threshold_grid(two_sided):
    """dh = 1/64 and a maximum of 1: the heights j/64 are exact floats, and so are the data,
    so each voxel joins at exactly its own height (``t >= h``)."""
    mask = _line_mask(12)
    nbr = kernels.neighbors(mask, 6)
    t = np.array([1.0, 32, 32, 16, 0, 64, 48, 48, 8, 1, 0, 64]) / 64
    if two_sided:
        t[6:9] *= -1
    ref = tfce_map(t, mask, two_sided, 6, E=0.5, H=2.0, n_steps=64)  # heights j / 64
    mine = kernels.tfce_map(t, nbr, two_sided, 0.5, 2.0, 1 / 64)
    np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-15)
    mx = np.empty(1)
    kernels.tfce_max(t[None], nbr, two_sided, 0.5, 2.0, 1 / 64, mx)
    assert mx[0] == pytest.approx(np.abs(ref).max(), rel=1e-12)


# ----------------------------------------------------------------------------- null ties
@pytest.fixture
def tie_case(rng):
    n = 15
    age = rng.standard_normal(n)
    x = rng.standard_normal(n) + 0.5 * age
    Y = np.exp(rng.standard_normal((n, 400)))
    return Y, pd.DataFrame({"x": x, "age": age, "intercept": 1.0})


@pytest.mark.parametrize("columns", [["x", "intercept"], ["x", "age", "intercept"]])
@pytest.mark.parametrize("two_sided", [False, True])
def test_identity_permutation_counts_as_a_tie(tie_case, columns, two_sided):
    """Freedman-Lane with the identity among the given permutations: its null map equals the
    observed map, so every voxel's count includes it: p >= 2 / (n_perm + 1) everywhere."""
    Y, design = tie_case
    n, n_perm = Y.shape[0], 9
    rng = np.random.default_rng(0)
    perms = np.array([np.arange(n)] + [rng.permutation(n) for _ in range(n_perm - 1)])
    res = glmkit.permutation_test(Y, design[columns], "x", n_perm=n_perm, two_sided=two_sided,
                                  _permutations=perms, verbose=False)
    floor = 2 / (n_perm + 1) - 1e-12
    assert (10 ** -res.logp_uncorrected).min() >= floor
    assert (10 ** -res.logp_fwer["voxel"]).min() >= floor


@pytest.mark.parametrize("two_sided", [False, True])
def test_identity_sign_flip_counts_as_a_tie(tie_case, two_sided):
    Y, _ = tie_case
    n, n_perm = Y.shape[0], 9
    rng = np.random.default_rng(1)
    signs = rng.choice([-1, 1], size=(n_perm, n))
    signs[0] = 1
    signs[1] = -1 if two_sided else signs[1]
    res = glmkit.permutation_test(Y, np.ones((n, 1)), [1.0], n_perm=n_perm,
                                  two_sided=two_sided, _signs=signs, verbose=False)
    floor = (3 if two_sided else 2) / (n_perm + 1) - 1e-12
    assert (10 ** -res.logp_uncorrected).min() >= floor
    assert (10 ** -res.logp_fwer["voxel"]).min() >= floor


def test_duplicated_permutations_are_counted_twice(tie_case):
    """The same permutation given twice is two draws: its null value enters the count twice
    (given permutations are used as they are, not de-duplicated)."""
    Y, design = tie_case
    n = Y.shape[0]
    rng = np.random.default_rng(2)
    base = np.array([rng.permutation(n) for _ in range(6)])
    perms = np.r_[base, base[:3]]
    res = glmkit.permutation_test(Y, design, "x", n_perm=9, _permutations=perms,
                                  verbose=False)
    null = res.null_max["voxel"][1:]
    np.testing.assert_allclose(null[6:], null[:3], rtol=1e-12)
    stat = res.t
    p = np.array([(1 + np.sum(null >= v)) / 10 for v in stat])
    np.testing.assert_allclose(10 ** -res.logp_fwer["voxel"], p, rtol=1e-12)


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
def test_exactly_fitted_voxel_is_undefined_as_in_the_glm(rng, scheme):
    """A voxel the design fits exactly (zero residuals) has t = 0 as in the GLM, and its FWER
    p is never below its uncorrected p (it was t = 3.7e150 before, FWER p 1/(n_perm+1))."""
    from glmkit.stats.glm import compute_contrast, ols_fit

    n = 16
    X = pd.DataFrame({"x": rng.standard_normal(n), "intercept": 1.0})
    Y = rng.standard_normal((n, 6))
    Y[:, 0] = 3.0 * X["x"] + 2.0
    res = glmkit.permutation_test(Y, X, "x", n_perm=19, scheme=scheme, random_state=0,
                                  verbose=False)
    glm = compute_contrast(ols_fit(Y, X), "x")
    assert glm.stat[0] == 0.0
    assert np.all(res.logp_fwer["voxel"] <= res.logp_uncorrected + 1e-12)  # p_FWER >= p_unc
    assert res.t[0] == glm.stat[0]
    assert res.logp_uncorrected[0] == 0.0 and res.logp_fwer["voxel"][0] == 0.0


FITTED_CASES = {
    "t": dict(contrast="x"),
    "t two-sided": dict(contrast="x", two_sided=True),
    "t with covariate": dict(contrast="x", covariate=True),
    "F": dict(contrast=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], covariate=True),
    "clusters": dict(contrast="x", covariate=True, statistics=("voxel", "cluster_size")),
}


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
@pytest.mark.parametrize("case", list(FITTED_CASES))
def test_exactly_fitted_voxel_behaves_as_a_constant_voxel(rng, scheme, case):
    """Observed and null alike, a voxel fitted exactly by the design (here by x, the
    covariate and the intercept) is what a constant voxel is: statistic 0, uncorrected and
    FWER p 1, and it adds 0 to every permuted map (null maxima equal bit for bit); its t in
    the GLM is 0 too."""
    from glmkit.stats.glm import compute_contrast, ols_fit

    opts = dict(FITTED_CASES[case])
    covariate = opts.pop("covariate", False)
    n = 14
    X = pd.DataFrame({"x": rng.standard_normal(n), "age": rng.standard_normal(n),
                      "intercept": 1.0})
    if not covariate:
        X = X[["x", "intercept"]]
    Y = rng.standard_normal((n, 8))
    Y[:, 3] = X.to_numpy() @ np.arange(2.0, 2.0 + X.shape[1]) * 1e3
    constant = Y.copy()
    constant[:, 3] = 5.0
    mask = np.ones((2, 4, 1), bool)
    runs = [glmkit.permutation_test(data, X, n_perm=29, scheme=scheme, random_state=4,
                                    mask_img=mask, cluster_threshold=0.2, verbose=False,
                                    **opts) for data in (Y, constant)]
    fitted, const = runs
    assert fitted.t[3] == 0.0 and fitted.logp_uncorrected[3] == 0.0
    for s in fitted.statistics:
        np.testing.assert_array_equal(fitted.null_max[s], const.null_max[s], err_msg=s)
        np.testing.assert_array_equal(fitted.logp_fwer[s], const.logp_fwer[s], err_msg=s)
    assert np.all(fitted.logp_fwer["voxel"] <= fitted.logp_uncorrected + 1e-12)
    np.testing.assert_array_equal(fitted.t, const.t)
    np.testing.assert_array_equal(fitted.logp_uncorrected, const.logp_uncorrected)
    glm = compute_contrast(ols_fit(Y, X), opts["contrast"],
                           stat_type="F" if case == "F" else "t")
    assert glm.stat[3] == 0.0
