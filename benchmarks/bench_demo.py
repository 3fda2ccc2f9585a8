"""`make demo` end to end, and report writing alone (issue 14's last targets).

Measures, on the demo cohort with the reference parameters (``notebooks/reference.yaml``):

- ``glmkit run`` (the notebook through papermill, kernel start included), wall seconds per
  run, the CPU seconds of the runner and its kernel (``RUSAGE_CHILDREN``: what one idle core
  would take, the demo parameters using one thread) and the notebook cells' own timings from
  the run's ``run.json``;
- :func:`glmkit.write_report` alone on the same analysis, CPU and wall seconds (best of 3
  after one warm-up: fonts and nilearn's template are loaded once per process).

Writes ``benchmarks/results/demo.json`` with the machine and its load. Run from the
repository root: ``.venv/bin/python benchmarks/bench_demo.py`` (about 3 minutes).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from bench_permutation import machine  # benchmarks/ is this script's folder

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "notebooks" / "reference.yaml"
OUT = ROOT / "benchmarks" / "results" / "demo.json"
RUNS, REPEATS = 2, 3


def glmkit_run() -> list[dict]:
    """``glmkit run --params notebooks/reference.yaml`` (as ``make demo``), RUNS times."""
    out = []
    for i in range(RUNS):
        with tempfile.TemporaryDirectory() as reports:
            t0, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([str(Path(sys.executable).parent / "glmkit"), "run", "--params",
                            str(PARAMS), "--reports-dir", reports, "--run-name", f"bench{i}",
                            "--quiet"], check=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
            record = json.loads((Path(reports) / f"bench{i}" / "run.json").read_text())
        out.append({"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "cells": record.get("cells"),
                    "runner": {k: v for k, v in record.items() if k != "cells"}})
    return out


def report_writing() -> dict:
    """write_report on the reference analysis: best of REPEATS, CPU and wall."""
    from glmkit import write_report
    from glmkit.pipeline import run_analysis

    params = yaml.safe_load(PARAMS.read_text())
    result = run_analysis(**params)
    cpu, wall, size = [], [], 0
    for i in range(REPEATS + 1):
        with tempfile.TemporaryDirectory() as folder:
            t0, c0 = time.perf_counter(), time.process_time()
            manifest = write_report(result, Path(folder) / "r")
            if i:  # the first is the warm-up
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - t0)
            size = manifest.report.stat().st_size
    return {"cpu_seconds": [round(c, 2) for c in cpu], "wall_seconds": [round(w, 2) for w in wall],
            "best_cpu": round(min(cpu), 2), "best_wall": round(min(wall), 2),
            "report_bytes": size, "analysis_timings": result.timings}


def main() -> int:
    load_before = os.getloadavg()
    results = {
        "benchmark": "make demo (glmkit run of notebooks/reference.yaml) and write_report",
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "targets": {"glmkit_run_seconds": 20, "write_report_seconds": 5},
        "glmkit_run": glmkit_run(),
        "write_report": report_writing(),
        "machine": machine(),
        "load_average_before_after": [load_before, os.getloadavg()],
    }
    OUT.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(json.dumps({"glmkit_run": [(r["wall_seconds"], r["cpu_seconds"])
                                     for r in results["glmkit_run"]],
                      "write_report": results["write_report"]["best_cpu"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
