"""Exact p-values of glmkit.permutation_test and glmkit.stats.glm against plain references.

The permutation references (tests/permutation_reference.py) refit the GLM for every given
permutation or sign flip with ``numpy.linalg.lstsq`` (Freedman-Lane and ter Braak written
out as in Winkler et al. 2014, table 2), form clusters with ``scipy.ndimage.label`` and TFCE
with one ``ndimage.label`` per threshold, and count ``p = (1 + #{null >= observed}) /
(1 + n_perm)`` in a loop. None of it uses glmkit's engine, so a changed comparison, a
dropped ``1 +``, a signed instead of an absolute statistic or a wrong residual shows up as a
different p. The data are skewed (log-normal) and one subject is scaled 3x, so no result
leans on Gaussian symmetry.

The GLM's p, two-sided p and z are compared with scipy (``linregress``, ``ttest_1samp``,
``t.sf``) for negative as well as positive t.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, ndimage, special, stats

import glmkit
from glmkit.stats.glm import compute_contrast, fit_second_level, ols_fit
from glmkit.stats.pvalues import log_sf_f, log_sf_t
from permutation_reference import cluster_maps, null_t_maps, p_from_counts, refit_t, tfce_map

#: smallest gap allowed between a null value and an observed value (or a threshold) in the
#: reference: below it, rounding in either implementation could flip a comparison
GAP = 1e-8


def assert_no_near_ties(values, targets, what):
    gap = np.min(np.abs(np.asarray(values)[..., None] - np.ravel(targets)))
    assert gap > GAP, f"{what}: a value is within {gap:.2g} of a comparison point; change the seed"


# ----------------------------------------------------------------------------- data
def skewed_data(rng, n, n_voxels, outlier=True):
    """Log-normal (skewed) data, one subject at 3x scale."""
    Y = np.exp(rng.standard_normal((n, n_voxels)))
    if outlier:
        Y[n // 3] *= 3.0
    return Y


def regression_design(rng, n):
    age = rng.standard_normal(n)
    flu = rng.standard_normal(n) + 0.5 * age
    return pd.DataFrame({"fluency": flu, "age": age, "intercept": np.ones(n)})


# design name -> (columns, contrast); "signs" cases flip signs of a regression on request
DESIGNS = {
    "fluency+intercept": (["fluency", "intercept"], [1.0, 0.0]),
    "fluency+age+intercept": (["fluency", "age", "intercept"], [1.0, 0.0, 0.0]),
    "difference": (["fluency", "age", "intercept"], [1.0, -1.0, 0.0]),
    "fluency+age_no_intercept": (["fluency", "age"], [1.0, 0.0]),
    "one_sample": (["intercept"], [1.0]),
    "one_sample+age": (["intercept", "age"], [1.0, 0.0]),
}


# permuting the rows of a constant regressor changes nothing: one-sample designs flip signs
CASES = [(d, draw) for d in DESIGNS for draw in ("permutations", "signs")
         if not (d.startswith("one_sample") and draw == "permutations")]


@pytest.mark.parametrize("two_sided", [False, True], ids=["one_sided", "two_sided"])
@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
@pytest.mark.parametrize(("design_name", "draw"), CASES)
def test_voxel_p_values_equal_a_plain_refit_loop(rng, design_name, draw, scheme, two_sided):
    """Uncorrected and max-T FWER p, given permutations or sign flips, equal the loop's."""
    n, n_perm = 17, 40
    design = regression_design(rng, n)
    columns, contrast = DESIGNS[design_name]
    X = design[columns]
    c = np.asarray(contrast)
    Y = skewed_data(rng, n, 60)
    Y[:, :6] += 0.8 * (X.to_numpy() @ c)[:, None]  # some voxels with an effect
    if design_name.startswith("one_sample"):
        Y -= 1.3  # both signs of t
    perms = np.array([rng.permutation(n) for _ in range(n_perm)]) if draw == "permutations" \
        else None
    signs = rng.choice([-1, 1], size=(n_perm, n)) if draw == "signs" else None
    res = glmkit.permutation_test(Y, X, contrast, n_perm=n_perm, two_sided=two_sided,
                                  scheme=scheme, _permutations=perms, _signs=signs,
                                  verbose=False)

    t_obs = refit_t(Y, X.to_numpy(), c)
    np.testing.assert_allclose(res.t, t_obs, rtol=1e-9, atol=1e-12)
    assert (t_obs > 1).any() and (t_obs < -1).any()  # both tails are exercised
    null = null_t_maps(Y, X.to_numpy(), c, scheme, perms, signs)
    stat_obs = np.abs(t_obs) if two_sided else t_obs
    stat_null = np.abs(null) if two_sided else null
    max_null = stat_null.max(axis=1)
    gap = np.abs(stat_null - stat_obs[None, :]).min()
    assert gap > GAP, "a permuted t is within rounding of the observed one; change the seed"
    assert_no_near_ties(max_null, stat_obs, "max-T null vs observed")

    p_unc = np.array([p_from_counts(stat_null[:, v], stat_obs[v : v + 1])[0]
                      for v in range(Y.shape[1])])
    p_fwer = p_from_counts(max_null, stat_obs)
    np.testing.assert_allclose(10 ** -res.logp_uncorrected, p_unc, rtol=1e-12)
    np.testing.assert_allclose(10 ** -res.logp_fwer["voxel"], p_fwer, rtol=1e-12)
    np.testing.assert_allclose(res.null_max["voxel"][1:], max_null, rtol=1e-9)
    assert res.null_max["voxel"][0] == pytest.approx(stat_obs.max(), rel=1e-12)
    assert res.method == ("sign_flip" if draw == "signs" else "permutation")
    assert res.tfce_params is None and res.cluster_forming_t is None
    ceiling = np.log10(n_perm + 1)
    for logp in (res.logp_uncorrected, res.logp_fwer["voxel"]):
        assert np.all(logp >= 0) and np.all(logp <= ceiling + 1e-12)


