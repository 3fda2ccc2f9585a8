"""The TFCE kernel (glmkit.stats.cluster) against the first version, kept verbatim in
tests/tfce_reference.py: the same maps and maxima to 1e-12, on smooth random volumes and on
the cases that stress the level computation (values exactly on a threshold, plateaus, ties,
one voxel, nothing above zero). Agreement with nilearn and closed forms is in
tests/test_permutation.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import tfce_reference as reference
from scipy import ndimage

from glmkit.stats import cluster


def _volume(rng, shape=(14, 13, 12), smooth=1.2):
    mask = ndimage.binary_erosion(np.ones(shape, bool)) | (rng.random(shape) < 0.2)
    vol = ndimage.gaussian_filter(rng.standard_normal(shape), smooth)
    vol /= vol[mask].std()
    return mask, vol[mask]


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("params", [(0.5, 2.0, 0.0), (1.0, 2.0, 0.0), (0.5, 2.0, 0.1),
                                    (2.0 / 3.0, 1.5, 0.0)])
def test_tfce_equals_the_first_kernel(rng, connectivity, two_sided, params):
    E, H, dh = params
    maps, masks = [], []
    for _ in range(3):
        mask, t = _volume(rng)
        masks.append(mask)
        maps.append(t * 2.5)
    for mask, t in zip(masks, maps):
        nbr = cluster.neighbors(mask, connectivity)
        new = cluster.tfce_map(t, nbr, two_sided, E, H, dh)
        old = reference.tfce_map(t, nbr, two_sided, E, H, dh)
        np.testing.assert_allclose(new, old, rtol=1e-12, atol=1e-12 * np.abs(old).max())
        block = np.stack([t, -0.7 * t, t[::-1].copy()])
        out_new, out_old = np.empty(3), np.empty(3)
        cluster.tfce_max(block, nbr, two_sided, E, H, dh, out_new)
        reference.tfce_max(block, nbr, two_sided, E, H, dh, out_old)
        np.testing.assert_allclose(out_new, out_old, rtol=1e-12)


def test_values_on_the_thresholds_plateaus_and_edge_cases():
    mask = np.ones((5, 5, 5), bool)
    nbr = cluster.neighbors(mask, 6)
    n = int(mask.sum())
    rng = np.random.default_rng(3)
    step = 4.0 / 100
    cases = {
        "on thresholds": np.round(rng.uniform(-4, 4, n) / step) * step,
        "plateau": np.where(rng.random(n) < 0.5, 2.0, 1.0),
        "ties at the max": np.minimum(rng.uniform(0, 3, n), 2.5),
        "one voxel": np.where(np.arange(n) == 62, 3.0, -1.0),
        "nothing above zero": -rng.uniform(0, 2, n),
        "zeros": np.zeros(n),
    }
    for name, t in cases.items():
        for two_sided in (False, True):
            for dh in (0.0, step):
                new = cluster.tfce_map(t, nbr, two_sided, 0.5, 2.0, dh)
                old = reference.tfce_map(t, nbr, two_sided, 0.5, 2.0, dh)
                np.testing.assert_allclose(new, old, rtol=1e-12, atol=1e-300, err_msg=name)
