"""Memory preflight: the peak memory of a run, estimated from shapes before any map is read.

:func:`estimate_memory` models what the stages hold at their peaks from the number of maps,
their grid and data type (read from the first map's header), the analysis mask (when one is
given, else the whole grid), ``n_perm``, the statistics and ``n_jobs``;
:func:`check_memory` compares that peak with the memory available now (psutil) and refuses,
with a :class:`~glmkit.errors.ResourceError` that says what to change, a run that would not
fit. The model is deliberately simple and errs on the high side:

- fit: every map as read (its data type) + the 4-D float64 stack the masker smooths and
  masks + ``Y`` (subjects x mask voxels, float64);
- permutations: ``Y`` + the permutations drawn up front (``n_perm`` x subjects, int32) + the
  null maxima (``n_perm`` per statistic, float64) + one working block per worker
  (``glmkit.stats.engine.BLOCK_BYTES``, three buffers) + per-voxel counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from glmkit._util import logger
from glmkit.errors import ResourceError

if TYPE_CHECKING:  # pragma: no cover
    from glmkit.data.dataset import Dataset
    from glmkit.settings import RunSettings

__all__ = ["MemoryEstimate", "estimate_memory", "check_memory", "available_memory",
           "HEADROOM"]

#: share of the available memory a run may plan to use (the rest: Python, libraries, the OS)
HEADROOM = 0.8
_DEFAULT_BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes held at the peak of each part of a run.

    Attributes
    ----------
    n_maps, n_voxels, n_mask_voxels, itemsize : int
        The inputs of the estimate: maps, voxels of their grid, voxels analysed, bytes per
        value of the maps on disk.
    parts : dict
        Bytes per part: ``maps``, ``stack``, ``Y``, ``draws``, ``nulls``, ``blocks``.
    """

    n_maps: int
    n_voxels: int
    n_mask_voxels: int
    itemsize: int
    parts: dict[str, int]

    @property
    def fit_peak(self) -> int:
        """Bytes held while the maps are loaded, smoothed and masked."""
        return self.parts["maps"] + self.parts["stack"] + self.parts["Y"]

    @property
    def permutation_peak(self) -> int:
        """Bytes held while permutations run."""
        return sum(self.parts[k] for k in ("Y", "draws", "nulls", "blocks"))

    @property
    def peak(self) -> int:
        """The larger of the two peaks."""
        return max(self.fit_peak, self.permutation_peak)

    def describe(self) -> str:
        """The parts in words, largest first (for messages)."""
        words = {"maps": "maps as read", "stack": "float64 stack of the maps",
                 "Y": "masked data Y", "draws": "permutations drawn",
                 "nulls": "null distributions", "blocks": "permutation blocks"}
        items = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{words[k]} {_size(v)}" for k, v in items if v)


def estimate_memory(*, n_maps: int, n_voxels: int, n_mask_voxels: int | None = None,
                    itemsize: int = 4, n_perm: int = 0, n_statistics: int = 1,
                    n_jobs: int = 1) -> MemoryEstimate:
    """The peak memory of a run from its shapes (see the module docstring for the model).

    Examples
    --------
    >>> e = estimate_memory(n_maps=100, n_voxels=10**6, itemsize=4, n_perm=1000)
    >>> e.parts["stack"] == 100 * 10**6 * 8
    True
    >>> e.peak > 100 * 10**6 * 8
    True
    """
    n_mask = n_voxels if n_mask_voxels is None else n_mask_voxels
    workers = max(1, os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs)
    block = 3 * _block_bytes() * workers if n_perm else 0
    parts = {
        "maps": n_maps * n_voxels * itemsize,
        "stack": n_maps * n_voxels * 8,
        "Y": n_maps * n_mask * 8,
        "draws": n_perm * n_maps * 4,
        "nulls": (n_perm + 1) * n_statistics * 8 + (n_mask * n_statistics * 8 if n_perm else 0),
        "blocks": block,
    }
    return MemoryEstimate(n_maps=n_maps, n_voxels=n_voxels, n_mask_voxels=n_mask,
                          itemsize=itemsize, parts={k: int(v) for k, v in parts.items()})


