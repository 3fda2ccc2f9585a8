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
import numbers
import os
import reprlib
from collections.abc import Callable, Mapping
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


def checked_arguments(func: _F | None = None, /, **kinds: str) -> Any:
    """Decorate a public function so that a call its signature does not accept (an unknown or
    missing argument, too many positional ones) raises :class:`ParameterError` naming the
    argument, the close names (a typo) and the accepted ones, instead of a bare TypeError.

    ``kinds`` declares what some arguments must be (``name="path"``; a trailing ``?`` also
    accepts None; see :data:`KINDS`): a value of another type (None where a path is needed,
    a dict where an array is) is a :class:`ParameterError` naming the argument, what was
    expected and what was found, before the call, instead of a TypeError or AttributeError
    from deep inside it.

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
    >>> @checked_arguments(folder="path")
    ... def open_run(folder):
    ...     return folder
    >>> try:
    ...     open_run(None)
    ... except ParameterError as exc:
    ...     print(exc)
    open_run(): folder must be a file or folder path (str or pathlib.Path); found None
    """
    if func is None:
        return functools.partial(checked_arguments, **kinds)
    unknown = {k: v for k, v in kinds.items() if v.rstrip("?") not in KINDS}
    if unknown:
        raise ValueError(f"checked_arguments: unknown kinds {unknown}; known: {list(KINDS)}")
    signature = inspect.signature(func)
    names = [p.name for p in signature.parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not p.name.startswith("_")]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ParameterError(_bad_call(func.__name__, exc, kwargs, names)) from None
        for name, kind in kinds.items():
            if name in bound.arguments:
                check_kind(f"{func.__name__}(): {name}", bound.arguments[name], kind)
        return func(*args, **kwargs)

    return wrapper


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value) != ""


def _is_array(value: Any) -> bool:
    """A real-valued numeric array-like (numbers, lists or arrays of numbers)."""
    import numpy as np

    if value is None or isinstance(value, (str, bytes, Mapping, set, frozenset)):
        return False
    try:
        dtype = np.asarray(value).dtype
    except (TypeError, ValueError):  # ragged lists
        return False
    return bool(np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)) and not \
        np.issubdtype(dtype, np.complexfloating)


def _is_image(value: Any) -> bool:
    """A NIfTI-like image object or a path to one."""
    return _is_path(value) or (hasattr(value, "get_fdata") and hasattr(value, "affine"))


def _is_names(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))


def _is_shape(value: Any) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 3
            and all(isinstance(v, numbers.Integral) and v > 0 for v in value))


def _is_affine(value: Any) -> bool:
    import numpy as np

    return _is_array(value) and np.shape(value) == (4, 4)


def _is_table(value: Any) -> bool:
    return _is_path(value) or type(value).__name__ == "DataFrame"


def _is_tables(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" or (
        isinstance(value, Mapping) and all(type(v).__name__ == "DataFrame"
                                           for v in value.values()))


def _is_design(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" or hasattr(value, "matrix") or _is_array(value)


def _is_result(value: Any) -> bool:
    return all(hasattr(value, a) for a in ("settings", "dataset", "design", "contrast"))


#: kind -> (test, what is expected); ``name="kind?"`` also accepts None
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "path": (_is_path, "a file or folder path (str or pathlib.Path)"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "names": (_is_names, "a name or a list of names (strings)"),
    "mapping": (lambda v: isinstance(v, Mapping), "a dict"),
    "flag": (lambda v: type(v).__name__ in ("bool", "bool_"), "True or False"),
    "number": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
               "a number"),
    "array": (_is_array, "an array of real numbers (numpy array or list of numbers)"),
    "image": (_is_image, "a NIfTI image (nibabel image or path to a .nii/.nii.gz file)"),
    "shape": (_is_shape, "a 3-D grid shape, three positive integers"),
    "affine": (_is_affine, "a 4 x 4 affine matrix"),
    "table": (_is_table, "a subject table (pandas DataFrame or path to a TSV/CSV file)"),
    "frame": (lambda v: type(v).__name__ == "DataFrame", "a pandas DataFrame"),
    "design": (_is_design, "a design: a pandas DataFrame, a glmkit Design or an array "
                           "(subjects x columns)"),
    "tables": (_is_tables, "a pandas DataFrame or a dict of them"),
    "result": (_is_result, "an AnalysisResult (what glmkit.run_analysis returns)"),
}


def check_kind(name: str, value: Any, kind: str) -> None:
    """Raise :class:`ParameterError` unless ``value`` is of ``kind`` (a key of :data:`KINDS`,
    with a trailing ``?`` for "or None"); ``name`` is how the message names the value.

    Examples
    --------
    >>> check_kind("n", 3, "number")
    >>> check_kind("mask_img", None, "image?")
    >>> try:
    ...     check_kind("Y", {"a": 1}, "array")
    ... except ParameterError as exc:
    ...     print(exc)
    Y must be an array of real numbers (numpy array or list of numbers); found a dict {'a': 1}
    """
    optional = kind.endswith("?")
    test, expected = KINDS[kind.rstrip("?")]
    if (value is None and optional) or test(value):
        if kind.startswith("image") and _is_path(value) and not os.path.exists(value):
            raise DataFileNotFoundError(f"{name}: {os.fspath(value)!r} does not exist; "
                                        f"expected {expected}")
        return
    raise ParameterError(f"{name} must be {expected}{' or None' if optional else ''}; "
                         f"found {_shown(value)}")


def _shown(value: Any) -> str:
    """What a bad value is, in a few words: its type (an array's dtype and shape) and repr."""
    if value is None:
        return "None"
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if dtype is not None and shape is not None:  # an array: what is wrong is usually its dtype
        return f"a {type(value).__name__} of dtype {dtype} and shape {tuple(shape)}"
    return f"a {type(value).__name__} {reprlib.repr(value)}"


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