# ----------------------------------------------------------------------------- spatial
SHAPE = (7, 6, 5)


def spatial_case(rng, n):
    """A brain-like mask with a hole, smooth skewed data with an outlier subject."""
    mask = np.ones(SHAPE, bool)
    mask[0, :, :2] = False
    mask[3, 3, 2] = False
    vols = ndimage.gaussian_filter(rng.standard_normal((n, *SHAPE)), (0, 1.2, 1.2, 1.2))
    vols = np.exp(3.0 * vols)  # smooth and skewed
    vols[n // 3] *= 3.0
    return vols[:, mask], mask


ALL = ("voxel", "cluster_size", "cluster_mass", "tfce")


@pytest.mark.parametrize("two_sided", [False, True], ids=["one_sided", "two_sided"])
def test_tfce_with_its_own_e_and_h_equals_the_ndimage_loop(rng, two_sided):
    """TFCE parameters passed are the ones used, observed and null: E = 1, H = 1.5 (not the
    defaults 0.5 and 2) against the ndimage loop, and recorded in ``tfce_params``."""
    n, n_perm = 14, 12
    Y, mask = spatial_case(rng, n)
    design = regression_design(rng, n)
    Y[:, 30:60] += 1.0 * design["fluency"].to_numpy()[:, None]
    perms = np.array([rng.permutation(n) for _ in range(n_perm)])
    res = glmkit.permutation_test(Y, design, "fluency", n_perm=n_perm, two_sided=two_sided,
                                  statistics=("voxel", "tfce"), tfce={"E": 1.0, "H": 1.5},
                                  mask_img=mask, _permutations=perms, verbose=False)
    assert res.tfce_params["E"] == 1.0 and res.tfce_params["H"] == 1.5
    c = (design.columns == "fluency").astype(float)
    X = design.to_numpy()
    t_obs = refit_t(Y, X, c)
    tfce = tfce_map(t_obs, mask, two_sided, 6, E=1.0, H=1.5)
    np.testing.assert_allclose(res.observed["tfce"], tfce, rtol=1e-8, atol=1e-8)
    null = [np.abs(tfce_map(t, mask, two_sided, 6, E=1.0, H=1.5)).max()
            for t in null_t_maps(Y, X, c, "freedman_lane", perms, None)]
    np.testing.assert_allclose(res.null_max["tfce"][1:], null, rtol=1e-8)


@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("two_sided", [False, True], ids=["one_sided", "two_sided"])
@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak", "sign_flip"])
def test_cluster_and_tfce_p_values_equal_a_plain_ndimage_loop(rng, scheme, two_sided,
                                                             connectivity):
    """Cluster size, cluster mass and TFCE: observed maps, null maxima and FWER p."""
    n, n_perm = 15, 30
    Y, mask = spatial_case(rng, n)
    if scheme == "sign_flip":
        X = pd.DataFrame({"intercept": np.ones(n)})
        contrast, engine_scheme = "intercept", "freedman_lane"
        Y = Y - np.median(Y, axis=0) + 0.2
        perms, signs = None, rng.choice([-1, 1], size=(n_perm, n))
    else:
        design = regression_design(rng, n)
        X, contrast, engine_scheme = design, "fluency", scheme
        Y = Y + 0.6 * design["age"].to_numpy()[:, None]
        Y[:, 30:60] += 1.0 * design["fluency"].to_numpy()[:, None]
        perms, signs = np.array([rng.permutation(n) for _ in range(n_perm)]), None
    c = (X.columns == contrast).astype(float)
    q = 0.05 / 2 if two_sided else 0.05
    res = glmkit.permutation_test(Y, X, contrast, n_perm=n_perm, two_sided=two_sided,
                                  statistics=ALL, mask_img=mask, cluster_threshold=0.05,
                                  connectivity=connectivity, scheme=engine_scheme,
                                  _permutations=perms, _signs=signs, verbose=False)
    dof = n - X.shape[1]
    thr = stats.t.isf(q, dof)
    assert res.cluster_forming_t == pytest.approx(thr, rel=1e-12)
    assert res.tfce_params["E"] == 0.5 and res.tfce_params["H"] == 2.0
    assert res.tfce_params["connectivity"] == connectivity == res.connectivity
    Xa = X.to_numpy()
    t_obs = refit_t(Y, Xa, c)
    null = null_t_maps(Y, Xa, c, engine_scheme, perms, signs)
    assert_no_near_ties(np.abs(np.r_[null, t_obs[None]]), [thr], "t vs cluster-forming t")

    size, mass = cluster_maps(t_obs, mask, thr, two_sided, connectivity)
    tfce = tfce_map(t_obs, mask, two_sided, connectivity)
    assert size.max() >= 3 and size.min() == 0  # clusters, and voxels outside them
    np.testing.assert_array_equal(res.observed["cluster_size"], size)
    np.testing.assert_allclose(res.observed["cluster_mass"], mass, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.observed["tfce"], tfce, rtol=1e-8, atol=1e-8)

    null_size, null_mass, null_tfce = [], [], []
    for t_perm in null:
        s, m = cluster_maps(t_perm, mask, thr, two_sided, connectivity)
        null_size.append(s.max())
        null_mass.append(m.max())
        null_tfce.append(np.abs(tfce_map(t_perm, mask, two_sided, connectivity)).max())
    np.testing.assert_array_equal(res.null_max["cluster_size"][1:], null_size)
    np.testing.assert_allclose(res.null_max["cluster_mass"][1:], null_mass, rtol=1e-9)
    np.testing.assert_allclose(res.null_max["tfce"][1:], null_tfce, rtol=1e-8)
    assert res.null_max["cluster_size"][0] == size.max()
    assert res.null_max["tfce"][0] == pytest.approx(np.abs(tfce).max(), rel=1e-9)

    # FWER p: the loop's count for every voxel in a cluster, p = 1 elsewhere
    for name, obs, nul in (("cluster_size", size, null_size), ("cluster_mass", mass, null_mass),
                           ("tfce", np.abs(tfce), null_tfce)):
        if name != "cluster_size":
            assert_no_near_ties(nul, obs[obs > 0], name)
        p = np.where(obs > 0, p_from_counts(np.asarray(nul), obs), 1.0)
        np.testing.assert_allclose(10 ** -res.logp_fwer[name], p, rtol=1e-12, err_msg=name)
    stat_obs = np.abs(t_obs) if two_sided else t_obs
    stat_null = np.abs(null) if two_sided else null
    np.testing.assert_allclose(10 ** -res.logp_fwer["voxel"],
                               p_from_counts(stat_null.max(axis=1), stat_obs), rtol=1e-12)
    ceiling = np.log10(n_perm + 1)
    for logp in (res.logp_uncorrected, *res.logp_fwer.values()):
        assert np.all(logp >= 0) and np.all(logp <= ceiling + 1e-12)


def test_cluster_size_ties_in_the_null_count_as_exceeding(rng):
    """Cluster sizes are integers, so the null holds values equal to the observed sizes:
    each tie counts (``>=``), as the observed data count as one permutation."""
    n, n_perm = 14, 60
    Y, mask = spatial_case(rng, n)
    design = regression_design(rng, n)
    perms = np.array([rng.permutation(n) for _ in range(n_perm)])
    res = glmkit.permutation_test(Y, design, "fluency", n_perm=n_perm,
                                  statistics=("cluster_size",), mask_img=mask,
                                  cluster_threshold=0.1, _permutations=perms, verbose=False)
    obs = res.observed["cluster_size"]
    null = res.null_max["cluster_size"][1:]
    sizes = np.unique(obs[obs > 0])
    tied = [s for s in sizes if np.any(null == s)]
    assert tied, "the test needs an observed cluster size that also occurs in the null"
    for s in sizes:
        expected = (1 + np.sum(null >= s)) / (1 + n_perm)
        voxels = obs == s
        np.testing.assert_allclose(10 ** -res.logp_fwer["cluster_size"][voxels], expected,
                                   rtol=1e-12)
    # critical value: p <= alpha exactly where the size exceeds it
    for alpha in (0.05, 0.2, 0.5):
        crit = res.critical_value("cluster_size", alpha)
        p = 10 ** -res.logp_fwer["cluster_size"]
        assert np.array_equal((p <= alpha + 1e-12) & (obs > 0), (obs > crit) & (obs > 0))


def test_every_logp_map_is_at_most_log10_n_perm_plus_one_on_a_strong_effect(rng):
    """A planted effect far beyond the null: every p is at its floor ``1 / (n_perm + 1)``,
    never 0 (``-log10 p`` would be 307 with ``count / n_perm``)."""
    n, n_perm = 16, 19
    Y, mask = spatial_case(rng, n)
    x = np.linspace(-1, 1, n)
    Y = Y + 50.0 * x[:, None]
    X = pd.DataFrame({"x": x, "intercept": 1.0})
    for two_sided in (False, True):
        res = glmkit.permutation_test(Y, X, "x", n_perm=n_perm, two_sided=two_sided,
                                      statistics=ALL, mask_img=mask, random_state=0,
                                      verbose=False)
        ceiling = np.log10(n_perm + 1)
        for logp in (res.logp_uncorrected, *res.logp_fwer.values()):
            np.testing.assert_allclose(logp, ceiling, rtol=1e-12)
        # a permutation without any cluster has largest cluster size and mass 0
        for s in ("cluster_size", "cluster_mass"):
            assert res.null_max[s][1:].min() == 0.0, s
        # the ceiling itself: exact when the observed beats every permutation
        assert res.critical_value("voxel", 0.05) < res.t.min()
        assert res.critical_value("voxel", 0.049) == np.inf


def _null_maxima(rng, n, v, n_perm, seed):
    """A regression on pure noise (n subjects, v voxels): the result and its null maxima."""
    X = pd.DataFrame({"x": rng.standard_normal(n), "intercept": 1.0})
    res = glmkit.permutation_test(rng.standard_normal((n, v)), X, "x", n_perm=n_perm,
                                  random_state=seed, verbose=False)
    return res, res.null_max["voxel"][1:]


def _around(null):
    """Every null value, the midpoints between them, and one beyond each end."""
    grid = np.sort(null)
    return np.r_[grid, (grid[1:] + grid[:-1]) / 2, grid[0] - 1, grid[-1] + 1]


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.07, 0.29, 0.5, 0.57, 0.99])
def test_critical_value_separates_exactly_the_significant_values(rng, alpha):
    """``p <= alpha`` exactly where the value exceeds ``critical_value(alpha)``, checked on
    every null value and between them (0.29 * 100 and 0.57 * 100 round below an integer)."""
    n_perm = 99
    res, null = _null_maxima(rng, 14, 30, n_perm, seed=1)
    values = _around(null)
    p = np.array([(1 + np.sum(null >= v)) / (1 + n_perm) for v in values])
    crit = res.critical_value("voxel", alpha)
    np.testing.assert_array_equal(values > crit, p <= alpha)


