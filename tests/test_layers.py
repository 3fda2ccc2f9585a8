"""The package layout shows the layers, and the layers hold.

``glmkit/stats`` (arrays in, frozen results out) imports nothing of glmkit above it;
``glmkit/data`` nothing of the report or run layers; ``glmkit/report`` nothing of the run
layer. Every import counts, including those inside functions. No module imports another
module's private (underscore) names, and no function is longer than a maintainer can read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "glmkit"
BASE = {"glmkit", "glmkit.errors", "glmkit._util", "glmkit._version"}
RUN_LAYER = {"glmkit.settings", "glmkit.pipeline", "glmkit.preflight", "glmkit.run",
             "glmkit.cli", "glmkit.widgets", "glmkit.__main__", "glmkit.progress",
             "glmkit.interactive"}
ALLOWED = {  # layer -> glmkit modules it may import (besides the base)
    "stats": ("glmkit.stats",),
    "data": ("glmkit.stats", "glmkit.data"),
    "report": ("glmkit.stats", "glmkit.data", "glmkit.report"),
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _imports(path: Path):
    """(line, imported module, imported names) of every import in the file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, tuple(a.name for a in node.names)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ALLOWED else (
        parts[1] if len(parts) == 2 and parts[1] in ALLOWED else None)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_nothing_above_it(layer):
    bad = []
    for module, path in _modules():
        if _layer(module) != layer:
            continue
        for line, target, names in _imports(path):
            if not target.startswith("glmkit"):
                continue
            # "from glmkit import x" imports the module glmkit.x when x is a module
            targets = [f"{target}.{n}" if target == "glmkit" else target for n in names] or [
                target]
            for t in targets:
                if t in BASE or t.split(".")[1:2] == ["__version__"]:
                    continue
                if t.startswith("glmkit._version") or t.startswith(ALLOWED[layer]):
                    continue
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {t}")
    assert not bad, "layering violated:\n" + "\n".join(bad)


def test_the_run_layer_is_what_is_left():
    top = {m for m, _ in _modules() if m.count(".") == 1 and _layer(m) is None}
    assert top - BASE - RUN_LAYER == set(), "a module outside the declared layers"


def test_no_module_imports_another_modules_private_names():
    bad = []
    for module, path in _modules():
        for line, target, names in _imports(path):
            if not target.startswith("glmkit") or target == module:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {private} "
                           f"from {target}")
    assert not bad, "\n".join(bad)


def test_no_function_over_120_lines():
    long = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 120:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} "
                                f"{node.name} ({length} lines)")
    assert not long, "\n".join(long)
