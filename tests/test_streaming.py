"""Streaming and memory of the permutation engine (glmkit.stats.source, resample, engine).

- A numpy memmap ``Y`` gives the very same result as the array in memory, and is never
  copied whole (tracemalloc's peak stays a fraction of ``Y``).
- The permutation stream is counter-based: any range of it is the same whoever draws it;
  results are bit-identical across block sizes, n_jobs, streaming, and a Dask cluster of
  worker processes that map the memmap themselves.
- Memory does not grow with the permutations' size (their number times the subjects).
- Exact enumeration draws any range of arrangements or sign flips by number.
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from glmkit.errors import ParameterError
from glmkit.stats import engine, resample
from glmkit.stats.permutation import permutation_test
from glmkit.stats.source import VoxelSource


def _same(a, b):
    np.testing.assert_array_equal(a.t, b.t)
    np.testing.assert_array_equal(a.logp_uncorrected, b.logp_uncorrected)
    for s in a.statistics:
        np.testing.assert_array_equal(a.null_max[s], b.null_max[s])
        np.testing.assert_array_equal(a.logp_fwer[s], b.logp_fwer[s])


@pytest.fixture
def on_disk(tmp_path, rng):
    """(memmap Y float32 (30, 60000), the same in memory, design with a nuisance column)."""
    n, v = 30, 60_000
    Y = rng.standard_normal((n, v)).astype(np.float32)
    x = rng.standard_normal(n)
    Y[:, :50] += (0.8 * x[:, None]).astype(np.float32)
    np.save(tmp_path / "Y.npy", Y)
    design = pd.DataFrame({"x": x, "age": rng.standard_normal(n), "intercept": 1.0})
    return np.load(tmp_path / "Y.npy", mmap_mode="r"), Y, design


# --------------------------------------------------------------------------- the stream
def test_any_range_of_the_stream_is_the_same():
    for sign_flip, groups in ((False, None), (True, None), (False, np.repeat([0, 1, 2], 4))):
        whole = resample.draw(11, 0, 1000, 12, sign_flip, groups)[1 if sign_flip else 0]
        for start, stop in ((0, 1), (255, 257), (300, 1000), (999, 1000), (512, 768)):
            part = resample.draw(11, start, stop, 12, sign_flip, groups)[1 if sign_flip else 0]
            np.testing.assert_array_equal(part, whole[start:stop])
    assert not np.array_equal(resample.draw(11, 0, 10, 12, False, None)[0],
                              resample.draw(12, 0, 10, 12, False, None)[0])


def test_exact_ranges_are_numbered_enumerations():
    rows = np.column_stack([[0, 0, 1, 1, 1, 2, 2], np.ones(7)])
    groups = np.array([0, 0, 0, 1, 1, 1, 1])
    every = resample.all_arrangements(rows, groups)
    # a brute force: every distinct labelling within blocks but the observed one
    labels = rows[:, 0]
    seen = set()
    for perm in itertools.permutations(range(7)):
        perm = np.array(perm)
        if np.all(groups[perm] == groups):
            seen.add(tuple(labels[np.argsort(perm)]))
    seen.discard(tuple(labels))
    assert {tuple(labels[np.argsort(p)]) for p in every} == seen and len(every) == len(seen)
    np.testing.assert_array_equal(resample.arrangements(rows, groups, 3, 9), every[3:9])
    flips = resample.all_sign_flips(6)
    np.testing.assert_array_equal(resample.sign_flips(6, 10, 20), flips[9:19])
    assert {tuple(f) for f in flips} == set(itertools.product([1, -1], repeat=6)) - {(1,) * 6}


@pytest.mark.parametrize("contrast", ["x", ["x", "age"]])
def test_results_do_not_depend_on_block_size(on_disk, monkeypatch, contrast):
    _, Y, design = on_disk
    kw = dict(n_perm=700, random_state=4, verbose=False, two_sided=contrast == "x")
    a = permutation_test(Y, design, contrast, **kw)
    monkeypatch.setattr(engine, "COLS", 256)  # GEMMs of 256 permutations, blocks of 256
    b = permutation_test(Y, design, contrast, n_jobs=2, **kw)
    # one task against six: three blocks of permutations, each on two halves of the voxels
    assert (a.info["n_blocks"], a.info["voxel_blocks"]) == (1, 1)
    assert (b.info["n_blocks"], b.info["voxel_blocks"]) == (3, 2)
    _same(a, b)


# --------------------------------------------------------------------------- memmaps
def test_memmap_equals_memory_and_is_never_copied_whole(tmp_path, rng, monkeypatch):
    n, v = 240, 50_000  # 48 MB as float32, 96 MB as float64 (what a copy for the fit takes)
    Y = rng.standard_normal((n, v)).astype(np.float32)
    x = rng.standard_normal(n)
    Y[:, :40] += (0.3 * x[:, None]).astype(np.float32)
    np.save(tmp_path / "big.npy", Y)
    design = np.column_stack([x, rng.standard_normal(n), np.ones(n)])
    kw = dict(n_perm=300, random_state=1, verbose=False)
    ref = permutation_test(Y, design, [1, 0, 0], **kw)
    assert not ref.info["streamed"]
    del Y
    Ymm = np.load(tmp_path / "big.npy", mmap_mode="r")
    monkeypatch.setattr(engine, "SLAB_BYTES", n * 4 * 20_480)  # three voxel blocks
    tracemalloc.start()
    res = permutation_test(Ymm, design, [1, 0, 0], **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert res.info["streamed"] and res.info["voxel_blocks"] == 3
    _same(ref, res)
    # one chunk of residuals, the GEMM buffers and the per-voxel results (~14 MB), not Y
    assert peak < 0.5 * Ymm.nbytes, peak


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_big_arrays_in_memory_stream_their_residuals(on_disk, monkeypatch, dtype):
    """Residuals formed again block by block are those the fit keeps, in the GEMM's
    precision: the same bits (float32 too: float32 residuals, float32 products)."""
    _, Y, design = on_disk
    kw = dict(n_perm=200, random_state=2, verbose=False, dtype=dtype)
    ref = permutation_test(Y, design, "x", **kw)
    monkeypatch.setattr(engine, "RESIDENT_BYTES", 1024)
    res = permutation_test(Y, design, "x", **kw)
    assert res.info["streamed"] and not ref.info["streamed"]
    assert res.info["gemm"] == ("float32" if dtype == "float32" else
                                "float32, re-checked in float64")
    _same(ref, res)


def test_spatial_statistics_on_a_memmap_keep_whole_maps(tmp_path, rng):
    shape = (6, 6, 5)
    mask = np.ones(shape, bool)
    Y = rng.standard_normal((14, mask.sum()))
    np.save(tmp_path / "Y.npy", Y)
    X = np.column_stack([rng.standard_normal(14), np.ones(14)])
    kw = dict(n_perm=40, random_state=0, verbose=False, statistics=("voxel", "tfce"),
              mask_img=mask)
    _same(permutation_test(Y, X, [1, 0], **kw),
          permutation_test(np.load(tmp_path / "Y.npy", mmap_mode="r"), X, [1, 0], **kw))


@pytest.mark.parametrize("memmap", [False, True])
def test_values_whose_squares_overflow_are_named_not_called_nan(tmp_path, rng, memmap):
    """Finite values too large for float64 sums of squares would give NaN statistics: the
    error says so, and how to fix it, instead of naming NaN values that are not there. Values
    whose squares still fit (1e150) are tested as any others."""
    Y = rng.standard_normal((10, 3000))
    X = np.column_stack([rng.standard_normal(10), np.ones(10)])
    big = Y * 1e150
    res = permutation_test(big, X, [1, 0], n_perm=10, random_state=0, verbose=False)
    ref = permutation_test(Y, X, [1, 0], n_perm=10, random_state=0, verbose=False)
    np.testing.assert_allclose(res.t, ref.t, rtol=1e-10)
    Y[4, 1200] = -3e160
    if memmap:
        np.save(tmp_path / "Y.npy", Y)
        Y = np.load(tmp_path / "Y.npy", mmap_mode="r")
    with pytest.raises(ParameterError, match=r"too large for float64 sums of squares "
                                             r"\(largest \|Y\| = 3e\+160\); rescale"):
        permutation_test(Y, X, [1, 0], n_perm=10, verbose=False)


def test_nan_in_a_memmap_is_named_before_any_permutation(tmp_path, rng):
    Y = rng.standard_normal((10, 3000))
    Y[3, 2500] = np.nan
    Y[5, 2999] = np.inf
    np.save(tmp_path / "Y.npy", Y)
    X = np.column_stack([rng.standard_normal(10), np.ones(10)])
    with pytest.raises(ParameterError, match="NaN or infinite values in 2 voxels across 2 "
                                             "subjects"):
        permutation_test(np.load(tmp_path / "Y.npy", mmap_mode="r"), X, [1, 0], n_perm=10,
                         verbose=False)


def test_source_reads_ranges_and_pickles_without_the_data(on_disk):
    import pickle

    Ymm, Y, _ = on_disk
    src = VoxelSource(Ymm)
    assert src.streamed and not VoxelSource(Y).streamed
    np.testing.assert_array_equal(src.read(100, 355), Y[:, 100:355].astype(np.float64))
    blob = pickle.dumps(src)
    assert len(blob) < 10_000  # the file's name, not its 7 MB
    np.testing.assert_array_equal(pickle.loads(blob).read(0, 7), Y[:, :7])
    for source in (src, VoxelSource(Y)):  # into a given array (the fit's kept residuals)
        out = np.full((Y.shape[0], 255), np.nan)
        assert source.read(100, 355, out=out) is out
        np.testing.assert_array_equal(out, Y[:, 100:355].astype(np.float64))


# --------------------------------------------------------------------------- memory
def test_memory_does_not_grow_with_the_permutations_size(rng):
    """100,000 permutations of 20 and of 400 subjects: drawn up front, the permutation
    indices alone would take 8 MB and 160 MB; drawn per block, the peaks are alike."""
    peaks = []
    for n in (20, 400):
        Y = rng.standard_normal((n, 10))
        X = np.column_stack([rng.standard_normal(n), np.ones(n)])
        permutation_test(Y, X, [1, 0], n_perm=10, random_state=0, verbose=False)
        tracemalloc.start()
        permutation_test(Y, X, [1, 0], n_perm=100_000, random_state=0, verbose=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 40 * 2**20 and peaks[1] < 3 * peaks[0], peaks


# --------------------------------------------------------------------------- Dask
@pytest.mark.slow  # two worker processes start (~10-20 s on a loaded 2-core machine)
def test_dask_worker_processes_read_the_memmap_bit_identically(on_disk, monkeypatch):
    import joblib
    from distributed import Client, LocalCluster

    Ymm, _, design = on_disk
    monkeypatch.setattr(engine, "SLAB_BYTES", 30 * 4 * 20_480)
    kw = dict(n_perm=600, random_state=9, verbose=False, two_sided=True)
    ref = permutation_test(Ymm, design, "x", n_jobs=1, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        with joblib.parallel_config(backend="dask"):
            res = permutation_test(Ymm, design, "x", n_jobs=2, **kw)
    # three slabs, split into four so that the two workers share them evenly
    assert res.info["voxel_blocks"] == 4 and res.info["n_blocks"] == 1
    _same(ref, res)