@pytest.mark.parametrize(("alpha", "n_perm"), [(1 - 1e-11, 19), (0.05 - 1e-12, 19)])
def test_critical_value_alpha_just_below_a_grid_point(rng, alpha, n_perm):
    res, null = _null_maxima(rng, 14, 30, n_perm, seed=1)
    values = np.r_[np.sort(null), null.max() + 1, null.min() - 1]
    p = np.array([(1 + np.sum(null >= v)) / (1 + n_perm) for v in values])
    np.testing.assert_array_equal(values > res.critical_value("voxel", alpha), p <= alpha)


def test_critical_value_one_ulp_either_side_of_every_grid_point(rng):
    """At ``alpha = k / (n_perm + 1)`` and one float step either side of it, for every k:
    the values above the critical value are exactly those with ``p <= alpha`` (a plain loop
    over the null), where ``p`` is the float the result reports."""
    n_perm = 39
    res, null = _null_maxima(rng, 12, 25, n_perm, seed=3)
    values = _around(null)
    p = np.array([(1.0 + sum(1 for m in null if m >= v)) / (1.0 + n_perm) for v in values])
    for k in range(1, n_perm + 1):
        point = k / (n_perm + 1)
        for alpha in (np.nextafter(point, 0.0), point, np.nextafter(point, 1.0)):
            if not 0 < alpha < 1:
                continue
            crit = res.critical_value("voxel", float(alpha))
            np.testing.assert_array_equal(values > crit, p <= alpha, err_msg=f"{alpha!r}")


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_critical_value_rejects_alpha_outside_the_open_unit_interval(rng, alpha):
    n = 10
    res = glmkit.permutation_test(rng.standard_normal((n, 5)), np.ones((n, 1)), [1.0],
                                  n_perm=9, random_state=0, verbose=False)
    with pytest.raises(glmkit.errors.ParameterError, match="alpha"):
        res.critical_value("voxel", alpha)


