"""The report's static figures: the glass brain's shortcut draws the same picture."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from glmkit.report import figures

AFFINE = np.array([[-5.0, 0, 0, 90], [0, 5, 0, -126], [0, 0, 5, -72], [0, 0, 0, 1]])


def _img(rng):
    import nibabel as nib

    return nib.Nifti1Image(rng.standard_normal((37, 44, 37)) * 2, AFFINE)


@pytest.mark.parametrize("two_sided", [False, True])
def test_glass_brain_is_the_plain_nilearn_picture(rng, two_sided):
    """Byte-identical PNG to nilearn's plot_glass_brain drawn with matplotlib untouched (the
    per-patch data-limit updates it skips are never used), and the class is restored."""
    from nilearn import plotting

    img = _img(rng)
    original = Axes._update_patch_limits
    fast = figures.glass_brain_figure(img, threshold=3.0, title="t", two_sided=two_sided)
    assert Axes._update_patch_limits is original
    fig = Figure(figsize=(7.5, 2.6))
    plotting.plot_glass_brain(img, threshold=3.0, title="t", figure=fig, colorbar=True,
                              plot_abs=not two_sided, cmap=None, vmax=None,
                              symmetric_cbar=two_sided)
    assert fast == figures.png_data_uri(fig)


def test_glass_brain_restores_matplotlib_after_an_error(rng):
    original = Axes._update_patch_limits
    with pytest.raises(Exception):  # noqa: B017 - whatever nilearn raises for a 2-D image
        figures.glass_brain_figure(np.zeros((3, 3)), threshold=1.0, title="bad")
    assert Axes._update_patch_limits is original
