"""A kernel-free viewer for statistical maps: one HTML fragment, plain inline JavaScript.

:func:`viewer_html` turns a few 3-D maps on one grid into a ``<div>`` that re-thresholds
and browses slices in any browser without a kernel or a network: the in-mask voxels of
every map are quantised to uint16, delta-coded, deflated and base64-encoded into the page;
the JavaScript (``templates/viewer.js``) decodes them once and draws slices on canvases.

The same preparation code (:func:`prepare_maps`, :func:`method_threshold`,
:func:`label_clusters`) backs the ipywidgets explorer in :mod:`glmkit.widgets`, so the
numbers in the notebook and in the report agree.

Cluster connectivity is 6 (faces, "NN1") by default, as in nilearn's ``threshold_img`` and
``get_clusters_table`` and hence in glmkit's cluster tables; 18 and 26 can be asked for.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import itertools
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import norm

from glmkit._util import logger
from glmkit.errors import ImageError, ParameterError

__all__ = [
    "ViewerMap",
    "viewer_html",
    "prepare_maps",
    "maps_from_result",
    "result_viewer_html",
    "method_threshold",
    "label_clusters",
    "background_u8",
    "cut_in_view",
    "METHODS",
    "ALPHAS",
]

#: Threshold methods, in the order the controls list them, with their labels.
METHODS: dict[str, str] = {
    "value": "value",
    "uncorrected": "uncorrected p",
    "fdr": "FDR q",
    "bonferroni": "Bonferroni alpha",
    "fwer": "FWER alpha (permutation)",
}

#: The alpha levels offered by the kernel-free viewer (the widget accepts any alpha).
ALPHAS: tuple[float, ...] = (0.1, 0.05, 0.01, 0.005, 0.001, 0.0001)

#: Which methods each kind of map supports (besides "value").
KIND_METHODS: dict[str, tuple[str, ...]] = {
    "z": ("uncorrected", "fdr", "bonferroni"),
    "logp": ("uncorrected", "fdr"),  # uncorrected -log10 p
    "logp_bonferroni": ("bonferroni",),  # -log10 of Bonferroni-corrected p
    "logp_fwer": ("fwer",),  # -log10 of permutation FWER-corrected p
    "value": (),
}

_CONNECTIVITY = {6: 1, 18: 2, 26: 3}
_uid_counter = itertools.count()


@dataclass(frozen=True, eq=False)
class ViewerMap:
    """One map ready for display: values on a canonical (RAS, diagonal affine) grid.

    Attributes
    ----------
    name, label : str
        Key and human label.
    data : numpy.ndarray
        3-D float64, NaN outside the mask.
    affine : numpy.ndarray
        4x4, diagonal with positive voxel sizes.
    kind : str
        One of ``"z"``, ``"logp"``, ``"logp_bonferroni"``, ``"logp_fwer"``, ``"value"``.
    two_sided : bool
        Whether supra-threshold means ``|value| >= t`` (else ``value >= t``).
    methods : dict
        method -> {alpha: threshold} for the methods this map supports.
    reference : str or None
        Name of the map whose values define the method thresholds (e.g. ``"z"`` for the
        FDR-thresholded ``z_fdr``); None for the map itself.
    threshold : float | None
        Initial threshold by value (overrides ``method``/``alpha`` when set).
    method, alpha : str, float
        Initial method and alpha.
    """

    name: str
    label: str
    data: np.ndarray
    affine: np.ndarray
    kind: str = "value"
    two_sided: bool = False
    methods: dict = field(default_factory=dict)
    reference: str | None = None
    threshold: float | None = None
    method: str = "value"
    alpha: float = 0.05

    @property
    def values(self) -> np.ndarray:
        """The finite in-mask values (C order)."""
        v = self.data[np.isfinite(self.data)]
        return v

    @property
    def max_abs(self) -> float:
        """Largest |value| (two-sided) or largest value (one-sided), at least 0."""
        v = self.values
        if v.size == 0:
            return 0.0
        return float(max(np.max(np.abs(v)) if self.two_sided else np.max(v), 0.0))


def infer_kind(name: str) -> str:
    """Guess a map's kind from its name (``z``, ``z_fdr``, ``logp_bonferroni``, ``logp_maxt``...).

    Examples
    --------
    >>> [infer_kind(n) for n in ("z", "z_fdr", "logp_bonferroni", "logp_maxt", "logp", "effect")]
    ['z', 'z', 'logp_bonferroni', 'logp_fwer', 'logp', 'value']
    """
    n = name.lower()
    if n == "z" or n.startswith("z_") or n.startswith("zmap"):
        return "z"
    if n.startswith("logp"):
        if "bonferroni" in n:
            return "logp_bonferroni"
        if "uncorr" in n:
            return "logp"
        if n == "logp":
            return "logp"
        return "logp_fwer"
    return "value"


def method_threshold(
    values: np.ndarray, kind: str, method: str, alpha: float, *, two_sided: bool = False,
    n_tests: int | None = None,
) -> float:
    """Threshold (in the map's units) that ``method`` at ``alpha`` gives on a map of ``kind``.

    Conventions are nilearn's ``threshold_stats_img``: with ``two_sided`` alpha is halved
    and the FDR is computed on ``|z|``. FDR returns ``inf`` when no voxel survives.

    Parameters
    ----------
    values : array
        In-mask values of the map (z, or -log10 p).
    kind, method : str
        See :data:`KIND_METHODS` and :data:`METHODS`.
    alpha : float
        In (0, 1].
    two_sided : bool
    n_tests : int, optional
        Number of tests for Bonferroni (default: ``values.size``).

    Examples
    --------
    >>> round(method_threshold(np.zeros(10), "z", "uncorrected", 0.001), 3)
    3.09
    >>> round(method_threshold(np.zeros(10), "logp_fwer", "fwer", 0.1), 3)
    1.0
    """
    if not 0 < alpha <= 1:
        raise ParameterError(f"alpha must be in (0, 1]; got {alpha!r}. Pass e.g. alpha=0.05.")
    allowed = KIND_METHODS.get(kind, ())
    if method not in allowed:
        raise ParameterError(
            f"method {method!r} is not available for a map of kind {kind!r}; "
            f"available: {list(allowed) or 'value only'}"
        )
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = int(n_tests if n_tests is not None else values.size) or 1
    a = alpha / 2 if (two_sided and kind == "z") else alpha
    if kind == "z":
        if method == "uncorrected":
            return float(norm.isf(a))
        if method == "bonferroni":
            return float(norm.isf(a / n))
        z = np.abs(values) if two_sided else values
        return _fdr_z(z, a)
    if kind == "logp":
        if method == "uncorrected":
            return float(-math.log10(alpha))
        # BH on p = 10**-v, returned in -log10 p units
        p = np.sort(10.0 ** (-values))
        m = p.size
        ok = p <= alpha * np.arange(1, m + 1) / max(m, 1)
        if not ok.any():
            return float("inf")
        return float(-math.log10(p[np.nonzero(ok)[0][-1]]))
    # logp_bonferroni / logp_fwer: the map is already corrected
    return float(-math.log10(alpha))


def _fdr_z(z: np.ndarray, alpha: float) -> float:
    """Benjamini-Hochberg threshold on z values (nilearn's ``fdr_threshold``)."""
    if z.size == 0:
        return float("inf")
    zs = -np.sort(-z)
    p = norm.sf(zs)
    pos = p < alpha * np.linspace(1 / zs.size, 1, zs.size)
    return float(zs[pos][-1] - 1.0e-12) if pos.any() else float("inf")


def label_clusters(
    data: np.ndarray, threshold: float, *, two_sided: bool = False, extent: int = 0,
    connectivity: int = 6,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Supra-threshold voxels grouped in clusters, small clusters removed.

    Supra-threshold means ``value >= threshold`` (or ``|value| >= threshold`` with
    ``two_sided``), and value != 0; positive and negative voxels form separate clusters.

    Returns
    -------
    labels : numpy.ndarray of int32
        0 outside surviving clusters, else the cluster number (1 = largest).
    table : pandas.DataFrame
        One row per surviving cluster: cluster, sign, size (voxels), peak (value), i, j, k.

    Examples
    --------
    >>> a = np.zeros((5, 5, 5)); a[1, 1, 1:3] = 4.0; a[3, 3, 3] = 5.0
    >>> lab, tab = label_clusters(a, 3.0, extent=2)
    >>> int((lab > 0).sum()), tab["size"].tolist()
    (2, [2])
    """
    if connectivity not in _CONNECTIVITY:
        raise ParameterError(f"connectivity must be 6, 18 or 26; got {connectivity!r}")
    d = np.nan_to_num(np.asarray(data, dtype=float), nan=0.0)
    structure = ndimage.generate_binary_structure(3, _CONNECTIVITY[connectivity])
    rows = []
    labelled = {}
    for sign in ((1, -1) if two_sided else (1,)):
        supra = (sign * d >= threshold) & (d != 0)
        if not supra.any():
            continue
        lab, n = ndimage.label(supra, structure)
        labelled[sign] = lab
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        # peak of each cluster: sort its voxels by label, then value (descending), take the first
        flat = np.flatnonzero(supra)
        lv = lab.ravel()[flat]
        order = np.lexsort((-(sign * d).ravel()[flat], lv))
        peaks = flat[order[np.r_[0, np.flatnonzero(np.diff(lv[order])) + 1]]]
        ijk = np.column_stack(np.unravel_index(peaks, d.shape))
        for lab_id, size, pos in zip(range(1, n + 1), sizes, ijk):
            if size >= extent:
                rows.append((sign, int(size), float(d[tuple(pos)]), *map(int, pos), lab_id))
    rows.sort(key=lambda r: (-r[1], -abs(r[2])))
    out = np.zeros(d.shape, dtype=np.int32)
    for sign, lab in labelled.items():
        remap = np.zeros(int(lab.max()) + 1, dtype=np.int32)
        for new_id, row in enumerate(rows, start=1):
            if row[0] == sign:
                remap[row[-1]] = new_id
        out += remap[lab]
    table = pd.DataFrame(
        [(k, "+" if r[0] > 0 else "-", r[1], r[2], r[3], r[4], r[5]) for k, r in enumerate(rows, 1)],
        columns=["cluster", "sign", "size", "peak", "i", "j", "k"],
    )
    return out, table


# --------------------------------------------------------------------------- inputs


def _to_array(name: str, obj: Any) -> tuple[np.ndarray, np.ndarray]:
    """(data, affine) on a canonical RAS grid with a diagonal affine."""
    import nibabel as nib

    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        try:
            obj = nib.load(obj)
        except Exception as exc:  # noqa: BLE001 - reported with the map's name
            raise ImageError(f"map {name!r}: cannot read image {obj!r}: {exc}") from exc
    if hasattr(obj, "affine") and hasattr(obj, "get_fdata"):
        img = obj
    else:
        try:
            data, affine = obj
        except (TypeError, ValueError):
            raise ImageError(
                f"map {name!r}: expected a (3-D array, 4x4 affine) pair or a nibabel image; "
                f"got {type(obj).__name__}"
            ) from None
        data = np.asarray(data, dtype=float)
        affine = np.asarray(affine, dtype=float)
        if data.ndim != 3 or affine.shape != (4, 4):
            raise ImageError(
                f"map {name!r}: expected a 3-D array and a 4x4 affine; got shapes "
                f"{data.shape} and {affine.shape}"
            )
        img = nib.Nifti1Image(data, affine)
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
    if len(img.shape) != 3:
        raise ImageError(f"map {name!r}: expected a 3-D image; got shape {img.shape}")
    img = nib.as_closest_canonical(img)
    aff = np.asarray(img.affine, dtype=float)
    if not np.allclose(aff[:3, :3], np.diag(np.diag(aff[:3, :3])), atol=1e-6):
        from nilearn.image import resample_img

        vox = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
        img = resample_img(img, target_affine=np.diag(vox), interpolation="nearest",
                           force_resample=True, copy_header=True)
        aff = np.asarray(img.affine, dtype=float)
    return np.asarray(img.get_fdata(), dtype=float), aff


def prepare_maps(
    maps: Mapping[str, Any], *, thresholds: Mapping[str, Any] | None = None,
) -> tuple[list[ViewerMap], np.ndarray, np.ndarray]:
    """Normalise viewer input: maps on one grid, NaN outside a common mask, method tables.

    Parameters
    ----------
    maps : mapping
        name -> (3-D array, affine) | nibabel image | path | dict with key ``image`` and
        optional ``kind``, ``two_sided``, ``label``, ``threshold``, ``method``, ``alpha``,
        ``methods`` ({method: {alpha: threshold}}), ``methods_from`` (name of the map whose
        values define the method thresholds, e.g. ``"z"`` for a thresholded z map), ``n_tests``.
        A key ``"mask"`` is used as the mask, not shown as a map. Without it, voxels that are
        NaN, or 0 in every map, are outside the mask.
    thresholds : mapping, optional
        name -> initial threshold (float), or name -> {method: threshold or {alpha: thr}}
        to override the computed method thresholds (e.g. the pipeline's FDR threshold).

    Returns
    -------
    maps : list of ViewerMap
    mask : numpy.ndarray of bool
    affine : numpy.ndarray
    """
    if not isinstance(maps, Mapping) or not maps:
        raise ParameterError(
            f"maps must be a non-empty dict name -> (array, affine) or image; got {maps!r:.80}"
        )
    thresholds = dict(thresholds or {})
    unknown = set(thresholds) - set(maps)
    if unknown:
        raise ParameterError(
            f"thresholds names maps {sorted(unknown)} that are not in maps {sorted(maps)}"
        )
    specs: dict[str, dict] = {}
    mask_arr = None
    shape = affine = None
    for name, obj in maps.items():
        spec = dict(obj) if isinstance(obj, Mapping) else {"image": obj}
        if "image" not in spec:
            raise ParameterError(f"map {name!r}: a dict spec needs an 'image' key; got {sorted(spec)}")
        data, aff = _to_array(name, spec["image"])
        if shape is None:
            shape, affine = data.shape, aff
        elif data.shape != shape or not np.allclose(aff, affine, atol=1e-4):
            raise ImageError(
                f"map {name!r} is on grid {data.shape} / {np.diag(aff)[:3]} but the first map is "
                f"on {shape} / {np.diag(affine)[:3]}; resample the maps to one grid first"
            )
        if name == "mask":
            mask_arr = np.nan_to_num(data) > 0
            continue
        spec["data"] = data
        specs[name] = spec
    if not specs:
        raise ParameterError("maps holds only a 'mask'; give at least one map to show")
    if mask_arr is None:
        mask_arr = np.zeros(shape, dtype=bool)
        for spec in specs.values():
            d = spec["data"]
            mask_arr |= np.isfinite(d) & (d != 0)
    out = []
    for name, spec in specs.items():
        data = np.where(mask_arr & np.isfinite(spec["data"]), spec["data"], np.nan)
        kind = spec.get("kind") or infer_kind(name)
        if kind not in KIND_METHODS:
            raise ParameterError(f"map {name!r}: kind must be one of {list(KIND_METHODS)}; got {kind!r}")
        two_sided = bool(spec.get("two_sided", kind == "z"))
        reference = spec.get("methods_from")
        if reference is not None and reference not in specs:
            raise ParameterError(
                f"map {name!r}: methods_from={reference!r} is not one of the maps {list(specs)}")
        ref_data = specs[reference]["data"] if reference else data
        vals = ref_data[mask_arr & np.isfinite(ref_data)]
        n_tests = spec.get("n_tests") or int(mask_arr.sum())
        methods = {
            m: {a: method_threshold(vals, kind, m, a, two_sided=two_sided, n_tests=n_tests)
                for a in ALPHAS}
            for m in KIND_METHODS[kind]
        }
        for m, table in (spec.get("methods") or {}).items():
            methods.setdefault(m, {}).update(_alpha_table(name, m, table, spec.get("alpha", 0.05)))
        threshold = spec.get("threshold")
        override = thresholds.get(name)
        if isinstance(override, Mapping):
            for m, table in override.items():
                methods.setdefault(m, {}).update(_alpha_table(name, m, table, spec.get("alpha", 0.05)))
        elif override is not None:
            threshold = float(override)
        method = spec.get("method")
        alpha = float(spec.get("alpha") or 0)
        if method is None:
            if kind == "z":
                method, alpha = "fdr", alpha or 0.05
                if not np.isfinite(methods["fdr"].get(alpha, np.inf)):
                    method, alpha = "uncorrected", 0.001
            elif kind in ("logp_fwer", "logp_bonferroni"):
                method, alpha = KIND_METHODS[kind][0], alpha or 0.1  # -log10 p > 1, as in nilearn
            elif kind == "logp":
                method, alpha = "uncorrected", alpha or 0.001
            else:
                method = "value"
        if method != "value" and method not in methods:
            raise ParameterError(
                f"map {name!r}: method {method!r} is not available; available: {sorted(methods)}"
            )
        if threshold is None and method == "value":
            threshold = _default_value_threshold(data[np.isfinite(data)], two_sided)
        out.append(ViewerMap(
            name=name, label=str(spec.get("label") or name), data=data, affine=affine, kind=kind,
            two_sided=two_sided, methods=methods, reference=reference,
            threshold=None if threshold is None else float(threshold),
            method="value" if threshold is not None else method, alpha=alpha or 0.05,
        ))
    return out, mask_arr, affine


def cut_in_view(
    cut_coords: Any, mask: np.ndarray, affine: np.ndarray, values: np.ndarray | None = None, *,
    two_sided: bool = False, label: str = "map",
) -> tuple[tuple[float, float, float], str | None]:
    """The cut to show: ``cut_coords`` when its slices cross the data, else the peak or centre.

    A cut (mm) is in view when its nearest voxel lies, along each axis, within the bounding box
    of ``mask``: then each of the three orthogonal slices through it holds data. Otherwise the
    cut moves to the peak of ``values`` inside the mask (largest value, or largest |value| when
    ``two_sided``), or, when ``values`` has no non-zero finite voxel, to the mask voxel nearest
    the mask's centre of mass. Works with any affine (flipped, oblique).

    Parameters
    ----------
    cut_coords : (x, y, z)
        Requested cut in mm (e.g. the reference analysis' (38, -17, -3)).
    mask : ndarray of bool
        3-D mask of the voxels with data.
    affine : ndarray, shape (4, 4)
        Voxel-to-mm affine of ``mask`` (and ``values``).
    values : ndarray, optional
        3-D map whose peak is the fallback (e.g. the z map).
    two_sided : bool
        Peak of |values| rather than of values.
    label : str
        What ``values`` is, for the note (``"the peak of the <label>"``).

    Returns
    -------
    cut : tuple of 3 floats
        The cut to use, in mm.
    note : str or None
        Why the cut was moved (None when ``cut_coords`` is kept), to show to the reader.

    Examples
    --------
    >>> mask = np.zeros((10, 10, 10), bool); mask[2:5, 2:5, 2:5] = True
    >>> values = np.where(mask, 1.0, 0.0); values[3, 4, 2] = 5.0
    >>> cut_in_view((3, 3, 3), mask, np.eye(4), values)
    ((3.0, 3.0, 3.0), None)
    >>> cut, note = cut_in_view((38, -17, -3), mask, np.eye(4), values)
    >>> cut
    (3.0, 4.0, 2.0)
    >>> for part in note.split("; "):
    ...     print(part)
    the cut (38, -17, -3) mm lies outside the data (x 2 to 4, y 2 to 4, z 2 to 4 mm)
    slices are shown at the peak of the map, (3, 4, 2) mm, instead
    """
    try:
        cut = tuple(float(c) for c in cut_coords)
        if len(cut) != 3 or not all(np.isfinite(cut)):
            raise ValueError
    except (TypeError, ValueError):
        raise ParameterError(
            f"cut_coords must be three finite numbers (x, y, z mm); got {cut_coords!r}") from None
    mask = np.asarray(mask, dtype=bool)
    affine = np.asarray(affine, dtype=float)
    if mask.ndim != 3 or not mask.any():
        return cut, None
    ijk = np.rint(np.linalg.solve(affine, np.r_[cut, 1.0])[:3])
    inside = np.argwhere(mask)
    lo, hi = inside.min(axis=0), inside.max(axis=0)
    if np.all((ijk >= lo) & (ijk <= hi)):
        return cut, None
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])]) @ affine.T
    extent = ", ".join(f"{axis} {corners[:, a].min():.0f} to {corners[:, a].max():.0f}"
                       for a, axis in enumerate("xyz"))
    data = None if values is None else np.where(mask, np.nan_to_num(
        np.asarray(values, dtype=float), nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    if data is not None and data.shape == mask.shape and np.any(data[mask] != 0):
        score = np.abs(data) if two_sided else np.where(mask, data, -np.inf)
        target = np.unravel_index(int(np.argmax(score)), mask.shape)
        where = f"the peak of the {label}"
    else:
        centre = inside.mean(axis=0)
        target = inside[int(np.argmin(((inside - centre) ** 2).sum(axis=1)))]
        where = "the centre of the data"
    xyz = tuple(float(v) for v in (affine @ np.r_[np.asarray(target, dtype=float), 1.0])[:3])
    shown = ", ".join(f"{c:g}" for c in cut)
    note = (f"the cut ({shown}) mm lies outside the data ({extent} mm); slices are shown at "
            f"{where}, ({', '.join(f'{c:.0f}' for c in xyz)}) mm, instead")
    return xyz, note


def _alpha_table(name: str, method: str, table: Any, alpha: float) -> dict[float, float]:
    if method not in METHODS or method == "value":
        raise ParameterError(
            f"map {name!r}: unknown threshold method {method!r}; expected one of "
            f"{[m for m in METHODS if m != 'value']}"
        )
    if isinstance(table, Mapping):
        return {float(a): float(t) for a, t in table.items()}
    return {float(alpha): float(table)}


def _default_value_threshold(vals: np.ndarray, two_sided: bool) -> float:
    if vals.size == 0:
        return 0.0
    v = np.abs(vals) if two_sided else vals
    return float(max(np.percentile(v, 95), 0.0))


def maps_from_result(result: Any) -> tuple[dict[str, dict], pd.DataFrame | None]:
    """Viewer map specs from an :class:`glmkit.pipeline.AnalysisResult` (duck-typed).

    Returns ``(maps, clusters)`` ready for :func:`viewer_html`: the z map, the FDR-thresholded
    z map, the Bonferroni -log10 p map and every permutation -log10 FWER p map, with the
    pipeline's own FDR/Bonferroni thresholds.
    """
    imgs = dict(result.maps())
    specs: dict[str, dict] = {}
    if "mask" in imgs:
        specs["mask"] = {"image": imgs["mask"]}
    thr = getattr(result, "thresholds", {}) or {}
    settings = getattr(result, "settings", None)
    two_sided = bool(getattr(thr.get("fdr"), "two_sided", True)) if thr else True
    z_methods: dict[str, dict] = {}
    for key, method in (("fdr", "fdr"), ("bonferroni", "bonferroni")):
        t = thr.get(key)
        if t is not None and np.isfinite(getattr(t, "threshold", np.nan)):
            z_methods[method] = {float(t.alpha): float(t.threshold)}
    if "z" in imgs:
        specs["z"] = {"image": imgs["z"], "kind": "z", "two_sided": two_sided, "label": "z",
                      "methods": z_methods}
    if "z_fdr" in imgs:
        alpha = float(getattr(thr.get("fdr"), "alpha", getattr(settings, "alpha", 0.05)))
        specs["z_fdr"] = {"image": imgs["z_fdr"], "kind": "z", "two_sided": two_sided,
                          "label": f"z, FDR q<{alpha:g}", "methods": z_methods,
                          "methods_from": "z" if "z" in imgs else None}
    if "logp_bonferroni" in imgs:
        specs["logp_bonferroni"] = {"image": imgs["logp_bonferroni"], "kind": "logp_bonferroni",
                                    "label": "-log10 p, Bonferroni"}
    for name in imgs:  # permutation maps in the order of the run's statistics
        if name.startswith("logp_") and name != "logp_bonferroni":
            specs[name] = {"image": imgs[name], "kind": infer_kind(name),
                           "label": f"-log10 p, FWER ({name[5:]}, permutation)"}
    clusters = getattr(result, "clusters", None)
    return specs, clusters


# --------------------------------------------------------------------------- encoding


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _encode_values(values: np.ndarray) -> tuple[str, float, float, int | None]:
    """uint16 codes, delta-coded, high/low byte planes, zlib: (base64, offset, scale, zero code).

    Value = offset + code * scale; 0 has its own exact code (returned) when 0 is in range.
    """
    if values.size == 0:
        return _b64(zlib.compress(b"", 9)), 0.0, 1.0, None
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        scale = 1.0
    else:
        scale = (hi - lo) / 65534.0
        if lo < 0 < hi:  # make 0 an exact code
            k = max(1, round(-lo / scale))
            scale = -lo / k
            if lo + 65535 * scale < hi:
                scale = (hi - lo) / 65534.0
    codes = np.clip(np.rint((values - lo) / scale), 0, 65535).astype(np.int64)
    zero = None
    if lo <= 0 <= hi:
        # the code of 0 is reserved for exact zeros (outside a thresholded map's clusters)
        zero = int(np.rint(-lo / scale))
        tiny = (codes == zero) & (values != 0)
        codes[tiny] += np.where(values[tiny] > 0, 1, -1)
        codes = np.clip(codes, 0, 65535)
    codes = codes.astype(np.uint16)
    delta = np.diff(codes, prepend=np.uint16(0)).astype(np.uint16)  # wraps mod 2**16
    planes = np.concatenate([(delta >> 8).astype(np.uint8), (delta & 0xFF).astype(np.uint8)])
    return _b64(zlib.compress(planes.tobytes(), 9)), lo, scale, zero


def _encode_bits(mask: np.ndarray) -> str:
    return _b64(zlib.compress(np.packbits(mask.ravel(order="C")).tobytes(), 9))


@functools.lru_cache(maxsize=1)
def _mni_template() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's bundled 1 mm MNI152 T1 template (no download; read without importing nilearn)."""
    import importlib.util

    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():  # pragma: no cover - older/newer nilearn layouts
        from nilearn.datasets import load_mni152_template

        img = load_mni152_template(resolution=2)
    else:
        img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.get_fdata(), dtype=np.float32), np.asarray(img.affine, dtype=float)


def background_u8(background: Any, shape: tuple[int, int, int], affine: np.ndarray,
                  mask: np.ndarray) -> np.ndarray | None:
    """A background image on the maps' grid as uint8 grey levels (None -> None).

    ``background`` is an image, (array, affine) pair or path, or ``"mni152"`` for nilearn's
    MNI152 template (shipped with nilearn, no download), resampled to the grid.
    """
    if background is None:
        return None
    if isinstance(background, str) and background.lower() in ("mni152", "mni"):
        data, aff = _mni_template()
    else:
        data, aff = _to_array("background", background)
    if data.shape != tuple(shape) or not np.allclose(aff, affine, atol=1e-4):
        # trilinear resampling onto the maps' grid (both affines are diagonal here)
        grid = np.indices(shape, dtype=float).reshape(3, -1)
        src = np.linalg.solve(aff, np.asarray(affine) @ np.vstack([grid, np.ones(grid.shape[1])]))[:3]
        data = ndimage.map_coordinates(np.asarray(data, dtype=np.float32), src, order=1, mode="constant",
                                       cval=0.0).reshape(shape)
    d = np.nan_to_num(data)
    inside = d[mask] if mask.any() else d.ravel()
    lo, hi = np.percentile(inside, [2, 99.5]) if inside.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1
    return np.clip((d - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)


def _json_number(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _cluster_rows(df: pd.DataFrame | None) -> dict | None:
    """Columns and rows of a cluster table, with the x/y/z peak columns found."""
    if df is None:
        return None
    df = pd.DataFrame(df)
    cols = {c.lower().strip(): c for c in df.columns.astype(str)}
    xyz = []
    for axis in ("x", "y", "z"):
        found = next((cols[k] for k in (axis, f"{axis}_mm", f"{axis} (mm)", f"peak_{axis}") if k in cols),
                     None)
        if found is None:
            raise ParameterError(
                f"clusters: expected columns X, Y, Z (peak coordinates in mm); got {list(df.columns)}"
            )
        xyz.append(found)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if v is None or (np.ndim(v) == 0 and pd.isna(v)):
                cells.append("")
            elif isinstance(v, (float, np.floating)):
                cells.append("" if not np.isfinite(v) else f"{v:.4g}")
            else:
                cells.append(str(v))
        rows.append({"cells": cells, "xyz": [float(r[c]) for c in xyz]})
    return {"columns": [str(c) for c in df.columns], "rows": rows}


def _template(name: str) -> str:
    return resources.files("glmkit.report").joinpath("templates", name).read_text(encoding="utf-8")


def viewer_payload(
    maps: Mapping[str, Any], *, clusters: Any = None, thresholds: Mapping[str, Any] | None = None,
    default_map: str | None = None, cut_coords: tuple[float, float, float] = (38, -17, -3),
    background: Any = None, title: str | None = None, connectivity: int = 6,
) -> dict:
    """The JSON-able data the viewer embeds (see :func:`viewer_html` for the parameters)."""
    if connectivity not in _CONNECTIVITY:
        raise ParameterError(f"connectivity must be 6, 18 or 26; got {connectivity!r}")
    vmaps, mask, affine = prepare_maps(maps, thresholds=thresholds)
    names = [m.name for m in vmaps]
    if default_map is None:
        default_map = names[0]
    if default_map not in names:
        raise ParameterError(f"default_map {default_map!r} is not one of the maps {names}")
    shown = next(m for m in vmaps if m.name == default_map)
    cut, cut_note = cut_in_view(cut_coords, mask, affine, shown.data, two_sided=shown.two_sided,
                                label=f"{shown.label} map")
    if cut_note:
        logger.warning("viewer: %s", cut_note)
    cut = list(cut)
    bg = background_u8(background, mask.shape, affine, mask)
    if bg is not None:
        bg = _b64(zlib.compress(bg.ravel(order="C").tobytes(), 9))
    if isinstance(clusters, Mapping):
        cl = {k: _cluster_rows(v) for k, v in clusters.items()}
        unknown = set(cl) - set(names)
        if unknown:
            raise ParameterError(f"clusters names maps {sorted(unknown)} not in maps {names}")
    else:
        cl = {"*": _cluster_rows(clusters)} if clusters is not None else {}
    out_maps = []
    for m in vmaps:
        vals = m.data[mask]
        vals = np.nan_to_num(vals, nan=0.0)
        b64, offset, scale, zero = _encode_values(vals)
        vmin = float(vals.min()) if vals.size else 0.0
        vmax = float(vals.max()) if vals.size else 0.0
        out_maps.append({
            "name": m.name, "label": m.label, "kind": m.kind, "two_sided": m.two_sided,
            "data": b64, "offset": offset, "scale": scale, "zero_code": zero, "vmin": vmin, "vmax": vmax,
            "max_abs": m.max_abs,
            "methods": {meth: {f"{a:g}": _json_number(t) for a, t in sorted(tab.items(), reverse=True)}
                        for meth, tab in m.methods.items()},
            "method": m.method, "alpha": f"{m.alpha:g}", "threshold": m.threshold,
            "clusters": cl.get(m.name, cl.get("*")),
        })
    return {
        "version": 1, "title": title or "", "shape": list(mask.shape),
        "affine": np.asarray(affine).round(6).tolist(), "mask": _encode_bits(mask),
        "n_mask": int(mask.sum()), "background": bg, "maps": out_maps, "default_map": default_map,
        "cut": cut, "cut_note": cut_note, "connectivity": connectivity,
        "method_labels": METHODS,
    }


def viewer_html(
    maps: Mapping[str, Any], *, clusters: Any = None, thresholds: Mapping[str, Any] | None = None,
    default_map: str | None = None, cut_coords: tuple[float, float, float] = (38, -17, -3),
    background: Any = None, title: str | None = None, connectivity: int = 6,
) -> str:
    """A self-contained HTML fragment: an interactive slice viewer that needs no kernel.

    Parameters
    ----------
    maps : mapping
        name -> (3-D array, 4x4 affine), nibabel image, path, or a dict spec (see
        :func:`prepare_maps`) giving ``kind`` (``"z"``, ``"logp"``, ``"logp_bonferroni"``,
        ``"logp_fwer"``, ``"value"``; guessed from the name otherwise), ``two_sided``,
        ``label``, initial ``threshold`` or ``method``/``alpha``, ``methods`` tables and
        ``methods_from`` (the map whose values set the method thresholds). All maps share
        one grid; a ``"mask"`` entry is the mask.
    clusters : DataFrame or dict name -> DataFrame, optional
        Cluster table(s) with peak columns X, Y, Z (mm); clicking a row jumps to its peak.
    thresholds : mapping, optional
        name -> initial threshold, or name -> {method: threshold | {alpha: threshold}}.
    default_map : str, optional
        Map shown first (default: the first).
    cut_coords : (x, y, z)
        Initial cut in mm; when its slices miss the data (another field of view), the viewer
        opens at the default map's peak instead (see :func:`cut_in_view`) and the payload's
        ``cut_note`` says so.
    background : image, (array, affine), path or "mni152", optional
        Anatomical/mean image drawn in grey under the map, resampled to the maps' grid;
        ``"mni152"`` uses nilearn's bundled MNI152 template (about +80 kB on the demo grid).
        Default: the mask in grey.
    title : str, optional
    connectivity : {6, 18, 26}
        Cluster connectivity for the extent filter (6 = faces, as nilearn/glmkit tables).

    Returns
    -------
    str
        ``<div class="glmkit-viewer">`` with inline ``<style>``, a JSON data block, the
        ``<script>`` and a ``<noscript>`` note. Two fragments can share a page.

    Examples
    --------
    >>> z = np.zeros((8, 9, 7)); z[2:6, 2:7, 1:6] = 1.0; z[4, 4, 3] = 5.0
    >>> frag = viewer_html({"z": (z, np.eye(4))}, cut_coords=(4, 4, 3))
    >>> frag.startswith('<div class="glmkit-viewer"') and 'data-control="threshold"' in frag
    True
    """
    payload = viewer_payload(
        maps, clusters=clusters, thresholds=thresholds, default_map=default_map,
        cut_coords=cut_coords, background=background, title=title, connectivity=connectivity,
    )
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    data = data.replace("</", "<\\/").replace("<!--", "<\\!--")
    uid = "glmkit-viewer-" + hashlib.sha1(
        data.encode() + str(next(_uid_counter)).encode()
    ).hexdigest()[:10]
    css = _template("viewer.css")
    js = _template("viewer.js")
    esc_title = html.escape(title or "")
    body = _template("viewer.html").replace("{{uid}}", uid).replace("{{title}}", esc_title)
    return (
        f'<div class="glmkit-viewer" id="{uid}">'
        f"<style>{css}</style>"
        f"{body}"
        f'<script type="application/json" data-role="viewer-data">{data}</script>'
        f"<script>{js}\n;window.glmkitViewer(document.getElementById({json.dumps(uid)}));</script>"
        "</div>"
    )


def result_viewer_html(result: Any, *, title: str | None = None, **kwargs: Any) -> str:
    """:func:`viewer_html` for an :class:`glmkit.pipeline.AnalysisResult`: what the report embeds.

    Shows z, the FDR-thresholded z, the Bonferroni -log10 p map and each permutation
    -log10 FWER p map, with the run's cluster table and cut coordinates; ``kwargs`` go to
    :func:`viewer_html` (e.g. ``background=``, ``cut_coords=``).
    """
    specs, clusters = maps_from_result(result)
    settings = getattr(result, "settings", None)
    kwargs.setdefault("cut_coords", tuple(getattr(settings, "cut_coords", (38, -17, -3))))
    if clusters is not None and len(clusters) == 0:
        clusters = None
    return viewer_html(specs, clusters=clusters, title=title, **kwargs)
