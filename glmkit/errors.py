"""One exception hierarchy for glmkit.

Every error glmkit raises on purpose is a :class:`GlmkitError`. Each subclass
also inherits the built-in exception a caller would naturally catch, as
scikit-learn's ``NotFittedError(ValueError, AttributeError)`` does, so
``except ValueError`` keeps working in user code.

Messages name the input (parameter, file, column), what was expected, what was
found, and how to fix it.
"""

from __future__ import annotations

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
    "ReportError",
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


class ReportError(GlmkitError, OSError):
    """A report or run folder cannot be written or is incomplete."""
