"""F tests, the sign-flip scheme and exact enumeration of the permutation engine, each
against a plain numpy loop written here (refit per permutation; brute-force enumeration with
itertools), on skewed data with one subject at 3x scale.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

import glmkit
from glmkit.errors import ContrastError, ParameterError


def _skewed(rng, n, v):
    Y = rng.gamma(1.5, size=(n, v))
    Y[0] *= 3.0
    return Y


def _fit(X, Y):
    """Least squares: ``beta``, and the residual sum of squares of residuals projected out
    twice (accurate to rounding where the design fits the data almost exactly)."""
    beta = np.linalg.lstsq(X, Y, rcond=None)[0]
    Q = np.linalg.qr(X)[0]
    r = Y - Q @ (Q.T @ Y)
    r -= Q @ (Q.T @ r)
    return beta, np.einsum("ij,ij->j", r, r)


def _t(X, Y, c):
    beta, rss = _fit(X, Y)
    n, p = X.shape
    var = c @ np.linalg.inv(X.T @ X) @ c
    return (c @ beta) / np.sqrt(rss / (n - p) * var)


def _f(X, Y, C):
    beta, rss = _fit(X, Y)
    n, p = X.shape
    cb = C @ beta
    middle = np.linalg.inv(C @ np.linalg.inv(X.T @ X) @ C.T)
    return np.einsum("iv,ij,jv->v", cb, middle, cb) / C.shape[0] / (rss / (n - p))


def _p(null_max, values):
    """(1 + #{null >= v}) / (1 + n_perm), written out."""
    null_max = np.asarray(null_max)
    return np.array([(1 + np.sum(null_max >= v)) / (1 + null_max.size) for v in values])


@pytest.fixture
def case():
    rng = np.random.default_rng(7)
    n = 22
    X = np.column_stack([rng.standard_normal(n), rng.gamma(2.0, size=n), rng.standard_normal(n),
                         np.ones(n)])
    Y = _skewed(rng, n, 40)
    Y[:, :6] += 0.8 * X[:, :1]
    perms = np.array([rng.permutation(n) for _ in range(39)])
    return X, Y, perms


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
def test_f_test_null_equals_a_refit_per_permutation(case, scheme):
    X, Y, perms = case
    C = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    res = glmkit.permutation_test(Y, X, C, n_perm=len(perms), scheme=scheme,
                                  _permutations=perms, verbose=False)
    assert res.stat_type == "F" and res.dof == X.shape[0] - X.shape[1]
    np.testing.assert_allclose(res.t, _f(X, Y, C), rtol=1e-9)
    Z = X[:, 2:]
    if scheme == "freedman_lane":
        fitted = Z @ np.linalg.lstsq(Z, Y, rcond=None)[0]
    else:  # ter Braak: full-model residuals, the fitted part drops out of the test
        fitted = np.zeros_like(Y)
    resid = Y - (Z if scheme == "freedman_lane" else X) @ np.linalg.lstsq(
        Z if scheme == "freedman_lane" else X, Y, rcond=None)[0]
    maxima = []
    counts = np.zeros(Y.shape[1])
    for perm in perms:
        f_perm = _f(X, fitted + resid[perm], C)
        maxima.append(f_perm.max())
        counts += f_perm >= res.t - 1e-9 * np.abs(res.t)
    np.testing.assert_allclose(res.null_max["voxel"][1:], maxima, rtol=1e-9)
    np.testing.assert_allclose(res.logp_fwer["voxel"], -np.log10(_p(maxima, res.t)), rtol=1e-9)
    np.testing.assert_allclose(res.logp_uncorrected, -np.log10((1 + counts) / (1 + len(perms))),
                               rtol=1e-9)


def test_one_row_f_is_the_two_sided_t(case):
    X, Y, perms = case
    design = pd.DataFrame(X, columns=["a", "b", "c", "intercept"])
    f = glmkit.permutation_test(Y, design, ["b"], n_perm=len(perms), _permutations=perms,
                                verbose=False)  # a list of contrasts: an F test
    assert f.stat_type == "F"
    t = glmkit.permutation_test(Y, X, [0, 1.0, 0, 0], n_perm=len(perms), two_sided=True,
                                _permutations=perms, verbose=False)
    np.testing.assert_allclose(f.t, t.t**2, rtol=1e-9)
    np.testing.assert_allclose(f.null_max["voxel"], t.null_max["voxel"] ** 2, rtol=1e-9)
    np.testing.assert_allclose(f.logp_fwer["voxel"], t.logp_fwer["voxel"], rtol=1e-9)
    np.testing.assert_allclose(f.logp_uncorrected, t.logp_uncorrected, rtol=1e-9)


def test_f_cluster_size_on_sqrt_f_equals_an_ndimage_loop():
    rng = np.random.default_rng(11)
    n, shape = 20, (6, 6, 5)
    mask = np.ones(shape, bool)
    mask[0, 0, :] = False
    V = int(mask.sum())
    X = np.column_stack([rng.standard_normal(n), rng.standard_normal(n), np.ones(n)])
    noise = ndimage.gaussian_filter(rng.standard_normal((n, *shape)), (0, 1, 1, 1))
    Y = noise[:, mask] * 5 + rng.gamma(2.0, size=(n, V))
    Y[:, :30] += 1.5 * X[:, :1]
    C = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    perms = np.array([rng.permutation(n) for _ in range(29)])
    res = glmkit.permutation_test(Y, X, C, n_perm=29, statistics=("cluster_size",),
                                  mask_img=mask, cluster_threshold=0.05, _permutations=perms,
                                  verbose=False)
    thr = np.sqrt(stats.f.isf(0.05, 2, n - 3))
    assert res.cluster_forming_t == pytest.approx(thr)
    Z = X[:, 2:]
    fitted = Z @ np.linalg.lstsq(Z, Y, rcond=None)[0]
    resid = Y - fitted

    def largest(values):
        vol = np.zeros(shape)
        vol[mask] = np.sqrt(values)
        labels, k = ndimage.label(vol > thr)  # faces: connectivity 6
        return max([0] + [int((labels == i).sum()) for i in range(1, k + 1)])

    maxima = [largest(_f(X, fitted + resid[perm], C)) for perm in perms]
    np.testing.assert_array_equal(res.null_max["cluster_size"][1:], maxima)
    assert res.null_max["cluster_size"][0] == largest(_f(X, Y, C))


def test_sign_flip_scheme_equals_a_refit_per_sign_vector(case):
    X, Y, _ = case
    rng = np.random.default_rng(3)
    signs = rng.choice([-1, 1], size=(25, X.shape[0])).astype(np.int8)
    res = glmkit.permutation_test(Y, X, [1.0, 0, 0, 0], n_perm=25, scheme="sign_flip",
                                  _signs=signs, verbose=False)
    assert res.method == "sign_flip"
    Z = X[:, 1:]
    fitted = Z @ np.linalg.lstsq(Z, Y, rcond=None)[0]
    resid = Y - fitted
    maxima = [_t(X, fitted + s[:, None] * resid, np.array([1.0, 0, 0, 0])).max() for s in signs]
    np.testing.assert_allclose(res.null_max["voxel"][1:], maxima, rtol=1e-9)


def test_sign_flip_scheme_draws_signs_for_a_regression(case):
    X, Y, _ = case
    res = glmkit.permutation_test(Y, X, [1.0, 0, 0, 0], n_perm=50, scheme="sign_flip",
                                  random_state=0, verbose=False)
    assert res.method == "sign_flip" and res.scheme == "sign_flip" and not res.exact


def test_exact_sign_flips_equal_brute_force():
    rng = np.random.default_rng(5)
    n = 8
    Y = _skewed(rng, n, 25) + 0.4
    res = glmkit.permutation_test(Y, np.ones((n, 1)), [1.0], n_perm=1000, two_sided=True,
                                  verbose=False)
    assert res.exact and res.n_perm == 2**n - 1 and res.method == "sign_flip"
    t_obs = np.abs(stats.ttest_1samp(Y, 0.0).statistic)
    null = []
    counts = np.zeros(Y.shape[1])
    for s in itertools.product([1, -1], repeat=n):
        t = np.abs(stats.ttest_1samp(np.array(s)[:, None] * Y, 0.0).statistic)
        null.append(t.max())
        counts += t >= t_obs - 1e-9
    # all 2^n sign vectors, the observed among them: p = #{>= observed} / 2^n
    p_fwer = np.array([np.sum(np.array(null) >= v - 1e-9) for v in t_obs]) / 2**n
    np.testing.assert_allclose(10 ** -res.logp_fwer["voxel"], p_fwer, rtol=1e-9)
    np.testing.assert_allclose(10 ** -res.logp_uncorrected, counts / 2**n, rtol=1e-9)
    assert res.logp_fwer["voxel"].max() <= np.log10(2**n) + 1e-12


def test_exact_two_group_arrangements_equal_brute_force():
    rng = np.random.default_rng(9)
    g = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    n = g.size
    X = np.column_stack([g, np.ones(n)]).astype(float)
    Y = _skewed(rng, n, 20)
    Y[g == 1, :4] += 1.0
    res = glmkit.permutation_test(Y, X, [1.0, 0], n_perm=5000, verbose=False)
    n_total = 126  # C(9, 4) distinct group labellings
    assert res.exact and res.n_perm == n_total - 1 and res.method == "permutation"
    t_obs = stats.ttest_ind(Y[g == 1], Y[g == 0]).statistic
    null = []
    for group0 in itertools.combinations(range(n), 4):
        lab = np.ones(n, bool)
        lab[list(group0)] = False
        null.append(stats.ttest_ind(Y[lab], Y[~lab]).statistic.max())
    assert len(null) == n_total
    p = np.array([np.sum(np.array(null) >= v - 1e-9) for v in t_obs]) / n_total
    np.testing.assert_allclose(10 ** -res.logp_fwer["voxel"], p, rtol=1e-9)
    assert sorted(np.round(res.null_max["voxel"], 9)) == sorted(np.round(null, 9))


def test_exact_arrangements_stay_within_blocks():
    rng = np.random.default_rng(2)
    g = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    blocks = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    X = np.column_stack([g, np.ones(8)]).astype(float)
    Y = _skewed(rng, 8, 10)
    res = glmkit.permutation_test(Y, X, [1.0, 0], n_perm=100, groups=blocks, verbose=False)
    assert res.exact and res.n_perm == 6 * 6 - 1
    null = []
    for a in itertools.combinations(range(4), 2):
        for b in itertools.combinations(range(4, 8), 2):
            lab = np.zeros(8, bool)
            lab[list(a) + list(b)] = True
            null.append(stats.ttest_ind(Y[lab], Y[~lab]).statistic.max())
    assert sorted(np.round(res.null_max["voxel"], 9)) == sorted(np.round(null, 9))


def test_f_test_errors():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.standard_normal(12), rng.standard_normal(12), np.ones(12)])
    Y = rng.standard_normal((12, 5))
    with pytest.raises(ParameterError, match="two_sided=True has no meaning for the F test"):
        glmkit.permutation_test(Y, X, [[1, 0, 0], [0, 1, 0]], n_perm=9, two_sided=True,
                                verbose=False)
    with pytest.raises(ContrastError, match="linearly dependent"):
        glmkit.permutation_test(Y, X, [[1, 0, 0], [2, 0, 0]], n_perm=9, verbose=False)