CONSTANTS = [2.0, 1e6 + 0.1, np.pi * 1e5, -3.3e7, 123456.789, 1e8 / 3, 7e9 + 1 / 3, 5e5]


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
@pytest.mark.parametrize("columns", [["x", "intercept"], ["x", "age", "intercept"]])
def test_constant_voxels_of_any_magnitude_have_t_zero_and_p_one(rng, scheme, columns):
    """A voxel constant across subjects has no residual variance: t = 0 and p = 1 however
    large the constant (the residuals are rounding noise), as ``compute_contrast`` says."""
    n = 20
    X = pd.DataFrame({"x": rng.standard_normal(n), "age": rng.standard_normal(n),
                      "intercept": 1.0})[columns]
    Y = np.c_[np.tile(CONSTANTS, (n, 1)), rng.standard_normal((n, 4))]
    res = glmkit.permutation_test(Y, X, "x", n_perm=20, scheme=scheme, random_state=0,
                                  statistics=("voxel",), verbose=False)
    k = len(CONSTANTS)
    assert res.t[:k].tolist() == [0.0] * k
    assert np.all(res.logp_uncorrected[:k] == 0) and np.all(res.logp_fwer["voxel"][:k] == 0)
    assert np.all(res.t[k:] != 0)
    glm = compute_contrast(ols_fit(Y, X), "x")
    assert glm.stat[:k].tolist() == [0.0] * k


