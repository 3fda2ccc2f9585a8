"""One exception hierarchy for glmkit.

Every error glmkit raises on purpose is a :class:`GlmkitError`. Each subclass
also inherits the built-in exception a caller would naturally catch, as
scikit-learn's ``NotFittedError(ValueError, AttributeError)`` does, so
``except ValueError`` keeps working in user code.

Messages name the input (parameter, file, column), what was expected, what was
found, and how to fix it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "GlmkitError",
    "ParameterError",
    "DataFileNotFoundError",
    "ImageError",
    "DatasetError",
    "QCError",
    "DesignError",
    "ContrastError",
    "RunError",
    "RunLockedError",
    "ReportError",
    "ResourceError",
]


class GlmkitError(Exception):
    """Base class of every error raised by glmkit on purpose."""


class ParameterError(GlmkitError, ValueError):
    """A parameter (function argument, notebook parameter, CLI flag) is invalid."""


class DataFileNotFoundError(GlmkitError, FileNotFoundError):
    """An input file or folder does not exist or holds no usable file."""


class ImageError(GlmkitError, ValueError):
    """An image cannot be read or does not have the expected shape, grid or values."""


class DatasetError(GlmkitError, ValueError):
    """Maps and subject table do not fit together (ids, counts, columns)."""


class QCError(GlmkitError, ValueError):
    """Quality control cannot proceed or leaves too few subjects."""


class DesignError(GlmkitError, ValueError):
    """The design matrix cannot be built or is not estimable."""


class ContrastError(ParameterError):
    """A contrast is malformed, zero, or does not match (or is not estimable with) the design.

    A contrast is a parameter (of ``compute_contrast``, ``permutation_test`` and ``glmkit
    run``) and the fix is always to change it, so this is a :class:`ParameterError` (and so a
    ``ValueError``): ``except ParameterError`` catches every bad run parameter, and the
    command line reports it as a usage error (exit status 2), whether settings validation or
    the pipeline's check before any map is read found it.
    """


class RunError(GlmkitError, RuntimeError):
    """A notebook run or batch failed; the message says which cell and where its output is."""


class RunLockedError(RunError):
    """Another run of the same name (same reports folder) is running; the message names it."""


class ReportError(GlmkitError, OSError):
    """A report or run folder cannot be written or is incomplete."""


class ResourceError(GlmkitError, MemoryError):
    """The analysis would need more memory than the machine has; the message says what to
    change (a mask, fewer permutations, fewer workers)."""



_F = TypeVar("_F", bound=Callable[..., Any])


def checked_arguments(func: _F) -> _F:
    """Decorate a public function so that a call its signature does not accept (an unknown or
    missing argument, too many positional ones) raises :class:`ParameterError` naming the
    argument, the close names (a typo) and the accepted ones, instead of a bare TypeError.

    Binding is checked before the call, so a TypeError raised inside the function is never
    mistaken for a bad call.

    Examples
    --------
    >>> @checked_arguments
    ... def fit(data, *, n_perm=100):
    ...     return n_perm
    >>> try:
    ...     fit([1], n_prem=5)
    ... except ParameterError as exc:
    ...     print(exc)
    fit() got an unexpected keyword argument 'n_prem' (did you mean 'n_perm'?); use its \
arguments: data, n_perm
    """
    signature = inspect.signature(func)
    names = [p.name for p in signature.parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not p.name.startswith("_")]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ParameterError(_bad_call(func.__name__, exc, kwargs, names)) from None
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _bad_call(name: str, exc: TypeError, kwargs: dict[str, Any], names: list[str]) -> str:
    unknown = [k for k in kwargs if k not in names]
    if not unknown:
        return f"{name}() {exc}; use its arguments: {', '.join(names)}"
    close = {k: m[0] for k in unknown if (m := difflib.get_close_matches(k, names, n=1,
                                                                          cutoff=0.6))}
    shown = ", ".join(f"{k!r}" + (f" (did you mean {close[k]!r}?)" if k in close else "")
                      for k in unknown)
    return (f"{name}() got an unexpected keyword argument {shown}; use its arguments: "
            f"{', '.join(names)}")
