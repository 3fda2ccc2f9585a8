"""Words that fit the design: the report says what was tested (glmkit/report/words.py)."""

from __future__ import annotations

import html
import re

import pytest

from glmkit.report.words import describe_test

LEVELS = {"group": {"control": None, "patient": "group[patient]", "sibling": "group[sibling]"}}
GROUP_COLUMNS = ["group[patient]", "group[sibling]", "age", "intercept"]


@pytest.mark.parametrize("columns, contrast, kw, phrase, short, design", [
    (["intercept"], "intercept", {}, "a mean effect greater than zero", "mean > 0",
     "one-sample"),
    (["intercept"], "intercept", {"two_sided": True}, "a mean effect different from zero",
     "mean ≠ 0", "one-sample"),
    (["intercept"], "-intercept", {}, "a mean effect less than zero", "mean < 0", "one-sample"),
    (GROUP_COLUMNS, "patient - control", {"levels": LEVELS},
     "a larger effect in patient than in control, adjusting for age", "patient > control",
     "groups"),
    (GROUP_COLUMNS, "patient", {"levels": LEVELS},
     "a larger effect in patient than in control, adjusting for age", "patient > control",
     "groups"),
    (GROUP_COLUMNS, "sibling - patient", {"levels": LEVELS, "two_sided": True},
     "a difference between sibling and patient, adjusting for age", "sibling ≠ patient",
     "groups"),
    (GROUP_COLUMNS, "age", {"levels": LEVELS},
     "a positive association with age, adjusting for group", "age", "association"),
    (["score", "age", "intercept"], "-score", {}, "a negative association with score, "
     "adjusting for age", "−score", "association"),
    (["score", "intercept"], "score", {"two_sided": True}, "an association with score",
     "score (±)", "association"),
    (["age", "score", "intercept"], ["age", "score"], {}, "an effect of age or score",
     "F: age, score", "F test"),
    (["intercept"], "post - pre", {"within": "session"}, "a larger effect in post than in pre",
     "post > pre", "paired"),
    (["a", "b", "intercept"], "2*a - b", {}, "a positive value of the contrast 2*a - b",
     "2*a - b > 0", "contrast"),
], ids=["one-sample", "one-sample-2s", "one-sample-neg", "groups", "level-vs-reference",
        "groups-2s", "ancova-covariate", "negative-association", "association-2s", "F",
        "paired", "expression"])
def test_describe_test(columns, contrast, kw, phrase, short, design):
    words = describe_test(columns, contrast, **kw)
    assert (words.phrase, words.short, words.design) == (phrase, short, design)
    assert words.test == ("F test" if design == "F test" else
                          f"{'two' if kw.get('two_sided') else 'one'}-sided t test")


def _text(page: str, section: str) -> str:
    start = page.index(f'id="{section}"')
    end = page.index("</section>", start)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page[start:end])).split())


@pytest.mark.slow
def test_report_of_a_group_design_speaks_of_groups(tmp_path):
    from glmkit import write_report
    from glmkit.pipeline import run_analysis

    result = run_analysis(covariates=("sex", "pseudo"), rename={}, contrast="M - F",
                          two_sided=True, n_perm=20, smoothing_fwhm=0)
    page = write_report(result, tmp_path / "run").report.read_text(encoding="utf-8")
    summary, methods = _text(page, "summary"), _text(page, "methods")
    assert "a difference between M and F, adjusting for pseudo, two-sided t test; no " \
           "smoothing." in summary
    assert "no voxel shows a difference between M and F" in summary or \
        re.search(r"\d+ voxels? in \d+ clusters? shows? a difference between M and F", summary)
    assert "association" not in summary
    assert "without smoothing" in methods and "mm FWHM" not in methods
    assert "The contrast M - F (a difference between M and F, adjusting for pseudo) was " \
           "tested with a two-sided t test" in methods
    assert "<title>glmkit report: M ≠ F" in page
