"""Packaging: pyproject and environment.yml agree, the package exposes what it promises."""

from __future__ import annotations

import contextlib

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
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


# ----------------------------------------------------------------- README's own-data commands
def _own_data(root: Path, n: int = 16) -> None:
    """What the README's own-data commands expect in the current folder: participants.tsv,
    path/to/maps (flat), spm/sub-XX/con_000[12].nii and path/to/derivatives (a BIDS root
    with fMRIPrep-like names), on a small 3 mm MNI grid with an effect of ``score``."""
    import json

    import nibabel as nib
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(11)
    shape, affine = (16, 18, 14), np.array([[3.0, 0, 0, -24], [0, 3, 0, -45], [0, 0, 3, -21],
                                            [0, 0, 0, 1]])
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    block = np.zeros(shape, bool)
    block[5:10, 6:11, 5:9] = True
    labels = [f"{i + 1:02d}" for i in range(n)]
    score = rng.standard_normal(n)
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in labels], "age": rng.integers(20, 60, n),
                  "score": np.round(50 + 10 * score, 3), "sex": ["F", "M"] * (n // 2)}
                 ).to_csv(root / "participants.tsv", sep="\t", index=False)

    def save(path: Path, value: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.where(brain, 5 + rng.standard_normal(shape) + 3 * value * block, 0)
        img = nib.Nifti1Image(data.astype("f4"), affine)
        img.header.set_sform(affine, code=4)
        img.header.set_qform(affine, code=4)
        nib.save(img, path)

    derivatives = root / "path" / "to" / "derivatives"
    for label, x in zip(labels, score):
        save(root / "path" / "to" / "maps" / f"sub-{label}_con_0001.nii.gz", x)
        save(root / "spm" / f"sub-{label}" / "con_0001.nii", x)
        save(root / "spm" / f"sub-{label}" / "con_0002.nii", 0.0)
        func = derivatives / f"sub-{label}" / "func"
        for desc, space in (("fluency", "MNI152NLin2009cAsym"), ("motor", "MNI152NLin2009cAsym"),
                            ("fluency", "T1w")):
            for suffix in ("effect", "variance"):
                save(func / f"sub-{label}_task-loc_space-{space}_desc-{desc}_{suffix}.nii.gz",
                     x if (desc, suffix) == ("fluency", "effect") else 0.0)
    (derivatives / "dataset_description.json").write_text(json.dumps(
        {"Name": "first levels", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    shutil.copy(root / "participants.tsv", derivatives / "participants.tsv")


def _readme_block(heading: str) -> str:
    """The first bash block of the README section under ``heading``."""
    section = _readme()[_readme().index(heading):]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)


def _run_block(block: str, root: Path, *, timeout: int) -> subprocess.CompletedProcess:
    """``block`` run by bash in ``root``, ``.venv/bin/glmkit`` being this interpreter's."""
    shim = root / ".venv" / "bin" / "glmkit"
    shim.parent.mkdir(parents=True)
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m glmkit \"$@\"\n")
    shim.chmod(0o755)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=root,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow  # three glmkit runs (~2.5 min): the only proof that the README's commands work
def test_readme_own_data_commands_run_as_written(tmp_path):
    """The README's "Your own data" block, executed verbatim by bash in a folder holding what
    it names (``.venv/bin/glmkit`` is this interpreter's glmkit)."""
    import json

    block = _readme_block("## Your own data")
    assert block.count(".venv/bin/glmkit ") == 4
    _own_data(tmp_path)
    out = _run_block(block, tmp_path, timeout=1500)
    assert "Dataset 'maps': 16 subjects" in out.stdout and "age" in out.stdout
    reports = tmp_path / "reports"
    assert out.stdout.count("report: ") == 3
    assert (reports / "score-tfce" / "maps" / "logp_tfce.nii.gz").is_file()
    design = (reports / "score-tfce" / "design.csv").read_text().splitlines()[0]
    assert design.startswith("subject,") and "C(sex)[T.M]" in design
    spm = json.loads((reports / "spm-score" / "summary.json").read_text())
    assert spm["n_subjects"] == 16 and spm["design_columns"] == ["score", "intercept"]
    bids = reports / "bids-score"
    params = json.loads((bids / "params.json").read_text())
    assert params["bids_filter"] == {"desc": "fluency", "space": "MNI152NLin2009cAsym",
                                     "suffix": "effect"}
    assert params["rename"] == {} and params["cut_coords"] is None  # no demo defaults
    z = bids / "bids" / "group" / "contrast-score_stat-z_statmap.nii.gz"
    assert z.is_file()
    for path in [*bids.glob("*.json"), *(bids / "bids").rglob("*.json")]:
        assert ".tmp-" not in path.read_text(), path  # no temporary path in what a run writes


def _design_study(root: Path, n: int = 12) -> None:
    """What the README's design commands expect: study/maps + participants.tsv (group, age,
    score) and study/sessions/sub-XX/ses-{pre,post} + sessions.tsv."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(5)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    shape = (10, 10, 8)
    study = root / "study"
    (study / "maps").mkdir(parents=True)
    groups = np.array(["control", "patient", "sibling"] * (n // 3))
    rows, sessions = [], []
    for i in range(n):
        subject = f"sub-{i:02d}"
        data = rng.normal(size=shape) + 0.5
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine),
                 study / "maps" / f"{subject}_con.nii.gz")
        rows.append({"participant_id": subject, "group": groups[i], "age": 20.0 + 3 * i,
                     "score": float(rng.normal())})
        for level in ("pre", "post"):
            folder = study / "sessions" / subject / f"ses-{level}"
            folder.mkdir(parents=True)
            nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), affine),
                     folder / "con.nii.gz")
            sessions.append({"participant_id": subject, "session": level})
    pd.DataFrame(rows).to_csv(study / "participants.tsv", sep="\t", index=False)
    pd.DataFrame(sessions).to_csv(study / "sessions.tsv", sep="\t", index=False)


def test_readme_design_commands_run_as_written(tmp_path):
    """The README's "Designs" block, executed verbatim by bash on a generated study: each
    command shows the design and says what its contrast tests."""
    block = _readme_block("## Designs")
    assert block.count(".venv/bin/glmkit summary ") == 4
    _design_study(tmp_path)
    out = _run_block(block, tmp_path, timeout=900)
    for line in ("tests: a mean effect greater than zero (one-sided t test)",
                 "tests: a larger effect in patient than in control, adjusting for age "
                 "(one-sided t test)",
                 "tests: an effect of age or score (F test)",
                 "tests: a larger effect in post than in pre (one-sided t test)"):
        assert line in out.stdout, (line, out.stdout[-3000:])
    assert "group: levels control (reference, n=4), patient (n=4), sibling (n=4)" in out.stdout


# ----------------------------------------------------------------- README's Dask blocks
class _FakeSLURMCluster:
    """dask_jobqueue.SLURMCluster's signature, served by a LocalCluster of 2 processes."""

    def __new__(cls, *, cores, processes, memory, walltime, job_extra_directives):
        from distributed import LocalCluster

        assert cores == processes and job_extra_directives == [f"--cpus-per-task={cores}"]
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        cluster.scale = lambda jobs: None  # the two workers are there already
        return cluster


@pytest.mark.slow  # two 100,000-permutation runs through Dask worker processes (~1 min)
def test_readme_dask_blocks_run_as_written(tmp_path, monkeypatch):
    """The README's two Dask blocks, executed as written: the example scheduler's address
    is a LocalCluster of worker processes, SLURMCluster a LocalCluster taking the block's
    arguments, the shared file a memmap written here; both results equal n_jobs=1 bit for bit.
    """
    import sys
    import types

    import distributed
    import numpy as np
    import pandas as pd

    import glmkit

    blocks = re.findall(r"```py\n(.*?)```", _readme(), flags=re.S)
    assert len(blocks) == 2 and "scheduler.example.org" in blocks[0]
    rng = np.random.default_rng(7)
    Y = rng.standard_normal((12, 40)).astype(np.float32)
    np.save(tmp_path / "Y.npy", Y)
    design = pd.DataFrame({"score": rng.standard_normal(12), "intercept": 1.0})
    real_load, real_client = np.load, distributed.Client
    monkeypatch.setattr(np, "load", lambda path, **kw: real_load(
        tmp_path / "Y.npy" if path == "/shared/cohort/Y.npy" else path, **kw))
    started = []

    def client(address=None, **kw):
        if address == "tcp://scheduler.example.org:8786":
            address = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                               processes=True, dashboard_address=None)
            started.append(address)
        return real_client(address, **kw)

    monkeypatch.setattr(distributed, "Client", client)
    monkeypatch.setitem(sys.modules, "dask_jobqueue",
                        types.SimpleNamespace(SLURMCluster=_FakeSLURMCluster))
    namespace = {"np": np, "glmkit": glmkit, "design": design}
    try:
        exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
        first = namespace["result"]
        namespace["client"].close()
        exec(compile(blocks[1], "README.md", "exec"), namespace)  # noqa: S102
        second = namespace["result"]
    finally:  # teardown of the test's clusters: distributed may assert on a worker that is
        # still closing gracefully; that is not what this test is about
        for cluster in [*started, namespace.get("cluster")]:
            with contextlib.suppress(Exception):
                cluster.close()
    for result, dtype in ((first, "float32"), (second, "float64")):
        ref = glmkit.permutation_test(Y, design, "score", n_perm=100_000, n_jobs=1,
                                      dtype=dtype, random_state=2026, verbose=False)
        np.testing.assert_array_equal(result.null_max["voxel"], ref.null_max["voxel"])
        np.testing.assert_array_equal(result.logp_fwer["voxel"], ref.logp_fwer["voxel"])
