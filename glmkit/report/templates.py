"""The one jinja2 environment of glmkit's HTML: report page, sections, viewer, batch index.

Templates live in ``glmkit/report/templates/`` (package data). Autoescaping is on for every
template, so any value a template prints is HTML-escaped unless it is already markup produced
by a template (:func:`render` returns :class:`markupsafe.Markup`) or by jinja2's ``tojson``
filter (JSON made safe inside ``<script>``: ``<``, ``>``, ``&`` and ``'`` become ``\\u``
escapes). No template uses ``|safe``. Undefined names are errors (``StrictUndefined``).

Stylesheets and scripts (``*.css``, ``*.js``) are included verbatim: the loader wraps them in
``{% raw %}`` so that braces in JavaScript are never read as template syntax.

Examples
--------
>>> str(ENVIRONMENT.from_string("<h1>{{ title }}</h1>").render(title="<b>maps</b>"))
'<h1>&lt;b&gt;maps&lt;/b&gt;</h1>'
"""

from __future__ import annotations

from typing import Any

import jinja2
from markupsafe import Markup  # jinja2's own markup type (markupsafe is its dependency)

__all__ = ["ENVIRONMENT", "Markup", "render"]

_VERBATIM = (".css", ".js")


class _Loader(jinja2.PackageLoader):
    """The package's templates; stylesheets and scripts come back as raw (verbatim) text."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        if template.endswith(_VERBATIM):
            if "{% endraw %}" in source:
                raise jinja2.TemplateError(f"{template} contains '{{% endraw %}}'; it is "
                                           "included verbatim and must not")
            source = "{% raw %}" + source + "{% endraw %}"
        return source, filename, uptodate


ENVIRONMENT = jinja2.Environment(
    loader=_Loader("glmkit.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
)
# ``tojson`` writes compact JSON in the order given (the viewer's payload is large) and refuses
# NaN/inf, which JSON.parse would reject
ENVIRONMENT.policies["json.dumps_kwargs"] = {"sort_keys": False, "separators": (",", ":"),
                                             "allow_nan": False}


def render(name: str, /, **context: Any) -> Markup:
    """Render template ``name`` with ``context``; the result is markup (not escaped again).

    Marking it :class:`~markupsafe.Markup` is sound: the text was produced by an autoescaping
    template, in which every value was escaped (or was itself such markup).
    """
    return Markup(ENVIRONMENT.get_template(name).render(**context))