def test_random_state_none_draws_a_fresh_63_bit_seed(rng):
    """Without a seed each run draws its own from entropy (and records it)."""
    n = 6
    Y = rng.standard_normal((n, 3))
    seeds = [glmkit.permutation_test(Y, np.ones((n, 1)), [1.0], n_perm=1,
                                     verbose=False).random_state for _ in range(20)]
    assert len(set(seeds)) == 20
    assert max(seeds) > 2**40 and all(0 <= s < 2**63 for s in seeds)


# ----------------------------------------------------------------------------- GLM vs scipy
def z_of_t(t, dof):
    """The normal quantile of t's tail, computed in the tail that keeps precision."""
    return np.sign(t) * stats.norm.isf(stats.t.sf(np.abs(t), dof))


def _glm(Y, X, contrast):
    return compute_contrast(ols_fit(Y, X), contrast)


@pytest.mark.parametrize("slope", [-3.0, 0.0, 3.0])
def test_glm_regression_p_and_z_equal_linregress_both_signs(rng, slope):
    n = 25
    x = rng.standard_normal(n)
    Y = slope * x[:, None] + np.exp(rng.standard_normal((n, 40)))  # skewed noise
    Y[3] *= 3.0
    res = _glm(Y, pd.DataFrame({"x": x, "intercept": 1.0}), "x")
    if slope:  # every t has the slope's sign
        assert np.all(np.sign(res.stat) == np.sign(slope))
    else:
        assert (res.stat < -1).any() and (res.stat > 1).any()
    for v in range(Y.shape[1]):
        lr = stats.linregress(x, Y[:, v])
        t = lr.slope / lr.stderr
        assert res.stat[v] == pytest.approx(t, rel=1e-9)
        assert res.p_two_sided[v] == pytest.approx(lr.pvalue, rel=1e-8)
        assert res.p[v] == pytest.approx(stats.t.sf(t, n - 2), rel=1e-8)
        assert res.z[v] == pytest.approx(z_of_t(t, n - 2), rel=1e-9, abs=1e-12)
        assert res.logp[v] == pytest.approx(-np.log10(stats.t.sf(t, n - 2)), rel=1e-8,
                                            abs=1e-12)
    assert np.sign(res.z).tolist() == np.sign(res.stat).tolist()


