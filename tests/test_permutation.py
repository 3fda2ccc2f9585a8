"""Tests of glmkit.stats.permutation and its kernels (glmkit.stats.cluster).

Second implementations: nilearn's ``permuted_ols`` fed the very same permutation stream,
a naive per-permutation ``lstsq`` for every scheme, ``scipy.ndimage.label`` and nilearn's
``calculate_tfce``; closed forms for hand-made volumes; calibration on null data.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from glmkit.stats import cluster as _cluster
from glmkit.errors import ContrastError, DesignError, ParameterError
from glmkit.stats.permutation import _draw, permutation_test

N_SUBJ = 24


def _nilearn_stream(random_state, n_perm, n, sign_flip):
    """The permutations nilearn's permuted_ols draws with n_jobs=1, as data-side arrays.

    nilearn seeds one chunk generator with ``rng.randint`` and applies each draw on top of
    the previous one (cumulative shuffles of the design rows, cumulative sign products of
    the data). A design-row index ``idx`` is the data-side permutation ``argsort(idx)``.
    """
    from sklearn.utils import check_random_state

    seed = check_random_state(random_state).randint(1, np.iinfo(np.int32).max - 1)
    rng = check_random_state(seed)
    idx, sg = np.arange(n), np.ones(n)
    perms, signs = [], []
    for _ in range(n_perm):
        if sign_flip:
            sg = sg * (rng.randint(2, size=(n, 1)) * 2 - 1)[:, 0]
            signs.append(sg.copy())
        else:
            idx = idx[rng.permutation(n)]
            perms.append(np.argsort(idx))
    return (np.array(perms) if perms else None), (np.array(signs) if signs else None)


@pytest.fixture
def cohort(rng):
    n, v = N_SUBJ, 300
    age = rng.standard_normal(n)
    flu = rng.standard_normal(n) + 0.3 * age
    Y = rng.standard_normal((n, v)) + 0.5
    Y[:, :15] += 1.0 * flu[:, None]
    design = pd.DataFrame({"fluency": flu, "age": age, "intercept": np.ones(n)})
    return Y, design


# --------------------------------------------------------------------------- nilearn parity
@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize(
    "case", ["fluency+intercept", "fluency+age+intercept", "one_sample", "fluency_no_intercept"]
)
def test_null_maxima_identical_to_permuted_ols(cohort, case, two_sided):
    from nilearn.mass_univariate import permuted_ols

    Y, design = cohort
    n = Y.shape[0]
    flu = design["fluency"].to_numpy()
    if case == "fluency+intercept":
        tested, conf, X = flu, np.ones((n, 1)), design[["fluency", "intercept"]]
    elif case == "fluency+age+intercept":
        tested, conf, X = flu, design[["age", "intercept"]].to_numpy(), design
    elif case == "one_sample":
        tested, conf, X = np.ones(n), None, design[["intercept"]]
    else:  # nilearn adds the intercept itself and permutes rows
        tested, conf, X = flu, None, design[["fluency", "intercept"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = permuted_ols(tested[:, None], Y, confounding_vars=conf, model_intercept=True,
                           n_perm=60, two_sided_test=two_sided, random_state=7, n_jobs=1)
    # nilearn 0.14 sign-flips whenever a constant column is among tested or confounds
    sign_flip = case != "fluency_no_intercept"
    perms, signs = _nilearn_stream(7, 60, n, sign_flip)
    col = X.columns[0]
    res = permutation_test(Y, X, col, n_perm=60, two_sided=two_sided, scheme="freedman_lane",
                           _permutations=perms, _signs=signs, verbose=False)
    np.testing.assert_allclose(res.null_max["voxel"][1:], ref["h0_max_t"][0], rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.t, ref["t"][0], atol=1e-8)
    np.testing.assert_allclose(res.logp_fwer["voxel"], ref["logp_max_t"][0], atol=1e-10)
    assert res.null_max["voxel"].shape == (61,)
    assert res.null_max["voxel"][0] == pytest.approx(np.max(np.abs(res.t) if two_sided else res.t))


@pytest.mark.parametrize("two_sided", [False, True])
def test_cluster_and_tfce_null_identical_to_permuted_ols(rng, two_sided):
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    shape = (9, 8, 7)
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    mask[2, 2, 2] = False
    n = 16
    vols = ndimage.gaussian_filter(rng.standard_normal((n, *shape)), (0, 1, 1, 1)) * 3
    Y = vols[:, mask]
    Y[:, :20] += 0.8
    affine = np.eye(4)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    masker = NiftiMasker(mask_img).fit()
    flu = rng.standard_normal(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = permuted_ols(flu[:, None], Y, confounding_vars=None, model_intercept=True,
                           n_perm=25, two_sided_test=two_sided, random_state=3, n_jobs=1,
                           masker=masker, tfce=True, threshold=0.01)
    perms, _ = _nilearn_stream(3, 25, n, False)
    X = pd.DataFrame({"fluency": flu, "intercept": np.ones(n)})
    res = permutation_test(Y, X, "fluency", n_perm=25, two_sided=two_sided, mask_img=mask_img,
                           statistics=("voxel", "cluster_size", "cluster_mass", "tfce"),
                           cluster_threshold=0.01, scheme="freedman_lane",
                           _permutations=perms, verbose=False)
    np.testing.assert_allclose(res.null_max["voxel"][1:], ref["h0_max_t"][0], atol=1e-8)
    np.testing.assert_array_equal(res.null_max["cluster_size"][1:], ref["h0_max_size"][0])
    np.testing.assert_allclose(res.null_max["cluster_mass"][1:], ref["h0_max_mass"][0], atol=1e-8)
    np.testing.assert_allclose(res.null_max["tfce"][1:], ref["h0_max_tfce"][0], rtol=1e-9)
    np.testing.assert_allclose(res.observed["tfce"], ref["tfce"][0], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(res.observed["cluster_size"], ref["size"][0])
    np.testing.assert_allclose(res.observed["cluster_mass"], ref["mass"][0], atol=1e-8)
    np.testing.assert_allclose(res.logp_fwer["tfce"], ref["logp_max_tfce"][0], atol=1e-10)


# --------------------------------------------------------------------------- naive lstsq
def _naive_null_max(Y, X, c, perms, signs, scheme, two_sided):
    n = Y.shape[0]
    if scheme == "freedman_lane":
        Z = X @ __import__("scipy").linalg.null_space(c[None, :])
        base = Y - Z @ np.linalg.lstsq(Z, Y, rcond=None)[0] if Z.shape[1] else Y
    else:
        base = Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]
    xtx_c = c @ np.linalg.inv(X.T @ X) @ c
    dof = n - X.shape[1]
    out = []
    for k in range(len(perms) if perms is not None else len(signs)):
        Ys = base[perms[k]] if perms is not None else base
        if signs is not None:
            Ys = Ys * signs[k][:, None]
        b = np.linalg.lstsq(X, Ys, rcond=None)[0]
        resid = Ys - X @ b
        t = (c @ b) / np.sqrt((resid**2).sum(0) / dof * xtx_c)
        out.append(np.abs(t).max() if two_sided else t.max())
    return np.array(out)


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
@pytest.mark.parametrize("contrast", ["fluency", "age", [1.0, -1.0, 0.0]])
@pytest.mark.parametrize("flip", [False, True])
def test_engine_matches_naive_lstsq(cohort, rng, scheme, contrast, flip):
    Y, design = cohort
    n = Y.shape[0]
    X = design.to_numpy()
    c = np.array(contrast) if not isinstance(contrast, str) else (design.columns == contrast) * 1.0
    perms = None if flip else np.array([rng.permutation(n) for _ in range(30)])
    signs = rng.choice([-1, 1], size=(30, n)) if flip else None
    for two in (False, True):
        res = permutation_test(Y, design, contrast, n_perm=30, two_sided=two, scheme=scheme,
                               _permutations=perms, _signs=signs, verbose=False)
        naive = _naive_null_max(Y, X, c, perms, signs, scheme, two)
        np.testing.assert_allclose(res.null_max["voxel"][1:], naive, rtol=1e-9)
        # observed t against the closed-form OLS t
        b = np.linalg.lstsq(X, Y, rcond=None)[0]
        s2 = ((Y - X @ b) ** 2).sum(0) / (n - X.shape[1])
        t_ref = (c @ b) / np.sqrt(s2 * (c @ np.linalg.inv(X.T @ X) @ c))
        np.testing.assert_allclose(res.t, t_ref, rtol=1e-9)


@pytest.mark.parametrize("scheme", ["freedman_lane", "ter_braak"])
def test_one_sample_with_covariate_sign_flips_match_naive(rng, scheme):
    n = 18
    age = rng.standard_normal(n)
    Y = rng.standard_normal((n, 120)) + 0.3
    X = np.column_stack([np.ones(n), age])
    res = permutation_test(Y, X, [1.0, 0.0], n_perm=40, random_state=4, scheme=scheme,
                           verbose=False)
    assert res.method == "sign_flip"
    _, signs = _draw(4, 40, n, True, None)
    naive = _naive_null_max(Y, X, np.array([1.0, 0.0]), None, signs, scheme, False)
    np.testing.assert_allclose(res.null_max["voxel"][1:], naive, rtol=1e-9)


# --------------------------------------------------------------------------- kernels
def _blob_volume():
    vol = np.zeros((10, 10, 10))
    vol[1:3, 1:3, 1:3] = 4.0  # 8 voxels
    vol[6:9, 6, 6] = 5.0  # 3 voxels in a line
    vol[6, 1, 1] = 3.0  # single voxel
    vol[7, 2, 2] = 3.0  # diagonal (corner) neighbour of the single voxel
    vol[5, 5, 0] = -6.0  # negative pair
    vol[5, 6, 0] = -6.0
    return vol


@pytest.mark.parametrize("connectivity,order", [(6, 1), (18, 2), (26, 3)])
def test_cluster_labels_match_scipy(connectivity, order, rng):
    mask = rng.random((11, 9, 10)) > 0.15
    nbr = _cluster.neighbors(mask, connectivity)
    vol = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 1.0) * 3
    u = vol[mask]
    lab = _cluster.cluster_labels(u, 0.5, nbr)
    ref, n_ref = ndimage.label((vol > 0.5) & mask, ndimage.generate_binary_structure(3, order))
    ref = ref[mask]
    assert len(np.unique(lab[lab >= 0])) == n_ref
    # same partition: each scipy label maps to exactly one root and vice versa
    pairs = set(zip(ref[ref > 0].tolist(), lab[lab >= 0].tolist()))
    assert len(pairs) == n_ref
    assert np.array_equal(lab >= 0, ref > 0)


def test_cluster_max_hand_made():
    vol = _blob_volume()
    mask = np.ones(vol.shape, bool)
    t = vol[mask][None]
    size, mass = np.empty(1, np.int64), np.empty(1)
    nbr6 = _cluster.neighbors(mask, 6)
    _cluster.cluster_max(t, 2.0, nbr6, False, size, mass)
    assert size[0] == 8 and mass[0] == pytest.approx(8 * 2.0)
    _cluster.cluster_max(t, 4.5, nbr6, False, size, mass)
    assert size[0] == 3 and mass[0] == pytest.approx(3 * 0.5)
    _cluster.cluster_max(t, 2.0, nbr6, True, size, mass)
    assert size[0] == 8 and mass[0] == pytest.approx(16.0)  # negative pair: mass 8
    _cluster.cluster_max(t, 4.5, nbr6, True, size, mass)
    assert size[0] == 3 and mass[0] == pytest.approx(3.0)  # negative pair: 2 * 1.5
    # the two 3.0 voxels touch by a corner only: joined with 26-, not 6- or 18-connectivity
    for conn, expected in [(6, 1), (18, 1), (26, 2)]:
        nbr = _cluster.neighbors(mask, conn)
        lab = _cluster.cluster_labels(np.where(np.abs(t[0] - 3.0) < 1e-9, 1.0, 0.0), 0.5, nbr)
        assert np.bincount(np.unique(lab[lab >= 0], return_inverse=True)[1]).max() == expected


def test_tfce_closed_form_single_voxel_and_pair():
    vol = np.zeros((5, 5, 5))
    vol[2, 2, 2] = 2.0
    mask = np.ones(vol.shape, bool)
    nbr = _cluster.neighbors(mask, 6)
    out = _cluster.tfce_map(vol[mask], nbr, False, 0.5, 2.0, 0.0)
    # 100 steps h_k = k * 2/100, every step contributes 1**0.5 * h_k**2
    expected = sum((k * 2.0 / 100) ** 2 for k in range(1, 101))
    assert out.max() == pytest.approx(expected, rel=1e-12)
    assert np.count_nonzero(out) == 1
    vol[2, 2, 3] = 1.0  # a neighbour at half the height
    out = _cluster.tfce_map(vol[mask], nbr, False, 0.5, 2.0, 0.0).reshape(vol.shape)
    low = sum(np.sqrt(2) * (k * 0.02) ** 2 for k in range(1, 51))
    high = sum((k * 0.02) ** 2 for k in range(51, 101))
    assert out[2, 2, 3] == pytest.approx(low, rel=1e-12)
    assert out[2, 2, 2] == pytest.approx(low + high, rel=1e-12)


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("connectivity,order", [(6, 1), (26, 3)])
@pytest.mark.parametrize("params", [(0.5, 2.0, "auto"), (1.0, 1.5, 0.05)])
def test_tfce_matches_nilearn(rng, two_sided, connectivity, order, params):
    from nilearn.mass_univariate._utils import calculate_tfce

    E, H, dh = params
    shape = (12, 11, 10)
    mask = ndimage.binary_erosion(np.ones(shape, bool)) | (rng.random(shape) > 0.6)
    vol = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2) * 4
    vol[~mask] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = calculate_tfce(vol[..., None], ndimage.generate_binary_structure(3, order),
                             E=E, H=H, dh=dh, two_sided_test=two_sided)[..., 0][mask]
    nbr = _cluster.neighbors(mask, connectivity)
    mine = _cluster.tfce_map(vol[mask], nbr, two_sided, E, H, 0.0 if dh == "auto" else dh)
    np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-9)
    mx = np.empty(1)
    _cluster.tfce_max(vol[mask][None], nbr, two_sided, E, H, 0.0 if dh == "auto" else dh, mx)
    assert mx[0] == pytest.approx(np.abs(ref).max(), rel=1e-10)


# --------------------------------------------------------------------------- reproducibility
@pytest.fixture
def spatial_case(rng):
    shape = (8, 8, 6)
    mask = np.ones(shape, bool)
    mask[0] = False
    n = 14
    vols = ndimage.gaussian_filter(rng.standard_normal((n, *shape)), (0, 1, 1, 1)) * 3
    Y = vols[:, mask]
    Y[:, 40:60] += 1.0
    design = pd.DataFrame({"g": rng.standard_normal(n), "intercept": np.ones(n)})
    return Y, design, mask


ALL = ("voxel", "cluster_size", "cluster_mass", "tfce")


def _assert_same(a, b):
    assert a.statistics == b.statistics
    np.testing.assert_array_equal(a.t, b.t)
    np.testing.assert_array_equal(a.logp_uncorrected, b.logp_uncorrected)
    for s in a.statistics:
        np.testing.assert_array_equal(a.null_max[s], b.null_max[s])
        np.testing.assert_array_equal(a.logp_fwer[s], b.logp_fwer[s])


def test_n_jobs_and_dask_bit_identical(spatial_case, monkeypatch):
    import joblib
    from distributed import Client, LocalCluster

    from glmkit.stats import engine

    monkeypatch.setattr(engine, "MAX_BLOCK", 16)  # several blocks to spread
    Y, design, mask = spatial_case
    kw = dict(n_perm=70, statistics=ALL, mask_img=mask, two_sided=True, random_state=11,
              verbose=False, cluster_threshold=0.01)
    r1 = permutation_test(Y, design, "g", n_jobs=1, **kw)
    assert r1.info["n_blocks"] == 5
    r2 = permutation_test(Y, design, "g", n_jobs=2, **kw)
    _assert_same(r1, r2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        with joblib.parallel_config(backend="dask"):
            r3 = permutation_test(Y, design, "g", n_jobs=2, **kw)
    _assert_same(r1, r3)


#: where each block of test_the_blocks_run_where_joblib_is_told ran (module-level, so that
#: a Dask task pickles the function by reference and appends here, in this process)
_RAN: list[str] = []


def _recorded_voxel_block(*args, **kwargs):
    from distributed import get_worker

    from glmkit.stats import engine

    try:
        get_worker()
        _RAN.append("dask")
    except ValueError:  # not on a Dask worker
        _RAN.append("here")
    return engine.voxel_block.__wrapped__(*args, **kwargs)


def test_the_blocks_run_where_joblib_is_told(monkeypatch, rng):
    """Voxel statistics: by default the blocks run on threads of this process; with
    ``joblib.parallel_config(backend="dask")`` they run on the Dask workers, with the same
    bits (the engine waits on its own threads, and hands any configured backend to joblib)."""
    import joblib
    from distributed import Client, LocalCluster

    from glmkit.stats import engine

    _recorded_voxel_block.__wrapped__ = engine.voxel_block
    monkeypatch.setattr(engine, "voxel_block", _recorded_voxel_block)
    _RAN.clear()
    n = 20
    Y = rng.standard_normal((n, 3000))
    X = np.column_stack([rng.standard_normal(n), np.ones(n)])
    kw = dict(n_perm=200, random_state=1, verbose=False, n_jobs=2)
    ref = permutation_test(Y, X, [1, 0], **kw)
    assert (ref.info["n_blocks"], ref.info["voxel_blocks"]) == (1, 2)
    assert _RAN == ["here", "here"]
    _RAN.clear()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        with joblib.parallel_config(backend="dask"):
            res = permutation_test(Y, X, [1, 0], **kw)
    assert _RAN == ["dask", "dask"]
    np.testing.assert_array_equal(res.logp_uncorrected, ref.logp_uncorrected)
    np.testing.assert_array_equal(res.null_max["voxel"], ref.null_max["voxel"])


def test_an_error_in_a_block_stops_the_others(monkeypatch, rng):
    """A block that fails: its error reaches the caller, the blocks not yet started never
    start, and none still runs when the call returns."""
    import threading
    import time

    from glmkit.stats import engine

    started, finished, lock = [], [], threading.Lock()
    block = engine.voxel_block

    def failing(data, v0, v1, stream, start, stop, cfg):
        with lock:
            started.append(start)
        if start == 0:
            raise RuntimeError("block 0 failed")
        time.sleep(1.0)  # the others stay busy while the error reaches the caller
        result = block(data, v0, v1, stream, start, stop, cfg)
        with lock:
            finished.append(start)
        return result

    monkeypatch.setattr(engine, "voxel_block", failing)
    monkeypatch.setattr(engine, "COLS", 64)
    monkeypatch.setattr(engine, "BLOCK_ITEMS", 64)  # blocks of 64 permutations: ten
    n = 20
    Y = rng.standard_normal((n, 300))
    X = np.column_stack([rng.standard_normal(n), np.ones(n)])
    with pytest.raises(RuntimeError, match="block 0 failed"):
        permutation_test(Y, X, [1, 0], n_perm=640, random_state=1, verbose=False, n_jobs=2)
    assert 0 in started and len(started) <= 3  # of ten blocks
    assert sorted(finished) == sorted(s for s in started if s != 0)  # none left running


def test_n_jobs_bit_identical_at_blas_threaded_sizes(rng):
    """Large enough for multi-threaded BLAS, whose rounding depends on the thread count:
    loky worker processes run BLAS with one thread, so they only agree with the calling
    process because every block is computed single-threaded (fails without that limit)."""
    import joblib

    n, v = 40, 30000
    Y = rng.standard_normal((n, v))
    X = pd.DataFrame({"g": rng.standard_normal(n), "age": rng.standard_normal(n),
                      "intercept": 1.0})
    kw = dict(n_perm=120, random_state=3, verbose=False, two_sided=True)
    a = permutation_test(Y, X, "g", n_jobs=1, **kw)
    b = permutation_test(Y, X, "g", n_jobs=2, **kw)
    _assert_same(a, b)
    with joblib.parallel_config(backend="loky"):
        c = permutation_test(Y, X, "g", n_jobs=2, **kw)
    _assert_same(a, c)


def test_more_jobs_than_permutations_and_seed_reuse(cohort):
    Y, design = cohort
    a = permutation_test(Y, design, "fluency", n_perm=3, n_jobs=8, random_state=5, verbose=False)
    assert a.null_max["voxel"].shape == (4,)
    b = permutation_test(Y, design, "fluency", n_perm=3, n_jobs=1, random_state=5, verbose=False)
    _assert_same(a, b)
    c = permutation_test(Y, design, "fluency", n_perm=20, random_state=None, verbose=False)
    d = permutation_test(Y, design, "fluency", n_perm=20, random_state=c.random_state,
                         verbose=False)
    _assert_same(c, d)


def test_float32_close_to_float64(spatial_case):
    Y, design, mask = spatial_case
    kw = dict(n_perm=40, random_state=2, verbose=False, statistics=("voxel", "tfce"),
              mask_img=mask)
    a = permutation_test(Y, design, "g", **kw)
    b = permutation_test(Y, design, "g", dtype="float32", **kw)
    np.testing.assert_allclose(b.null_max["voxel"], a.null_max["voxel"], rtol=1e-4)
    np.testing.assert_allclose(b.null_max["tfce"], a.null_max["tfce"], rtol=1e-3)


def test_groups_permute_within_blocks(rng):
    n = 30
    groups = np.repeat(["a", "b", "c"], 10)
    perms, signs = _draw(0, 200, n, False, groups)
    assert signs is None
    for p in perms:
        assert np.array_equal(groups[p], groups)
        assert sorted(p) == list(range(n))
    assert not np.all(perms == np.arange(n))
    Y = rng.standard_normal((n, 50))
    X = np.column_stack([rng.standard_normal(n), np.ones(n)])
    res = permutation_test(Y, X, [1, 0], n_perm=30, groups=groups, random_state=1,
                           verbose=False)  # the default scheme, Freedman-Lane
    used, _ = _draw(1, 30, n, False, groups)
    naive = _naive_null_max(Y, X, np.array([1.0, 0.0]), used, None, "freedman_lane", False)
    np.testing.assert_allclose(res.null_max["voxel"][1:], naive, rtol=1e-9)


def test_progress_bar_and_silence(cohort, capsys):
    Y, design = cohort
    permutation_test(Y, design, "fluency", n_perm=10, random_state=0, verbose=True)
    assert "permutations" in capsys.readouterr().err
    permutation_test(Y, design, "fluency", n_perm=10, random_state=0, verbose=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# --------------------------------------------------------------------------- result object
def test_result_methods(spatial_case):
    Y, design, mask = spatial_case
    res = permutation_test(Y, design, "g", n_perm=99, statistics=ALL, mask_img=mask,
                           random_state=3, verbose=False, cluster_threshold=0.01)
    for s in ALL:
        null = res.null_max[s]
        assert null.shape == (100,)
        crit = res.critical_value(s, 0.05)
        obs = np.abs(res.observed[s]) if s == "tfce" else res.observed[s]
        p = np.array([(null >= v).mean() for v in obs])
        if s in ("cluster_size", "cluster_mass", "tfce"):
            p = np.where(obs > 0, p, 1.0)
        np.testing.assert_allclose(10 ** -res.logp_fwer[s], p, rtol=1e-12)
        assert np.array_equal(p <= 0.05, (obs > crit) & (p < 1))
    assert res.critical_value("voxel", 0.001) == float("inf")
    frame = res.to_frame()
    assert list(frame.columns) == ["t", "logp_uncorrected", "logp_maxt", "cluster_size",
                                   "logp_cluster_size", "cluster_mass", "logp_cluster_mass",
                                   "tfce", "logp_tfce"]
    assert len(frame) == Y.shape[1]
    text = res.summary()
    assert "random_state=3" in text and "tfce" in text and "(1 + #" in text
    with pytest.raises(ParameterError, match="expected one of"):
        res.critical_value("mass")
    with pytest.raises(AttributeError):
        res.n_perm = 5  # frozen


def test_signal_is_detected_and_uncorrected_le_fwer(cohort):
    Y, design = cohort
    Y = Y.copy()
    Y[:, :15] += 1.5 * design["fluency"].to_numpy()[:, None]
    res = permutation_test(Y, design, "fluency", n_perm=199, random_state=0, verbose=False)
    assert res.method == "permutation"
    assert (res.logp_fwer["voxel"][:15] > 1.3).mean() > 0.8
    assert (res.logp_fwer["voxel"][15:] < 1.3).mean() > 0.95
    assert np.all(res.logp_uncorrected >= res.logp_fwer["voxel"] - 1e-12)


def test_constant_voxel_gives_finite_output(cohort, spatial_case):
    Y, design = cohort
    Y = Y.copy()
    Y[:, 3] = 2.0
    Y[:, 4] = 0.0
    for scheme in ("ter_braak", "freedman_lane"):
        res = permutation_test(Y, design, "fluency", n_perm=20, scheme=scheme, verbose=False,
                               random_state=0)
        for arr in (res.t, res.logp_uncorrected, res.logp_fwer["voxel"], res.null_max["voxel"]):
            assert np.all(np.isfinite(arr))
        assert res.t[3] == 0 and res.logp_uncorrected[3] == 0 and res.logp_fwer["voxel"][4] == 0
    Ys, ds, mask = spatial_case
    Ys = Ys.copy()
    Ys[:, 0] = 1.0
    res = permutation_test(Ys, ds, "g", n_perm=10, statistics=ALL, mask_img=mask,
                           verbose=False, random_state=0)
    for s in ALL:
        assert np.all(np.isfinite(res.logp_fwer[s])) and np.all(np.isfinite(res.null_max[s]))


# --------------------------------------------------------------------------- bad inputs
def test_bad_inputs(cohort):
    Y, design = cohort
    ok = dict(n_perm=5, verbose=False)
    with pytest.raises(ParameterError, match="n_perm"):
        permutation_test(Y, design, "fluency", n_perm=0)
    with pytest.raises(ParameterError, match="known statistics are .*cluster_mass"):
        permutation_test(Y, design, "fluency", statistics=("maxt",), **ok)
    with pytest.raises(ParameterError, match="need mask_img"):
        permutation_test(Y, design, "fluency", statistics=("tfce",), **ok)
    with pytest.raises(ParameterError, match="need mask_img"):
        permutation_test(Y, design, "fluency", statistics="cluster_size", **ok)
    with pytest.raises(ParameterError, match="in-mask voxels"):
        permutation_test(Y, design, "fluency", statistics="tfce", mask_img=np.ones((2, 2, 2)),
                         **ok)
    bad = design.assign(age2=2 * design["age"])
    with pytest.raises(DesignError, match="rank deficient: rank 3 < 4"):
        permutation_test(Y, bad, "fluency", **ok)
    Yn = Y.copy()
    Yn[[1, 2], 5] = np.nan
    Yn[4, 9] = np.inf
    with pytest.raises(ParameterError, match="2 voxels across 3 subjects"):
        permutation_test(Yn, design, "fluency", **ok)
    with pytest.raises(DesignError, match="23 rows but Y has 24"):
        permutation_test(Y, design.iloc[:-1], "fluency", **ok)
    with pytest.raises(ParameterError, match="scheme must be one of"):
        permutation_test(Y, design, "fluency", scheme="manly", **ok)
    with pytest.raises(ParameterError, match="groups must have one label per subject"):
        permutation_test(Y, design, "fluency", groups=[0, 1], **ok)
    with pytest.raises(ContrastError, match="not a design column"):
        permutation_test(Y, design, "pseudo", **ok)
    with pytest.raises(ContrastError, match="vector of length 3"):
        permutation_test(Y, design, [1, 0], **ok)
    with pytest.raises(ContrastError, match="column name but design is an array"):
        permutation_test(Y, design.to_numpy(), "fluency", **ok)
    with pytest.raises(ParameterError, match="dtype"):
        permutation_test(Y, design, "fluency", dtype="float16", **ok)
    with pytest.raises(ParameterError, match="tfce: unknown keys"):
        permutation_test(Y, design, "fluency", tfce={"e": 1}, mask_img=None, **ok)
    with pytest.raises(ParameterError, match="connectivity"):
        permutation_test(Y, design, "fluency", connectivity=8, **ok)
    with pytest.raises(ParameterError, match="random_state"):
        permutation_test(Y, design, "fluency", random_state=np.random.default_rng(0), **ok)


# --------------------------------------------------------------------------- calibration
# FWER calibration of every statistic, one stratum (scheme x side) at a time:
# tests/test_calibration.py


@pytest.mark.slow
def test_uncorrected_p_calibrated_against_t_distribution(rng):
    n, v = 20, 2000
    Y = rng.standard_normal((n, v))
    X = np.column_stack([rng.standard_normal(n), np.ones(n)])
    res = permutation_test(Y, X, [1, 0], n_perm=999, random_state=0, verbose=False)
    p_perm = 10 ** -res.logp_uncorrected
    p_t = stats.t.sf(res.t, res.dof)
    # the observed t follow t(dof), and the permutation p track the analytic p
    assert stats.kstest(res.t, stats.t(res.dof).cdf).pvalue > 0.001
    assert stats.kstest(p_perm, "uniform").pvalue > 0.001
    assert np.abs(p_perm - p_t).max() < 0.06
    assert np.corrcoef(p_perm, p_t)[0, 1] > 0.995


@pytest.mark.slow
def test_fwer_on_demo_null(demo_null):
    """The demo's null variant (no planted effect): no voxel survives max-T FWER 0.05."""
    from nilearn.maskers import NiftiMasker

    maps = list(demo_null.maps)
    table = demo_null.table
    keep = table["pseudo"].notna().to_numpy()
    masker = NiftiMasker(standardize=None).fit([m for m, k in zip(maps, keep) if k])  # unsmoothed
    Y = masker.transform([m for m, k in zip(maps, keep) if k])
    design = pd.DataFrame({"fluency": table.loc[keep, "pseudo"].to_numpy(float),
                           "intercept": 1.0})
    res = permutation_test(Y, design, "fluency", n_perm=200, two_sided=True, random_state=0,
                           verbose=False)
    assert res.logp_fwer["voxel"].max() < -np.log10(0.05)
