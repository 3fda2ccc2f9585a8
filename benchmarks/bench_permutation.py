"""glmkit.permutation_test vs nilearn, side by side, on the demo cohort.

Usage::

    python benchmarks/bench_permutation.py [--out benchmarks/results/permutation.json]
                                           [--quick]

The parent prepares ``Y`` once (demo cohort, subjects with ``pseudo``, nilearn
``NiftiMasker(smoothing_fwhm=5)`` with the mask computed from the data), saves it to a
temporary folder, measures the GEMM bounds (float64 and float32, one thread and all), then
runs every case in its own
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
    np.save(folder / "age.npy", ds.table.loc[keep, "age"].to_numpy(float))  # NaN: unknown
    nib.save(masker.mask_img_, folder / "mask.nii.gz")
    (folder / "maps.json").write_text(json.dumps(maps))
    return {"n_subjects": int(Y.shape[0]), "n_voxels": int(Y.shape[1]),
            "grid": list(masker.mask_img_.shape), "smoothing_fwhm": 5.0,
            "dataset": ds.name, "design": ["fluency (pseudo, not centred)", "intercept"]}


def gemm_bound(Y: np.ndarray, dtype: str = "float64", out: bool = True, n_perm: int = N_PERM,
               repeats: int = 7) -> dict:
    """Best time of one ``(n_perm x n) @ (n x V)`` product (the max-T arithmetic), wall and
    process CPU. ``out``: into a preallocated output (BLAS alone); else ``A @ R`` as numpy
    users write it (the 540 MB output is allocated and page-faulted on every call)."""
    A = np.random.default_rng(0).standard_normal((n_perm, Y.shape[0])).astype(dtype)
    R = np.ascontiguousarray(Y, dtype=dtype)
    C = np.empty((n_perm, Y.shape[1]), dtype=dtype) if out else None
    best, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        if out:
            np.matmul(A, R, out=C)
        else:
            A @ R
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {"seconds": best, "cpu_seconds": best_cpu}


def gemm_bounds(Y: np.ndarray) -> dict:
    """Every bound: float64/float32, one BLAS thread / all, preallocated output or not."""
    from threadpoolctl import threadpool_limits

    bounds = {}
    for dtype in ("float64", "float32"):
        for out in (True, False):
            key = f"{dtype}_{'out' if out else 'alloc'}"
            bounds[f"{key}_all_threads"] = gemm_bound(Y, dtype, out)
            with threadpool_limits(1, user_api="blas"):
                bounds[f"{key}_1thread"] = gemm_bound(Y, dtype, out)
    return bounds


# ----------------------------------------------------------------------------- cases
CASES = {
    # name: (tool, kind, n_perm_run, n_jobs)
    "glmkit_maxt_1k_j1": ("glmkit", "maxt", 1000, 1),
    "glmkit_maxt_1k_j2": ("glmkit", "maxt", 1000, 2),
    "glmkit_maxt_10k_j1": ("glmkit", "maxt", 10000, 1),
    "glmkit_maxt_10k_j2": ("glmkit", "maxt", 10000, 2),
    "glmkit_maxt_1k_j1_float32": ("glmkit", "maxt32", 1000, 1),
    "glmkit_maxt_1k_j2_float32": ("glmkit", "maxt32", 1000, 2),
    "glmkit_maxt_10k_j1_float32": ("glmkit", "maxt32", 10000, 1),
    "glmkit_maxt_10k_j2_float32": ("glmkit", "maxt32", 10000, 2),
    "glmkit_float32_vs_float64": ("glmkit", "precision", 1000, 1),
    "glmkit_cluster_1k_j1": ("glmkit", "cluster", 1000, 1),
    "glmkit_cluster_1k_j2": ("glmkit", "cluster", 1000, 2),
    "glmkit_tfce_1k_j1": ("glmkit", "tfce", 1000, 1),
    "glmkit_tfce_1k_j2": ("glmkit", "tfce", 1000, 2),
    "glmkit_signflip_1k_j1": ("glmkit", "onesample", 1000, 1),
    "glmkit_signflip_1k_j2": ("glmkit", "onesample", 1000, 2),
    "glmkit_ancova_1k_j1": ("glmkit", "ancova", 1000, 1),
    "glmkit_ancova_1k_j2": ("glmkit", "ancova", 1000, 2),
    "glmkit_ancova_1k_j1_float64_gemm": ("glmkit", "ancova_f64", 1000, 1),
    "glmkit_ancova_1k_j2_float64_gemm": ("glmkit", "ancova_f64", 1000, 2),
    "glmkit_ancova_1k_j1_float32": ("glmkit", "ancova32", 1000, 1),
    "nilearn_permuted_ols_maxt_1k_j1": ("nilearn_ols", "maxt", 1000, 1),
    "nilearn_permuted_ols_ancova_1k_j1": ("nilearn_ols", "ancova", 1000, 1),
    "nilearn_npi_overhead_j1": ("nilearn_npi", "maxt", 1, 1),
    "nilearn_npi_maxt_1k_j1": ("nilearn_npi", "maxt", 1000, 1),
    "nilearn_npi_maxt_1k_j2": ("nilearn_npi", "maxt", 1000, 2),
    "nilearn_npi_cluster_j1": ("nilearn_npi", "cluster", 100, 1),
    "nilearn_npi_tfce_j1": ("nilearn_npi", "tfce", 10, 1),
    "nilearn_npi_signflip_1k_j1": ("nilearn_npi", "onesample", 1000, 1),
}
#: glmkit cases are timed this many times (best kept: the machine is shared)
REPEATS = 3
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
    if kind.startswith("ancova"):  # fluency adjusting for age: subjects whose age is known
        age = np.load(folder / "age.npy")
        known = np.isfinite(age)
        Y, pseudo, n = Y[known], pseudo[known], int(known.sum())
        design = pd.DataFrame({"fluency": pseudo, "age": age[known], "intercept": np.ones(n)})
    rss_before = _vm("VmRSS")
    out = {"tool": tool, "kind": kind, "n_perm_run": n_perm, "n_jobs": n_jobs}
    if tool == "glmkit":
        out.update(_glmkit_case(kind, n_perm, n_jobs, folder, Y, design))
    elif tool == "nilearn_ols":
        from nilearn.mass_univariate import permuted_ols

        t0 = time.perf_counter()
        conf = design[["age"]].to_numpy() if kind == "ancova" else np.ones((n, 1))
        res = permuted_ols(pseudo[:, None], Y, confounding_vars=conf,
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
        if "cpu_seconds" in out:
            out["cpu_seconds_per_1000"] = out["cpu_seconds"] * 1000 / n_perm
    return out


def _glmkit_case(kind, n_perm, n_jobs, folder, Y, design) -> dict:
    """Best of REPEATS calls (wall and process CPU), after a warm-up that loads the kernels
    (and starts the joblib workers, as in a notebook's second call)."""
    import nibabel as nib

    from glmkit.stats.permutation import permutation_test

    mask = nib.load(folder / "mask.nii.gz")
    stats_ = {"cluster": ("voxel", "cluster_size", "cluster_mass"),
              "tfce": ("voxel", "tfce")}.get(kind, ("voxel",))
    if kind == "onesample":
        design, contrast = design[["intercept"]], "intercept"
    else:
        contrast = "fluency"
    kw = dict(statistics=stats_, mask_img=mask, random_state=0, verbose=False,
              dtype="float32" if kind in ("maxt32", "ancova32") else "float64")
    if kind == "ancova_f64":  # float64 GEMMs throughout (the path before the mixed one)
        from glmkit.stats import engine

        engine.MIXED_STAT_MAX_N = 0
    if kind == "precision":  # float32 against float64, same permutations
        a = permutation_test(Y, design, contrast, n_perm=n_perm, **kw)
        b = permutation_test(Y, design, contrast, n_perm=n_perm, **{**kw, "dtype": "float32"})
        rel = np.abs(b.null_max["voxel"] - a.null_max["voxel"]) / np.abs(a.null_max["voxel"])
        return {"seconds": float("nan"), "precision": {
            "max_rel_diff_null_max": float(rel.max()),
            "max_abs_diff_logp_fwer": float(np.abs(b.logp_fwer["voxel"]
                                                   - a.logp_fwer["voxel"]).max()),
            "max_abs_diff_logp_uncorrected": float(np.abs(b.logp_uncorrected
                                                          - a.logp_uncorrected).max()),
            "voxels_whose_uncorrected_p_differs": int(np.sum(b.logp_uncorrected
                                                             != a.logp_uncorrected)),
            "max_abs_diff_t": float(np.abs(b.t - a.t).max())}}
    permutation_test(Y, design, contrast, n_perm=2, n_jobs=n_jobs, **kw)  # warm-up
    best, best_cpu = np.inf, np.inf
    for _ in range(REPEATS if n_perm <= 10000 or kind != "tfce" else 1):
        t0, c0 = time.perf_counter(), time.process_time()
        res = permutation_test(Y, design, contrast, n_perm=n_perm, n_jobs=n_jobs, **kw)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {"seconds": best, "cpu_seconds": best_cpu, "repeats": REPEATS,
            "block_size": res.info["block_size"], "n_blocks": res.info["n_blocks"],
            "gemm": res.info.get("gemm"),
            "max_logp": {s: float(res.logp_fwer[s].max()) for s in res.statistics}}


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


def _bound_ratios(results: dict, bound: dict) -> dict:
    """glmkit's max-T time over the GEMM bound of the same precision and core count (wall
    over wall; CPU over CPU with one core, which the load of other users inflates less).
    float64 cases whose GEMMs ran in float32 (re-checked in float64: ``gemm`` in the case)
    are also given over the float32 bound (``..._over_float32_bound_...``), the arithmetic
    they actually did. ANCOVA (one confound) does two products' arithmetic, one row of the
    tested regressor and one of the confound per permutation: its ratios are over twice
    the bound (``..._over_2x_...``)."""
    ratios = {}
    for case, res in results.items():
        if not case.startswith(("glmkit_maxt", "glmkit_ancova")) or "seconds_per_1000" not in res:
            continue
        rows = 2 if case.startswith("glmkit_ancova") else 1
        dtype = "float32" if case.endswith("float32") else "float64"
        threads = "1thread" if res["n_jobs"] == 1 else "all_threads"
        against = [(dtype, "")]
        if dtype == "float64" and str(res.get("gemm", "")).startswith("float32"):
            against.append(("float32", "float32_"))
        for bdtype, label in against:
            for kind in ("out", "alloc"):
                b = bound[f"{bdtype}_{kind}_{threads}"]
                key = f"{case}_over_{'2x_' if rows == 2 else ''}{label}bound_{kind}"
                ratios[key] = res["seconds_per_1000"] / (rows * b["seconds"])
                if res["n_jobs"] == 1:
                    ratios[f"{key}_cpu"] = (res["cpu_seconds_per_1000"]
                                            / (rows * b["cpu_seconds"]))
    return ratios


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
        bounds = [gemm_bounds(Y)]
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
            print(f"{case:34s} {res['seconds']:8.2f} s  peak RSS {res['peak_rss_mb']:.0f} MB"
                  f"  load {load[0]:.1f}", file=sys.stderr)
        bounds.append(gemm_bounds(Y))
    bound = {k: {m: min(b[k][m] for b in bounds) for m in ("seconds", "cpu_seconds")}
             for k in bounds[0]}

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
        "ancova_vs_permuted_ols_j1": ("nilearn_permuted_ols_ancova_1k_j1",
                                      "glmkit_ancova_1k_j1"),
        "ancova_float64_gemm_over_mixed_j1": ("glmkit_ancova_1k_j1_float64_gemm",
                                              "glmkit_ancova_1k_j1"),
        "ancova_float64_gemm_over_mixed_j2": ("glmkit_ancova_1k_j2_float64_gemm",
                                              "glmkit_ancova_1k_j2"),
        "cluster_vs_npi_j1": ("nilearn_npi_cluster_j1", "glmkit_cluster_1k_j1"),
        "tfce_vs_npi_j1": ("nilearn_npi_tfce_j1", "glmkit_tfce_1k_j1"),
        "signflip_vs_npi_j1": ("nilearn_npi_signflip_1k_j1", "glmkit_signflip_1k_j1"),
    }
    for key, (ref, mine) in pairs.items():
        if per1k(ref) and per1k(mine):
            ratios[key] = per1k(ref) / per1k(mine)
    ratios.update(_bound_ratios(results, bound))
    if "glmkit_maxt_10k_j1" in results and "glmkit_maxt_1k_j1" in results:
        ratios["maxt_peak_rss_10k_over_1k"] = (results["glmkit_maxt_10k_j1"]["peak_rss_mb"]
                                               / results["glmkit_maxt_1k_j1"]["peak_rss_mb"])
    report = {
        "benchmark": "permutation", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick, "p_convention": "(1 + #{perm >= observed}) / (1 + n_perm)", "machine": machine(), "data": data,
        "gemm_bounds_seconds_per_1000": bound,
        "gemm_bound_note": "best of 7 (and of the runs before and after the cases): one "
                           "(1000 x n_subjects) @ (n_subjects x n_voxels) product, float64 or "
                           "float32, with one BLAS thread or all (both cores), into a "
                           "preallocated output ('out': BLAS alone) or allocated by numpy "
                           "('alloc': A @ R as written, 540 MB page-faulted per call; the "
                           "bound of the run of 2026-11-26); wall and process CPU seconds",
        "notes": [
            "seconds = wall time of the call only, best of 3 for glmkit after a warm-up call "
            "(cpu_seconds: process CPU time of the best call); glmkit runs BLAS "
            "single-threaded inside every block so that n_jobs never changes a bit of the "
            "result; nilearn cluster (100 permutations) and TFCE (10) are scaled to 1000: "
            "fixed part from the 1-permutation run + the rest x 1000 / n_perm_run.",
            "glmkit float64 max-T (the default) runs its GEMMs in float32 and recomputes in "
            "float64 every value within the float32 error bound of a count's threshold or a "
            "running maximum (cases' 'gemm'): its counts and null maxima are float64's; its "
            "ratios are given over the float64 bound (the target) and over the float32 "
            "bound (the arithmetic it did).",
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
