"""Shared fixtures. Tests never use the network.

``GLMKIT_DATA`` is pointed at a temporary folder shared by the whole test session (and by
pytest-xdist workers, which share the parent of their base temp), so tests never read or
write the user's ``~/glmkit_data`` and notebooks run in subprocesses see the same data.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

#: flags for headless Chromium in containers; nothing in the background may use the network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _session_data_dir(config: pytest.Config) -> Path:
    factory = config._tmp_path_factory  # type: ignore[attr-defined]
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "glmkit_data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long test that is the only proof of a claim")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """With ``CI=true`` a module skipped while it is collected (``importorskip`` or
    ``pytest.skip(allow_module_level=True)`` at import time) is a failure: such a skip would
    hide every test in it."""
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"CI: {collector.nodeid} was skipped at collection ({reason}); "
                           "install what it needs, or skip inside a fixture that fails in CI")


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
    from glmkit.data.datasets import load_demo

    return load_demo(data_dir=glmkit_data_dir)


@pytest.fixture(scope="session")
def demo_null(glmkit_data_dir: Path):
    """The demo cohort without the planted association (for calibration)."""
    from glmkit.data.datasets import load_demo

    return load_demo(variant="null", data_dir=glmkit_data_dir)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright), launched once per test module that uses it.

    Module scope, not session: Playwright's sync API keeps its event loop running while it
    is open, and a later ``asyncio.run()`` (tests/test_widgets.py) would then fail. This is
    the only place browser tests may skip: outside CI when Playwright is not installed or
    ``chromium`` is not on PATH (``make test`` installs both). With ``CI=true`` both are
    required and their absence fails the test: in CI the browser tests are the only proof of
    the report's viewer. Test modules must not skip at import time (that bypasses this).
    """
    executable = shutil.which("chromium")
    try:
        from playwright import sync_api
    except ImportError as exc:
        message = f"Playwright is not installed ({exc}); `make test` installs the test extra"
        if _in_ci():
            pytest.fail(f"CI: {message}", pytrace=False)
        pytest.skip(message)
    if executable is None:
        message = "chromium is not on PATH; `make test` (or apt-get install chromium) installs it"
        if _in_ci():
            pytest.fail(f"CI: {message}", pytrace=False)
        pytest.skip(message)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _planted_z(
    rng: np.random.Generator,
    shape: Sequence[int],
    affine: np.ndarray,
    peaks: Sequence[Sequence[float]],
    amplitudes: Sequence[float] = (7.0, 5.0),
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth unit-variance z map on an ellipsoid "brain" with Gaussian blobs at ``peaks``.

    Returns ``(z, mask)``: blobs of height ``amplitudes`` (sigma 2 voxels) at the voxels
    nearest to the mm coordinates ``peaks``, z = 0 outside the mask.
    """
    g = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    radii = np.array(shape)[:, None, None, None] * 0.45
    mask = (((g - c[:, None, None, None]) / radii) ** 2).sum(0) <= 1
    z = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    z /= z[mask].std()
    for peak, amp in zip(peaks, amplitudes):
        ijk = np.round(np.linalg.solve(affine, [*peak, 1])[:3])
        z += amp * np.exp(-((g - ijk[:, None, None, None]) ** 2).sum(0) / (2 * 2.0**2))
    z[~mask] = 0.0
    return z, mask


@pytest.fixture(scope="session")
def planted_z() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``planted_z(rng, shape, affine, peaks)`` -> ``(z, mask)``: synthetic map with blobs."""
    return _planted_z