DESIGNS = ["t", "t with covariate", "F", "one-sample"]


def _design(test, x, age):
    """``(X, c)`` of one of DESIGNS on regressor ``x`` and covariate ``age``."""
    ones = np.ones(len(x))
    return {"t": (np.column_stack([x, ones]), np.array([1.0, 0.0])),
            "t with covariate": (np.column_stack([x, age, ones]), np.array([1.0, 0, 0])),
            "F": (np.column_stack([x, age, ones]), np.array([[1.0, 0, 0], [0, 1, 0]])),
            "one-sample": (ones[:, None], np.array([1.0]))}[test]


def _near_exact_fits(rng, X, n_cols=40):
    """Columns fitted by ``X`` exactly, or up to noise 1e-12 .. 1e-2 of their scale, and a
    constant and a zero column: ``(Y, noise)``, noise 0 where the fit is exact."""
    n = X.shape[0]
    noise = np.concatenate([np.zeros(n_cols // 2), 10.0 ** -rng.uniform(2, 12, n_cols // 2)])
    B = rng.uniform(0.5, 3.0, (X.shape[1], n_cols)) * rng.choice([-1, 1], (1, n_cols))
    fit = X @ B
    Y = fit + noise * np.abs(fit).max(axis=0) * rng.standard_normal((n, n_cols))
    Y = np.column_stack([Y, np.full(n, 5.0), np.zeros(n)])
    return Y, np.append(noise, [0.0, 0.0])


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
@pytest.mark.parametrize("test", DESIGNS)
def test_fit_tells_exact_fits_from_near_exact_ones(monkeypatch, scheme, test):
    """The observed fit forms the full model's residual sum of squares of a normalised voxel
    as ``1 - |x'R|^2``, and from the residuals themselves near the zero-variance threshold.
    Voxels the design fits exactly (and constant ones) must get statistic 0, voxels it fits
    up to noise of 1e-12 of their scale the statistic of a plain least-squares refit (t
    about 1e12 there, not what rounding in ``1 - |x'R|^2`` would make of it)."""
    from glmkit.stats import engine

    rng = np.random.default_rng(11)
    n = 30
    x, age = rng.gamma(2.0, size=n), rng.standard_normal(n)
    X, c = _design(test, x, age)
    Y, noise = _near_exact_fits(rng, X)
    model = engine.partition(X, c)

    def observed():
        return engine.observed_fit(Y, model, scheme, two_sided=True)

    fit = observed()
    np.testing.assert_array_equal(fit.valid, noise > 0)
    assert (fit.t[noise == 0] == 0).all()
    with np.errstate(divide="ignore", invalid="ignore"):  # the refit divides 0 by 0
        ref = np.sqrt(_f(X, Y, np.atleast_2d(c))) if c.ndim == 2 else _t(X, Y, c)
    close = noise >= 1e-8  # beyond, rounding in the residuals (eps / noise) shows
    np.testing.assert_allclose(fit.t[close], ref[close], rtol=1e-6)
    np.testing.assert_allclose(fit.t[fit.valid], ref[fit.valid], rtol=1e-4)
    if scheme == "freedman_lane":  # without the margin, rounding in 1 - |x'R|^2 decides
        monkeypatch.setattr(engine, "SSM_MARGIN", -1.0)
        assert not np.array_equal(observed().valid, noise > 0)


@pytest.mark.parametrize("magnitude", [1.0, 1e-3])
@pytest.mark.parametrize("test", ["t", "F"])
def test_zero_variance_at_the_rounding_level_as_the_glm(test, magnitude):
    """The permutation test calls a voxel's variance zero where the GLM does: at a residual
    sum of squares of ``n (64 eps max|Y|)^2``. Voxels sit at 1/4 and 4x that level, with
    their largest value (|Y|) 4x the others', positive or negative, in the first or the
    second row; data of magnitude 10 and 0.01 (the level scales with the data, not with 1)."""
    from glmkit.stats.glm import compute_contrast, ols_fit, zero_variance_level

    rng = np.random.default_rng(5)
    n = 30
    x, age, w = rng.uniform(-2.5, 2.5, (3, n))
    x[0], age[1], w[0] = 10.0, -10.0, -10.0
    X = np.column_stack([x, age, w, np.ones(n)])
    c = np.array([1.0, 0, 0, 0]) if test == "t" else np.array([[1.0, 0, 0, 0], [0, 1, 0, 0]])
    hat = X @ np.linalg.pinv(X)
    cols, expected = [], []
    # fitted exactly; max |Y| in row 0 or 1, either sign
    for fit in magnitude * np.array([x + 0.1, age, w]):
        for factor in (0.25, 4.0):
            noise = rng.standard_normal(n)
            noise -= hat @ noise  # residual of the full model: the noise alone
            level = zero_variance_level(np.abs(fit).max(), n)
            cols.append(fit + noise * np.sqrt(factor * level) / np.linalg.norm(noise))
            expected.append(factor > 1)
    Y = np.column_stack(cols)
    expected = np.array(expected)
    glm = compute_contrast(ols_fit(Y, X), c, stat_type="F" if test == "F" else "t")
    np.testing.assert_array_equal(glm.stat != 0, expected)  # the reference itself
    res = glmkit.permutation_test(Y, X, c, n_perm=19, random_state=0, verbose=False)
    np.testing.assert_array_equal(res.t != 0, expected)


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
@pytest.mark.parametrize("test", DESIGNS)
def test_float32_voxel_statistics_equal_float64_within_tolerance(scheme, test):
    """dtype="float32" keeps the observed fit in float64 (the same t) and permutes float32
    residuals: null maxima within 1e-5 (relative; 1e-6 absolute) of float64's, p-values at
    most one permutation's share apart. Skewed data far from 0 (mean 3, one subject at 3x),
    so that a fit that skipped residualising the float32 residuals would show."""
    rng = np.random.default_rng(21)
    n, n_perm = 24, 99
    Y = 3.0 + rng.gamma(1.5, size=(n, 300))
    Y[0] *= 3.0
    x, age = rng.standard_normal(n), rng.gamma(2.0, size=n)
    Y[:, :30] += 0.9 * x[:, None]
    X, c = _design(test, x, age)
    kw = dict(n_perm=n_perm, random_state=3, verbose=False, scheme=scheme)
    a = glmkit.permutation_test(Y, X, c, **kw)
    b = glmkit.permutation_test(Y, X, c, dtype="float32", **kw)
    assert b.info["gemm"] == "float32"
    np.testing.assert_array_equal(b.t, a.t)
    # relative, and absolute near t = 0 (sign flips of data far from 0 can have maxima there)
    np.testing.assert_allclose(b.null_max["voxel"], a.null_max["voxel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(10 ** -b.logp_uncorrected, 10 ** -a.logp_uncorrected,
                               atol=1.0 / (n_perm + 1) + 1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_observed_fit_on_threads_is_the_same_bits(monkeypatch, dtype):
    """The observed fit runs its chunks on n_jobs threads: t, validity and every residual
    are the same bits as on one, with any number of threads and chunks."""
    from glmkit.stats import engine

    monkeypatch.setattr(engine, "CHUNK_BYTES", 4096 * 8 * 24)  # 9 chunks of 4,096 voxels
    rng = np.random.default_rng(2)
    Y = _skewed(rng, 24, 35_000)
    Y[:, 7] = 2.0  # constant
    X = np.column_stack([rng.standard_normal(24), rng.gamma(2.0, size=24), np.ones(24)])
    model = engine.partition(X, np.array([1.0, 0.0, 0.0]))
    fits = [engine.observed_fit(Y, model, "freedman_lane", False, dtype=dtype, n_jobs=j)
            for j in (1, 2, 3, -1)]
    assert len(fits[0].R.parts) == 9
    for fit in fits[1:]:
        np.testing.assert_array_equal(fit.t, fits[0].t)
        np.testing.assert_array_equal(fit.valid, fits[0].valid)
        np.testing.assert_array_equal(fit.R.whole(), fits[0].R.whole())
        assert fit.R.whole().dtype == dtype
    assert not fits[0].valid[7] and fits[0].valid.sum() == 35_000 - 1


@pytest.mark.parametrize("test", DESIGNS)
@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
def test_a_voxels_fit_does_not_depend_on_the_chunk_it_is_in(monkeypatch, test, scheme):
    """Chunks of 512, 1,536 and 4,096 voxels (10,000 in all: the last one narrower) give
    every voxel the same bits as one chunk: t, validity, residuals; and float32 residuals
    are the float64 ones rounded, the same bits as a cast."""
    from glmkit.stats import engine

    rng = np.random.default_rng(21)
    n = 24
    X, c = _design(test, rng.standard_normal(n), rng.gamma(2.0, size=n))
    Y = _skewed(rng, n, 10_000) + 1e3  # far from 0: the confounds' fit matters
    Y[:, 9_999] = 2.0  # constant, in the last (narrow) chunk
    Y[:, 4_100] = X @ np.arange(1.0, X.shape[1] + 1)  # fitted exactly
    model = engine.partition(X, c)

    def fit(width, dtype):
        monkeypatch.setattr(engine, "CHUNK_BYTES", width * 8 * n)
        return engine.observed_fit(Y, model, scheme, True, dtype=dtype)

    ref = fit(10_240, "float64")
    assert len(ref.R.parts) == 1 and not ref.valid[[4_100, 9_999]].any()
    for width in (512, 1_536, 4_096):
        for dtype in ("float64", "float32"):
            got = fit(width, dtype)
            assert len(got.R.parts) == -(-10_000 // width)
            np.testing.assert_array_equal(got.t, ref.t)
            np.testing.assert_array_equal(got.valid, ref.valid)
            np.testing.assert_array_equal(got.R.whole(), ref.R.whole().astype(dtype))


def _fit_loop(Y, model):
    """The observed fit written out: sums over subjects in subject order, each product and
    sum rounded apart, the confounds subtracted one at a time. ``(R, num)``: normalised
    residuals (n, V) and ``x'R`` ((V,) for t, (q, V) for F)."""
    Zo, X = model.z_all, model.x.reshape(len(Y), -1)
    C = np.zeros((Zo.shape[1], Y.shape[1]))
    for i in range(len(Y)):
        for k in range(Zo.shape[1]):
            C[k] += Zo[i, k] * Y[i]
    R = Y.copy()
    for k in range(Zo.shape[1]):
        R -= Zo[:, k:k + 1] * C[k]  # row by row: R[i] - Zo[i, k] * C[k]
    ss, N = np.zeros(Y.shape[1]), np.zeros((X.shape[1], Y.shape[1]))
    for i in range(len(Y)):
        ss += R[i] * R[i]
        for k in range(X.shape[1]):
            N[k] += X[i, k] * R[i]
    inv = 1.0 / np.sqrt(ss)
    return R * inv, N * inv if model.stat_type == "F" else N[0] * inv


@pytest.mark.parametrize("test", DESIGNS + ["t with two covariates", "no intercept"])
def test_the_fit_is_a_loop_over_subjects_bit_for_bit(monkeypatch, tmp_path, test):
    """Every voxel's normalised residuals (float64, and float32 as their cast) and t are
    the bits of the loop above, whether the kernels read the data in place (float64 or
    float32, C order) or a float64 copy of it (F order, integers, a file's memmap), kept
    or formed again block by block (streamed)."""
    from glmkit.stats import engine
    from glmkit.stats.source import VoxelSource

    monkeypatch.setattr(engine, "CHUNK_BYTES", 512 * 8 * 27)  # 6 chunks, the last narrower
    rng = np.random.default_rng(33)
    n = 27  # the kernels take four subjects at a time: three left for the last loop
    x, age, iq = rng.standard_normal(n), rng.gamma(2.0, size=n), rng.standard_normal(n)
    if test == "t with two covariates":
        X, c = np.column_stack([x, age, iq, np.ones(n)]), np.array([1.0, 0, 0, 0])
    elif test == "no intercept":
        X, c = np.column_stack([x, age]), np.array([1.0, 0])
    else:
        X, c = _design(test, x, age)
    Y = np.round(_skewed(rng, n, 2_900) * 300) + 1e3  # integers: every source holds them
    model = engine.partition(X, c)
    R_ref, num = _fit_loop(Y, model)
    np.save(tmp_path / "y.npy", Y.astype(np.float32))
    sources = {"float64": Y, "float32": Y.astype(np.float32), "F order": np.asfortranarray(Y),
               "int16": Y.astype(np.int16), "big-endian": Y.astype(">f8"),
               "memmap": np.load(tmp_path / "y.npy", mmap_mode="r")}
    read_in_place = {name: VoxelSource(data).direct is not None for name, data in sources.items()}
    assert read_in_place == {"float64": True, "float32": True, "F order": False, "int16": False,
                             "big-endian": False, "memmap": False}
    for name, data in sources.items():
        for dtype in ("float64", "float32"):
            fit = engine.observed_fit(VoxelSource(data), model, "freedman_lane", True,
                                      dtype=dtype)
            assert fit.valid.all(), name
            np.testing.assert_array_equal(fit.R.whole(), R_ref.astype(dtype), err_msg=name)
            if model.stat_type == "t":
                ssm = 1.0 - num * num
                np.testing.assert_array_equal(fit.t, num * np.sqrt(model.dof / ssm), name)
            else:
                np.testing.assert_allclose(fit.t ** 2 * model.q / model.dof,
                                           (num**2).sum(0) / (1 - (num**2).sum(0)), rtol=1e-12)
            streamed = engine.Streamed(VoxelSource(data), model, "freedman_lane", dtype,
                                       fit.ss_unit)
            np.testing.assert_array_equal(streamed.residuals(512, 1_024),
                                          R_ref[:, 512:1_024].astype(dtype), err_msg=name)


@pytest.mark.parametrize("two_sided", [False, True])
def test_observed_thresholds_carry_the_tie_tolerance(two_sided):
    """A permuted statistic counts as reaching the observed t when it is at least
    ``t - tie_rtol max(|t|, 1)`` (|t| two-sided): relative for large t, absolute below 1
    (a t that is 0 in exact arithmetic is rounding either side); the fast path's threshold
    on x'Y* is the same rule, and invalid voxels are never reached."""
    from glmkit.stats import engine

    rng = np.random.default_rng(8)
    n = 20
    X = np.column_stack([rng.standard_normal(n), np.ones(n)])
    model = engine.partition(X, np.array([1.0, 0.0]))
    Y = rng.standard_normal((n, 400))
    Y[:, 0] = 3.0  # no variance: never reached
    e = Y[:, 1] - X @ np.linalg.lstsq(X, Y[:, 1], rcond=None)[0]
    Y[:, 1] = e + 1e-6 * X[:, 0]  # t about 1e-6
    Y[:, 2] = 5.0 * X[:, 0] + 0.1 * e  # t far above 10
    fit = engine.observed_fit(Y, model, "freedman_lane", two_sided, 1e-6)
    t = np.abs(fit.t) if two_sided else fit.t
    assert 0 < abs(fit.t[1]) < 1e-4 and abs(fit.t[2]) > 10  # small and large t
    valid = fit.valid
    np.testing.assert_allclose(fit.t_cmp_slow[valid],
                               t[valid] - 1e-6 * np.maximum(np.abs(t[valid]), 1.0),
                               rtol=1e-15, atol=0)
    assert fit.t_cmp_slow[1] == t[1] - 1e-6 and fit.t_cmp_slow[2] == t[2] - 1e-6 * t[2]
    k = fit.t_cmp_slow[valid]
    np.testing.assert_allclose(fit.thr_num[valid], k / np.sqrt(model.dof + k**2), rtol=1e-14)
    assert not valid[0] and fit.t_cmp_slow[0] >= 1e300 and fit.thr_num[0] > 1.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("two_sided", [False, True])
def test_tiles_of_any_width_give_the_same_counts_and_maxima(monkeypatch, dtype, two_sided):
    """The reductions take four voxels at a time (and the mixed one 64 permutations at a
    time): tiles of 7 and 13 voxels leave three and one voxel over in every tile, and GEMMs
    of 64 permutations a narrower last one.
    Counts and null maxima are the bits of 512-voxel tiles and 1008-permutation GEMMs."""
    from glmkit.stats import engine

    rng = np.random.default_rng(3)
    n, v = 30, 1000
    Y = rng.gamma(1.5, size=(n, v)).astype(np.float32)  # skewed, one subject at 3x
    x = rng.standard_normal(n)
    Y[:, :20] += (0.8 * x[:, None]).astype(np.float32)
    Y[0] *= 3.0
    X = np.column_stack([x, np.ones(n)])
    kw = dict(n_perm=300, random_state=2, verbose=False, dtype=dtype, two_sided=two_sided)
    ref = glmkit.permutation_test(Y, X, [1, 0], **kw)
    assert ref.info["gemm"] == ("float32" if dtype == "float32"
                                else "float32, re-checked in float64")
    assert (ref.info["n_blocks"], ref.info["voxel_blocks"]) == (1, 1)
    # one worker: GEMMs of 64, 64, 64, 64 and 44 permutations into one buffer (a kernel
    # that read past a tile would read another GEMM's values); two workers: halves of the
    # voxels (one block of permutations), or two blocks (GEMMs of 64, 64, 64 and 64, 44)
    for tile, cols, jobs, blocks in ((7, 64, 1, (1, 1)), (7, 1008, 2, (1, 2)),
                                     (13, 64, 2, (2, 1))):
        with monkeypatch.context() as m:
            m.setattr(engine, "TILE", tile)
            m.setattr(engine, "COLS", cols)
            res = glmkit.permutation_test(Y, X, [1, 0], n_jobs=jobs, **kw)
        assert (res.info["n_blocks"], res.info["voxel_blocks"]) == blocks
        np.testing.assert_array_equal(res.logp_uncorrected, ref.logp_uncorrected)
        np.testing.assert_array_equal(res.null_max["voxel"], ref.null_max["voxel"])
