"""Compiled kernels for spatial permutation statistics: clusters and TFCE.

Everything works on *masked* vectors (one value per in-mask voxel, in the C order
of ``np.nonzero(mask)``, the order nilearn's maskers use) plus a neighbour table
built once from the mask, so a permutation's map never goes back to 3-D.

- :func:`neighbors` builds the ``(n_voxels, n_offsets)`` table of in-mask
  neighbour indices (-1 where the neighbour is outside the mask or volume) for
  6-, 18- or 26-connectivity.
- Cluster labelling is union-find over that table: ``O(n_voxels)`` per map,
  instead of ``scipy.ndimage.label`` on the full volume.
- TFCE (Smith & Nichols 2009, with nilearn/fslmaths conventions: thresholds
  ``linspace(0, max, n_steps + 1)[1:]``, contributions ``size**E * h**H`` not
  multiplied by ``dh``) is computed in *one* sweep from the highest threshold down:
  voxels join a weighted union-find as the threshold falls; each component keeps
  the sum of its contributions lazily (a size is constant between two merges, so
  its contribution over a run of thresholds is ``size**E`` times a prefix sum of
  ``h**H``), and merging keeps per-voxel sums as offsets relative to the root.
  Cost ``O(n_voxels * n_neighbours)`` per map whatever the number of steps. Levels come
  from ``u / step`` (checked against the thresholds), the last passes run in voxel order,
  ``size ** 0.5`` is a square root, and finding the root of a root or of its child writes
  nothing: 1.6x faster on a 2 mm brain than the first version
  (kept in ``tests/tfce_reference.py``; both agree to 1e-12, ``tests/test_tfce.py``).
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit

__all__ = ["neighbors", "cluster_labels", "cluster_max", "tfce_map", "tfce_max"]

_MAX_DIST = {6: 1, 18: 2, 26: 3}


def neighbors(mask: np.ndarray, connectivity: int = 6) -> np.ndarray:
    """In-mask neighbour table of a 3-D boolean mask.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    connectivity : {6, 18, 26}
        Faces, faces+edges, or faces+edges+corners.

    Returns
    -------
    ndarray of int32, shape (n_voxels, connectivity)
        Masked index of each neighbour, -1 where there is none.

    Examples
    --------
    >>> m = np.zeros((3, 3, 3), bool); m[1, 1, :] = True
    >>> neighbors(m, 6).max(axis=1).tolist()
    [1, 2, 1]
    """
    mask = np.asarray(mask, dtype=bool)
    dist = _MAX_DIST[connectivity]
    offsets = [
        o for o in itertools.product((-1, 0, 1), repeat=3) if 0 < sum(map(abs, o)) <= dist
    ]
    index = np.full(np.array(mask.shape) + 2, -1, dtype=np.int32)
    inner = index[1:-1, 1:-1, 1:-1]
    inner[mask] = np.arange(int(mask.sum()), dtype=np.int32)
    coords = np.argwhere(mask) + 1
    table = np.empty((coords.shape[0], len(offsets)), dtype=np.int32)
    for k, (dx, dy, dz) in enumerate(offsets):
        table[:, k] = index[coords[:, 0] + dx, coords[:, 1] + dy, coords[:, 2] + dz]
    return table


@njit(cache=True, nogil=True, inline="always")
def _find(parent, i):
    # path halving
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def _union_above(u, thr, nbr, parent, size, mass):
    """Union-find of voxels with ``u > thr``; returns nothing, fills parent/size/mass."""
    n = u.shape[0]
    for i in range(n):
        if u[i] > thr:
            parent[i] = i
            size[i] = 1
            mass[i] = u[i] - thr
        else:
            parent[i] = -1
    for i in range(n):
        if parent[i] < 0:
            continue
        ri = _find(parent, i)
        for m in range(nbr.shape[1]):
            j = nbr[i, m]
            if j <= i or parent[j] < 0:
                continue
            rj = _find(parent, j)
            if ri == rj:
                continue
            if size[ri] < size[rj]:
                ri, rj = rj, ri
            parent[rj] = ri
            size[ri] += size[rj]
            mass[ri] += mass[rj]


@njit(cache=True, nogil=True)
def _cluster_max_one(u, thr, nbr, parent, size, mass):
    _union_above(u, thr, nbr, parent, size, mass)
    best_size = 0
    best_mass = 0.0
    for i in range(u.shape[0]):
        if parent[i] == i:
            if size[i] > best_size:
                best_size = size[i]
            if mass[i] > best_mass:
                best_mass = mass[i]
    return best_size, best_mass


@njit(cache=True, nogil=True)
def cluster_max(tmaps, thr, nbr, two_sided, out_size, out_mass):
    """Largest cluster size and mass of each row of ``tmaps`` (B, n_voxels).

    Clusters are voxels with ``t > thr`` (and, two-sided, separately ``t < -thr``);
    mass is ``sum(|t| - thr)``, as nilearn and randomise define it.
    """
    n = tmaps.shape[1]
    parent = np.empty(n, np.int64)
    size = np.empty(n, np.int64)
    mass = np.empty(n, np.float64)
    neg = np.empty(n, np.float64)
    for b in range(tmaps.shape[0]):
        row = tmaps[b]
        s, m = _cluster_max_one(row, thr, nbr, parent, size, mass)
        if two_sided:
            for i in range(n):
                neg[i] = -row[i]
            s2, m2 = _cluster_max_one(neg, thr, nbr, parent, size, mass)
            s = max(s, s2)
            m = max(m, m2)
        out_size[b] = s
        out_mass[b] = m


@njit(cache=True)
def cluster_labels(u, thr, nbr):
    """Cluster id (root voxel index) of each voxel with ``u > thr``, -1 elsewhere."""
    n = u.shape[0]
    parent = np.empty(n, np.int64)
    size = np.empty(n, np.int64)
    mass = np.empty(n, np.float64)
    _union_above(u, thr, nbr, parent, size, mass)
    out = np.full(n, -1, np.int64)
    for i in range(n):
        if parent[i] >= 0:
            out[i] = _find(parent, i)
    return out


# ---------------------------------------------------------------- TFCE
@njit(cache=True, nogil=True, inline="always")
def _wfind(parent, acc, stack, i):
    """Root of ``i``; compresses the path keeping value(v) = sum of acc from v to root."""
    r = parent[i]
    if r == i or parent[r] == r:  # a root or a root's child: nothing to compress
        return r
    n = 0
    r = i
    while parent[r] != r:
        stack[n] = r
        n += 1
        r = parent[r]
    cum = 0.0
    for m in range(n - 1, -1, -1):
        node = stack[m]
        cum += acc[node]
        acc[node] = cum
        parent[node] = r
    return r


@njit(cache=True, nogil=True)
def _n_steps(max_score, dh):
    if dh <= 0.0:
        return 100
    k = int(np.round(max_score / dh))
    return min(max(k, 10), 1000)


@njit(cache=True, nogil=True, inline="always")
def _size_pow(size, E):
    """``size ** E``: a square root for the default E = 0.5 (cheaper than ``pow``)."""
    if E == 0.5:
        return np.sqrt(np.float64(size))
    return np.float64(size) ** E


@njit(cache=True, nogil=True)
def _levels(u, max_score, dh, h, lev, cnt):
    """Thresholds ``h`` (returns their number K) and each voxel's level: the largest ``k``
    with ``h[k] <= u[i]`` (-1 below ``h[0]``), computed from ``u / step`` and corrected
    against ``h`` itself (the same levels as a binary search over ``h``)."""
    K = _n_steps(max_score, dh)
    step = max_score / K
    for k in range(K):
        h[k] = (k + 1) * step
    h[K - 1] = max_score
    for k in range(K + 1):
        cnt[k] = 0
    h0 = h[0]
    for i in range(u.shape[0]):
        x = u[i]
        if x >= h0:
            lo = min(max(int(x / step) - 1, 0), K - 1)
            while lo + 1 < K and h[lo + 1] <= x:
                lo += 1
            while lo > 0 and h[lo] > x:
                lo -= 1
            lev[i] = lo
            cnt[lo] += 1
        else:
            lev[i] = -1
    return K


@njit(cache=True, nogil=True)
def _tfce_pass(u, nbr, max_score, E, H, dh, sign, out, work_i, work_f, cnt, off, lev, h):
    """Add ``sign * TFCE(u)`` (positive part of u) to ``out``."""
    n = u.shape[0]
    if not max_score > 0.0:
        return
    K = _levels(u, max_score, dh, h, lev, cnt)
    hq = np.empty(K)  # hq[j] = sum_{i<=j} h[i]**H
    c = 0.0
    for k in range(K):
        c += h[k] ** H
        hq[k] = c
    parent = work_i[0]
    size = work_i[1]
    since = work_i[2]
    order = work_i[3]
    stack = work_i[4]
    acc = work_f
    s = 0
    for k in range(K):  # counting sort of the voxels by level (by index within a level)
        off[k] = s
        s += cnt[k]
    off[K] = s
    for k in range(K):
        cnt[k] = off[k]
    for i in range(n):
        if lev[i] >= 0:
            order[cnt[lev[i]]] = i
            cnt[lev[i]] += 1
    for k in range(K - 1, -1, -1):
        for p in range(off[k], off[k + 1]):
            i = order[p]
            parent[i] = i
            acc[i] = 0.0
            size[i] = 1
            since[i] = k
        for p in range(off[k], off[k + 1]):
            i = order[p]
            ri = _wfind(parent, acc, stack, i)
            for m in range(nbr.shape[1]):
                j = nbr[i, m]
                if j < 0 or lev[j] < k:
                    continue
                rj = _wfind(parent, acc, stack, j)
                if ri == rj:
                    continue
                # settle both components down to (excluding) level k
                acc[ri] += _size_pow(size[ri], E) * (hq[since[ri]] - hq[k])
                since[ri] = k
                acc[rj] += _size_pow(size[rj], E) * (hq[since[rj]] - hq[k])
                since[rj] = k
                if size[ri] < size[rj]:
                    ri, rj = rj, ri
                parent[rj] = ri
                acc[rj] -= acc[ri]
                size[ri] += size[rj]
    for i in range(n):  # in voxel order: memory is read in sequence
        if lev[i] >= 0 and parent[i] == i:
            acc[i] += _size_pow(size[i], E) * hq[since[i]]
    for i in range(n):
        if lev[i] >= 0:
            r = _wfind(parent, acc, stack, i)
            if r == i:
                out[i] += sign * acc[i]
            else:
                out[i] += sign * (acc[i] + acc[r])


@njit(cache=True, nogil=True)
def _tfce_into(t, nbr, two_sided, E, H, dh, out, ws):
    work_i, work_f, cnt, off, neg, lev, h = ws
    n = t.shape[0]
    for i in range(n):
        out[i] = 0.0
    if two_sided:
        mx = 0.0
        for i in range(n):
            a = abs(t[i])
            if a > mx:
                mx = a
        _tfce_pass(t, nbr, mx, E, H, dh, 1.0, out, work_i, work_f, cnt, off, lev, h)
        for i in range(n):
            neg[i] = -t[i]
        _tfce_pass(neg, nbr, mx, E, H, dh, -1.0, out, work_i, work_f, cnt, off, lev, h)
    else:
        mx = 0.0
        for i in range(n):
            if t[i] > mx:
                mx = t[i]
        _tfce_pass(t, nbr, mx, E, H, dh, 1.0, out, work_i, work_f, cnt, off, lev, h)


@njit(cache=True, nogil=True)
def _workspace(n):
    """Scratch of one map: parent, size, since, order, stack (int32); sums; level counts and
    offsets; the negated map; levels (int16: at most 1000); thresholds."""
    return (
        np.empty((5, n), np.int32),
        np.empty(n, np.float64),
        np.empty(1002, np.int64),
        np.empty(1002, np.int64),
        np.empty(n, np.float64),
        np.empty(n, np.int16),
        np.empty(1000, np.float64),
    )


@njit(cache=True)
def tfce_map(t, nbr, two_sided, E, H, dh):
    """TFCE map of one masked statistic vector (``dh <= 0`` means 100 steps).

    Two-sided: positive and negative parts share the thresholds (from ``max |t|``);
    the negative part is returned with a minus sign, as nilearn does.
    """
    t = t.astype(np.float64)
    out = np.empty(t.shape[0])
    _tfce_into(t, nbr, two_sided, E, H, dh, out, _workspace(t.shape[0]))
    return out


@njit(cache=True, nogil=True)
def tfce_max(tmaps, nbr, two_sided, E, H, dh, out_max):
    """Maximum |TFCE| of each row of ``tmaps`` (B, n_voxels)."""
    n = tmaps.shape[1]
    buf = np.empty(n)
    row = np.empty(n)
    ws = _workspace(n)
    for b in range(tmaps.shape[0]):
        for i in range(n):
            row[i] = tmaps[b, i]
        _tfce_into(row, nbr, two_sided, E, H, dh, buf, ws)
        mx = 0.0
        for i in range(n):
            a = abs(buf[i])
            if a > mx:
                mx = a
        out_max[b] = mx
