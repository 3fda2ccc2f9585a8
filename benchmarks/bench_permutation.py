"""glmkit.permutation_test vs nilearn, side by side, on the demo cohort.

Usage::

    python benchmarks/bench_permutation.py [--out benchmarks/results/permutation.json]
                                           [--quick]

The parent prepares ``Y`` once (demo cohort, subjects with ``pseudo``, nilearn
``NiftiMasker(smoothing_fwhm=5)`` with the mask computed from the data), saves it to a
temporary folder, measures the float64 GEMM bound, then runs every case in its own
subprocess (``--worker CASE``) one after the other, so each case's peak RSS
(``ru_maxrss``) is its own. Timings are the call only (imports, data loading and numba
compilation are outside the timer: a tiny warm-up call loads the kernels first).
nilearn's ``non_parametric_inference`` receives the maps, the mask and ``smoothing_fwhm=5``
(its timing therefore includes masking and smoothing); ``permuted_ols`` receives the same
``Y`` as glmkit. Slow nilearn cases run fewer permutations and are scaled linearly to
1000 (recorded as ``n_perm_run`` and ``scaled_to``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_PERM = 1000


# ----------------------------------------------------------------------------- data
def prepare(folder: Path) -> dict:
    import nibabel as nib
    from nilearn.maskers import NiftiMasker

    from glmkit.data.datasets import load_demo

    ds = load_demo()
    keep = ds.table["pseudo"].notna().to_numpy()
    maps = [m for m, k in zip(ds.maps, keep) if k]
    pseudo = ds.table.loc[keep, "pseudo"].to_numpy(float)
    masker = NiftiMasker(smoothing_fwhm=5.0, standardize=None).fit(maps)
    Y = masker.transform(maps)
    np.save(folder / "Y.npy", Y)
    np.save(folder / "pseudo.npy", pseudo)
    nib.save(masker.mask_img_, folder / "mask.nii.gz")
    (folder / "maps.json").write_text(json.dumps(maps))
    return {"n_subjects": int(Y.shape[0]), "n_voxels": int(Y.shape[1]),
            "grid": list(masker.mask_img_.shape), "smoothing_fwhm": 5.0,
            "dataset": ds.name, "design": ["fluency (pseudo, not centred)", "intercept"]}


def gemm_bound(Y: np.ndarray, n_perm: int = N_PERM, repeats: int = 7) -> float:
    """Best time of one (n_perm x n) @ (n x V) float64 product (the max-T arithmetic)."""
    A = np.random.default_rng(0).standard_normal((n_perm, Y.shape[0]))
    R = np.ascontiguousarray(Y, dtype=np.float64)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        A @ R
        best = min(best, time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------- cases
CASES = {
    # name: (tool, kind, n_perm_run, n_jobs)
    "glmkit_maxt_1k_j1": ("glmkit", "maxt", 1000, 1),
    "glmkit_maxt_1k_j2": ("glmkit", "maxt", 1000, 2),
    "glmkit_maxt_10k_j1": ("glmkit", "maxt", 10000, 1),
    "glmkit_maxt_1k_j1_float32": ("glmkit", "maxt32", 1000, 1),
    "glmkit_cluster_1k_j1": ("glmkit", "cluster", 1000, 1),
    "glmkit_cluster_1k_j2": ("glmkit", "cluster", 1000, 2),
    "glmkit_tfce_1k_j1": ("glmkit", "tfce", 1000, 1),
    "glmkit_tfce_1k_j2": ("glmkit", "tfce", 1000, 2),
    "glmkit_signflip_1k_j1": ("glmkit", "onesample", 1000, 1),
    "glmkit_signflip_1k_j2": ("glmkit", "onesample", 1000, 2),
    "nilearn_permuted_ols_maxt_1k_j1": ("nilearn_ols", "maxt", 1000, 1),
    "nilearn_npi_overhead_j1": ("nilearn_npi", "maxt", 1, 1),
    "nilearn_npi_maxt_1k_j1": ("nilearn_npi", "maxt", 1000, 1),
    "nilearn_npi_maxt_1k_j2": ("nilearn_npi", "maxt", 1000, 2),
    "nilearn_npi_cluster_j1": ("nilearn_npi", "cluster", 100, 1),
    "nilearn_npi_tfce_j1": ("nilearn_npi", "tfce", 10, 1),
    "nilearn_npi_signflip_1k_j1": ("nilearn_npi", "onesample", 1000, 1),
}
QUICK = {k: (t, kind, max(1, n // 10), j) for k, (t, kind, n, j) in CASES.items()}


def _vm(key: str) -> float:
    """VmHWM / VmRSS of this process in MB (reset by exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(case: str, folder: Path, quick: bool) -> dict:
    warnings.simplefilter("ignore")
    tool, kind, n_perm, n_jobs = (QUICK if quick else CASES)[case]
    Y = np.load(folder / "Y.npy")
    pseudo = np.load(folder / "pseudo.npy")
    n = Y.shape[0]
    import pandas as pd

    design = pd.DataFrame({"fluency": pseudo, "intercept": np.ones(n)})
    rss_before = _vm("VmRSS")
    out = {"tool": tool, "kind": kind, "n_perm_run": n_perm, "n_jobs": n_jobs}
    if tool == "glmkit":
        import nibabel as nib

        from glmkit.stats.permutation import permutation_test

        mask = nib.load(folder / "mask.nii.gz")
        stats_ = {"maxt": ("voxel",), "maxt32": ("voxel",), "onesample": ("voxel",),
                  "cluster": ("voxel", "cluster_size", "cluster_mass"),
                  "tfce": ("voxel", "tfce")}[kind]
        if kind == "onesample":
            design, contrast = design[["intercept"]], "intercept"
        else:
            contrast = "fluency"
        kw = dict(statistics=stats_, mask_img=mask, random_state=0, verbose=False,
                  dtype="float32" if kind == "maxt32" else "float64")
        permutation_test(Y, design, contrast, n_perm=2, n_jobs=1, **kw)  # warm-up (numba)
        t0 = time.perf_counter()
        res = permutation_test(Y, design, contrast, n_perm=n_perm, n_jobs=n_jobs, **kw)
        out["seconds"] = time.perf_counter() - t0
        if n_jobs != 1:  # again, with any joblib workers already started (as in a notebook)
            out["seconds_first_call"] = out["seconds"]
            t0 = time.perf_counter()
            res = permutation_test(Y, design, contrast, n_perm=n_perm, n_jobs=n_jobs, **kw)
            out["seconds"] = time.perf_counter() - t0
        out["block_size"] = res.info["block_size"]
        out["max_logp"] = {s: float(res.logp_fwer[s].max()) for s in res.statistics}
    elif tool == "nilearn_ols":
        from nilearn.mass_univariate import permuted_ols

        t0 = time.perf_counter()
        res = permuted_ols(pseudo[:, None], Y, confounding_vars=np.ones((n, 1)),
                           model_intercept=True, n_perm=n_perm, two_sided_test=False,
                           random_state=0, n_jobs=n_jobs, verbose=0)
        out["seconds"] = time.perf_counter() - t0
        out["max_logp"] = {"voxel": float(res["logp_max_t"].max())}
    else:
        from nilearn.glm.second_level import non_parametric_inference

        maps = json.loads((folder / "maps.json").read_text())
        mask = str(folder / "mask.nii.gz")
        kw = {}
        if kind == "cluster":
            kw["threshold"] = 0.001
        if kind == "tfce":
            kw["tfce"] = True
        if kind == "onesample":
            dm, contrast = design[["intercept"]], "intercept"
        else:
            dm, contrast = design, "fluency"
        t0 = time.perf_counter()
        res = non_parametric_inference(maps, design_matrix=dm, second_level_contrast=contrast,
                                       mask=mask, smoothing_fwhm=5.0, n_perm=n_perm,
                                       two_sided_test=False, random_state=0, n_jobs=n_jobs,
                                       model_intercept=True, **kw)
        out["seconds"] = time.perf_counter() - t0
        if isinstance(res, dict):
            out["max_logp"] = {k: float(np.asarray(v.get_fdata()).max())
                               for k, v in res.items() if k.startswith("logp")}
        else:
            out["max_logp"] = {"voxel": float(res.get_fdata().max())}
    out["peak_rss_mb"] = _vm("VmHWM")
    out["rss_before_call_mb"] = rss_before
    if n_perm > 1:  # the 1-permutation run only measures nilearn's fixed costs
        out["seconds_per_1000"] = out["seconds"] * 1000 / n_perm
    return out


# ----------------------------------------------------------------------------- machine
def machine() -> dict:
    from threadpoolctl import threadpool_info

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        ram_gb = int(mem) / 2**20
    except OSError:
        ram_gb = None
    import joblib
    import nilearn
    import numba
    import scipy

    import glmkit

    return {
        "cpu": cpu, "logical_cores": os.cpu_count(), "ram_gb": ram_gb,
        "platform": platform.platform(), "python": platform.python_version(),
        "blas": [{k: d.get(k) for k in ("internal_api", "version", "num_threads",
                                        "threading_layer", "architecture")}
                 for d in threadpool_info()],
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                     "nilearn": nilearn.__version__, "numba": numba.__version__,
                     "joblib": joblib.__version__, "glmkit": glmkit.__version__},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "permutation.json"))
    ap.add_argument("--quick", action="store_true", help="10x fewer permutations (smoke run)")
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data), args.quick)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        data = prepare(folder)
        data["prepare_seconds"] = time.perf_counter() - t0
        Y = np.load(folder / "Y.npy")
        bound = gemm_bound(Y)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            bound_1t = gemm_bound(Y)
        results = {}
        for case in args.cases or CASES:
            load = os.getloadavg()
            cmd = [sys.executable, __file__, "--worker", case, "--data", tmp]
            if args.quick:
                cmd.append("--quick")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                results[case] = {"error": proc.stderr[-2000:]}
                print(case, "FAILED", proc.stderr[-500:], file=sys.stderr)
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["loadavg_before"] = load
            res["loadavg_after"] = os.getloadavg()
            results[case] = res
            print(f"{case:34s} {res['seconds']:8.2f} s  peak RSS {res['peak_rss_mb']:.0f} MB",
                  file=sys.stderr)
        bound2 = gemm_bound(Y)

    # nilearn cases run with fewer permutations: fixed part (masking, smoothing, fit,
    # observed statistics) taken from the 1-permutation run, the rest scaled linearly
    over = results.get("nilearn_npi_overhead_j1", {}).get("seconds")
    for case, res in results.items():
        n_run = res.get("n_perm_run")
        if "seconds" in res and res["tool"] == "nilearn_npi" and n_run not in (1, N_PERM):
            fixed = min(over, res["seconds"]) if over is not None else 0.0
            res["seconds_per_1000"] = fixed + (res["seconds"] - fixed) * N_PERM / n_run
            res["scaled_to"] = N_PERM
            res["scaling"] = "overhead(1 perm run) + (seconds - overhead) * 1000 / n_perm_run"

    def per1k(c):
        return results.get(c, {}).get("seconds_per_1000")

    ratios = {}
    pairs = {
        "maxt_vs_npi_j1": ("nilearn_npi_maxt_1k_j1", "glmkit_maxt_1k_j1"),
        "maxt_vs_npi_j2": ("nilearn_npi_maxt_1k_j2", "glmkit_maxt_1k_j2"),
        "maxt_vs_permuted_ols_j1": ("nilearn_permuted_ols_maxt_1k_j1", "glmkit_maxt_1k_j1"),
        "cluster_vs_npi_j1": ("nilearn_npi_cluster_j1", "glmkit_cluster_1k_j1"),
        "tfce_vs_npi_j1": ("nilearn_npi_tfce_j1", "glmkit_tfce_1k_j1"),
        "signflip_vs_npi_j1": ("nilearn_npi_signflip_1k_j1", "glmkit_signflip_1k_j1"),
    }
    for key, (ref, mine) in pairs.items():
        if per1k(ref) and per1k(mine):
            ratios[key] = per1k(ref) / per1k(mine)
    gemm = min(bound, bound2)
    if per1k("glmkit_maxt_1k_j1"):
        ratios["maxt_j1_over_gemm_bound"] = per1k("glmkit_maxt_1k_j1") / gemm
        ratios["maxt_j1_over_gemm_bound_1thread"] = per1k("glmkit_maxt_1k_j1") / bound_1t
    if per1k("glmkit_maxt_1k_j2"):
        ratios["maxt_j2_over_gemm_bound"] = per1k("glmkit_maxt_1k_j2") / gemm
    if "glmkit_maxt_10k_j1" in results and "glmkit_maxt_1k_j1" in results:
        ratios["maxt_peak_rss_10k_over_1k"] = (results["glmkit_maxt_10k_j1"]["peak_rss_mb"]
                                               / results["glmkit_maxt_1k_j1"]["peak_rss_mb"])
    report = {
        "benchmark": "permutation", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick, "p_convention": "(1 + #{perm >= observed}) / (1 + n_perm)", "machine": machine(), "data": data,
        "gemm_bound_float64_seconds_per_1000": gemm,
        "gemm_bound_float64_1thread_seconds_per_1000": bound_1t,
        "gemm_bound_note": "best of 7: (1000 x n_subjects) @ (n_subjects x n_voxels), float64, "
                           "all BLAS threads (both cores), measured before and after the cases",
        "notes": [
            "seconds = wall time of the call only; glmkit n_jobs=2 (joblib threads): second "
            "call (first one in seconds_first_call); glmkit runs BLAS single-threaded inside "
            "every block so that n_jobs never changes a bit of the result; nilearn cluster (100 permutations) and TFCE (10) are scaled to "
            "1000: fixed part from the 1-permutation run + the rest x 1000 / n_perm_run.",
            "nilearn non_parametric_inference includes masking + 5 mm smoothing of the 89 maps "
            "and its OLS fit; permuted_ols and glmkit get the same prepared Y.",
            "glmkit scheme: default (freedman_lane, nilearn's scheme); nilearn 0.14 "
            "sign-flips for this design (intercept among confounds), glmkit permutes rows "
            "(sign-flip rows are the one-sample case).",
            "2 shared cores: other users' jobs were running; see loadavg_before/after.",
        ],
        "cases": results, "ratios": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(ratios, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