def _block_bytes() -> int:
    """The permutation engine's memory budget of one block (its own declaration)."""
    from glmkit.stats import engine

    return int(getattr(engine, "BLOCK_BYTES", _DEFAULT_BLOCK_BYTES))


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(dataset: Dataset, settings: RunSettings, *, mask_voxels: int | None = None,
                 available: int | None = None) -> MemoryEstimate:
    """Estimate the run's peak memory from the first map's header and refuse a run that would
    not fit in ``HEADROOM`` of the available memory.

    Parameters
    ----------
    dataset : Dataset
        Its maps (only the first map's header is read).
    settings : RunSettings
        ``n_perm``, ``statistics``, ``n_jobs`` and ``within`` (several maps per subject).
    mask_voxels : int, optional
        Voxels of the analysis mask when one is given (default: the whole grid).
    available : int, optional
        Bytes available (default: :func:`available_memory`).

    Raises
    ------
    ResourceError
        The estimate, its largest parts, what is available, and what to change.
    """
    n_voxels, itemsize = _grid_of(dataset.maps[0], dataset.subjects[0])

    def with_perms(n_perm: int) -> MemoryEstimate:
        return estimate_memory(
            n_maps=len(dataset.maps), n_voxels=n_voxels, n_mask_voxels=mask_voxels,
            itemsize=itemsize, n_perm=n_perm, n_statistics=max(1, len(settings.statistics)),
            n_jobs=settings.n_jobs)

    estimate = with_perms(settings.n_perm if settings.statistics else 0)
    available = available_memory() if available is None else available
    logger.info("memory preflight: about %s at the peak (%s); %s available",
                _size(estimate.peak), estimate.describe(), _size(available))
    if estimate.peak > HEADROOM * available:
        raise ResourceError(_too_big(estimate, available, settings, with_perms))
    return estimate


def _grid_of(first: Any, subject: str) -> tuple[int, int]:
    """Voxels of the first map's grid and bytes per value, from its header (a file that
    cannot be read is the ImageError quality control would raise)."""
    import nibabel as nib
    import numpy as np

    from glmkit.data.qc import load_header

    img = (first if isinstance(first, nib.spatialimages.SpatialImage)
           else load_header(str(first), subject)[0])
    shape = img.shape[:3]
    return int(np.prod(shape)), int(img.get_data_dtype().itemsize)


def _fitting_perms(budget: float, with_perms) -> int:
    """The largest n_perm whose permutation peak fits ``budget`` (the model is linear in it)."""
    one, two = with_perms(1).permutation_peak, with_perms(2).permutation_peak
    per, fixed = max(1, two - one), one - (two - one)
    return int(max(0, (budget - fixed) // per))


def _too_big(estimate: MemoryEstimate, available: int, settings: RunSettings,
             with_perms) -> str:
    fixes = []
    budget = HEADROOM * available
    if estimate.permutation_peak > budget and estimate.fit_peak <= budget:
        fitting = min(settings.n_perm - 1, _fitting_perms(budget, with_perms))
        if fitting >= 1:
            fixes.append(f"fewer permutations, n_perm={fitting} or less")
    if estimate.n_mask_voxels == estimate.n_voxels:
        fixes.append("an analysis mask, mask='mni152' or mask=<NIfTI file> (only its voxels "
                     "are analysed)")
    if estimate.itemsize > 4:
        fixes.append(f"maps stored as float32 (they are {estimate.itemsize * 8}-bit on disk)")
    if settings.n_jobs != 1 and estimate.parts["blocks"] > 0.25 * estimate.peak:
        fixes.append("fewer workers, n_jobs=1")
    fixes.append("a machine with more memory")
    return (f"this run needs about {_size(estimate.peak)} of memory at its peak "
            f"({estimate.n_maps} maps of {estimate.n_voxels} voxels, {estimate.n_mask_voxels} "
            f"analysed, n_perm={settings.n_perm}: {estimate.describe()}) but "
            f"{_size(available)} is available; it would be killed or swap. Use "
            + "; or ".join(fixes))


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n_bytes) < 1024 or unit == "PiB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    raise AssertionError  # pragma: no cover
