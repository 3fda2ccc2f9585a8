"""Small shared helpers: the data directory, file hashing, atomic folder writes, logging."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("glmkit")

DATA_ENV = "GLMKIT_DATA"


def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return glmkit's data directory: ``data_dir``, else ``$GLMKIT_DATA``, else ``~/glmkit_data``.

    The folder is created if needed.

    Examples
    --------
    >>> import tempfile
    >>> d = get_data_dir(tempfile.mkdtemp())
    >>> d.is_dir()
    True
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV) or Path.home() / "glmkit_data"
    path = Path(data_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:12]
    'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_prefix(name: str) -> str:
    """The name prefix of the temporary sibling :func:`atomic_folder` writes ``name`` into.

    >>> temporary_prefix("demo")
    '.demo.tmp-'
    """
    return f".{name}.tmp-"


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary sibling, rename it to ``target`` on success.

    On any exception the temporary folder is removed and ``target`` is untouched. With
    ``overwrite=True`` an existing ``target`` is replaced only after the new one is complete.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_folder(root / "run") as tmp:
    ...     _ = (tmp / "a.txt").write_text("done")
    >>> sorted(p.name for p in root.iterdir())
    ['run']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(target.name), dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            from glmkit.errors import ReportError

            raise ReportError(f"{target} appeared while it was being written (another process "
                              "wrote it); it is kept as it is and nothing new was written")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        if old is not None:
            target.rename(old)
        tmp.rename(target)
    except BaseException:  # interrupted (or failed) between the two renames: put the old back
        if old is not None and old.exists() and not target.exists():
            old.rename(target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


#: plausible voxel sizes (mm) of a map: outside, the affine is surely wrong (units, scaling)
VOXEL_MM = (1e-3, 100.0)


def map_header_problem(img) -> str | None:
    """What makes a map's header unusable for glmkit, in words (None when it is fine): complex
    or non-numeric values, an affine with NaN or infinite entries, a singular affine, or voxel
    sizes outside ``VOXEL_MM``. Only the header is read.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> map_header_problem(nib.Nifti1Image(np.zeros((2, 2, 2), "f4"), np.eye(4))) is None
    True
    >>> map_header_problem(nib.Nifti1Image(np.zeros((2, 2, 2), "c8"), np.eye(4)))[:30]
    'it holds complex values (compl'
    >>> big = np.diag([1e12, 1e12, 1e12, 1])
    >>> map_header_problem(nib.Nifti1Image(np.zeros((2, 2, 2), "f4"), big))[:40]
    'its voxels measure 1e+12 x 1e+12 x 1e+12'
    """
    import numpy as np

    dtype = img.get_data_dtype()
    if np.issubdtype(dtype, np.complexfloating):
        return (f"it holds complex values ({dtype}); glmkit analyses real-valued maps: save "
                "the real part or the magnitude, as you mean it")
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        return f"it holds non-numeric values ({dtype}, e.g. RGB); expected one number per voxel"
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        return "its affine holds NaN or infinite values; fix the header (sform/qform)"
    rotation = affine[:3, :3]
    sizes = np.sqrt((rotation ** 2).sum(axis=0))
    if abs(np.linalg.det(rotation)) < 1e-12 * max(1.0, float(sizes.prod())) or not sizes.all():
        return ("its affine is singular (a zero voxel size or two axes along one direction); "
                "fix the header (sform/qform)")
    if sizes.min() < VOXEL_MM[0] or sizes.max() > VOXEL_MM[1]:
        shown = " x ".join(f"{s:g}" for s in sizes)
        return (f"its voxels measure {shown} mm (affine), outside {VOXEL_MM[0]:g}-"
                f"{VOXEL_MM[1]:g} mm: the affine is wrong (units? scaling?); fix the header")
    return None
