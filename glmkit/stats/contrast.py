"""Contrasts, parsed in one place: the GLM, the permutation engine, the run settings and the
pipeline's checks all call this module.

A contrast is a column name (``"fluency"``), an expression of column names (``"a - b"``,
``"2*a - b/2"``), a vector of weights (one per design column), a matrix (one row per F row)
or a list of names/expressions (one row each). It is read in two steps:

1. :func:`parse_contrast` needs no design. It turns the contrast into rows of
   ``{column: weight}`` (or numeric weights) and rejects what no design can rescue: an
   empty contrast, a contrast that is zero whatever the design (``"score - score"``,
   ``"0*score"``, ``[0, 0]``), non-linear expressions (``"a*b"``, ``"a + 1"``), division by
   zero, non-finite weights.
2. :meth:`Contrast.matrix` reads it against a design: its column names (an unknown name is
   an error listing the columns, with a did-you-mean) and, when given, its matrix ``X``
   (each contrast row must lie in the row space of ``X``, i.e. be estimable; otherwise the
   error says which columns the data cannot separate and why).

:func:`contrast_vector` does both and is public as ``glmkit.contrast_vector`` and
``glmkit.stats.glm.contrast_vector``.

Expressions are parsed with :mod:`ast` and evaluated by a small interpreter that allows
column names, numbers, ``+ - * /`` and parentheses, in exact rational arithmetic (so
``"0.1*a + 0.2*a - 0.3*a"`` is exactly zero); nothing is ``eval``-ed. A name that is not a
Python identifier is written between backticks: ```` `C(sex)[T.M]` - 0.5*age ````. A text
that is not such an expression (``"C(sex)[M]"``, ``"age:score"``, ``"reading score"``) is
taken as one column name verbatim: a formula design can have such columns, so only step 2
can tell a verbatim name from a typo, and its error then says why the text is not an
expression. A text equal to a design column is always that column.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from scipy import linalg

from glmkit.errors import ContrastError, ParameterError, checked_arguments

__all__ = ["Contrast", "parse_contrast", "contrast_vector"]

_QUOTED = re.compile(r"`([^`]*)`")
_GRAMMAR = ("use column names, numbers, +, -, * and / (quote other names with backticks, "
            "e.g. `C(sex)[T.M]`)")
_FORMS = ("a design column, an expression of columns such as 'a - b' or '2*a', or one weight "
          "per column")


#: words for the syntax a contrast may not use
_NODE_WORDS = {"Call": "a function call", "Subscript": "brackets [...]",
               "Attribute": "an attribute (a.b)", "Compare": "a comparison", "Pow": "a power **",
               "Constant": "a constant that is not a number", "Tuple": "a comma"}


class _NotAnExpression(Exception):
    """The text is outside the grammar: it may still be a verbatim column name."""


@dataclass(frozen=True, eq=False)
class Contrast:
    """A contrast parsed without a design (step 1); :meth:`matrix` is step 2.

    Attributes
    ----------
    name : str
        The contrast as the user wrote it (``"2*fluency"``, ``"[1, -1, 0]"``,
        ``"age, score"``); results and messages use it.
    rows : tuple of dict or None
        Symbolic rows ``{column: weight}`` (zero weights kept), or None for numeric weights.
    weights : ndarray or None
        Numeric weights, shape ``(q, p)``, or None for symbolic rows.
    is_list : bool
        Given as a list of contrasts (names/expressions, or a matrix of several rows): an
        F-test.
    text : str or None
        The single string given (a design column of exactly that name wins over parsing).
    verbatim : dict
        Names taken verbatim because their text is not an expression -> why it is not.
    """

    name: str
    rows: tuple[dict[str, float], ...] | None = None
    weights: np.ndarray | None = None
    is_list: bool = False
    text: str | None = None
    verbatim: Mapping[str, str] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """Number of contrast rows (1 for a t contrast)."""
        return len(self.rows) if self.rows is not None else int(self.weights.shape[0])

    def matrix(self, columns: Sequence[str] | None, X: Any = None, *,
               where: str = "the design", levels: Mapping[str, Mapping[str, Any]] | None = None
               ) -> np.ndarray:
        """Weights against a design (step 2): shape ``(q, p)``.

        Parameters
        ----------
        columns : sequence of str or None
            The design's column names; None for an unnamed (array) design, which then
            accepts numeric weights only (``X`` gives ``p``).
        X : array-like, shape (n, p), optional
            The design matrix: each row of the contrast must be estimable with it.
        where : str
            How messages name the design (e.g. "the design built from covariates=...").
        levels : mapping, optional
            Categorical factors of the design: factor -> {level: its column, or None for the
            reference level}. A level name stands for its column (``'patient'``), and the
            reference level for nothing (``'patient - control'`` is the patient column when
            ``control`` is the reference), so contrasts are written with level names.

        Raises
        ------
        ContrastError
            Unknown column, wrong number of weights, a row that is zero with this design (a
            reference level alone), or a row that is not estimable.
        """
        names = None if columns is None else [str(c) for c in columns]
        X = None if X is None else np.asarray(X, dtype=float)
        if names is None and (X is None or X.ndim != 2):
            raise ParameterError("contrast: pass the design's columns= (names) or its matrix "
                                 f"X= (2-D); found columns=None and X={X!r:.80}")
        if X is not None and (X.ndim != 2 or X.shape[0] == 0):
            raise ParameterError(f"X must be the design matrix (2-D, one row per subject); "
                                 f"found shape {X.shape}")
        p = len(names) if names is not None else X.shape[1]
        if self.weights is not None:
            W = self.weights
            if W.shape[1] != p:
                shown = f" {names}" if names is not None else ""
                raise ContrastError(
                    f"contrast {self.name!r} has {W.shape[1]} weights but {where} has {p} "
                    f"columns{shown}: expected {p} weights, got {W.shape[1]}; give a vector of "
                    f"length {p} (one weight per column, in column order) or a column name.")
        elif names is None:
            raise ContrastError(
                f"contrast {self.name!r} uses a column name but design is an array without "
                f"column names; pass a DataFrame design (named columns) or a vector of {p} "
                "weights.")
        elif self.text is not None and self.text in names:
            W = np.zeros((1, p))
            W[0, names.index(self.text)] = 1.0
        else:
            W = np.zeros((len(self.rows), p))
            for i, row in enumerate(self.rows):
                for name, weight in row.items():
                    index = self._column_index(name, names, where, levels or {})
                    if index is not None:
                        W[i, index] += weight
            _check_not_reference_only(W, self, levels or {})
        if W.shape[0] > 1 and np.linalg.matrix_rank(W) < W.shape[0]:
            raise ContrastError(
                f"contrast {self.name!r}: its {W.shape[0]} rows are linearly dependent (rank "
                f"{np.linalg.matrix_rank(W)}) with {where}, so the F test is not defined; drop "
                "the rows that are combinations of the others")
        if X is not None:
            _check_estimable(W, X, names, self.name, where)
        return W

    def vector(self, columns: Sequence[str] | None, X: Any = None, *,
               where: str = "the design", levels: Mapping[str, Mapping[str, Any]] | None = None
               ) -> np.ndarray:
        """The weights of a one-row (t) contrast, shape ``(p,)``; several rows are an error."""
        W = self.matrix(columns, X, where=where, levels=levels)
        if W.shape[0] != 1:
            raise ContrastError(
                f"contrast {self.name!r} has {W.shape[0]} rows (a list of contrasts, i.e. an "
                "F-test) where one t contrast is expected; test one name, expression or vector "
                "at a time.")
        return W[0]

    def _column_index(self, name: str, columns: list[str], where: str,
                      levels: Mapping[str, Mapping[str, Any]]) -> int | None:
        """Index of ``name`` among the design's columns, or of the column of the level it
        names (None for a reference level): the one place names are resolved."""
        if name in columns:
            return columns.index(name)
        owners = {factor: cols[name] for factor, cols in levels.items() if name in cols}
        if len(owners) > 1:
            raise ContrastError(
                f"contrast {self.name!r} names {name!r}, a level of several factors "
                f"({', '.join(owners)}); name the column instead: "
                f"{[c for c in owners.values() if c]}")
        if owners:
            column = next(iter(owners.values()))
            return None if column is None else columns.index(column)
        candidates = columns + [lv for cols in levels.values() for lv in cols]
        same_case = [c for c in candidates if c.lower() == name.lower()]
        close = same_case or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if name in self.verbatim:
            what = f"is neither a design column nor a valid expression ({self.verbatim[name]})"
            subject = f"contrast {name!r}" if name == self.text else (
                f"contrast {self.name!r}: {name!r}")
        else:
            subject = f"contrast {self.name!r} names {name!r}, which"
            what = "is not a design column"
        raise ContrastError(f"{subject} {what}: {where} has columns {columns}"
                            f"{_levels_text(levels)}{hint}; pass {_FORMS}.")


# ------------------------------------------------------------------------- step 1: parse
def parse_contrast(contrast: Any) -> Contrast:
    """Parse a contrast without a design (step 1).

    Parameters
    ----------
    contrast : str, sequence of numbers, 2-D array, or sequence of str
        A column name, an expression of column names, a vector (one weight per column), a
        matrix (one row per F row), or a list of names/expressions (one row each).

    Returns
    -------
    Contrast

    Raises
    ------
    ContrastError
        Empty contrast, zero whatever the design, non-linear expression, division by zero,
        non-finite or mixed weights.

    Examples
    --------
    >>> parse_contrast("2*a - b/2").rows
    ({'a': 2.0, 'b': -0.5},)
    >>> parse_contrast("score - score")
    Traceback (most recent call last):
    ...
    glmkit.errors.ContrastError: contrast 'score - score' is all zeros (score: 0)...
    """
    if isinstance(contrast, Contrast):
        return contrast
    if isinstance(contrast, str):
        return _parse_text(contrast)
    if isinstance(contrast, (list, tuple)) and contrast and all(
            isinstance(c, str) for c in contrast):
        parts = [_parse_text(c) for c in contrast]
        return Contrast(name=", ".join(p.name for p in parts),
                        rows=tuple(p.rows[0] for p in parts), is_list=True,
                        verbatim={k: v for p in parts for k, v in p.verbatim.items()})
    return _parse_weights(contrast)


def _parse_text(text: str) -> Contrast:
    stripped = text.strip()
    if not stripped:
        raise ContrastError(f"contrast is empty: expected {_FORMS}, e.g. 'fluency'.")
    quoted: dict[str, str] = {}

    def placeholder(match: re.Match) -> str:
        key = f"__quoted{len(quoted)}__"
        quoted[key] = match.group(1)
        return key

    source = _QUOTED.sub(placeholder, stripped)
    try:
        tree = ast.parse(source, mode="eval")
        value = _Linear(stripped, quoted).evaluate(tree.body)
    except SyntaxError as exc:
        return _verbatim(stripped, exc.msg)
    except _NotAnExpression as exc:
        return _verbatim(stripped, str(exc))
    if not isinstance(value, dict):
        raise ContrastError(f"contrast {stripped!r} is a number and names no column: expected "
                            f"{_FORMS}.")
    row = {name: float(weight) for name, weight in value.items()}
    if not any(row.values()):
        detail = ", ".join(f"{name}: {weight:g}" for name, weight in row.items())
        raise ContrastError(
            f"contrast {stripped!r} is all zeros ({detail}): it tests nothing, whatever the "
            "design; give at least one non-zero weight, e.g. "
            f"{next(iter(row))!r}.")
    return Contrast(name=stripped, rows=(row,), text=stripped)


def _verbatim(text: str, why: str) -> Contrast:
    return Contrast(name=text, rows=({text: 1.0},), text=text, verbatim={text: why})


class _Linear:
    """Evaluate an expression tree to a number (Fraction) or ``{column: Fraction}``."""

    def __init__(self, text: str, quoted: Mapping[str, str]) -> None:
        self.text, self.quoted = text, quoted

    def fail(self, what: str) -> ContrastError:
        return ContrastError(f"contrast {self.text!r} {what}; a contrast is a linear "
                             "combination of columns, e.g. 'a - b' or '2*a - b/2'.")

    def evaluate(self, node: ast.AST) -> Fraction | dict[str, Fraction]:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            if not np.isfinite(node.value):
                raise self.fail(f"holds the non-finite number {node.value!r}")
            return Fraction(repr(node.value)) if isinstance(node.value, float) \
                else Fraction(node.value)
        if isinstance(node, ast.Name):
            name = self.quoted.get(node.id, node.id)
            if not name:
                raise self.fail("quotes an empty name (``)")
            return {name: Fraction(1)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.evaluate(node.operand)
            return value if isinstance(node.op, ast.UAdd) else _scale(value, Fraction(-1))
        if isinstance(node, ast.BinOp) and isinstance(node.op,
                                                      (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            return self._binary(node.op, self.evaluate(node.left), self.evaluate(node.right))
        kind = type(node.op if isinstance(node, ast.BinOp) else node).__name__
        raise _NotAnExpression(f"it contains {_NODE_WORDS.get(kind, kind)}, which is not "
                               f"allowed: {_GRAMMAR}")

    def _binary(self, op: ast.operator, left, right):
        lcol, rcol = isinstance(left, dict), isinstance(right, dict)
        if isinstance(op, (ast.Add, ast.Sub)):
            if lcol != rcol:
                raise self.fail("adds a number to a column")
            if not lcol:
                return left + right if isinstance(op, ast.Add) else left - right
            out = dict(left)
            sign = 1 if isinstance(op, ast.Add) else -1
            for name, weight in right.items():
                out[name] = out.get(name, Fraction(0)) + sign * weight
            return out
        if isinstance(op, ast.Mult):
            if lcol and rcol:
                raise self.fail("multiplies two columns (only number * column is linear)")
            return _scale(right, left) if rcol else _scale(left, right)
        if rcol:
            raise self.fail("divides by a column (only column / number is linear)")
        if right == 0:
            raise self.fail("divides by zero")
        return _scale(left, 1 / right)


def _scale(value, factor: Fraction):
    if isinstance(value, dict):
        return {name: weight * factor for name, weight in value.items()}
    return value * factor


def _parse_weights(contrast: Any) -> Contrast:
    try:
        W = np.asarray(contrast, dtype=float)
    except (TypeError, ValueError):
        raise ContrastError(
            f"contrast {contrast!r} is not understood: expected {_FORMS}, a matrix (one row "
            "per F row) or a list of names/expressions; a list mixing names and numbers is "
            "neither.") from None
    name = _format_weights(W)
    if W.ndim not in (1, 2) or W.size == 0:
        raise ContrastError(f"contrast {name!r} has shape {W.shape}: expected a vector of "
                            "weights (one per column) or a matrix (one row per F row).")
    if not np.all(np.isfinite(W)):
        raise ContrastError(f"contrast {name!r} holds NaN or infinite weights; give finite "
                            "numbers.")
    matrix = W if W.ndim == 2 else W[None, :]
    zero = [i for i, row in enumerate(matrix) if not np.any(row)]
    if zero:
        where = "" if W.ndim == 1 else f" in row(s) {zero}"
        raise ContrastError(f"contrast {name!r} is all zeros{where}: it tests nothing, whatever "
                            "the design; give at least one non-zero weight per row.")
    return Contrast(name=name, weights=matrix, is_list=matrix.shape[0] > 1)


def _format_weights(W: np.ndarray) -> str:
    if W.ndim == 1:
        return "[" + ", ".join(f"{v:g}" for v in W) + "]"
    if W.ndim == 2:
        return "[" + ", ".join(_format_weights(row) for row in W) + "]"
    return repr(W.tolist())


def _levels_text(levels: Mapping[str, Mapping[str, Any]]) -> str:
    """`` and levels group: control (reference), patient`` for messages."""
    if not levels:
        return ""
    parts = [f"{factor}: " + ", ".join(f"{lv} (reference)" if col is None else str(lv)
                                       for lv, col in cols.items())
             for factor, cols in levels.items()]
    return " and levels " + "; ".join(parts)


def _check_not_reference_only(W: np.ndarray, parsed: Contrast,
                              levels: Mapping[str, Mapping[str, Any]]) -> None:
    """A row made of reference levels only tests nothing with this design."""
    for i in np.flatnonzero(~W.any(axis=1)):
        names = list(parsed.rows[i])
        refs = [n for n in names for cols in levels.values() if cols.get(n, 0) is None]
        factor = next((f for f, cols in levels.items() if refs and refs[0] in cols), "?")
        others = [lv for lv, col in levels.get(factor, {}).items() if col is not None]
        raise ContrastError(
            f"contrast {parsed.name!r} is zero with this design: {refs or names} "
            f"{'is the reference level' if len(refs) == 1 else 'are reference levels'} of "
            f"{factor!r}, absorbed by the intercept; compare levels instead, e.g. "
            f"'{others[0] if others else 'level'} - {refs[0] if refs else 'reference'}'.")


# -------------------------------------------------------------------- step 2: estimable
def _check_estimable(W: np.ndarray, X: np.ndarray, columns: list[str] | None, name: str,
                     where: str) -> None:
    """Each row of ``W`` must lie in the row space of ``X`` (``w pinv(X) X == w``)."""
    proj = W @ linalg.pinv(X) @ X
    ok = np.all(np.isclose(proj, W, atol=1e-8 * max(1.0, float(np.abs(W).max()))), axis=1)
    if ok.all():
        return
    row = W[int(np.flatnonzero(~ok)[0])]
    columns = columns or [f"x{j}" for j in range(X.shape[1])]
    raise ContrastError(
        f"contrast {name!r} is not estimable with {where} (columns {columns}): "
        f"{_why(row, X, columns)}; test a combination the data determine, or remove the "
        "column(s) the data cannot separate.")


def _why(row: np.ndarray, X: np.ndarray, columns: list[str]) -> str:
    """Why ``row`` is outside the row space of ``X``: a zero column, or the dependency."""
    empty = [c for c, w, x in zip(columns, row, X.T, strict=True) if w and not np.any(x)]
    if empty:
        return (f"column(s) {empty} are zero for every subject (e.g. a level whose subjects "
                "were all excluded), so no data inform their weight")
    _, s, vt = np.linalg.svd(X)
    tol = s.max() * max(X.shape) * np.finfo(float).eps
    rank = int(np.sum(s > tol))
    null = vt[rank:]
    if not len(null):
        return (f"the design is nearly rank deficient (condition number "
                f"{s.max() / s.min():.3g}), so the data barely separate its columns")
    vec = null[int(np.argmax(np.abs(null @ row)))]
    keep = np.abs(vec) > 1e-6 * np.abs(vec).max()
    vec = vec / vec[np.flatnonzero(keep)[0]]
    terms = " ".join(f"{v:+.3g}*{c}" for c, v, k in zip(columns, vec, keep, strict=True) if k)
    involved = [c for c, k in zip(columns, keep, strict=True) if k]
    return (f"the design has rank {rank} < {X.shape[1]} columns and {terms.lstrip('+')} = 0 "
            f"for every subject, so the data cannot separate {involved}; the contrast's "
            "weights do not cancel along that dependency")


# ------------------------------------------------------------------------- both steps
@checked_arguments(columns="names?", X="array?", levels="mapping?")
def contrast_vector(contrast: Any, columns: Sequence[str] | None, *, X: Any = None,
                    levels: Mapping[str, Mapping[str, Any]] | None = None) -> np.ndarray:
    """Turn a contrast specification into a vector (t) or matrix (F).

    Parameters
    ----------
    contrast : str, sequence of numbers, 2-D array, or sequence of str
        A column name (``"fluency"``), an expression of column names
        (``"a - b"``, ``"2*a - b"``; parsed, never ``eval``-ed), a vector with
        one weight per column, a matrix with one row per F-contrast row, or a
        list of names/expressions (one row each).
    columns : sequence of str or None
        Design column names (None: an unnamed design, weights only; then give ``X``).
    X : array-like, shape (n, p), optional
        Design matrix; when given, every row must be estimable with it.
    levels : mapping, optional
        Categorical factors: factor -> {level: column or None (reference)}, so level names
        can be used (:attr:`glmkit.stats.design.Design.levels`).

    Returns
    -------
    ndarray
        Shape ``(p,)`` for a single row, ``(q, p)`` for several rows or a list of names.

    Examples
    --------
    >>> contrast_vector("2*a - b", ["a", "b", "intercept"]).tolist()
    [2.0, -1.0, 0.0]
    """
    parsed = parse_contrast(contrast)
    W = parsed.matrix(columns, X, levels=levels)
    return W if parsed.is_list else W[0]
