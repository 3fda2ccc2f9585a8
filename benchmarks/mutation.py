"""Mutation score of glmkit's statistics core: do the tests notice plausible bugs?

Usage::

    python benchmarks/mutation.py --label after                 # the tests as they are now
    python benchmarks/mutation.py --label before --tests-ref main   # the tests of a git ref
    python benchmarks/mutation.py --label after --only-survivors    # re-test last survivors
    python benchmarks/mutation.py --list                          # print the mutants only

Every mutant is one small edit of one file of ``glmkit/stats`` (``permutation``, ``pvalues``,
``glm``, ``threshold``, ``cluster``, ``design``, and the permutation engine's ``engine``,
``resample``, ``tail``, ``statistics``), made on the syntax tree and applied as a text
replacement at the node's exact position:

- comparisons ``<``/``<=``, ``>``/``>=``, ``==``/``!=``, ``in``/``not in``, ``is``/``is not``;
- arithmetic ``+``/``-``, ``*``/``/``, ``**`` -> ``*``, ``//`` -> ``/``, augmented ``+=``/``-=``,
  a dropped term (``a + b`` -> ``a``, ``a - b`` -> ``a``);
- integer constants (also ``1.0``, ``2.0``...) off by one; ``True``/``False``;
- ``abs(x)``/``np.abs(x)`` -> ``x``, unary minus dropped, ``not`` dropped, ``and``/``or``;
- ``max``/``min`` and ``np.maximum``/``np.minimum`` (and ``np.max``/``np.min``) swapped;
- ``"left"``/``"right"`` (``searchsorted`` sides) swapped.

Presentation (``summary``, ``__repr__``, ``to_frame``, ``to_nifti``), error messages (every
node inside a ``raise``), logging, f-strings, docstrings and decorators are not mutated.

The tests run on a **copy** of the repository in a temporary folder (``glmkit/``, ``tests/``,
``pyproject.toml``); the working tree is never written, and the copy is deleted on exit,
also after Ctrl-C or SIGTERM. Each mutant runs the fast test selection mapped to its module
(``FAST`` below, ``-x``, a timeout) under ``nice -n 19``; a mutant that survives it gets a
second, broader run (``BROAD``: the whole mapped files, slow tests included, demo tests
excluded because each pytest session would regenerate the demo cohort). A mutant is
*killed* when pytest fails (or times out, or the module no longer imports), *survived*
otherwise; survivors listed in ``benchmarks/mutation_equivalent.json`` with a reason are
*equivalent* (no test can tell them apart from the original: same behaviour). Entries of
kind ``known_bug`` explain a survivor instead of excusing it: the mutant changes behaviour
only where glmkit is itself wrong today (a test pins the bug as ``xfail(strict=True)``);
it stays a survivor. The score is ``killed / (tried - equivalent)``.

Mutant ids (``module:function:hash``) hash the function, the source line's text, the edit and
its occurrence, not line numbers, so they survive unrelated edits. The mutants are sampled
deterministically (``--seed``, ``--per-module``) from all candidates.

Tests that fail on the unmutated code cannot kill anything: they are found in one run first
and deselected in every mutant's runs, and listed in the run's ``baseline``. With
``--tests-ref`` (an older ref's tests, which may call an API that has changed since) that run
covers every fast and broad file, slow tests included; for the working tree, the fast files.

Results go to ``benchmarks/results/mutation.json`` under ``runs[label]``; other labels in the
file are kept, and a ``before`` survivor killed in ``after`` records which test kills it.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import hashlib
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "mutation.json"
EQUIVALENT = HERE / "mutation_equivalent.json"
MODULES = ("permutation", "pvalues", "glm", "threshold", "cluster", "design", "engine",
           "resample", "tail", "statistics", "source")

# ------------------------------------------------------------------ test selection per module
#: module -> (test paths, -k expression) of the fast run; files missing from the tests
#: being measured (e.g. an older ref) are left out. The module file itself adds its doctests.
_PERM_TESTS = ["tests/test_exact_pvalues.py", "tests/test_boundaries.py", "tests/test_blocks.py",
               "tests/test_permutation.py"]
_PERM_K = ("not test_glm_ and not n_jobs and not dask and not float32 and not progress "
           "and not demo and not fwer_calibration and not uncorrected_p_calibrated")
_ENGINE_TESTS = [*_PERM_TESTS, "tests/test_engine.py", "tests/test_streaming.py",
                 "tests/test_mixed_precision.py"]
FAST = {
    "permutation": (_PERM_TESTS, _PERM_K),
    "engine": (_ENGINE_TESTS, _PERM_K),
    "resample": (["tests/test_resample.py", "tests/test_blocks.py", "tests/test_streaming.py",
                  "tests/test_engine.py", "tests/test_exact_pvalues.py"], _PERM_K),
    "tail": (["tests/test_tail.py", "tests/test_accel.py"], "not demo"),
    "statistics": ([*_PERM_TESTS, "tests/test_statistics.py", "tests/test_tfce.py"], _PERM_K),
    "cluster": (_PERM_TESTS, _PERM_K),
    "pvalues": (["tests/test_glm.py", "tests/test_exact_pvalues.py",
                 "tests/test_threshold.py"], "not demo and not cluster_table"),
    "glm": (["tests/test_glm.py", "tests/test_exact_pvalues.py", "tests/test_mutation_survivors.py"], "not demo"),
    "threshold": (["tests/test_threshold.py", "tests/test_boundaries.py", "tests/test_mutation_survivors.py"],
                  "not demo and not identity and not sign_flip and not duplicated"),
    "design": (["tests/test_design.py", "tests/test_mutation_survivors.py"], "not demo"),
    "source": (["tests/test_streaming.py", "tests/test_engine.py"], _PERM_K),
}
#: module -> test paths of the broad run (``-k "not demo"``, slow tests included)
BROAD = {
    "permutation": [*_PERM_TESTS, "tests/test_calibration.py", "tests/test_engine.py",
                    "tests/test_resample.py"],
    "cluster": [*_PERM_TESTS, "tests/test_calibration.py"],
    "pvalues": ["tests/test_glm.py", "tests/test_exact_pvalues.py", "tests/test_threshold.py",
                "tests/test_permutation.py"],
    "glm": ["tests/test_glm.py", "tests/test_exact_pvalues.py", "tests/test_permutation.py",
            "tests/test_mutation_survivors.py"],
    "threshold": ["tests/test_threshold.py", "tests/test_boundaries.py", "tests/test_viewer.py",
                  "tests/test_mutation_survivors.py"],
    "design": ["tests/test_design.py", "tests/test_pipeline.py", "tests/test_mutation_survivors.py"],
    "engine": [*_ENGINE_TESTS, "tests/test_calibration.py", "tests/test_designs.py",
               "tests/test_statistics.py", "tests/test_tfce.py"],
    "resample": [*_PERM_TESTS, "tests/test_resample.py", "tests/test_engine.py",
                 "tests/test_streaming.py", "tests/test_calibration.py"],
    "tail": ["tests/test_tail.py", "tests/test_accel.py", "tests/test_permutation.py"],
    "source": [*_ENGINE_TESTS, "tests/test_calibration.py"],
    "statistics": [*_PERM_TESTS, "tests/test_statistics.py", "tests/test_tfce.py",
                   "tests/test_engine.py", "tests/test_calibration.py"],
}
#: CPU seconds (the pytest process tree's) after which a run counts as a timeout (= killed)
FAST_TIMEOUT, BROAD_TIMEOUT = 240, 1200

#: never mutated: presentation and I/O helpers, and the engine's performance knobs (block
#: size, BLAS threads, kernel workspace), which by design cannot change a result
SKIP_FUNCTIONS = {"summary", "__repr__", "to_frame", "to_nifti", "get", "mask_img", "unmask",
                  "_raise_non_numeric", "_masker_of", "_atlas_lookup", "_block_size",
                  "_single_blas_thread", "_workspace", "_tail_summary",
                  # engine: BLAS threads, error text, the log line; statistics: report text
                  "_blas_controller", "one_blas_thread", "single_blas_thread", "_threads",
                  "_nonfinite_error", "words", "all_references", "_cluster_methods",
                  "_tfce_methods", "text"}
#: the functions that compute statistics, p-values and thresholds (sampled 4x as often)
CORE = {
    "permutation": {"critical_value", "_largest_count", "_p_from_null", "_score",
                    "_observed_statistics", "_fwer_logp", "_draws", "_uncancelled_confounds",
                    "_assemble", "permutation_test"},
    "engine": {"orthonormal", "partition", "scatter", "reduce_fast", "tmaps", "gmaps",
               "g_from_num2", "t_from_num", "reduce_num_t", "reduce_stat_t", "run_block",
               "voxel_block", "fit_chunk", "observed_fit", "permute_blocks",
               "reduce_num_mixed", "exact_dot", "float32_error_bound", "reduce_stat_mixed",
               "_exact_stat", "_decide", "_add_outer", "_add_rows", "_residual_row",
               "_fit_moments", "_fit_sums", "_residuals_into", "_scale_into", "_remove_tested"},
    "resample": {"_draw_chunk", "draw", "block", "part", "sign_flips", "row_classes",
                 "blocks_of", "n_arrangements", "_multinomial", "_unrank", "_rank",
                 "arrangements"},
    "tail": {"sf", "isf", "_survival", "_ad_pvalue", "fit_tail", "tail_pvalues"},
    "statistics": {"cluster_t", "tfce", "_voxel_observed", "_observed_clusters",
                   "_null_clusters", "_tfce_observed", "_tfce_null"},
    "cluster": {"_cluster_max_one", "_union_above", "cluster_labels", "cluster_max",
                "tfce_map", "tfce_max", "_tfce_into", "_tfce_pass", "_wfind", "_n_steps",
                "neighbors"},
    "pvalues": {"logp_from_p", "logp_from_log", "log_sf_t", "log_sf_f", "z_scores",
                "_z_from_log_sf"},
    "glm": {"ols_fit", "compute_contrast"},
    "threshold": {"fdr_threshold", "_height_mask", "_cluster_extent", "bonferroni_logp",
                  "threshold_map"},
    "design": {"variance_inflation", "_check_rank", "make_design"},
}
SWAP_CALLS = {"max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum"}
SWAP_STRINGS = {"left": "right", "right": "left"}
CMP_SWAP = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=",
            ast.NotEq: "==", ast.In: "not in", ast.NotIn: "in", ast.Is: "is not",
            ast.IsNot: "is"}
BIN_SWAP = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*", ast.Pow: "*",
            ast.FloorDiv: "/"}
AUG_SWAP = {ast.Add: "-=", ast.Sub: "+=", ast.Mult: "/=", ast.Div: "*="}


# ----------------------------------------------------------------------------- mutants
@dataclass
class Mutant:
    id: str
    module: str
    function: str
    line: int
    operator: str
    original: str
    replacement: str
    source_line: str
    start: int = field(repr=False, default=0)  # character offsets in the file
    end: int = field(repr=False, default=0)

    def describe(self) -> str:
        return f"{self.module}.py:{self.line} {self.function}: {self.original!r} -> " \
               f"{self.replacement!r} ({self.operator})"


class _Collector(ast.NodeVisitor):
    """Candidate edits: (node span, operator name, original text, replacement text)."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.offsets = [0]
        for line in self.lines:
            self.offsets.append(self.offsets[-1] + len(line))
        self.stack: list[str] = []
        self.found: list[tuple] = []

    def pos(self, lineno, col):
        # ast columns are UTF-8 byte offsets
        line = self.lines[lineno - 1]
        return self.offsets[lineno - 1] + len(line.encode()[:col].decode())

    def span(self, node):
        return self.pos(node.lineno, node.col_offset), self.pos(node.end_lineno,
                                                               node.end_col_offset)

    def seg(self, node):
        a, b = self.span(node)
        return self.text[a:b]

    def add(self, start, end, op, replacement, lineno):
        original = self.text[start:end]
        if original != replacement:
            self.found.append((start, end, op, original, replacement, lineno,
                               ".".join(self.stack) or "<module>"))

    # --- scopes and things never mutated
    def visit_FunctionDef(self, node):
        if node.name in SKIP_FUNCTIONS:
            return
        self.stack.append(node.name)
        for stmt in node.body:
            self.visit(stmt)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self.stack.append(node.name)
        for stmt in node.body:
            self.visit(stmt)
        self.stack.pop()

    def visit_Raise(self, node):
        return

    def visit_JoinedStr(self, node):
        return

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant):  # docstring
            return
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
            func.value, ast.Name) else ""
        if owner in ("logger", "warnings", "logging"):
            return
        if name == "abs" and len(node.args) == 1 and not node.keywords:
            a, b = self.span(node)
            self.add(a, b, "abs_dropped", self.seg(node.args[0]), node.lineno)
        if name in SWAP_CALLS and (owner in ("np", "numpy") or (not owner and name in
                                                                ("max", "min"))):
            a, b = self.span(func)
            self.add(a, b, "max_min_swap", self.seg(func).replace(name, SWAP_CALLS[name]),
                     node.lineno)
        self.generic_visit(node)

    # --- operators
    def visit_Compare(self, node):
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            if type(op) in CMP_SWAP:
                a = self.span(left)[1]
                b = self.span(right)[0]
                between = self.text[a:b]
                sym = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
                       ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
                       ast.IsNot: "is not"}[type(op)]
                m = re.search(r"(?<![<>=!])" + re.escape(sym) + r"(?![<>=])", between) \
                    if sym not in ("in", "not in", "is", "is not") else \
                    re.search(r"\b" + sym.replace(" ", r"\s+") + r"\b", between)
                if m:
                    self.add(a + m.start(), a + m.end(), "compare", CMP_SWAP[type(op)],
                             node.lineno)
            left = right
        self.generic_visit(node)

    def _op_between(self, left, right, symbols):
        a, b = self.span(left)[1], self.span(right)[0]
        between = self.text[a:b]
        for sym in symbols:
            m = re.search(r"(?<![*/<>=!])" + re.escape(sym) + r"(?![*/=])", between)
            if m:
                return a + m.start(), a + m.end()
        return None

    def visit_BinOp(self, node):
        sym = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
               ast.FloorDiv: "//"}.get(type(node.op))
        strings = [v for v in (node.left, node.right) if isinstance(v, ast.JoinedStr) or (
            isinstance(v, ast.Constant) and isinstance(v.value, str))]
        if sym and not strings:
            where = self._op_between(node.left, node.right, [sym])
            if where:
                self.add(*where, "arithmetic", BIN_SWAP[type(node.op)], node.lineno)
            if isinstance(node.op, ast.Add | ast.Sub):
                a, b = self.span(node)
                self.add(a, b, "term_dropped", self.seg(node.left), node.lineno)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        if type(node.op) in AUG_SWAP:
            sym = {ast.Add: "+=", ast.Sub: "-=", ast.Mult: "*=", ast.Div: "/="}[type(node.op)]
            where = self._op_between(node.target, node.value, [sym])
            if where:
                self.add(*where, "augmented", AUG_SWAP[type(node.op)], node.lineno)
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        a, b = self.span(node)
        if isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
            self.add(a, b, "minus_dropped", self.seg(node.operand), node.lineno)
        elif isinstance(node.op, ast.Not):
            self.add(a, b, "not_dropped", self.seg(node.operand), node.lineno)
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        sym = "and" if isinstance(node.op, ast.And) else "or"
        for left, right in zip(node.values, node.values[1:]):
            a, b = self.span(left)[1], self.span(right)[0]
            m = re.search(r"\b" + sym + r"\b", self.text[a:b])
            if m:
                self.add(a + m.start(), a + m.end(), "bool_op",
                         "or" if sym == "and" else "and", node.lineno)
        self.generic_visit(node)

    def visit_Constant(self, node):
        v = node.value
        a, b = self.span(node)
        if isinstance(v, bool):
            self.add(a, b, "bool_const", str(not v), node.lineno)
        elif isinstance(v, int | float) and float(v).is_integer() and abs(v) <= 10:
            for d in (1, -1):
                new = v + d
                self.add(a, b, "off_by_one", repr(type(v)(new)), node.lineno)
        elif isinstance(v, str) and v in SWAP_STRINGS:
            quote = self.text[a]
            self.add(a, b, "string_swap", f"{quote}{SWAP_STRINGS[v]}{quote}", node.lineno)