def test_glm_one_sample_p_and_z_equal_ttest_1samp_both_signs(rng):
    n = 13
    Y = np.exp(rng.standard_normal((n, 30))) - 1.6  # skewed, means of both signs
    Y[5] *= 3.0
    Y[:, 0] = np.linspace(-3, 0.5, n)  # a clearly negative t
    res = _glm(Y, pd.DataFrame({"intercept": np.ones(n)}), "intercept")
    assert res.stat.min() < -3 and res.stat.max() > 1
    two = stats.ttest_1samp(Y, 0.0, axis=0)
    up = stats.ttest_1samp(Y, 0.0, axis=0, alternative="greater")
    np.testing.assert_allclose(res.stat, two.statistic, rtol=1e-10)
    np.testing.assert_allclose(res.p_two_sided, two.pvalue, rtol=1e-8)
    np.testing.assert_allclose(res.p, up.pvalue, rtol=1e-8)
    np.testing.assert_allclose(res.z, z_of_t(two.statistic, n - 1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.p, stats.t.sf(res.stat, n - 1), rtol=1e-8)


@pytest.mark.parametrize("t", [-12.0, -3.99, -0.4, 0.4, 3.99, 12.0])
def test_glm_tails_at_given_t_equal_t_sf(t):
    """Data built to give exactly ``t``: p, two-sided p, z and -log10 p from scipy's tails."""
    n = 11
    e = np.linspace(-1, 1, n)
    e = e - e.mean()
    se = np.sqrt(e @ e / (n - 1) / n)
    y = t * se + e  # mean t * se, standard error se
    res = _glm(y[:, None], pd.DataFrame({"intercept": np.ones(n)}), "intercept")
    assert res.stat[0] == pytest.approx(t, rel=1e-12)
    dof = n - 1
    assert res.p[0] == pytest.approx(stats.t.sf(t, dof), rel=1e-10)
    assert res.p_two_sided[0] == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-10)
    assert res.z[0] == pytest.approx(z_of_t(t, dof), rel=1e-9)
    assert res.logp[0] == pytest.approx(-np.log10(stats.t.sf(t, dof)), rel=1e-10)
    f = compute_contrast(ols_fit(y[:, None], np.ones((n, 1)), columns=["intercept"]),
                         [[1.0]], stat_type="F")
    assert f.stat[0] == pytest.approx(t * t, rel=1e-12)
    assert f.p[0] == pytest.approx(stats.f.sf(t * t, 1, dof), rel=1e-10)
    assert f.p_two_sided[0] == f.p[0]


