"""Packaging: pyproject and environment.yml agree, the package exposes what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import glmkit

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_runtime() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(r): r.replace(" ", "") for r in meta["dependencies"]}


def _conda_runtime() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    return {_name(d): d.replace(" ", "") for d in deps if _name(d) not in {"python", "pip"}}


def test_environment_yml_matches_pyproject():
    assert _conda_runtime() == _pyproject_runtime()


def test_python_floor_agrees():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_python = next(d for d in env["dependencies"] if isinstance(d, str) and _name(d) == "python")
    assert conda_python.replace("python", "") == meta["requires-python"]


def test_environment_installs_glmkit_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip


def test_issue_required_runtime_dependencies_present():
    required = {"numpy", "scipy", "pandas", "nibabel", "nilearn", "joblib", "papermill",
                "nbconvert", "ipywidgets", "matplotlib", "tqdm"}
    assert required <= set(_pyproject_runtime())


def test_py_typed_marker_and_all():
    assert (Path(glmkit.__file__).parent / "py.typed").is_file()
    assert "__version__" in glmkit.__all__
    for name in glmkit.__all__:
        assert getattr(glmkit, name) is not None, name


def test_unknown_attribute_is_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        glmkit.nope  # noqa: B018


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "glmkit", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"glmkit {glmkit.__version__}"


def test_help_flag():
    out = subprocess.run([sys.executable, "-m", "glmkit", "--help"], capture_output=True,
                         text=True, check=True)
    assert "usage: glmkit" in out.stdout


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make demo" in readme


def test_errors_inherit_builtins():
    assert issubclass(glmkit.DesignError, ValueError)
    assert issubclass(glmkit.DataFileNotFoundError, FileNotFoundError)
    assert issubclass(glmkit.RunError, RuntimeError)
    for name in glmkit.errors.__all__:
        assert issubclass(getattr(glmkit.errors, name), glmkit.GlmkitError)


# ----------------------------------------------------------------- README stays true
def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_parameter_table_is_the_generated_one():
    """The table is generated from the RunSettings fields: a field added or changed without
    pasting the new table into README.md fails here."""
    from glmkit.settings import parameter_table

    start = _readme().index("| parameter | default | meaning |")
    end = _readme().index("\n\n", start)
    assert _readme()[start:end + 1] == parameter_table(), (
        "paste the output of python -c \"import glmkit.settings as s; "
        "print(s.parameter_table())\" into README.md")


def test_readme_python_examples_run(demo):
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["perm"].null_max["voxel"].shape == (10_001,)


def test_readme_and_example_batch_files_are_valid(tmp_path):
    from glmkit.run import load_grid

    example = load_grid(ROOT / "notebooks" / "batch_example.yaml")
    assert len(example) == 6
    block = re.search(r"```yaml\n(.*?)```", _readme(), flags=re.S).group(1)
    (tmp_path / "grid.yaml").write_text(block)
    names = [s.run_name for s in load_grid(tmp_path / "grid.yaml")]
    named = re.search(r"here `(grid-[^`]+)`", _readme()).group(1)
    assert named in names and len(names) == 6
