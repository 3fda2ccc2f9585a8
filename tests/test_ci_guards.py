"""The skip guards of tests/conftest.py: with ``CI=true`` nothing that proves a claim may be
skipped because something is missing (a module skipped at import time, or a browser test
without Playwright or Chromium); outside CI such tests skip with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text(encoding="utf-8")

IMPORT_TIME_SKIP = """
import pytest
pytest.importorskip("glmkit_module_that_does_not_exist")

def test_never_runs():
    pass
"""

BROWSER_TEST = """
def test_needs_a_browser(browser):
    pass
"""


@pytest.fixture
def tree(pytester):
    pytester.makeconftest(CONFTEST)
    return pytester


@pytest.mark.parametrize("ci", ["true", ""])
@pytest.mark.parametrize(("module", "message"), [
    (IMPORT_TIME_SKIP, "*CI: *was skipped at collection*"),
    (BROWSER_TEST, "*CI: *chromium is not on PATH*"),
], ids=["import_time_skip", "browser_without_chromium"])
def test_missing_requirement_fails_in_ci_and_skips_elsewhere(tree, monkeypatch, ci, module,
                                                             message):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PATH", str(tree.path))  # no chromium here
    tree.makepyfile(test_needs_something=module)
    result = tree.runpytest_inprocess("-p", "no:cacheprovider")
    if ci:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines([message])
    else:
        result.assert_outcomes(skipped=1)