def collect(module: str, text: str) -> list[Mutant]:
    tree = ast.parse(text)
    col = _Collector(text)
    for stmt in tree.body:
        # module level: only functions and classes (constants, imports, __all__ are not code)
        if isinstance(stmt, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            col.visit(stmt)
    mutants, seen = [], {}
    lines = text.splitlines()
    for start, end, op, original, replacement, lineno, func in sorted(col.found):
        mutated = text[:start] + replacement + text[end:]
        try:
            compile(mutated, module, "exec")
        except SyntaxError:
            continue
        src = lines[lineno - 1].strip()
        key = (func, src, original, replacement)
        seen[key] = seen.get(key, -1) + 1
        digest = hashlib.sha1(f"{func}|{src}|{original}|{replacement}|{seen[key]}".encode())
        mutants.append(Mutant(f"{module}:{func}:{digest.hexdigest()[:10]}", module, func,
                              lineno, op, original, replacement, src, start, end))
    return mutants


#: hand-written mutants, always run: the holes the first mutation probe found (issue 15) and
#: their neighbours; (module, name, text, replacement) with the first occurrence replaced.
#: A probe whose text is no longer in the module is reported and left out.
PROBES = [
    ("permutation", "uncorrected_p_count_over_n_perm",
     "(1.0 + counts) / (1.0 + n_perm)", "counts / n_perm"),
    ("permutation", "fwer_p_count_over_n_perm",
     "(1.0 + count) / (1.0 + perm.size)", "count / perm.size"),
    ("engine", "two_sided_count_on_signed_statistic",
     "counts[v] += a >= thr[v]", "counts[v] += row[v] >= thr[v]"),
    ("engine", "two_sided_count_on_signed_statistic_fast_path",
     "c += np.int32(a >= t)", "c += np.int32(row[b] >= t)"),
    ("resample", "only_first_block_permuted",
     "for g in pd.unique(groups):", "for g in pd.unique(groups)[:1]:"),
    ("glm", "two_sided_p_from_upper_tail_only",
     "np.log(2.0) + np.minimum(log_upper, log_lower)", "np.log(2.0) + log_upper"),
    ("threshold", "cluster_extent_keeps_only_larger_clusters",
     "sizes < cluster_threshold", "sizes <= cluster_threshold"),
    ("threshold", "fdr_line_inclusive", "passed = p < alpha", "passed = p <= alpha"),
    ("cluster", "cluster_forming_inclusive", "if u[i] > thr:", "if u[i] >= thr:"),
]


def probes(module: str, text: str) -> list[Mutant]:
    out = []
    for mod, name, old, new in PROBES:
        if mod != module:
            continue
        start = text.find(old)
        if start < 0:
            print(f"probe {name}: {old!r} is not in {module}.py any more; left out",
                  file=sys.stderr)
            continue
        line = text.count("\n", 0, start) + 1
        out.append(Mutant(f"probe:{name}", module, "<probe>", line, "probe", old, new,
                          text.splitlines()[line - 1].strip(), start, start + len(old)))
    return out


def sample(mutants: list[Mutant], n: int | None, seed: int) -> list[Mutant]:
    """At most ``n`` mutants, a mutant of a ``CORE`` function being 4x as likely to be drawn
    (weighted sampling without replacement: the ``n`` largest ``u ** (1 / weight)``)."""
    if n is None or len(mutants) <= n:
        return mutants
    rng = random.Random(seed)
    keys = [rng.random() ** (1 / (4.0 if m.function.split(".")[-1] in CORE[m.module] else 1.0))
            for m in mutants]
    picked = sorted(range(len(mutants)), key=keys.__getitem__, reverse=True)[:n]
    return [mutants[i] for i in sorted(picked)]


# ----------------------------------------------------------------------------- the copy
_WORKSPACES: list[Workspace] = []
_CHILDREN: set[subprocess.Popen] = set()


def _cleanup() -> None:
    """Kill running pytest process groups and delete every copy (at exit and on signals)."""
    for proc in list(_CHILDREN):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for ws in _WORKSPACES:
        shutil.rmtree(ws.path, ignore_errors=True)


def _on_signal(signum, frame):
    _cleanup()
    os._exit(128 + signum)  # worker threads may be waiting on a child: do not join them


class Workspace:
    """A throw-away copy of the repository in a temporary folder (see :func:`_cleanup`)."""

    def __init__(self, tests_ref: str | None):
        # the folder name must not contain "glm", "demo" etc.: pytest -k also matches it
        self.path = Path(tempfile.mkdtemp(prefix="mutation-run-"))
        _WORKSPACES.append(self)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
        shutil.copytree(ROOT / "glmkit", self.path / "glmkit", ignore=ignore)
        shutil.copy2(ROOT / "pyproject.toml", self.path / "pyproject.toml")
        if tests_ref is None:
            shutil.copytree(ROOT / "tests", self.path / "tests", ignore=ignore)
        else:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", tests_ref, "tests"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(self.path)], input=archive, check=True)
        self.stamp = time.time_ns()
        #: tests that fail on the unmutated code (an older ref's tests only; see baseline)
        self.broken: list[str] = []

    def write(self, module: str, text: str):
        path = self.path / "glmkit" / "stats" / f"{module}.py"
        path.write_text(text, encoding="utf-8")
        self.stamp += 10**9  # a new mtime: no cache (pyc, numba) can mistake it for another
        os.utime(path, ns=(self.stamp, self.stamp))

    def pytest(self, paths: list[str], k: str | None, *, fast: bool, timeout: float,
               extra: list[str] | None = None):
        present = [p for p in paths if (self.path / p).exists()]
        cmd = ["nice", "-n", "19", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-ra", "--tb=no", "-W", "ignore"]
        if fast:
            cmd += ["-x", "-m", "not slow"]
        if k:
            cmd += ["-k", k]
        cmd += extra or []
        for test in self.broken:  # a test file that does not import is a bare path
            cmd += ["--deselect", test] if "::" in test else [f"--ignore={test}"]
        env = dict(os.environ, PYTHONPATH=str(self.path), PYTHONDONTWRITEBYTECODE="1",
                   NUMBA_CACHE_DIR=str(self.path / ".numba_cache"), CI="",
                   GLMKIT_DATA=str(self.path / ".glmkit_data"), PYTHONHASHSEED="0")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd + present, cwd=self.path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        _CHILDREN.add(proc)
        try:
            out = _communicate_within_cpu(proc, timeout)
        finally:
            _CHILDREN.discard(proc)
        if out is None:
            return "timeout", None, time.perf_counter() - t0, ""
        failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", out, flags=re.M)
        status = {0: "passed", 1: "failed", 5: "no tests"}.get(proc.returncode, "error")
        return status, (failed[0] if failed else None), time.perf_counter() - t0, out


def _communicate_within_cpu(proc: subprocess.Popen, cpu_limit: float) -> str | None:
    """Output of ``proc``, or None after killing it once its process tree has used
    ``cpu_limit`` CPU seconds (or 20x that in wall time). CPU time, not wall time, so that a
    starved ``nice -n 19`` run on a busy machine is not mistaken for a mutant that loops."""
    import psutil

    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    t0 = time.monotonic()
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            cpu = sum(sum(p.cpu_times()[:2]) for p in tree)
        except psutil.Error:
            cpu = 0.0
        if cpu > cpu_limit or time.monotonic() - t0 > 20 * cpu_limit:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join()
            return None
        time.sleep(1.0)
    reader.join()
    return "".join(chunks)


def module_paths(module: str, paths: list[str]) -> list[str]:
    return [*paths, f"glmkit/stats/{module}.py"]  # + its doctests


# ----------------------------------------------------------------------------- run
def run_mutant(ws: Workspace, m: Mutant, original: str) -> dict:
    ws.write(m.module, original[:m.start] + m.replacement + original[m.end:])
    try:
        paths, k = FAST[m.module]
        status, by, secs, _ = ws.pytest(module_paths(m.module, paths), k, fast=True,
                                        timeout=FAST_TIMEOUT)
        stage = "fast"
        if status == "passed":
            status, by, secs2, _ = ws.pytest(module_paths(m.module, BROAD[m.module]),
                                             "not demo", fast=False, timeout=BROAD_TIMEOUT)
            secs += secs2
            stage = "broad"
    finally:
        ws.write(m.module, original)
    killed = status in ("failed", "error", "timeout")
    return {"status": "killed" if killed else "survived", "stage": stage,
            "killed_by": by if status in ("failed", "error") else status if killed else None,
            "seconds": round(secs, 1)}


def broken_tests(ws: Workspace, modules, older: bool) -> list[str]:
    """The tests that fail on the unmutated code: they cannot tell a mutant from the original,
    so they are deselected in every run (and listed in the run's ``baseline``). For an
    ``older`` ref's tests (the API they call may have changed since) every fast and broad
    file of ``modules`` is run, slow tests included; for the working tree's tests, whose
    suite should pass, only the fast files (a failure there is reported, not hidden)."""
    paths = {p for m in modules for p in FAST[m][0]} | {f"glmkit/stats/{m}.py" for m in modules}
    if older:
        paths |= {p for m in modules for p in BROAD[m]}
    fast = not older  # -x is added for fast runs: run the fast files without it
    status, _, secs, text = ws.pytest(sorted(paths), "not demo", fast=False,
                                      timeout=BROAD_TIMEOUT * 3,
                                      extra=["-m", "not slow"] if fast else [])
    if status == "timeout":
        raise SystemExit("baseline of the tests timed out")
    broken = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", text, flags=re.M)
    print(f"baseline: {len(broken)} tests fail on the unmutated code ({secs:.0f} s); "
          f"deselected: {broken}", file=sys.stderr, flush=True)
    return broken


def baseline(ws: Workspace, modules) -> dict:
    """Every selection passes on the unmutated copy (else the score would be meaningless)."""
    out = {}
    for module in modules:
        paths, k = FAST[module]
        status, by, secs, text = ws.pytest(module_paths(module, paths), k, fast=True,
                                           timeout=FAST_TIMEOUT * 3)
        n = re.search(r"(\d+) passed", text)
        if status != "passed":
            raise SystemExit(f"baseline of {module} does not pass ({status}, {by}):\n"
                             f"{text[-3000:]}")
        out[module] = {"fast_tests": int(n.group(1)) if n else 0, "seconds": round(secs, 1)}
        print(f"baseline {module}: {out[module]}", file=sys.stderr, flush=True)
    return out


def git(*args) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=False).stdout.strip()


def load_equivalent() -> dict:
    if not EQUIVALENT.exists():
        return {}
    return {k: v for k, v in json.loads(EQUIVALENT.read_text()).items() if not k.startswith("_")}


def _rows(mutants: list[Mutant], outcome: dict) -> list[dict]:
    """One result row per mutant: its description and outcome ("killed" or "survived")."""
    return [{**{k: v for k, v in asdict(m).items() if k not in ("start", "end")},
             **outcome[m.id]} for m in mutants]


def classify(run: dict, equivalent: dict) -> None:
    """(Re)apply ``mutation_equivalent.json`` to a run's rows and fill in its counts."""
    counts = {"tried": 0, "killed": 0, "survived": 0, "equivalent": 0}
    per_module: dict[str, dict] = {}
    for row in run["mutants"]:
        for key in ("reason", "kind"):
            row.pop(key, None)
        if row["status"] != "killed":
            note = equivalent.get(row["id"])
            kind = note.get("kind", "equivalent") if note else None
            row["status"] = "equivalent" if kind == "equivalent" else "survived"
            if note:  # equivalent, or a survivor only a known (xfail) glmkit bug keeps alive
                row["reason"], row["kind"] = note["reason"], kind
        counts["tried"] += 1
        counts[row["status"]] += 1
        pm = per_module.setdefault(row["module"], dict.fromkeys(counts, 0))
        pm["tried"] += 1
        pm[row["status"]] += 1
    denom = counts["tried"] - counts["equivalent"]
    run.update(counts, score=round(counts["killed"] / denom, 4) if denom else None,
               per_module=per_module)
    run["probes"] = {r["id"].split(":", 1)[1]: {"status": r["status"],
                                                "killed_by": r["killed_by"]}
                     for r in run["mutants"] if r["operator"] == "probe"}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="after", help="name of this run in the results file")
    ap.add_argument("--tests-ref", default=None,
                    help="git ref whose tests/ to measure (default: the working tree's)")
    ap.add_argument("--modules", nargs="*", default=list(MODULES), choices=MODULES)
    ap.add_argument("--per-module", type=int, default=None,
                    help="sample at most this many mutants per module (default: PER_MODULE)")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--only", nargs="*", default=None, help="mutant ids to run")
    ap.add_argument("--only-survivors", action="store_true",
                    help="re-run the survivors of the same label in the results file")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--jobs", type=int, default=1,
                    help="mutants tested at once, each in its own copy (all under nice 19)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--summarise", action="store_true",
                    help="re-apply mutation_equivalent.json to the stored runs, run nothing")
    return ap


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, results: dict) -> None:
    _cross_reference(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)
    for label, run in results.get("runs", {}).items():
        print(label, {k: run[k] for k in ("tried", "killed", "survived", "equivalent",
                                         "score")}, file=sys.stderr)


