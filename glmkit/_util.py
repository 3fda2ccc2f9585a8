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
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
