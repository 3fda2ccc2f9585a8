"""Plain references for permutation inference, independent of glmkit's engine.

They refit the GLM for every permutation or sign flip with ``numpy.linalg.lstsq``
(Freedman-Lane and ter Braak written out as in Winkler et al. 2014, table 2), form clusters
with ``scipy.ndimage.label``, compute TFCE with one ``ndimage.label`` per height, and count
``p = (1 + #{null >= observed}) / (1 + n_perm)`` in a loop. Used by tests/test_exact_pvalues.py
and tests/test_boundaries.py.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, ndimage


def refit_t(Ys: np.ndarray, X: np.ndarray, c: np.ndarray) -> np.ndarray:
    """t of contrast ``c`` at every column of ``Ys`` by a fresh least-squares fit."""
    beta = np.linalg.lstsq(X, Ys, rcond=None)[0]
    resid = Ys - X @ beta
    dof = X.shape[0] - np.linalg.matrix_rank(X)
    sigma2 = (resid**2).sum(axis=0) / dof
    return (c @ beta) / np.sqrt(sigma2 * (c @ np.linalg.pinv(X.T @ X) @ c))


def permuted_data(Y, X, c, scheme, perm=None, sign=None) -> np.ndarray:
    """One permuted data set: ``Y*[i] = sign[i] * E[perm[i]] + fitted``.

    Freedman-Lane: ``E`` are the residuals of the reduced model ``Z = X N`` (``N`` spans the
    null space of ``c'``) and the reduced fit is added back. ter Braak: ``E`` are the residuals
    of the full model and nothing is added back (the null hypothesis is ``c'b = c'b_hat``).
    """
    n = Y.shape[0]
    if scheme == "freedman_lane":
        Z = X @ linalg.null_space(c[None, :])
        fitted = Z @ np.linalg.lstsq(Z, Y, rcond=None)[0] if Z.shape[1] else np.zeros_like(Y)
    else:
        fitted = X @ np.linalg.lstsq(X, Y, rcond=None)[0]
    E = Y - fitted
    idx = np.arange(n) if perm is None else np.asarray(perm)
    s = np.ones(n) if sign is None else np.asarray(sign, dtype=float)
    return s[:, None] * E[idx] + (fitted if scheme == "freedman_lane" else 0.0)


def null_t_maps(Y, X, c, scheme, perms, signs) -> np.ndarray:
    """(n_perm, n_voxels) t maps, one refit per permutation / sign flip."""
    n_perm = len(perms) if perms is not None else len(signs)
    return np.array([
        refit_t(permuted_data(Y, X, c, scheme,
                              None if perms is None else perms[k],
                              None if signs is None else signs[k]), X, c)
        for k in range(n_perm)
    ])


def p_from_counts(null_values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``(1 + #{k : null_k >= observed}) / (1 + n_perm)`` for each observed value, by a loop."""
    out = np.empty(observed.shape)
    for v, obs in enumerate(observed):
        count = 0
        for value in null_values:
            if value >= obs:
                count += 1
        out[v] = (1 + count) / (1 + len(null_values))
    return out


def structure(connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])


def cluster_maps(t, mask, thr, two_sided, connectivity):
    """Per-voxel size and mass (``sum(|t| - thr)``) of the cluster holding each voxel."""
    size = np.zeros(t.size)
    mass = np.zeros(t.size)
    for sign in (1.0, -1.0) if two_sided else (1.0,):
        vol = np.zeros(mask.shape)
        vol[mask] = sign * t
        labels, k = ndimage.label((vol > thr) & mask, structure(connectivity))
        lab = labels[mask]
        for j in range(1, k + 1):
            inside = lab == j
            size[inside] = inside.sum()
            mass[inside] = (sign * t[inside] - thr).sum()
    return size, mass


def tfce_map(t, mask, two_sided, connectivity, E=0.5, H=2.0, n_steps=100):
    """TFCE by one ``ndimage.label`` per threshold (heights ``linspace(0, max, 101)[1:]``,
    contributions ``size**E * h**H``; two-sided: shared heights, negative part negated)."""
    top = np.abs(t).max() if two_sided else max(t.max(), 0.0)
    out = np.zeros(t.size)
    if top <= 0:
        return out
    heights = np.linspace(0, top, n_steps + 1)[1:]
    for sign in (1.0, -1.0) if two_sided else (1.0,):
        vol = np.zeros(mask.shape)
        vol[mask] = sign * t
        for h in heights:
            labels, _ = ndimage.label((vol >= h) & mask, structure(connectivity))
            lab = labels[mask]
            sizes = np.bincount(lab)
            inside = lab > 0
            out[inside] += sign * sizes[lab[inside]] ** E * h**H
    return out
