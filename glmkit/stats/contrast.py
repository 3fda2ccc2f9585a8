"""Contrast specifications -> weight vectors: column names, expressions, vectors, matrices.

:func:`contrast_vector` is public as ``glmkit.contrast_vector`` / ``glmkit.stats.glm.contrast_vector``.
Expressions such as ``"2*a - b/2"`` are parsed with :mod:`ast` and evaluated by a small
interpreter that allows only column names, numbers, ``+ - * /`` and requires the result to
be linear in the columns; nothing is ``eval``-ed.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

import numpy as np

from glmkit.errors import ContrastError

__all__ = ["contrast_vector"]


def _expression_vector(expression: str, columns: Sequence[str]) -> np.ndarray:
    """Linear combination of columns from an expression such as ``"2*a - b/2"``."""
    columns = list(columns)
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ContrastError(
            f"contrast {expression!r} is neither a design column nor a valid expression "
            f"({exc.msg}); design columns are {columns}."
        ) from None

    def unit(name: str) -> np.ndarray:
        v = np.zeros(len(columns))
        v[columns.index(name)] = 1.0
        return v

    def ev(node: ast.AST) -> float | np.ndarray:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
        ):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in columns:
                raise ContrastError(
                    f"contrast {expression!r} uses {node.id!r}, which is not a design column; "
                    f"design columns are {columns}."
                )
            return unit(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            val = ev(node.operand)
            return -val if isinstance(node.op, ast.USub) else val
        if isinstance(node, ast.BinOp) and isinstance(
            node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)
        ):
            left, right = ev(node.left), ev(node.right)
            lvec, rvec = isinstance(left, np.ndarray), isinstance(right, np.ndarray)
            if isinstance(node.op, (ast.Add, ast.Sub)):
                if lvec != rvec:
                    raise ContrastError(
                        f"contrast {expression!r} adds a number to a column; a contrast must be a "
                        "linear combination of columns, e.g. 'a - b' or '2*a - b'."
                    )
                return left + right if isinstance(node.op, ast.Add) else left - right
            if isinstance(node.op, ast.Mult):
                if lvec and rvec:
                    raise ContrastError(
                        f"contrast {expression!r} multiplies two columns; only number * column "
                        "is linear."
                    )
                return left * right
            if rvec:
                raise ContrastError(
                    f"contrast {expression!r} divides by a column; only column / number."
                )
            if right == 0:
                raise ContrastError(f"contrast {expression!r} divides by zero.")
            return left / right
        raise ContrastError(
            f"contrast {expression!r} contains {type(node).__name__}, which is not allowed: use "
            f"column names, numbers, +, -, * and /; design columns are {columns}."
        )

    vec = ev(tree)
    if not isinstance(vec, np.ndarray):
        raise ContrastError(
            f"contrast {expression!r} names no design column; columns are {columns}."
        )
    return vec


def contrast_vector(contrast: Any, columns: Sequence[str]) -> np.ndarray:
    """Turn a contrast specification into a vector (t) or matrix (F).

    Parameters
    ----------
    contrast : str, sequence of numbers, 2-D array, or sequence of str
        A column name (``"fluency"``), an expression of column names
        (``"a - b"``, ``"2*a - b"``; parsed, never ``eval``-ed), a vector with
        one weight per column, a matrix with one row per F-contrast row, or a
        list of names/expressions (one row each).
    columns : sequence of str
        Design column names.

    Returns
    -------
    ndarray
        Shape ``(p,)`` for a single row, ``(q, p)`` for several rows.

    Examples
    --------
    >>> contrast_vector("2*a - b", ["a", "b", "intercept"]).tolist()
    [2.0, -1.0, 0.0]
    """
    columns = [str(c) for c in columns]
    p = len(columns)
    if isinstance(contrast, str):
        if contrast in columns:
            vec = np.zeros(p)
            vec[columns.index(contrast)] = 1.0
            return vec
        return _expression_vector(contrast, columns)
    if (
        isinstance(contrast, (list, tuple))
        and contrast
        and all(isinstance(c, str) for c in contrast)
    ):
        return np.vstack([contrast_vector(c, columns) for c in contrast])
    try:
        arr = np.asarray(contrast, dtype=float)
    except (TypeError, ValueError):
        raise ContrastError(
            "contrast must be a column name, an expression, a vector or a matrix; got "
            f"{contrast!r}."
        ) from None
    if arr.ndim == 0 or arr.ndim > 2:
        raise ContrastError(
            f"contrast must be a vector of {p} weights (columns {columns}) or a (q, {p}) matrix; "
            f"got an array of shape {arr.shape}."
        )
    if arr.shape[-1] != p:
        raise ContrastError(
            f"contrast has length {arr.shape[-1]} but the design has {p} columns {columns}: "
            f"expected {p} weights, got {arr.shape[-1]}."
        )
    if not np.all(np.isfinite(arr)):
        raise ContrastError("contrast holds NaN or infinite weights.")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.size == 0 or np.all(arr == 0):
        raise ContrastError(
            "contrast is all zeros: nothing to test; give at least one non-zero weight."
        )
    return arr
