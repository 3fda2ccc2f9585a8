"""The analysis mask a researcher gives: a NIfTI file or ``"mni152"``, on the maps' grid.

:func:`load_mask` reads the mask, checks it is a binary 3-D image, resamples it (nearest
neighbour) to the grid of the maps and checks that it overlaps the data, all before any
model is fitted: a mask in another space, a probability map or an empty mask is an error
that says what was found and how to fix it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from glmkit.errors import DataFileNotFoundError, ImageError

__all__ = ["MaskInfo", "load_mask", "MNI152"]

#: the name of nilearn's packaged MNI152 brain mask (no download)
MNI152 = "mni152"
#: the share of the mask's voxels that must hold data in the reference map
_MIN_OVERLAP = 0.1


@dataclass(frozen=True, eq=False)
class MaskInfo:
    """A mask on the maps' grid and where it came from.

    Attributes
    ----------
    img : nibabel.Nifti1Image
        uint8 0/1 image on the reference map's grid.
    source : str
        ``"mni152"`` or the file name given.
    n_voxels : int
        Voxels in the mask on the maps' grid.
    overlap : float
        Share of the mask's voxels where the reference map has finite non-zero data.
    resampled : bool
        Whether the mask was resampled to the maps' grid.
    """

    img: nib.Nifti1Image
    source: str
    n_voxels: int
    overlap: float
    resampled: bool

    def describe(self) -> str:
        """One line for logs, summaries and the report."""
        how = "resampled (nearest) to the maps' grid" if self.resampled else "on the maps' grid"
        return (f"{self.source}: {self.n_voxels} voxels, {how}; the first map has data in "
                f"{self.overlap:.0%} of them")


def _read(spec: str | os.PathLike) -> tuple[nib.Nifti1Image, str]:
    if str(spec).strip().lower() == MNI152:
        from nilearn.datasets import load_mni152_brain_mask

        return load_mni152_brain_mask(resolution=2), MNI152
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataFileNotFoundError(
            f"mask={str(spec)!r} does not exist: expected a NIfTI mask file or 'mni152' "
            "(nilearn's MNI152 brain mask); check the path")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for a file that is not an image
        raise ImageError(f"mask={str(spec)!r} is not a readable NIfTI/Analyze image "
                         f"({type(exc).__name__}: {exc}); pass a NIfTI mask file or "
                         "'mni152'") from None
    return img, path.name


def _binary(img: nib.Nifti1Image, source: str) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageError(f"mask {source!r} has shape {data.shape}: expected a 3-D image")
    values = np.unique(data[np.isfinite(data)])
    if not set(values.tolist()) <= {0, 1}:
        inside = values[(values != 0) & (values != 1)]
        raise ImageError(
            f"mask {source!r} is not binary: it holds values such as "
            f"{', '.join(f'{v:.3g}' for v in inside[:4])} (range {values.min():.3g} to "
            f"{values.max():.3g}); a probability or atlas image is not a mask: threshold it "
            "(e.g. nilearn.image.math_img('img > 0.5', img=...)) and pass the result")
    if not values.size or values.max() == 0:
        raise ImageError(f"mask {source!r} is empty (no voxel is 1)")
    return data == 1


def load_mask(spec: str | os.PathLike, reference: str | os.PathLike | nib.Nifti1Image
              ) -> MaskInfo:
    """The mask ``spec`` on the grid of ``reference`` (a subject map), checked.

    Raises
    ------
    DataFileNotFoundError
        The file does not exist.
    ImageError
        Not an image, not 3-D, not binary, empty, outside the maps' field of view, or
        overlapping the data too little (another space?).
    """
    img, source = _read(spec)
    mask = _binary(img, source)
    ref = reference if isinstance(reference, nib.spatialimages.SpatialImage) else nib.load(
        reference)
    shape, affine = ref.shape[:3], ref.affine
    resampled = mask.shape != shape or not np.allclose(img.affine, affine, atol=1e-4)
    if resampled:
        from nilearn.image import resample_img

        moved = resample_img(nib.Nifti1Image(mask.astype(np.uint8), img.affine),
                             target_affine=affine, target_shape=shape,
                             interpolation="nearest", force_resample=True, copy_header=True)
        mask = np.asarray(moved.dataobj) > 0
    if not mask.any():
        raise ImageError(
            f"mask {source!r} does not overlap the maps' field of view once resampled to their "
            f"grid (shape {shape}): it is in another space or covers another part of the "
            "volume; pass a mask in the maps' space")
    data = np.asarray(ref.dataobj, dtype=np.float64)
    if data.ndim == 4:
        data = data[..., 0]
    has_data = np.isfinite(data) & (data != 0)
    overlap = float((mask & has_data).sum() / mask.sum())
    if overlap < _MIN_OVERLAP:
        raise ImageError(
            f"mask {source!r} ({int(mask.sum())} voxels on the maps' grid) overlaps the data "
            f"of the first map in only {overlap:.1%} of its voxels: it is probably in another "
            "space (e.g. a native-space mask for MNI maps); pass a mask in the maps' space")
    out = nib.Nifti1Image(mask.astype(np.uint8), affine)
    if isinstance(ref, nib.Nifti1Image):  # keep the maps' space codes (MNI stays MNI)
        out.set_sform(affine, int(ref.header["sform_code"]))
        out.set_qform(affine, int(ref.header["qform_code"]))
    return MaskInfo(img=out, source=source, n_voxels=int(mask.sum()), overlap=overlap,
                    resampled=resampled)
