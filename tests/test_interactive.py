"""glmkit.interactive: the notebook run by hand gets a run folder of its own.

Run All by hand must never overwrite a complete run (``reports/demo`` of ``make demo``) and
never fail because one exists; under ``glmkit run`` (an ``output_dir`` that exists: the
runner's temporary folder) the settings are left alone. The executed copy of a run names a
temporary folder that is gone: run again, it gets a run of its own beside the run it copies.
The whole notebook run by hand in JupyterLab is tests/test_jupyterlab.py's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from glmkit.interactive import interactive_settings, project_root
from glmkit.settings import RunSettings

WHEN = datetime(2026, 11, 29, 12, 30, 5, tzinfo=timezone.utc)
STAMP = "20261129-123005"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A project that has run the demo: pyproject.toml, notebooks/, reports/demo."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "reports" / "demo").mkdir(parents=True)
    (tmp_path / "reports" / "demo" / "report.html").write_text("complete")
    return tmp_path


def test_by_hand_a_new_folder_in_the_projects_reports(checkout):
    s = interactive_settings(RunSettings(), cwd=checkout / "notebooks", now=WHEN)
    assert s.run_name == f"demo-notebook-{STAMP}"
    assert s.resolved_output_dir() == checkout / "reports" / s.run_name
    assert not s.resolved_output_dir().exists()
    assert (checkout / "reports" / "demo" / "report.html").read_text() == "complete"


def test_names_taken_by_runs_or_their_temporary_folders_are_skipped(checkout):
    reports = checkout / "reports"
    (reports / f"demo-notebook-{STAMP}").mkdir()  # Run All twice in one second
    (reports / f".demo-notebook-{STAMP}-2.tmp-abc123").mkdir()  # a run being written
    s = interactive_settings(RunSettings(), cwd=checkout / "notebooks", now=WHEN)
    assert s.run_name == f"demo-notebook-{STAMP}-3"
    assert s.resolved_output_dir() == reports / s.run_name


def test_relative_reports_dir_from_the_project_root_not_the_notebooks_folder(checkout):
    assert project_root(checkout / "notebooks") == checkout
    s = interactive_settings(RunSettings(reports_dir="out/runs", run_name="mine"),
                             cwd=checkout / "notebooks", now=WHEN)
    assert s.resolved_output_dir() == checkout / "out" / "runs" / f"mine-notebook-{STAMP}"


def test_without_a_project_the_kernels_folder(tmp_path):
    folder = tmp_path / "loose"
    folder.mkdir()
    if project_root(folder) is not None:  # a pyproject.toml or .git above the temporary folder
        pytest.skip(f"{project_root(folder)} holds a project marker")
    s = interactive_settings(RunSettings(), cwd=folder, now=WHEN)
    assert s.resolved_output_dir() == folder / "reports" / f"demo-notebook-{STAMP}"


def test_glmkit_run_settings_are_left_alone(checkout):
    """glmkit run's output_dir (its temporary folder, which exists while it runs) and an
    output_dir chosen by the user are kept."""
    running = checkout / "reports" / ".demo.tmp-k2x9q0ab"
    running.mkdir()
    for given in (RunSettings(output_dir=str(running)),
                  RunSettings(output_dir=str(checkout / "elsewhere"))):
        assert interactive_settings(given, cwd=checkout / "notebooks", now=WHEN) == given


def test_executed_copy_run_again_gets_a_run_of_its_own(checkout):
    """reports/demo/notebook.ipynb names reports/.demo.tmp-..., renamed to reports/demo when
    the run completed: run again by hand (its kernel in reports/demo), it is a new run beside
    reports/demo, and the temporary folder is not brought back."""
    gone = checkout / "reports" / ".demo.tmp-k2x9q0ab"
    given = RunSettings(output_dir=str(gone), n_perm=50)
    s = interactive_settings(given, cwd=checkout / "reports" / "demo", now=WHEN)
    assert s.output_dir is None and s.n_perm == 50
    assert s.resolved_output_dir() == checkout / "reports" / f"demo-notebook-{STAMP}"
    # a temporary folder of another run name is not this run's: kept as given
    other = RunSettings(output_dir=str(checkout / "reports" / ".other.tmp-k2x9q0ab"))
    assert interactive_settings(other, cwd=checkout, now=WHEN) == other
