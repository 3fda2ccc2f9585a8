"""glmkit at scale: 2 mm whole-brain cohorts, thousands of subjects, millions of permutations.

Usage::

    python benchmarks/bench_scale.py [--out benchmarks/results/scale.json] [--groups ...]

Groups of cases (each case runs in its own subprocess, one after the other, so its peak
memory, VmHWM, is its own):

``stream``
    1,000 / 2,000 / 5,000 simulated subjects x 235,375 voxels (nilearn's 2 mm MNI152 brain
    mask), float32 ``.npy`` files opened with ``np.load(mmap_mode="r")``: the GLM (the
    observed t) and 1000-permutation max-T, ``dtype="float32"``, ``n_jobs=2``.
``subjects`` / ``voxels``
    Time against the number of subjects (30 to 1000, 235,375 voxels) and of voxels (10,000 to
    235,375, 100 subjects), glmkit (1000 permutations, float64, n_jobs=2) and nilearn's
    ``permuted_ols`` (fewer permutations, scaled linearly to 1000), in-memory data.
``tfce``
    Whole-brain 2 mm TFCE: 30 and 100 subjects of smooth simulated maps (6 mm FWHM) with a
    planted effect, 1000 permutations of voxel + TFCE, n_jobs=2; the TFCE kernel against the
    first one (``tests/tfce_reference.py``) on 8 maps of the cohort: milliseconds per map
    and the largest relative difference; nilearn's ``permuted_ols(tfce=True)`` with 5
    permutations, scaled.
``nperm``
    Memory against the number of permutations: 30 subjects x 1,000 voxels, 10^4 to 10^7
    permutations.

Data are simulated from fixed seeds into a temporary folder (about 8 GB for ``stream``);
only the JSON is kept. ``benchmarks/plot_results.py`` draws the PNG plots from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_permutation import _vm, machine  # noqa: E402

N_PERM = 1000
CASES = {
    # name: (group, tool, parameter, n_perm_run)
    **{f"stream_{n}": ("stream", "glmkit", n, N_PERM) for n in (1000, 2000, 5000)},
    **{f"subjects_glmkit_{n}": ("subjects", "glmkit", n, N_PERM) for n in (30, 100, 300, 1000)},
    **{f"subjects_nilearn_{n}": ("subjects", "nilearn", n, 20) for n in (30, 100, 300, 1000)},
    **{f"voxels_glmkit_{v}": ("voxels", "glmkit", v, N_PERM)
       for v in (10_000, 30_000, 100_000, 235_375)},
    **{f"voxels_nilearn_{v}": ("voxels", "nilearn", v, 50)
       for v in (10_000, 30_000, 100_000, 235_375)},
    **{f"tfce_glmkit_{n}": ("tfce", "glmkit", n, N_PERM) for n in (30, 100)},
    "tfce_kernels_30": ("tfce", "kernels", 30, 8),
    "tfce_nilearn_30": ("tfce", "nilearn", 30, 5),
    **{f"nperm_{k}": ("nperm", "glmkit", 10**k, 10**k) for k in (4, 5, 6, 7)},
}


# ----------------------------------------------------------------------------- data
def brain_mask() -> np.ndarray:
    from nilearn.datasets import load_mni152_brain_mask

    return np.asarray(load_mni152_brain_mask(resolution=2).dataobj) > 0


def white_cohort(path: Path, n: int, v: int, seed: int) -> Path:
    """``n`` subjects x ``v`` voxels of N(0, 1) float32 with an effect of 0.3 SD per unit
    of the covariate in the first 1000 voxels, written row block by row block."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    Y = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, v))
    for r in range(0, n, 250):
        block = rng.standard_normal((min(250, n - r), v), dtype=np.float32)
        block[:, :1000] += (0.3 * x[r:r + 250, None]).astype(np.float32)
        Y[r:r + block.shape[0]] = block
    Y.flush()
    del Y
    np.save(path.with_suffix(".x.npy"), x)
    return path


