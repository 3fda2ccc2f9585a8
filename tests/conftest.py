"""Shared fixtures. Tests never use the network.

``GLMKIT_DATA`` is pointed at a temporary folder shared by the whole test session (and by
pytest-xdist workers, which share the parent of their base temp), so tests never read or
write the user's ``~/glmkit_data`` and notebooks run in subprocesses see the same data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def _session_data_dir(config: pytest.Config) -> Path:
    factory = config._tmp_path_factory  # type: ignore[attr-defined]
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "glmkit_data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long test that is the only proof of a claim")


@pytest.fixture(scope="session", autouse=True)
def glmkit_data_dir(request: pytest.FixtureRequest) -> Path:
    """The session's GLMKIT_DATA (a temporary folder), exported for subprocesses too."""
    path = _session_data_dir(request.config)
    old = os.environ.get("GLMKIT_DATA")
    os.environ["GLMKIT_DATA"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GLMKIT_DATA", None)
    else:
        os.environ["GLMKIT_DATA"] = old


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every test is reproducible."""
    return np.random.default_rng(20261125)


@pytest.fixture(scope="session")
def demo(glmkit_data_dir: Path):
    """The embedded demo cohort (association variant), generated once per session."""
    from glmkit.datasets import load_demo

    return load_demo(data_dir=glmkit_data_dir)


@pytest.fixture(scope="session")
def demo_null(glmkit_data_dir: Path):
    """The demo cohort without the planted association (for calibration)."""
    from glmkit.datasets import load_demo

    return load_demo(variant="null", data_dir=glmkit_data_dir)
