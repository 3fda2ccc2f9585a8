"""The data of a permutation test, read by voxel ranges so that it is never copied whole.

:class:`VoxelSource` wraps ``Y`` (subjects x voxels): an in-memory array, or a numpy memmap
(``np.memmap`` or ``np.load(..., mmap_mode="r")``) of a file. :meth:`VoxelSource.read`
returns one range of voxels as a float64 array. For a memmap it maps the file afresh for each
read, copies ``ROWS`` subjects at a time and drops their pages from the mapping at once
(``madvise(MADV_DONTNEED)``; the file stays in the page cache), then unmaps it: a mapped
page counts as resident memory, and recent kernels map a file's pages in large folios (up to
2 MB around each page read), so reading a few voxels of every subject through one mapping
would make most of the file resident. A pickled source (sent to a joblib or Dask worker
process) holds the file's name, not its data.
"""

from __future__ import annotations

import mmap

import numpy as np

from glmkit.errors import ParameterError

__all__ = ["VoxelSource", "ROWS"]

#: subjects copied between two drops of the mapped pages (bounds the resident pages of a read)
ROWS = 16


def _file_backed(Y) -> bool:
    """A memmap of a whole file region (not a view into one) that can be mapped again."""
    return (isinstance(Y, np.memmap) and isinstance(Y.base, mmap.mmap)
            and getattr(Y, "filename", None) is not None
            and (Y.flags.c_contiguous or Y.flags.f_contiguous))


class VoxelSource:
    """``Y`` (n_subjects, n_voxels) read by voxel ranges (see the module docstring).

    Parameters
    ----------
    Y : ndarray or numpy memmap, shape (n_subjects, n_voxels)
        Real numbers (any float or integer dtype); not copied.
    """

    def __init__(self, Y) -> None:
        if not isinstance(Y, np.ndarray):
            Y = np.asarray(Y)
        if Y.ndim != 2:
            raise ParameterError(f"Y must be 2-D (n_subjects, n_voxels); got shape {Y.shape}.")
        if 0 in Y.shape:
            raise ParameterError(f"Y has shape {Y.shape}: no {'voxel' if Y.shape[0] else 'subject'}"
                                 " to test; pass one row per subject and at least one voxel "
                                 "column.")
        if Y.dtype.kind not in "fiub":
            raise ParameterError(f"Y must hold real numbers; got dtype {Y.dtype}.")
        self.shape = Y.shape
        self.dtype = Y.dtype
        self.file = None
        self._array = Y
        if _file_backed(Y):
            self.file = {"filename": str(Y.filename), "offset": int(Y.offset),
                         "order": "C" if Y.flags.c_contiguous else "F"}

    @property
    def streamed(self) -> bool:
        """True for a memmap: every read maps the file again (and unmaps it after)."""
        return self.file is not None

    @property
    def direct(self) -> np.ndarray | None:
        """The data itself when it is in memory, float32 or float64 (native byte order) and
        C-contiguous: kernels may read it in place, a range of voxels of each row. Otherwise
        None, and :meth:`read` copies it."""
        Y = self._array
        if (self.file is None and Y.dtype in (np.float32, np.float64) and Y.dtype.isnative
                and Y.flags.c_contiguous):
            return np.asarray(Y)  # a memmap's data, as an ndarray
        return None

    def read(self, v0: int, v1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Voxels ``v0`` to ``v1 - 1`` as a C-contiguous float64 array (n_subjects, v1 - v0),
        written into ``out`` when given (C-contiguous float64 of that shape)."""
        if self.file is None:
            if out is None:
                return np.array(self._array[:, v0:v1], dtype=np.float64, order="C")
            np.copyto(out, self._array[:, v0:v1], casting="unsafe")
            return out
        n, V = self.shape
        if out is None:
            out = np.empty((n, v1 - v0), dtype=np.float64)
        offset, row_bytes = self.file["offset"], V * self.dtype.itemsize
        with open(self.file["filename"], "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            Y = np.frombuffer(mm, dtype=self.dtype, count=n * V, offset=offset).reshape(
                self.shape, order=self.file["order"])
            rows = ROWS if self.file["order"] == "C" else n  # F order: one contiguous range
            for r0 in range(0, n, rows):
                r1 = min(n, r0 + rows)
                out[r0:r1] = Y[r0:r1, v0:v1]
                if self.file["order"] == "C" and hasattr(mm, "madvise"):
                    start = (offset + r0 * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
                    mm.madvise(mmap.MADV_DONTNEED, start, offset + r1 * row_bytes - start)
            del Y
        finally:
            mm.close()  # unmaps: nothing read stays in this process's resident set
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.file is not None:  # a worker maps the file itself
            state["_array"] = None
        return state