def _execute(todo: list[Mutant], originals: dict, args) -> tuple[dict, dict]:
    """Run the mutants (``args.jobs`` at a time): (outcome per id, baseline per module)."""
    atexit.register(_cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    pool: queue.Queue = queue.Queue()
    for _ in range(max(1, args.jobs)):
        pool.put(Workspace(args.tests_ref))
    ws = pool.get()
    modules = sorted({m.module for m in todo})
    broken = broken_tests(ws, modules, older=bool(args.tests_ref))
    for other in pool.queue:
        other.broken = broken
    ws.broken = broken
    base = baseline(ws, modules)
    if broken:
        base["deselected_failing_on_unmutated_code"] = broken
    pool.put(ws)

    def one(m: Mutant) -> dict:
        ws = pool.get()
        try:
            return run_mutant(ws, m, originals[m.module])
        finally:
            pool.put(ws)

    outcome = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        futures = {ex.submit(one, m): m for m in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            m = futures[fut]
            r = outcome[m.id] = fut.result()
            print(f"[{i}/{len(todo)}] {r['status']:8s} {r['seconds']:6.1f}s {m.describe()}"
                  f"{'  by ' + str(r['killed_by']) if r['killed_by'] else ''}",
                  file=sys.stderr, flush=True)
    _cleanup()
    return outcome, base


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    out_path = Path(args.out)
    if args.summarise:
        results = _load(out_path)
        for run in results.get("runs", {}).values():
            classify(run, load_equivalent())
        _save(out_path, results)
        return 0
    mutants, originals = [], {}
    for module in args.modules:
        text = (ROOT / "glmkit" / "stats" / f"{module}.py").read_text(encoding="utf-8")
        originals[module] = text
        limit = args.per_module if args.per_module is not None else PER_MODULE[module]
        mutants += sample(collect(module, text), limit, args.seed) + probes(module, text)
    previous = _load(out_path).get("runs", {}).get(args.label, {})
    outcome = {r["id"]: {k: r[k] for k in ("status", "stage", "killed_by", "seconds")}
               for r in previous.get("mutants", [])}
    if args.only is not None:
        todo = [m for m in mutants if m.id in set(args.only)]
    elif args.only_survivors:
        todo = [m for m in mutants if outcome.get(m.id, {}).get("status") != "killed"]
    else:
        todo, outcome = mutants, {}
    if args.list:
        for m in todo:
            print(m.id, m.describe())
        print(f"{len(todo)} mutants", file=sys.stderr)
        return 0
    missing = [m for m in mutants if m.id not in outcome and m not in todo]
    if missing:
        print(f"note: {len(missing)} mutants have no result under {args.label!r}; this run is "
              "printed, not saved", file=sys.stderr)
    started, load_before = time.time(), os.getloadavg()
    new, base = _execute(todo, originals, args)
    outcome.update(new)
    if missing:
        return 0

    from bench_permutation import machine

    run = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started),
        "partial_rerun": bool(args.only is not None or args.only_survivors),
        "jobs": args.jobs,
        "git": {"commit": git("rev-parse", "HEAD"), "branch": git("branch", "--show-current"),
                "dirty": bool(git("status", "--porcelain", "--", "glmkit", "tests")),
                "tests_ref": args.tests_ref or "working tree"},
        "load_average_before_after": [load_before, os.getloadavg()],
        "sampling": {"seed": args.seed, "per_module": args.per_module or PER_MODULE},
        "baseline": base,
        "mutants": _rows(mutants, outcome),
    }
    classify(run, load_equivalent())
    results = _load(out_path)  # read again: another label may have been written meanwhile
    results.setdefault("description", "Mutation score of glmkit/stats (benchmarks/mutation.py;"
                       " see benchmarks/README.md)")
    results["machine"] = machine()
    results.setdefault("runs", {})[args.label] = run
    _save(out_path, results)
    return 0


def _cross_reference(results: dict) -> None:
    """Note, on each ``before`` survivor, the ``after`` outcome (which test now kills it)."""
    runs = results.get("runs", {})
    if "before" not in runs or "after" not in runs:
        return
    after = {r["id"]: r for r in runs["after"]["mutants"]}
    for row in runs["before"]["mutants"]:
        if row["status"] == "survived" and row["id"] in after:
            a = after[row["id"]]
            row["after"] = a["status"]
            row["now_killed_by"] = a.get("killed_by")


#: default sample size per module (the full candidate lists are several times larger)
PER_MODULE = {"permutation": 80, "cluster": 35, "pvalues": 25, "glm": 30, "threshold": 40,
              "design": 20, "engine": 20, "resample": 15, "tail": 15, "statistics": 8,
              "source": 10}

if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