# ----------------------------------------------------------------------------- far tails
def _log_tail(kernel, x0):
    """log of the integral of ``exp(kernel(u) - kernel(x0))`` over ``u >= x0`` (``u = x0 v``)."""
    value, _ = integrate.quad(lambda v: np.exp(kernel(x0 * v) - kernel(x0)), 1, np.inf,
                              epsabs=0, epsrel=1e-13, limit=500)
    return np.log(x0) + np.log(value)


def log_sf_t_quad(t, dof):
    """log of the t upper tail by quadrature of the density (no incomplete beta function)."""
    log_c = special.gammaln((dof + 1) / 2) - special.gammaln(dof / 2) - np.log(dof * np.pi) / 2

    def kernel(u):  # log density - log_c, stable for u**2 >> dof
        return -(dof + 1) / 2 * (2 * np.log(u) - np.log(dof) + np.log1p(dof / (u * u)))

    return log_c + kernel(t) + _log_tail(kernel, t)


def log_sf_f_quad(f, d1, d2):
    log_c = d1 / 2 * np.log(d1 / d2) - special.betaln(d1 / 2, d2 / 2)

    def kernel(u):
        return (d1 / 2 - 1) * np.log(u) - (d1 + d2) / 2 * np.log1p(d1 * u / d2)

    return log_c + kernel(f) + _log_tail(kernel, f)


# where scipy's tails underflow (p < 1e-300), from huge t at few dof to t = 58 at 1000 dof,
# where the incomplete beta function's continued fraction does real work (x = 0.23)
@pytest.mark.parametrize(("t", "dof"), [(1e70, 5), (1e11, 30), (4.9e3, 120), (58.0, 1000),
                                        (80.0, 1000), (1e3, 1000), (3.0, 2)])
def test_log_tail_of_t_equals_quadrature(t, dof):
    assert log_sf_t(np.array([t]), dof)[0] == pytest.approx(log_sf_t_quad(t, dof), rel=1e-12)


