"""Time 1000 permutations of each design researchers run, on the demo cohort.

One-sample, two groups (sex, adjusting for fluency), ANCOVA (fluency adjusting for age), an F
test (fluency or age) and a paired design (post - pre: 44 pairs of the demo's maps), each
fitted through the run layer (settings -> pipeline stages) and permuted with n_perm=1000.
Writes ``benchmarks/results/designs.json`` with the machine's description and load.

Run: ``.venv/bin/python benchmarks/bench_designs.py`` (several minutes).
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from glmkit import permutation_test, pipeline
from glmkit.settings import RunSettings

OUT = Path(__file__).resolve().parent / "results" / "designs.json"
DESIGNS = {
    "one-sample (mean > 0)": dict(covariates=(), rename={}, contrast="intercept"),
    "two groups (M - F, adjusting for fluency)": dict(covariates=("sex", "pseudo"), rename={},
                                                      contrast="M - F"),
    "ANCOVA (fluency, adjusting for age)": dict(covariates=("pseudo", "age"), rename={},
                                                contrast="pseudo"),
    "F test (fluency or age)": dict(covariates=("pseudo", "age"), rename={},
                                    contrast=("pseudo", "age")),
}


def _machine() -> dict:
    import psutil

    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version()}


def _time_design(changes: dict) -> dict:
    settings = RunSettings(dataset="demo", n_perm=1000, random_state=2026, **changes)
    dataset = pipeline.load_data(settings)
    qc = pipeline.quality_control(dataset, settings)
    design = pipeline.build_design(dataset, qc, settings)
    model = pipeline.fit_model(dataset, design, settings)
    start = time.perf_counter()
    perm = pipeline.run_permutation(model, settings, dataset=dataset)
    return {"seconds": round(time.perf_counter() - start, 3), "n_subjects": model.Y.shape[0],
            "n_voxels": model.Y.shape[1], "method": perm.method, "stat_type": perm.stat_type,
            "columns": list(design.columns)}


def _time_paired() -> dict:
    """44 pairs: the demo's kept maps split in halves (pre, post), differences sign-flipped."""
    settings = RunSettings(dataset="demo", n_perm=1000, random_state=2026)
    dataset = pipeline.load_data(settings)
    qc = pipeline.quality_control(dataset, settings)
    design = pipeline.build_design(dataset, qc, settings)
    Y = pipeline.fit_model(dataset, design, settings).Y
    half = Y.shape[0] // 2
    diff = Y[half:2 * half] - Y[:half]
    start = time.perf_counter()
    perm = permutation_test(diff, np.ones((half, 1)), [1.0], n_perm=1000, random_state=2026,
                            verbose=False)
    return {"seconds": round(time.perf_counter() - start, 3), "n_subjects": half,
            "n_voxels": diff.shape[1], "method": perm.method, "stat_type": perm.stat_type,
            "columns": ["intercept"]}


def main() -> None:
    results = {name: _time_design(changes) for name, changes in DESIGNS.items()}
    results["paired (post - pre, 44 pairs)"] = _time_paired()
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": _machine(), "n_perm": 1000, "designs": results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:45s} {r['seconds']:7.2f} s  ({r['method']}, {r['stat_type']}, "
              f"{r['n_subjects']} x {r['n_voxels']})")


if __name__ == "__main__":
    main()