def smooth_cohort(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` subjects of smooth noise (6 mm FWHM on the 2 mm grid, unit variance) plus 0.5
    SD per unit of the covariate in a 10 mm sphere, masked."""
    from scipy import ndimage

    mask = brain_mask()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    sphere = (np.indices(mask.shape) - np.array([60, 50, 45])[:, None, None, None])
    sphere = (sphere**2).sum(0) <= 25
    Y = np.empty((n, int(mask.sum())), np.float32)
    for i in range(n):
        vol = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 6.0 / 2 / 2.3548)
        vol /= vol[mask].std()
        Y[i] = (vol + 0.5 * x[i] * sphere)[mask]
    np.save(folder / f"smooth_{n}.npy", Y)
    np.save(folder / f"smooth_{n}.x.npy", x)
    np.save(folder / "mask.npy", mask)
    return folder / f"smooth_{n}.npy"


def prepare(group: str, folder: Path) -> dict:
    t0 = time.perf_counter()
    if group == "stream":
        for n in (1000, 2000, 5000):
            white_cohort(folder / f"white_{n}.npy", n, 235_375, seed=n)
    elif group in ("subjects", "voxels"):
        white_cohort(folder / "white_1000.npy", 1000, 235_375, seed=1)
    elif group == "tfce":
        smooth_cohort(folder, 100)
    return {"prepare_seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- cases
def _design(x):
    return np.column_stack([x, np.ones(x.size)])


def _timed(fn) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "result": out}


def _glmkit(Y, x, n_perm, **kw) -> dict:
    from glmkit.stats.permutation import permutation_test

    X = _design(x)
    permutation_test(Y, X, [1, 0], n_perm=2, random_state=0, verbose=False, **kw)  # warm-up
    run = _timed(lambda: permutation_test(Y, X, [1, 0], n_perm=n_perm, random_state=0,
                                          verbose=False, **kw))
    res = run.pop("result")
    run["info"] = {k: v for k, v in res.info.items() if not isinstance(v, dict)}
    run["max_logp"] = {s: float(res.logp_fwer[s].max()) for s in res.statistics}
    return run


def _nilearn(Y, x, n_perm, **kw) -> dict:
    from nilearn.mass_univariate import permuted_ols

    run = _timed(lambda: permuted_ols(x[:, None], np.asarray(Y, dtype=np.float64),
                                      confounding_vars=None, model_intercept=True,
                                      n_perm=n_perm, two_sided_test=False, random_state=0,
                                      n_jobs=1, verbose=0, **kw))
    res = run.pop("result")
    run["max_logp"] = float(res["logp_max_t"].max())
    return run


def _kernels(Y, x, mask, n_maps) -> dict:
    """TFCE of n_maps permuted t maps: this kernel and the first, ms per map, max rel diff."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import tfce_reference

    from glmkit.stats import cluster

    nbr = cluster.neighbors(mask, 6)
    rng = np.random.default_rng(1)
    R = Y.astype(np.float64) - Y.mean(0)
    R /= np.linalg.norm(R, axis=0)
    maps = []
    for _ in range(n_maps):
        xp = rng.permutation(x) - x.mean()
        r = xp @ R / np.linalg.norm(xp)
        maps.append(r * np.sqrt((x.size - 2) / (1 - r * r)))
    maps = np.array(maps)
    out = {}
    for name, kernel in (("glmkit", cluster.tfce_max), ("first_kernel", tfce_reference.tfce_max)):
        for two in (False, True):
            m = np.empty(n_maps)
            kernel(maps[:1], nbr, two, 0.5, 2.0, 0.0, m[:1])  # compile/load
            run = _timed(lambda: kernel(maps, nbr, two, 0.5, 2.0, 0.0, m))
            side = "two_sided" if two else "one_sided"
            out[f"{name}_{side}_ms_per_map"] = run["seconds"] / n_maps * 1000
            out[f"{name}_{side}_cpu_ms_per_map"] = run["cpu_seconds"] / n_maps * 1000
            out[f"{name}_{side}_max"] = m.tolist()
    for side in ("one_sided", "two_sided"):
        a, b = np.array(out[f"glmkit_{side}_max"]), np.array(out[f"first_kernel_{side}_max"])
        out[f"max_rel_diff_{side}"] = float(np.max(np.abs(a - b) / np.abs(b)))
    return out


def worker(case: str, folder: Path) -> dict:
    warnings.simplefilter("ignore")
    group, tool, param, n_perm = CASES[case]
    out = {"group": group, "tool": tool, "param": param, "n_perm_run": n_perm}
    if group == "stream":
        Y = np.load(folder / f"white_{param}.npy", mmap_mode="r")
        x = np.load(folder / f"white_{param}.x.npy")
        out["rss_before_call_mb"] = _vm("VmRSS")
        out.update(_glmkit(Y, x, n_perm, dtype="float32", n_jobs=2))
        out["data_gb"] = Y.nbytes / 1e9
    elif group in ("subjects", "voxels"):
        n, v = (param, 235_375) if group == "subjects" else (100, param)
        Y = np.load(folder / "white_1000.npy", mmap_mode="r")
        x = np.load(folder / "white_1000.x.npy")[:n]
        Y = np.array(Y[:n, :v])  # in memory, as nilearn needs
        out["rss_before_call_mb"] = _vm("VmRSS")
        out.update(_glmkit(Y, x, n_perm, n_jobs=2) if tool == "glmkit"
                   else _nilearn(Y, x, n_perm))
    elif group == "tfce":
        Y = np.load(folder / "smooth_100.npy")[:param]
        x = np.load(folder / "smooth_100.x.npy")[:param]
        mask = np.load(folder / "mask.npy")
        if tool == "glmkit":
            out.update(_glmkit(Y, x, n_perm, n_jobs=2, statistics=("voxel", "tfce"),
                               mask_img=mask))
        elif tool == "kernels":
            out.update(_kernels(Y, x, mask, n_perm))
        else:
            import nibabel as nib
            from nilearn.maskers import NiftiMasker

            masker = NiftiMasker(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))).fit()
            out.update(_nilearn(Y, x, n_perm, masker=masker, tfce=True))
    else:  # nperm
        rng = np.random.default_rng(0)
        Y = rng.standard_normal((30, 1000))
        out.update(_glmkit(Y, rng.standard_normal(30), n_perm))
    out["peak_rss_mb"] = _vm("VmHWM")
    out["seconds_per_1000"] = out["seconds"] * 1000 / n_perm if tool != "kernels" else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    ap.add_argument("--groups", nargs="*", default=["stream", "subjects", "voxels", "tfce",
                                                     "nperm"])
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data))))
        return 0
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"cases": {}, "data": {}}
    report.update({"benchmark": "scale", "machine": machine(), "n_perm": N_PERM})
    for group in args.groups:
        cases = [c for c, spec in CASES.items() if spec[0] == group
                 and (args.cases is None or c in args.cases)]
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            report["data"][group] = prepare(group, Path(tmp))
            for case in cases:
                load = os.getloadavg()
                cmd = [sys.executable, __file__, "--worker", case, "--data", tmp]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode:
                    report["cases"][case] = {"error": proc.stderr[-2000:]}
                    print(case, "FAILED", proc.stderr[-800:], file=sys.stderr)
                    continue
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                res.update(loadavg_before=load, loadavg_after=os.getloadavg(),
                           date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                report["cases"][case] = res
                print(f"{case:24s} {res.get('seconds', float('nan')):8.2f} s  cpu "
                      f"{res.get('cpu_seconds', float('nan')):8.2f} s  peak RSS "
                      f"{res['peak_rss_mb']:.0f} MB  load {load[0]:.1f}", file=sys.stderr)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
