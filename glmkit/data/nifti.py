"""NIfTI headers of the maps glmkit writes: float32, intent codes, the input's space.

:func:`space_of` reads the space codes of an input map (``sform_code``/``qform_code``: 4 is
MNI, 2 aligned to a template, 1 scanner); :func:`result_map` gives a result image the header
other tools read: float32 on disk (the values in memory are left as computed), the NIfTI
intent of what it holds, the input's codes, and a fixed value outside the analysis mask.

=============  ===========================  =====================================
kind           intent (parameters)          outside the mask
=============  ===========================  =====================================
``z``          ``z score``                  0
``t``          ``t test`` (dof)             0
``F``          ``f test`` (dof1, dof2)      0
``p``          ``p value``                  1 (never "significant")
``logp``       none, name ``-log10 p``      0 (= p of 1)
``effect``     ``estimate``                 0
``variance``   ``estimate``, ``variance``   0
``mask``       none (uint8)                 0
=============  ===========================  =====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np

__all__ = ["Space", "space_of", "result_map", "MAP_KINDS"]

#: kind -> (NIfTI intent, intent name, value outside the mask)
_KINDS = {
    "z": ("z score", "z", 0.0),
    "t": ("t test", "t", 0.0),
    "F": ("f test", "F", 0.0),
    "p": ("p value", "p", 1.0),
    "logp": ("none", "-log10 p", 0.0),
    "effect": ("estimate", "effect", 0.0),
    "variance": ("estimate", "variance", 0.0),
    "mask": ("none", "mask", 0.0),
}
MAP_KINDS = tuple(_KINDS)


@dataclass(frozen=True)
class Space:
    """The space codes of the input maps (NIfTI ``sform_code`` and ``qform_code``)."""

    sform_code: int = 2
    qform_code: int = 0


def space_of(image: str | os.PathLike | nib.spatialimages.SpatialImage) -> Space:
    """The space codes of an input map; an Analyze map has none: ``aligned`` (2) for the
    sform, as nibabel writes a new image, so its affine is still read back."""
    img = nib.load(image) if isinstance(image, (str, os.PathLike)) else image
    header = img.header
    if not isinstance(header, nib.Nifti1Header):
        return Space()
    sform, qform = int(header["sform_code"]), int(header["qform_code"])
    return Space(sform, qform) if sform or qform else Space()


def result_map(img: nib.spatialimages.SpatialImage, kind: str, *, mask: np.ndarray | None = None,
               space: Space | None = None, dof: float | tuple[float, float] | None = None
               ) -> nib.Nifti1Image:
    """``img`` with the header of a ``kind`` map (see the module's table).

    Parameters
    ----------
    img : nibabel image
        The values on the mask's grid (from the masker).
    kind : str
        One of :data:`MAP_KINDS`.
    mask : ndarray of bool, optional
        The analysis mask: voxels outside take the kind's outside value (``p``: 1).
    space : Space, optional
        The input's codes (default: sform ``aligned``, qform unknown).
    dof : float or (float, float)
        Degrees of freedom of a ``t`` map, ``(dof1, dof2)`` of an ``F`` map.

    Examples
    --------
    >>> img = nib.Nifti1Image(np.full((2, 2, 2), 0.01), np.eye(4))
    >>> mask = np.zeros((2, 2, 2), bool); mask[0] = True
    >>> p = result_map(img, "p", mask=mask, space=Space(4, 4))
    >>> p.header.get_intent()[0], str(p.get_data_dtype()), float(p.get_fdata()[1, 0, 0])
    ('p value', 'float32', 1.0)
    >>> int(p.header["sform_code"]), int(p.header["qform_code"])
    (4, 4)
    """
    intent, name, outside = _KINDS[kind]
    data = np.asanyarray(img.dataobj)
    if kind == "mask":
        data = (data > 0).astype(np.uint8)
    elif mask is not None:
        data = np.where(np.broadcast_to(mask.reshape(mask.shape + (1,) * (data.ndim - 3)),
                                        data.shape), data, outside)
    out = nib.Nifti1Image(data, img.affine)
    out.set_data_dtype(np.uint8 if kind == "mask" else np.float32)
    params: tuple = ()
    if kind == "t":
        params = (float(dof),)
    elif kind == "F":
        params = tuple(float(d) for d in dof)
    out.header.set_intent(intent, params, name=name)
    space = space or Space()
    out.set_sform(img.affine, code=space.sform_code)
    out.set_qform(img.affine, code=space.qform_code)
    return out
