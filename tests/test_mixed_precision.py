"""float64 max-T computed with float32 GEMMs and float64 re-checks (engine.reduce_num_mixed;
engine.reduce_stat_mixed for ANCOVA and F tests).

The claim under test: counts and null maxima are those of float64 arithmetic. Each test
compares the mixed path with a plain refit per permutation written here, and with the
engine's float64 GEMMs (``MIXED_MAX_N = 0``), on data built so that float32 decisions
alone would be wrong: binary data (the statistic takes a few values, and many
permutations reproduce the observed one exactly: ties that float32's rounding would split)
and near-duplicate voxels (the float32 argmax is not the float64 one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import glmkit
from glmkit.stats import engine
from glmkit.stats.engine import float32_error_bound

MIXED = "float32, re-checked in float64"


def _refit_t(X, Y, c):
    """t of contrast c for every column of Y, by least squares (a plain loop's arithmetic)."""
    beta, rss = np.linalg.lstsq(X, Y, rcond=None)[:2]
    n, p = X.shape
    var = c @ np.linalg.inv(X.T @ X) @ c
    return (c @ beta) / np.sqrt(rss / (n - p) * var)


def _binary_case(seed=0, n=24, v=300):
    """Two groups; each voxel 0/1 with its own rate: t depends only on how many ones fall in
    the first group, so many permutations tie with the observed t exactly."""
    rng = np.random.default_rng(seed)
    group = np.repeat([1.0, 0.0], n // 2)
    Y = (rng.random((n, v)) < rng.uniform(0.2, 0.8, v)).astype(float)
    Y[:, 0] = group  # a perfectly separated voxel
    Y[:, 1] = group[::-1]
    Y[:, 2] = 0.0  # constant: invalid
    Y[:, 3:] *= rng.gamma(2.0, size=(n, 1))[0]  # an arbitrary scale, the same for all rows
    design = pd.DataFrame({"g": group, "intercept": np.ones(n)})
    return Y, design


def _run(Y, design, contrast, **kw):
    return glmkit.permutation_test(Y, design, contrast, verbose=False, **kw)


def _float64_gemm(monkeypatch, *args, **kw):
    with monkeypatch.context() as m:
        m.setattr(engine, "MIXED_MAX_N", 0)
        m.setattr(engine, "MIXED_STAT_MAX_N", 0)
        res = _run(*args, **kw)
    assert res.info["gemm"] == "float64"
    return res


@pytest.mark.parametrize("two_sided", [False, True])
def test_ties_are_counted_as_float64_counts_them(monkeypatch, two_sided):
    Y, design = _binary_case()
    n, n_perm = Y.shape[0], 299
    rng = np.random.default_rng(1)
    perms = np.array([rng.permutation(n) for _ in range(n_perm)])
    res = _run(Y, design, "g", n_perm=n_perm, two_sided=two_sided, _permutations=perms)
    assert res.info["gemm"] == MIXED

    # plain loop: refit each permuted data set (Freedman-Lane with only the intercept as
    # nuisance permutes the data themselves); t takes few values, so a 1e-8 tie tolerance
    # is unambiguous
    X = design.to_numpy()
    c = np.array([1.0, 0.0])
    # voxels 0 and 1 are fitted exactly and 2 is constant: no test (p = 1, t = 0); a
    # voxel whose t is 0 in exact arithmetic is a tie decided by rounding, in any tool
    with np.errstate(divide="ignore", invalid="ignore"):
        t_obs = _refit_t(X, Y, c)
        t_perm = np.array([_refit_t(X, Y[p], c) for p in perms])
    tested = np.isfinite(t_obs) & (np.abs(t_obs) > 1e-6)
    tested[:3] = False
    assert tested.sum() > 200
    score_obs = np.abs(t_obs) if two_sided else t_obs
    score = np.abs(t_perm) if two_sided else t_perm
    counts = (score >= score_obs - 1e-8 * np.abs(score_obs)).sum(axis=0)
    ties = (np.abs(score - score_obs) < 1e-8 * np.abs(score_obs))[:, tested].sum()
    assert ties > 1000  # the case really is full of ties

    np.testing.assert_allclose(10 ** -res.logp_uncorrected[tested],
                               (1 + counts[tested]) / (1 + n_perm), rtol=1e-12)
    # t is 0 in exact arithmetic (1e-16 or so either side): the permuted t that are 0 tie
    # with it however they were rounded (two-sided: every permutation)
    zero = ~tested & (np.abs(t_obs) <= 1e-6)
    zero[:3] = False
    assert zero.sum() > 10
    at_zero = (score[:, zero] >= -1e-8).sum(axis=0)
    assert two_sided == (at_zero == n_perm).all()
    np.testing.assert_allclose(10 ** -res.logp_uncorrected[zero], (1 + at_zero) / (1 + n_perm),
                               rtol=1e-12)
    assert (res.logp_uncorrected[:3] == 0).all()
    score[:, :3] = 0.0
    np.testing.assert_allclose(res.null_max["voxel"][1:], score.max(axis=1), rtol=1e-12)

    ref = _float64_gemm(monkeypatch, Y, design, "g", n_perm=n_perm, two_sided=two_sided,
                        _permutations=perms)
    np.testing.assert_array_equal(res.logp_uncorrected, ref.logp_uncorrected)
    np.testing.assert_allclose(res.null_max["voxel"], ref.null_max["voxel"], rtol=1e-13)
    np.testing.assert_array_equal(res.logp_fwer["voxel"], ref.logp_fwer["voxel"])


@pytest.mark.parametrize("two_sided", [False, True])
def test_sign_flip_ties_and_maxima(monkeypatch, two_sided):
    """One-sample: data of equal magnitude, so t depends only on the number of positive
    signs and sign flips tie constantly."""
    rng = np.random.default_rng(2)
    n, v = 20, 250
    Y = rng.choice([-1.0, 1.0], size=(n, v)) * rng.gamma(2.0, size=v)
    Y[:, :10] = np.abs(Y[:, :10])  # all positive: t = inf is not reachable, ss > 0 though
    Y[:, :10] += rng.normal(0, 1e-3, (n, 10))
    design = np.ones((n, 1))
    kw = dict(n_perm=500, two_sided=two_sided, random_state=3)
    res = _run(Y, design, [1.0], **kw)
    assert res.method == "sign_flip" and res.info["gemm"] == MIXED
    ref = _float64_gemm(monkeypatch, Y, design, [1.0], **kw)
    np.testing.assert_array_equal(res.logp_uncorrected, ref.logp_uncorrected)
    np.testing.assert_allclose(res.null_max["voxel"], ref.null_max["voxel"], rtol=1e-13)


def test_near_duplicate_voxels_give_the_float64_maximum(monkeypatch):
    """Voxels that differ by 1e-9 (relative): float32 cannot tell them apart, so the float32
    argmax is often the wrong voxel; the null maxima must still be float64's (1e-13)."""
    rng = np.random.default_rng(4)
    n = 30
    base = rng.gamma(1.5, size=(n, 1))
    base[0] *= 3.0
    Y = base + 1e-9 * rng.standard_normal((n, 400))
    Y = np.column_stack([Y, rng.standard_normal((n, 100))])
    design = pd.DataFrame({"x": rng.standard_normal(n), "intercept": np.ones(n)})
    kw = dict(n_perm=400, random_state=5)
    res = _run(Y, design, "x", **kw)
    ref = _float64_gemm(monkeypatch, Y, design, "x", **kw)
    assert res.info["gemm"] == MIXED
    np.testing.assert_allclose(res.null_max["voxel"], ref.null_max["voxel"], rtol=1e-13)
    np.testing.assert_array_equal(res.logp_uncorrected, ref.logp_uncorrected)
    # and the float32 values really were ambiguous: they do not resolve 1e-9 differences
    R = Y - Y.mean(axis=0)
    R /= np.linalg.norm(R, axis=0)
    assert np.ptp(R[:, :400].astype(np.float32), axis=1).max() < 1e-6


def test_mixed_results_do_not_depend_on_jobs_blocks_or_streaming(tmp_path, monkeypatch):
    Y, design = _binary_case(seed=6, n=40, v=3000)
    kw = dict(n_perm=700, random_state=7, two_sided=True)
    res = _run(Y, design, "g", **kw)
    _same_on_two_jobs_and_streamed(tmp_path, monkeypatch, res, Y, design, "g", kw, 1024, 3)


def _same_on_two_jobs_and_streamed(tmp_path, monkeypatch, res, Y, design, contrast, kw,
                                   width, n_blocks):
    """``res`` again on two jobs, and from a memmap in voxel blocks of ``width`` with other
    tile sizes: the same bits."""
    two = _run(Y, design, contrast, n_jobs=2, **kw)
    path = tmp_path / "Y.npy"
    np.save(path, Y)
    with monkeypatch.context() as m:
        m.setattr(engine, "SLAB_BYTES", width * 4 * Y.shape[0])
        m.setattr(engine, "TILE", 128)
        m.setattr(engine, "COLS", 64)
        streamed = _run(np.load(path, mmap_mode="r"), design, contrast, **kw)
    assert streamed.info["streamed"] and streamed.info["voxel_blocks"] == n_blocks
    for other in (two, streamed):
        assert other.info["gemm"] == MIXED
        np.testing.assert_array_equal(res.logp_uncorrected, other.logp_uncorrected)
        np.testing.assert_array_equal(res.null_max["voxel"], other.null_max["voxel"])


def test_float32_error_bound_covers_the_gemm_error():
    """Skewed data, one subject at 3x scale: every float32 product of permuted regressors
    with normalised residuals is within half the bound of the float64 product."""
    rng = np.random.default_rng(8)
    for n in (8, 89, 300):
        Y = rng.gamma(1.2, size=(n, 2000))
        Y[0] *= 3.0
        R = Y - Y.mean(axis=0)
        R /= np.linalg.norm(R, axis=0)
        x = rng.gamma(1.5, size=n)
        x -= x.mean()
        x /= np.linalg.norm(x)
        A = np.array([x[rng.permutation(n)] for _ in range(300)])
        err = np.abs(A.astype(np.float32) @ R.astype(np.float32) - A @ R).max()
        bound = float32_error_bound(n, 1.0)
        assert err <= bound / 2
        assert err > bound / 2e4  # a bound, not a blanket: within four orders of the error
        # the documented closed form: twice gamma_(n+2) = (n+2)u / (1 - (n+2)u), u = 2^-24
        k = (n + 2) * 2.0**-24
        assert bound == pytest.approx(2 * k / (1 - k), rel=1e-12)
        assert float32_error_bound(n, 0.5) == pytest.approx(bound / 2, rel=1e-12)


def test_the_mixed_path_is_used_where_it_applies():
    rng = np.random.default_rng(9)
    Y = rng.standard_normal((30, 50))
    X = pd.DataFrame({"x": rng.standard_normal(30), "z": rng.standard_normal(30),
                      "intercept": np.ones(30)})
    kw = dict(n_perm=20, random_state=0)

    def gemm(*args, **extra):
        return _run(*args, **kw, **extra).info["gemm"]

    assert gemm(Y, X[["x", "intercept"]], "x") == MIXED
    assert gemm(Y, np.ones((30, 1)), [1.0]) == MIXED
    assert gemm(Y, X[["x", "intercept"]], "x", dtype="float32") == "float32"
    assert gemm(Y, X, "x") == MIXED  # a covariate that permutations do not cancel
    assert gemm(Y, X, [[1.0, 0, 0], [0, 1.0, 0]]) == MIXED  # F test
    assert gemm(Y, X, "x", dtype="float32") == "float32"
    assert gemm(Y, X[["x", "intercept"]], "x", statistics=("voxel", "cluster_size"),
                mask_img=np.ones((5, 10, 1), bool)) == "float64"  # whole maps
    big = rng.standard_normal((engine.MIXED_MAX_N + 1, 20))
    ones = np.ones((engine.MIXED_MAX_N + 1, 1))
    assert gemm(big, ones, [1.0]) == "float64"
    n = engine.MIXED_STAT_MAX_N
    Xs = pd.DataFrame({"x": rng.standard_normal(n + 1), "z": rng.standard_normal(n + 1),
                       "intercept": np.ones(n + 1)})
    assert gemm(rng.standard_normal((n + 1, 20)), Xs, "x") == "float64"
    assert gemm(rng.standard_normal((n, 20)), Xs.iloc[:n], "x") == MIXED
    assert gemm(rng.standard_normal((n + 1, 20)), Xs[["x", "intercept"]], "x") == MIXED


def _replica(out, thr, lo32, hi32, eps, two_sided, exact):
    """reduce_num_mixed's rule, written as a plain loop: (counts, maxima, recomputed)."""
    w, B = exact.shape
    counts = np.zeros(w, int)
    out_max = np.full(B, -1e300)
    floor = np.full(B, -3e38, dtype=np.float32)
    recomputed = 0
    for v in range(w):
        for b in range(B):
            a = abs(out[v, b]) if two_sided else out[v, b]
            e = abs(exact[v, b]) if two_sided else exact[v, b]
            near = lo32[v] < a < hi32[v]
            counts[v] += (a >= hi32[v]) or (near and e >= thr[v])
            if near or a > floor[b]:
                recomputed += 1
                if e > out_max[b]:
                    out_max[b], floor[b] = e, np.float32(e - eps)
    return counts, out_max, recomputed


@pytest.mark.parametrize("two_sided", [False, True])
def test_kernel_decides_as_float64_and_recomputes_only_what_it_must(two_sided):
    """engine.reduce_num_mixed on a hand-made tile, with values exactly on the edges of the
    float32 band (hi32, lo32) and thresholds within it: counts and maxima are float64's, and
    the values recomputed are exactly those within the band or above a running maximum's
    floor (a plain loop of the rule)."""
    rng = np.random.default_rng(10)
    w, B, n = 9, 6, 12
    A = rng.standard_normal((B, n))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Rt = rng.standard_normal((w, n))
    for v, b in ((4, 0), (6, 1)):  # the maxima of permutations 0 and 1, and next to them
        Rt[v] = A[b] + 0.1 * rng.standard_normal(n)  # values within eps of them: only the
        Rt[v + 1] = Rt[v] + 1e-5 * rng.standard_normal(n)  # floor below a maximum finds them
    Rt /= np.linalg.norm(Rt, axis=1, keepdims=True)
    exact = np.array([[sum(Rt[v, i] * A[b, i] for i in range(n)) for b in range(B)]
                      for v in range(w)])  # summed in order, as exact_dot (to rounding)
    out = exact.astype(np.float32)
    score = np.abs(out) if two_sided else out
    eps = 1e-3  # the kernel's contract: |out - exact| < eps / 2 (here ~1e-8)
    thr = np.sort(np.abs(exact), axis=1)[:, B // 2] - 2e-4  # within the band of a value
    lo32, hi32 = (thr - eps).astype(np.float32), (thr + eps).astype(np.float32)
    hi32[1] = score[1, 2]  # a value exactly on the band's upper edge: counted in float32
    thr[1] = float(hi32[1]) - eps
    lo32[1] = np.float32(thr[1] - eps)
    for v, b in ((2, 3), (0, 1)):  # exactly on the lower edge: not counted, not recomputed
        lo32[v] = score[v, b]  # (row 0 is scanned entry by entry: every maximum starts there)
        thr[v] = float(lo32[v]) + eps
        hi32[v] = np.float32(thr[v] + eps)
    counts, out_max = np.zeros(w, np.int64), np.full(B, -1e300)
    floor = np.full(B, -3e38, dtype=np.float32)
    recomputed = engine.reduce_num_mixed(out, B, thr, lo32, hi32, eps, two_sided, counts,
                                         out_max, floor, Rt, A)
    want_counts, want_max, want_recomputed = _replica(out, thr, lo32, hi32, eps, two_sided,
                                                      exact)
    score_exact = np.abs(exact) if two_sided else exact
    np.testing.assert_array_equal(counts, (score_exact >= thr[:, None]).sum(axis=1))
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_allclose(out_max, score_exact.max(axis=0), rtol=1e-15, atol=0)
    np.testing.assert_allclose(out_max, want_max, rtol=1e-15, atol=0)
    assert recomputed == want_recomputed
    assert 0 < recomputed < w * B


def _ancova_binary_case(seed=10, n=28, v=400):
    """Two groups adjusted for a binary covariate, binary data: the statistics take few
    values, so permutations tie with the observed one and with each other exactly."""
    rng = np.random.default_rng(seed)
    group = np.repeat([1.0, 0.0], n // 2)
    sex = rng.permutation(np.tile([1.0, 0.0], n // 2))
    Y = (rng.random((n, v)) < rng.uniform(0.2, 0.8, v)).astype(float)
    Y[:, 0] = 0.0  # constant: invalid
    Y[:, 1] = sex  # fitted exactly by the confound
    Y[:, 2:] *= rng.gamma(2.0, size=v - 2)
    Y[0, 2:] *= 3.0  # one subject at 3x
    design = pd.DataFrame({"g": group, "sex": sex, "intercept": np.ones(n)})
    return Y, design


@pytest.mark.parametrize("contrast,two_sided", [("g", False), ("g", True),
                                                ([[1.0, 0, 0], [0, 1.0, 0]], False)])
def test_ancova_and_f_ties_and_maxima_as_float64(monkeypatch, contrast, two_sided):
    Y, design = _ancova_binary_case()
    kw = dict(n_perm=400, random_state=11, two_sided=two_sided)
    res = _run(Y, design, contrast, **kw)
    assert res.info["gemm"] == MIXED
    ref = _float64_gemm(monkeypatch, Y, design, contrast, **kw)
    # a voxel whose statistic is 0 in exact arithmetic (no group effect once sex is taken
    # out) ties with every permutation that also gives 0: rounding decides, in any tool
    tested = np.abs(ref.t) > 1e-6
    assert tested.sum() > 300
    np.testing.assert_array_equal(res.logp_uncorrected[tested], ref.logp_uncorrected[tested])
    np.testing.assert_allclose(res.null_max["voxel"], ref.null_max["voxel"], rtol=1e-13)
    np.testing.assert_array_equal(res.logp_fwer["voxel"], ref.logp_fwer["voxel"])
    # the case needs the re-checks: decided from the float32 values alone (no error band),
    # ties are split by rounding and some counts differ from float64's
    with monkeypatch.context() as m:
        m.setattr(engine, "float32_error_bound", lambda n, xnorm: 0.0)
        blind = _run(Y, design, contrast, **kw)
    assert (blind.logp_uncorrected != ref.logp_uncorrected)[tested].sum() >= 3


def test_ancova_near_duplicate_voxels_and_streaming(tmp_path, monkeypatch):
    """Voxels 1e-9 apart (float32 cannot order them), a skewed covariate: the maxima are
    float64's, and the same bits on two jobs and streamed in voxel blocks."""
    rng = np.random.default_rng(12)
    n = 32
    base = rng.gamma(1.5, size=(n, 1))
    Y = np.column_stack([base + 1e-9 * rng.standard_normal((n, 400)),
                         rng.gamma(2.0, size=(n, 600))])
    design = pd.DataFrame({"x": rng.standard_normal(n), "age": rng.gamma(3.0, size=n),
                           "intercept": np.ones(n)})
    kw = dict(n_perm=300, random_state=13)
    res = _run(Y, design, "x", **kw)
    ref = _float64_gemm(monkeypatch, Y, design, "x", **kw)
    np.testing.assert_allclose(res.null_max["voxel"], ref.null_max["voxel"], rtol=1e-13)
    np.testing.assert_array_equal(res.logp_uncorrected, ref.logp_uncorrected)
    _same_on_two_jobs_and_streamed(tmp_path, monkeypatch, res, Y, design, "x", kw, 512, 2)


def _stat_reference(E, B, q, n_conf, ss, dof, thr, two_sided, m0):
    """reduce_stat_mixed's claim as numpy on exact dot products ``E`` (w, (q|1 + n_conf) B):
    counts of statistic >= thr and running maxima from ``m0``."""
    nq = max(q, 1)
    a2 = sum(E[:, j * B:(j + 1) * B] ** 2 for j in range(nq))
    c2 = sum((E[:, j * B:(j + 1) * B] ** 2 for j in range(nq, nq + n_conf)), np.zeros_like(a2))
    rss = np.maximum(ss[:, None] - a2 - c2, 1e-300)
    if q == 0:
        s = E[:, :B] * np.sqrt(dof / rss)
        s = np.abs(s) if two_sided else s
    else:
        s = np.sqrt(a2 / q * dof / rss)
    s[ss <= 0] = 0.0
    return (s >= thr[:, None]).sum(axis=1), np.maximum(s.max(axis=0), m0), s


def test_reduce_stat_mixed_equals_float64_on_random_tiles():
    """The kernel on float32 tiles against float64 arithmetic on exact dot products
    (exact_dot, the kernel's own re-check): t one- and two-sided, F, 0-3 confounds; exact
    ties at the thresholds, rounded (tie-heavy) residuals, residuals a permutation fits
    exactly and projections of 0, voxels without variance, zero, negative and "never"
    thresholds, running maxima carried in. Counts and maxima must be equal."""
    rng = np.random.default_rng(14)
    checked = 0
    while checked < 150:
        n = int(rng.integers(4, 100))
        w, B = int(rng.integers(1, 120)), int(rng.integers(1, 120))
        q, n_conf = int(rng.choice([0, 0, 1, 2, 3])), int(rng.integers(0, 4))
        K = max(q, 1) + n_conf
        if K >= n:
            continue
        two_sided = bool(rng.integers(0, 2))
        dof = float(n - K)
        M = rng.standard_normal((n, K))
        M[:, 0] -= M[:, 0].mean()  # a centred tested regressor, as with an intercept
        V = np.linalg.qr(M)[0]
        perms = np.array([rng.permutation(n) for _ in range(B)])
        A = np.concatenate([V[perms, j] for j in range(K)], axis=0)  # (K B, n), unit rows
        Rt = rng.standard_normal((w, n))
        if rng.random() < 0.3:
            Rt = np.round(Rt)
        if rng.random() < 0.5:  # nearly constant voxels first: t within 1e-8 of 0 in
            k = max(2, w // 8)  # every permutation, and the running maxima start there
            Rt[:k] = 1.0 + 1e-9 * rng.standard_normal((k, n))
        # residuals in the span of a permutation's vectors (the full model fits them: no
        # residual left) and orthogonal to a tested vector (a projection of 0 whose float32
        # value has a random sign)
        for v in rng.choice(w, size=w // 4, replace=False):
            b = int(rng.integers(0, B))
            if rng.random() < 0.5:
                Rt[v] = A[b] + rng.random() * A[(K - 1) * B + b]
            else:
                Rt[v] -= (Rt[v] @ A[b]) * A[b]
        norms = np.linalg.norm(Rt, axis=1)
        Rt /= np.where(norms > 0, norms, 1.0)[:, None]
        ss = np.where(rng.random(w) < 0.05, 0.0, 1.0)
        out = Rt.astype(np.float32) @ A.astype(np.float32).T
        E = np.array([[engine.exact_dot(r, a) for a in A] for r in Rt]).reshape(w, K * B)
        s = _stat_reference(E, B, q, n_conf, ss, dof, np.zeros(w), two_sided,
                            np.full(B, -np.inf))[2]
        thr = s[np.arange(w), rng.integers(0, B, w)]  # exact ties
        other = rng.random(w) < 0.5
        thr[other] = rng.normal(0, 2, other.sum())
        if q or two_sided:
            thr = np.abs(thr)
        thr[rng.random(w) < 0.1] = 0.0
        thr[rng.random(w) < 0.1] = 1e300
        thr[:2] = 10.0  # far from the first voxels' statistics: only the maxima are in doubt
        m0 = np.full(B, -1e300) if rng.random() < 0.5 else rng.normal(0, 3, B)
        counts, maxima = np.zeros(w, np.int64), m0.copy()
        engine.reduce_stat_mixed(out, B, q, n_conf, ss, dof, thr, two_sided, counts, maxima,
                                 np.empty((3, B)), float32_error_bound(n, 1.0), Rt, A)
        want_counts, want_max, _ = _stat_reference(E, B, q, n_conf, ss, dof, thr, two_sided, m0)
        np.testing.assert_array_equal(counts, want_counts)
        np.testing.assert_array_equal(maxima, want_max)
        checked += 1


def test_reduce_stat_mixed_holds_for_any_float32_error_within_the_bound():
    """The kernel's claim, at its edge: whatever error up to the bound ``e`` each float32
    entry carries (here +-0.9 e on every entry, so the float32 rounding of the sum stays
    inside the bound), counts and maxima are float64's. Thresholds sit within the error of
    an entry's statistic, and near-duplicate voxels tie for the maxima within it: a band one
    term too narrow decides the wrong way."""
    rng = np.random.default_rng(15)
    for _ in range(60):
        n = int(rng.integers(10, 120))
        w, B = int(rng.integers(5, 80)), int(rng.integers(5, 80))
        q, n_conf = int(rng.choice([0, 0, 2])), int(rng.integers(0, 3))
        K = max(q, 1) + n_conf
        two_sided = bool(rng.integers(0, 2))
        dof = float(n - K)
        V = np.linalg.qr(rng.standard_normal((n, K)))[0]
        perms = np.array([rng.permutation(n) for _ in range(B)])
        A = np.concatenate([V[perms, j] for j in range(K)], axis=0)
        Rt = rng.standard_normal((w, n))
        for v in range(1, w, 3):  # near-duplicates: maxima within the error of each other
            Rt[v] = Rt[v - 1] + 1e-7 * rng.standard_normal(n)
        for v in range(2, w, 6):  # mostly a permutation's confound (or tested) vector
            b = int(rng.integers(0, B))
            Rt[v] = A[(K - 1) * B + b] + 0.05 * A[b] + 0.01 * rng.standard_normal(n)
        Rt /= np.linalg.norm(Rt, axis=1)[:, None]
        E = np.array([[engine.exact_dot(r, a) for a in A] for r in Rt]).reshape(w, K * B)
        e = float32_error_bound(n, 1.0)
        out = (E + 0.9 * e * rng.choice([-1.0, 1.0], size=E.shape)).astype(np.float32)
        ss = np.ones(w)
        s = _stat_reference(E, B, q, n_conf, ss, dof, np.zeros(w), two_sided,
                            np.full(B, -np.inf))[2]
        pick = s[np.arange(w), rng.integers(0, B, w)]
        thr = pick * (1.0 + rng.uniform(-1.0, 1.0, w) * 50 * e)  # inside the error band
        if q or two_sided:
            thr = np.abs(thr)
        counts, maxima = np.zeros(w, np.int64), np.full(B, -1e300)
        engine.reduce_stat_mixed(out, B, q, n_conf, ss, dof, thr, two_sided, counts, maxima,
                                 np.empty((3, B)), e, Rt, A)
        want_counts, want_max, _ = _stat_reference(E, B, q, n_conf, ss, dof, thr, two_sided,
                                                   np.full(B, -1e300))
        np.testing.assert_array_equal(counts, want_counts)
        np.testing.assert_array_equal(maxima, want_max)


@pytest.mark.parametrize("n_conf", [0, 1])
def test_reduce_stat_mixed_orders_statistics_below_the_float32_error(n_conf):
    """Nearly constant voxels against a centred regressor: every projection is ~1e-10 and
    its float32 value (~1e-8) has no reliable sign, so the running maxima of a one-sided t
    must come from float64 dot products, entry by entry."""
    rng = np.random.default_rng(16)
    n, B, w = 40, 64, 6
    M = rng.standard_normal((n, 1 + n_conf))
    M[:, 0] -= M[:, 0].mean()
    V = np.linalg.qr(M)[0]
    perms = np.array([rng.permutation(n) for _ in range(B)])
    A = np.concatenate([V[perms, j] for j in range(1 + n_conf)], axis=0)
    Rt = 1.0 + 1e-9 * rng.standard_normal((w, n))
    Rt /= np.linalg.norm(Rt, axis=1)[:, None]
    out = Rt.astype(np.float32) @ A.astype(np.float32).T
    E = np.array([[engine.exact_dot(r, a) for a in A] for r in Rt])
    ss, thr, dof = np.ones(w), np.full(w, 10.0), float(n - 1 - n_conf)
    counts, maxima = np.zeros(w, np.int64), np.full(B, -1e300)
    engine.reduce_stat_mixed(out, B, 0, n_conf, ss, dof, thr, False, counts, maxima,
                             np.empty((3, B)), float32_error_bound(n, 1.0), Rt, A)
    want_counts, want_max, _ = _stat_reference(E, B, 0, n_conf, ss, dof, thr, False,
                                               np.full(B, -1e300))
    assert np.abs(want_max).max() < 1e-7  # the case: statistics below float32's error
    np.testing.assert_array_equal(maxima, want_max)
    np.testing.assert_array_equal(counts, want_counts)
