"""Today's TFCE kernel (glmkit/stats/cluster.py at commit c88e578), kept verbatim as the
reference the faster kernel is compared with (tests/test_tfce.py and
benchmarks/bench_scale.py): ``tfce_max`` of both must agree to 1e-12.

Not a test module (no ``test_`` prefix); nothing in glmkit imports it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["tfce_map", "tfce_max"]


@njit(cache=True, nogil=True, inline="always")
def _wfind(parent, acc, stack, i):
    """Root of ``i``; compresses the path keeping value(v) = sum of acc from v to root."""
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


@njit(cache=True, nogil=True)
def _tfce_pass(u, nbr, max_score, E, H, dh, sign, out, work_i, work_f, cnt, off):
    """Add ``sign * TFCE(u)`` (positive part of u) to ``out``."""
    n = u.shape[0]
    if not max_score > 0.0:
        return
    K = _n_steps(max_score, dh)
    step = max_score / K
    h = np.empty(K)
    for k in range(K):
        h[k] = (k + 1) * step
    h[K - 1] = max_score
    hq = np.empty(K)  # hq[j] = sum_{i<=j} h[i]**H
    c = 0.0
    for k in range(K):
        c += h[k] ** H
        hq[k] = c
    parent = work_i[0]
    size = work_i[1]
    lev = work_i[2]
    since = work_i[3]
    order = work_i[4]
    stack = work_i[5]
    acc = work_f
    for k in range(K + 1):
        cnt[k] = 0
    h0 = h[0]
    for i in range(n):
        x = u[i]
        if x >= h0:
            lo = 0
            hi = K - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if h[mid] <= x:
                    lo = mid
                else:
                    hi = mid - 1
            lev[i] = lo
            cnt[lo] += 1
        else:
            lev[i] = -1
    s = 0
    for k in range(K):
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
                acc[ri] += size[ri] ** E * (hq[since[ri]] - hq[k])
                since[ri] = k
                acc[rj] += size[rj] ** E * (hq[since[rj]] - hq[k])
                since[rj] = k
                if size[ri] < size[rj]:
                    ri, rj = rj, ri
                parent[rj] = ri
                acc[rj] -= acc[ri]
                size[ri] += size[rj]
    total = off[K]
    for p in range(total):
        i = order[p]
        if parent[i] == i:
            acc[i] += size[i] ** E * hq[since[i]]
    for p in range(total):
        i = order[p]
        r = _wfind(parent, acc, stack, i)
        if r == i:
            out[i] += sign * acc[i]
        else:
            out[i] += sign * (acc[i] + acc[r])


@njit(cache=True, nogil=True)
def _tfce_into(t, nbr, two_sided, E, H, dh, out, work_i, work_f, cnt, off, neg):
    n = t.shape[0]
    for i in range(n):
        out[i] = 0.0
    if two_sided:
        mx = 0.0
        for i in range(n):
            a = abs(t[i])
            if a > mx:
                mx = a
        _tfce_pass(t, nbr, mx, E, H, dh, 1.0, out, work_i, work_f, cnt, off)
        for i in range(n):
            neg[i] = -t[i]
        _tfce_pass(neg, nbr, mx, E, H, dh, -1.0, out, work_i, work_f, cnt, off)
    else:
        mx = 0.0
        for i in range(n):
            if t[i] > mx:
                mx = t[i]
        _tfce_pass(t, nbr, mx, E, H, dh, 1.0, out, work_i, work_f, cnt, off)


@njit(cache=True, nogil=True)
def _workspace(n):
    return (
        np.empty((6, n), np.int32),
        np.empty(n, np.float64),
        np.empty(1002, np.int64),
        np.empty(1002, np.int64),
        np.empty(n, np.float64),
    )


@njit(cache=True)
def tfce_map(t, nbr, two_sided, E, H, dh):
    """TFCE map of one masked statistic vector (``dh <= 0`` means 100 steps).

    Two-sided: positive and negative parts share the thresholds (from ``max |t|``);
    the negative part is returned with a minus sign, as nilearn does.
    """
    t = t.astype(np.float64)
    out = np.empty(t.shape[0])
    wi, wf, cnt, off, neg = _workspace(t.shape[0])
    _tfce_into(t, nbr, two_sided, E, H, dh, out, wi, wf, cnt, off, neg)
    return out


@njit(cache=True, nogil=True)
def tfce_max(tmaps, nbr, two_sided, E, H, dh, out_max):
    """Maximum |TFCE| of each row of ``tmaps`` (B, n_voxels)."""
    n = tmaps.shape[1]
    buf = np.empty(n)
    row = np.empty(n)
    wi, wf, cnt, off, neg = _workspace(n)
    for b in range(tmaps.shape[0]):
        for i in range(n):
            row[i] = tmaps[b, i]
        _tfce_into(row, nbr, two_sided, E, H, dh, buf, wi, wf, cnt, off, neg)
        mx = 0.0
        for i in range(n):
            a = abs(buf[i])
            if a > mx:
                mx = a
        out_max[b] = mx
