"""glmkit.preflight: the peak memory of a run from shapes, checked before any map data is read."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glmkit import cli, pipeline, preflight
from glmkit.errors import ResourceError
from glmkit.settings import RunSettings

SHAPE = (7, 8, 9)
N = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    rng = np.random.default_rng(0)
    for i in range(N):
        nib.save(nib.Nifti1Image(rng.standard_normal(SHAPE) + 2.0, np.diag([3.0] * 3 + [1])),
                 root / f"sub-{i}.nii.gz")  # float64 on disk
    pd.DataFrame({"subject": [f"sub-{i}" for i in range(N)],
                  "age": np.arange(N) * 3.0}).to_csv(root / "t.tsv", sep="\t", index=False)
    return root


def _settings(folder, **changes):
    return RunSettings(**{"dataset": str(folder), "table": str(folder / "t.tsv"),
                          "covariates": "age", "contrast": "age", "smoothing_fwhm": None,
                          **changes})


def test_estimate_is_the_documented_model():
    n, v, m, perms = 40, 10**5, 3 * 10**4, 1000
    e = preflight.estimate_memory(n_maps=n, n_voxels=v, n_mask_voxels=m, itemsize=2,
                                  n_perm=perms, n_statistics=2, n_jobs=3)
    block = 3 * preflight._block_bytes() * 3
    assert e.parts == {"maps": n * v * 2, "stack": n * v * 8, "Y": n * m * 8,
                       "draws": perms * n * 4, "nulls": (perms + 1) * 2 * 8 + m * 2 * 8,
                       "blocks": block}
    assert e.fit_peak == n * v * 10 + n * m * 8
    assert e.peak == max(e.fit_peak, n * m * 8 + perms * n * 4 + e.parts["nulls"] + block)
    no_perm = preflight.estimate_memory(n_maps=n, n_voxels=v, n_perm=0)
    assert no_perm.parts["draws"] == no_perm.parts["blocks"] == 0


def test_a_run_that_fits_passes_and_one_that_does_not_is_refused(folder):
    dataset = pipeline.load_data(_settings(folder))
    estimate = preflight.check_memory(dataset, _settings(folder), available=10**12)
    assert (estimate.n_maps, estimate.n_voxels, estimate.itemsize) == (N, int(np.prod(SHAPE)),
                                                                        8)
    with pytest.raises(ResourceError) as raised:
        preflight.check_memory(dataset, _settings(folder, n_perm=10**9), available=10**9)
    message = str(raised.value)
    assert "needs about" in message and "is available" in message
    fitting = int(message.split("n_perm=")[-1].split()[0])
    assert 0 < fitting < 10**9  # a number of permutations that would fit
    assert preflight.estimate_memory(
        n_maps=N, n_voxels=int(np.prod(SHAPE)), itemsize=8, n_perm=fitting
    ).peak <= preflight.HEADROOM * 10**9
    assert "mask='mni152'" in message and "float32 (they are 64-bit on disk)" in message


def test_huge_n_perm_is_refused_before_qc_reads_a_map(folder, monkeypatch, capsys):
    """n_perm 10^12 passes validation; the preflight refuses it after reading one header, and
    the command line says it with flags."""
    read = []
    original = nib.load

    def load(path, *a, **k):
        read.append(str(path))
        return original(path, *a, **k)

    dataset = pipeline.load_data(_settings(folder))
    monkeypatch.setattr(nib, "load", load)
    with pytest.raises(ResourceError, match=r"n_perm=1000000000000: .*fewer permutations, "
                                            r"n_perm=\d+ or less"):
        pipeline.quality_control(dataset, _settings(folder, n_perm=10**12))
    assert read == [dataset.maps[0]]  # the first map's header, for its grid and type
    code = cli.main(["summary", "--dataset", str(folder), "--table", str(folder / "t.tsv"),
                     "--covariates", "age", "--contrast", "age", "--n-perm", str(10**12)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "fewer permutations, --n-perm" in err and "n_perm=" not in err


def test_running_out_of_memory_in_a_stage_is_a_resource_error(folder, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 43.7 TiB")

    monkeypatch.setattr("glmkit.stats.glm.fit_second_level", no_memory)
    with pytest.raises(ResourceError, match=r"stage fit ran out of memory .*43.7 TiB.*"
                                            r"mask='mni152'.*n_perm=\.\.\."):
        pipeline.run_analysis(_settings(folder, statistics=""))


@pytest.mark.slow
@pytest.mark.parametrize("sign_flip", [False, True])
def test_memory_is_flat_in_n_perm(monkeypatch, sign_flip):
    """Permutations are drawn block by block: with n_perm = 10^6 on a tiny problem no block of
    the stream is larger than with 10^5, and the traced peak grows only by the null
    distribution (8 bytes a permutation), far below the 10^6 x n indices drawn up front."""
    import tracemalloc

    from glmkit.stats import resample
    from glmkit.stats.permutation import permutation_test

    n = 100
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((n, 4))
    X = np.ones((n, 1)) if sign_flip else np.column_stack([rng.standard_normal(n), np.ones(n)])
    contrast = [1.0] if sign_flip else [1.0, 0.0]
    drawn: list[int] = []
    original = resample.draw

    def spy(random_state, start, stop, *args):
        drawn.append(stop - start)
        return original(random_state, start, stop, *args)

    monkeypatch.setattr(resample, "draw", spy)
    permutation_test(Y, X, contrast, n_perm=99, random_state=0, verbose=False)  # warm up
    peaks, largest = {}, {}
    for n_perm in (10**4, 10**5, 10**6):
        drawn.clear()
        tracemalloc.start()
        result = permutation_test(Y, X, contrast, n_perm=n_perm, random_state=0,
                                  verbose=False)
        peaks[n_perm] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert sum(drawn) == n_perm and result.null_max["voxel"].size == n_perm + 1
        largest[n_perm] = max(drawn)
    # the block drawn at once is capped by the problem's size, not by n_perm
    assert largest[10**6] < 2 * largest[10**5] < 10**5, largest
    all_indices = 10**6 * n * (1 if sign_flip else 4)  # int8 signs or int32 permutations
    nulls = 8 * 10**6
    assert peaks[10**6] - peaks[10**4] < 3 * nulls + 2 * 2**20, peaks
    assert peaks[10**6] < all_indices / 2 + peaks[10**4], peaks