@pytest.mark.parametrize(("f", "d1", "d2"), [(8e4, 3, 200), (800.0, 5, 1000), (1e20, 2, 60),
                                             (1e300, 1, 2), (30.0, 1, 30)])
def test_log_tail_of_f_equals_quadrature(f, d1, d2):
    assert log_sf_f(np.array([f]), d1, d2)[0] == pytest.approx(log_sf_f_quad(f, d1, d2),
                                                               rel=1e-12)


@pytest.mark.parametrize("t", [80.0, -80.0])
def test_far_tail_logp_and_z_of_a_contrast(t):
    """t = +-80 at 1000 dof (p ~ 1e-437): -log10 p from the exact log tail, and z the normal
    quantile with the same log tail, with the sign of t."""
    n = 1001
    e = np.linspace(-1, 1, n) ** 3
    e = e - e.mean()
    y = t * np.sqrt(e @ e / (n - 1) / n) + e
    res = compute_contrast(ols_fit(y[:, None], np.ones((n, 1)), columns=["intercept"]),
                           "intercept")
    assert res.stat[0] == pytest.approx(t, rel=1e-12)
    log_p = log_sf_t_quad(abs(t), n - 1)
    assert stats.norm.logsf(abs(res.z[0])) == pytest.approx(log_p, rel=1e-12)
    assert np.sign(res.z[0]) == np.sign(t)
    upper = -log_p / np.log(10) if t > 0 else 0.0
    assert res.logp[0] == pytest.approx(upper, rel=1e-12, abs=1e-12)
    assert np.isfinite(res.z[0]) and res.p[0] > 0 and res.p_two_sided[0] > 0


# ----------------------------------------------------------------------------- GLM edges
def test_glm_t_is_scale_and_shift_invariant(rng):
    """t of ``a + b * y`` equals t of ``y`` (b > 0) also for a tiny relative spread: such a
    voxel is not mistaken for a constant one."""
    n = 18
    X = pd.DataFrame({"x": rng.standard_normal(n), "intercept": 1.0})
    y = rng.standard_normal((n, 3))
    ref = compute_contrast(ols_fit(y, X), "x").stat
    for a, b in ((0.0, 1e-9), (1.0, 1e-9), (1e4, 1e-3), (-5.0, 1e6)):
        np.testing.assert_allclose(compute_contrast(ols_fit(a + b * y, X), "x").stat, ref,
                                   rtol=1e-5)


def test_glm_one_residual_degree_of_freedom_and_one_voxel_vector(rng):
    """n = p + 1 is allowed (dof 1: Cauchy tails, as linregress on 3 points); a 1-D Y is
    one voxel."""
    x = np.array([0.0, 1.0, 3.0])
    y = np.array([0.1, 1.3, 2.6])
    fit = ols_fit(y, pd.DataFrame({"x": x, "intercept": 1.0}))
    assert fit.dof == 1 and fit.beta.shape == (2, 1) and fit.n_voxels == 1
    res = compute_contrast(fit, "x")
    lr = stats.linregress(x, y)
    assert res.stat[0] == pytest.approx(lr.slope / lr.stderr, rel=1e-10)
    assert res.p_two_sided[0] == pytest.approx(lr.pvalue, rel=1e-10)
    assert ols_fit(rng.standard_normal((7, 40)), np.ones((7, 1))).n_voxels == 40


def test_fit_second_level_accepts_an_array_design(rng):
    import nibabel as nib

    x = rng.standard_normal(10)
    maps = [nib.Nifti1Image(rng.standard_normal((4, 4, 3)) + v, np.eye(4)) for v in x]
    X = np.column_stack([x, np.ones(10)])
    model = fit_second_level(maps, X)
    assert list(model.design_matrix.columns) == ["x0", "x1"]
    framed = fit_second_level(maps, pd.DataFrame(X, columns=["x0", "x1"]))
    np.testing.assert_array_equal(model.compute_contrast("x0").stat,
                                  framed.compute_contrast("x0").stat)
