"""Tests of glmkit.report.templates: the one jinja2 environment of glmkit's HTML."""

from __future__ import annotations

from importlib import resources

import jinja2
import pytest

from glmkit.errors import ReportError
from glmkit.report.sections import Citations
from glmkit.report.templates import ENVIRONMENT, render

TEMPLATES = resources.files("glmkit.report") / "templates"


def _template_names() -> list[str]:
    return sorted(ENVIRONMENT.list_templates(filter_func=lambda n: n.endswith(".html")))


def test_every_template_autoescapes_and_none_opts_out():
    names = _template_names()
    assert {"report.html", "index.html", "viewer.html", "macros.html",
            "sections/summary.html", "sections/methods.html"} <= set(names)
    for name in names:
        source = ENVIRONMENT.loader.get_source(ENVIRONMENT, name)[0]
        assert "|safe" not in source.replace(" ", ""), name
        assert "autoescape false" not in source, name
    assert ENVIRONMENT.autoescape is True


def test_values_are_escaped_and_undefined_names_are_errors():
    hostile = '<script>alert(1)</script>"\'&'
    out = ENVIRONMENT.from_string('<p title="{{ v }}">{{ v }}</p>').render(v=hostile)
    assert "<script>" not in out and '"\'&' not in out
    assert out.count("&lt;script&gt;") == 2
    with pytest.raises(jinja2.UndefinedError):
        ENVIRONMENT.from_string("{{ missing }}").render()
    with pytest.raises(jinja2.UndefinedError):
        render("sections/explore.html")  # its fragment was not given


def test_scripts_and_styles_are_included_verbatim():
    """viewer.js and viewer.css reach the page byte for byte (braces are not template syntax)."""
    fragment = render("viewer.html", uid="glmkit-viewer-0", title="t",
                      payload={"a": "</script>{{ 1 }}"})
    for name in ("viewer.js", "viewer.css"):
        assert (TEMPLATES / name).read_text(encoding="utf-8") in fragment, name
    data = fragment.split('data-role="viewer-data">')[1].split("</script>")[0]
    assert data == '{"a":"\\u003c/script\\u003e{{ 1 }}"}'  # tojson: safe inside <script>


def test_citations_of_unknown_keys_are_errors():
    cite = Citations({"a": "A (2001)"})
    assert cite.text("x [@a] y [@a]") == "x [1] y [1]"
    with pytest.raises(ReportError, match=r"\[@nope\].*known keys: \['a'\]"):
        cite.text("see [@nope]")
