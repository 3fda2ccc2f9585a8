"""PNG plots of benchmarks/results/scale.json (written by bench_scale.py).

Usage::

    python benchmarks/plot_results.py [--results benchmarks/results]

Writes ``time_vs_voxels.png`` (100 subjects), ``time_vs_subjects.png`` (235,375 voxels, with
the peak memory of the memmapped cohorts) and ``memory_vs_permutations.png`` into the results
folder: seconds per 1000 max-T permutations, glmkit and nilearn's ``permuted_ols`` (run with
fewer permutations and scaled linearly), wall time and process CPU time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def _series(cases: dict, prefix: str, key: str = "seconds_per_1000") -> tuple[list, list]:
    points = sorted((c["param"], c[key]) for name, c in cases.items()
                    if name.startswith(prefix) and key in c and c[key] is not None)
    return [p for p, _ in points], [v for _, v in points]


def _cpu_per_1000(cases: dict, prefix: str) -> tuple[list, list]:
    points = sorted((c["param"], c["cpu_seconds"] * 1000 / c["n_perm_run"])
                    for name, c in cases.items() if name.startswith(prefix) and "cpu_seconds" in c)
    return [p for p, _ in points], [v for _, v in points]


def _axes(ax, xlabel: str, title: str, ylabel: str = "seconds per 1000 permutations",
          logy: bool = True) -> None:
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_voxels(cases: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for prefix, label, style, color in (
            ("voxels_glmkit", "glmkit (n_jobs=2, float64)", "o-", "C0"),
            ("voxels_nilearn", "nilearn permuted_ols (n_jobs=1)", "s-", "C2")):
        ax.plot(*_series(cases, prefix), style, color=color, label=f"{label}, wall")
        ax.plot(*_cpu_per_1000(cases, prefix), style[0] + ":", color=color, alpha=0.6,
                label=f"{label}, CPU")
    _axes(ax, "voxels", "max-T, 100 subjects: time vs voxels")
    fig.tight_layout()
    fig.savefig(out / "time_vs_voxels.png", dpi=110)
    plt.close(fig)


def plot_subjects(cases: dict, out: Path) -> None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for prefix, label, style, color in (
            ("subjects_glmkit", "glmkit in memory (n_jobs=2, float64)", "o-", "C0"),
            ("stream_", "glmkit memmap, streamed (n_jobs=2, float32)", "D-", "C1"),
            ("subjects_nilearn", "nilearn permuted_ols (n_jobs=1)", "s-", "C2")):
        ax.plot(*_series(cases, prefix), style, color=color, label=f"{label}, wall")
        ax.plot(*_cpu_per_1000(cases, prefix), style[0] + ":", color=color, alpha=0.6,
                label=f"{label}, CPU")
        ax2.plot(*_series(cases, prefix, "peak_rss_mb"), style, color=color, label=label)
    _axes(ax, "subjects", "max-T, 235,375 voxels (2 mm): time vs subjects")
    ax2.axhline(2048, color="grey", ls="--", lw=0.8, label="2 GB")
    _axes(ax2, "subjects", "peak memory (the data alone: 0.9 to 4.7 GB as float32)",
          ylabel="peak resident memory (MB)", logy=False)
    fig.tight_layout()
    fig.savefig(out / "time_vs_subjects.png", dpi=110)
    plt.close(fig)


def plot_nperm(cases: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    n, rss = _series(cases, "nperm_", "peak_rss_mb")
    _, sec = _series(cases, "nperm_", "seconds")
    ax.plot(n, rss, "o-", label="peak resident memory (MB)")
    ax.plot(n, sec, "s--", label="seconds")
    _axes(ax, "permutations (30 subjects x 1,000 voxels)",
          "memory vs permutations (null maxima: 8 bytes each)", ylabel="")
    fig.tight_layout()
    fig.savefig(out / "memory_vs_permutations.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    out = Path(args.results)
    cases = json.loads((out / "scale.json").read_text())["cases"]
    cases = {k: v for k, v in cases.items() if "error" not in v}
    plot_voxels(cases, out)
    plot_subjects(cases, out)
    plot_nperm(cases, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
