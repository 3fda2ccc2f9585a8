"""Plain-text helpers of the report page (:mod:`glmkit.report`) and the objects templates show.

Nothing here writes HTML: numbers are formatted as text, tables become :class:`Table` (rows
of text cells) and sections :class:`Section` (key, titles and a body rendered by a template);
the templates of :mod:`glmkit.report.templates` turn them into escaped markup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from importlib import metadata

import numpy as np
import pandas as pd

from glmkit.report.templates import Markup
__all__ = ["Section", "Table", "table", "fmt", "coords", "mm", "version", "settings_dict",
           "attr"]


@dataclasses.dataclass(frozen=True)
class Section:
    """One section of the report page; the page's navigation is derived from the list of them.

    Attributes
    ----------
    key : str
        Anchor (``id``) of the section.
    title : str
        Heading.
    body : markupsafe.Markup
        The section's content, rendered by its template.
    nav : str
        Link text in the navigation bar (default: the title).
    """

    key: str
    title: str
    body: Markup
    nav: str = ""

    def __post_init__(self) -> None:
        if not self.nav:
            object.__setattr__(self, "nav", self.title)


@dataclasses.dataclass(frozen=True)
class Table:
    """A table as text: header, rows of ``(text, is_number)`` cells, optional row classes."""

    columns: list[str]
    rows: list[tuple[str, list[tuple[str, bool]]]]  # (row class, cells)
    total: int  # rows of the full table (more than shown when truncated)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.rows)


def fmt(value, digits: int = 4) -> str:
    """A table cell's text: integers as is, floats to ``digits`` significant digits, NaN "n/a"."""
    if value is None or (np.ndim(value) == 0 and not isinstance(value, (str, float, np.floating))
                         and pd.isna(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "n/a" if np.isnan(value) else str(value)
        return f"{value:.{digits}g}"
    return str(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def table(frame: pd.DataFrame, *, index: bool = False, row_classes: Sequence[str] | None = None,
          max_rows: int | None = None) -> Table:
    """``frame`` as a :class:`Table` (numbers flagged for right alignment), at most ``max_rows``."""
    if index:
        frame = frame.reset_index()
    shown = frame if max_rows is None else frame.head(max_rows)
    rows = []
    for i, row in enumerate(shown.itertuples(index=False)):
        cls = row_classes[i] if row_classes is not None else ""
        rows.append((cls, [(fmt(value), _is_number(value)) for value in row]))
    return Table([str(c) for c in shown.columns], rows, len(frame))


def version(package: str) -> str:
    """Installed version of ``package`` ("not installed" when absent)."""
    if package == "glmkit":
        from glmkit._version import __version__
        return __version__
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def coords(affine: np.ndarray, ijk) -> tuple[float, float, float]:
    """mm coordinates of voxel ``ijk``."""
    xyz = affine @ np.r_[np.asarray(ijk, dtype=float), 1.0]
    return tuple(float(v) for v in xyz[:3])


def mm(xyz) -> str:
    """``(x, y, z)`` rounded to whole mm, as text."""
    return "(" + ", ".join(f"{v:.0f}" for v in xyz) + ")"


def settings_dict(settings) -> dict:
    """Field -> value of a settings dataclass, mapping or plain object."""
    if dataclasses.is_dataclass(settings):
        return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    if isinstance(settings, Mapping):
        return dict(settings)
    return dict(vars(settings))


def attr(obj, name: str, default=None):
    """``obj.name``, or ``default`` when ``obj`` is None or lacks it."""
    return getattr(obj, name, default) if obj is not None else default
