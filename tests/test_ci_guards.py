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
def test_module_skipped_at_import_fails_in_ci(tree, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    tree.makepyfile(test_skipped_module=IMPORT_TIME_SKIP)
    result = tree.runpytest_inprocess("-p", "no:cacheprovider")
    if ci:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*CI: *was skipped at collection*"])
    else:
        result.assert_outcomes(skipped=1)


@pytest.mark.parametrize("ci", ["true", ""])
def test_browser_fixture_fails_in_ci_without_chromium(tree, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PATH", str(tree.path))  # no chromium here
    tree.makepyfile(test_browser_needed=BROWSER_TEST)
    result = tree.runpytest_inprocess("-p", "no:cacheprovider")
    if ci:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*CI: *chromium is not on PATH*"])
    else:
        result.assert_outcomes(skipped=1)
