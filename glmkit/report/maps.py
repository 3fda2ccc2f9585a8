"""The map logic behind both viewers: kinds, thresholds by method, clusters, the cut.

:func:`prepare_maps` normalises a few 3-D maps onto one canonical grid and tabulates, for each
map, the threshold of every method (uncorrected p, FDR q, Bonferroni alpha, permutation FWER
alpha) at the viewer's alphas; :func:`label_clusters` groups the supra-threshold voxels;
:func:`cut_in_view` chooses the slices. The kernel-free HTML viewer
(:mod:`glmkit.report.viewer`), the report's tables (:mod:`glmkit.report.sections`) and the
ipywidgets explorer (:mod:`glmkit.widgets`) all use these functions, so their numbers agree.

Nothing here recomputes what a run already decided: :func:`maps_from_result` passes the run's
own FDR and Bonferroni thresholds, the permutation maps come from the registry of statistics
(:mod:`glmkit.stats.statistics`), and the height thresholds of z maps at other alphas are
those of :func:`glmkit.stats.threshold.threshold_map` (nilearn's ``threshold_stats_img``).

Cluster connectivity is 6 (faces, "NN1") by default, as in nilearn's ``threshold_img`` and
``get_clusters_table`` and hence in glmkit's cluster tables; 18 and 26 can be asked for. The
viewer's JavaScript labels clusters the same way (positive and negative voxels apart).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import norm

from glmkit.errors import ImageError, ParameterError, ReportError
from glmkit.stats.statistics import get_statistic, statistic_names
from glmkit.stats.threshold import fdr_threshold, threshold_map

__all__ = [
    "ViewerMap",
    "prepare_maps",
    "maps_from_result",
    "run_view",
    "fwer_map_spec",
    "infer_kind",
    "method_threshold",
    "label_clusters",
    "background_u8",
    "cut_in_view",
    "METHODS",
    "ALPHAS",
    "KIND_METHODS",
    "CONNECTIVITY",
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

#: Cluster connectivity (6 faces, 18 + edges, 26 + corners) -> rank of its ndimage structure.
CONNECTIVITY: dict[int, int] = {6: 1, 18: 2, 26: 3}


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
    """The kind of a map from its name, for maps given without a ``kind``.

    The FWER maps of registered permutation statistics (:func:`glmkit.stats.statistics
    .statistic_names`) are ``"logp_fwer"``; otherwise the name decides (``z``, ``z_fdr``,
    ``logp_bonferroni``, ``logp`` / ``logp_uncorrected``, other ``logp_*``: FWER).

    Examples
    --------
    >>> [infer_kind(n) for n in ("z", "z_fdr", "logp_bonferroni", "logp_maxt", "logp", "effect")]
    ['z', 'z', 'logp_bonferroni', 'logp_fwer', 'logp', 'value']
    """
    if name in {get_statistic(s).map_name for s in statistic_names()}:
        return "logp_fwer"
    n = name.lower()
    if n == "z" or n.startswith("z_") or n.startswith("zmap"):
        return "z"
    if n.startswith("logp"):
        if "bonferroni" in n:
            return "logp_bonferroni"
        if n == "logp" or "uncorr" in n:
            return "logp"
        return "logp_fwer"
    return "value"


#: viewer method -> ``height_control`` of :func:`glmkit.stats.threshold.threshold_map`
_HEIGHT_CONTROL = {"uncorrected": "fpr", "fdr": "fdr", "bonferroni": "bonferroni"}


def method_threshold(
    values: np.ndarray, kind: str, method: str, alpha: float, *, two_sided: bool = False,
    n_tests: int | None = None,
) -> float:
    """Threshold (in the map's units) that ``method`` at ``alpha`` gives on a map of ``kind``.

    z maps get the threshold of :func:`glmkit.stats.threshold.threshold_map` (nilearn's
    ``threshold_stats_img``: with ``two_sided`` alpha is halved and the FDR is computed on
    ``|z|``); -log10 p maps get Benjamini-Hochberg through the same
    :func:`~glmkit.stats.threshold.fdr_threshold`. FDR returns ``inf`` when no voxel survives.

    Parameters
    ----------
    values : array
        In-mask values of the map (z, or -log10 p).
    kind, method : str
        See :data:`KIND_METHODS` and :data:`METHODS`.
    alpha : float
        In (0, 1).
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
    if not 0 < alpha < 1:
        raise ParameterError(f"alpha must be in (0, 1); got {alpha!r}. Pass e.g. alpha=0.05.")
    allowed = KIND_METHODS.get(kind, ())
    if method not in allowed:
        raise ParameterError(
            f"method {method!r} is not available for a map of kind {kind!r}; "
            f"available: {list(allowed) or 'value only'}"
        )
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if kind == "z":
        control = _HEIGHT_CONTROL[method]
        if method == "bonferroni" and n_tests is not None:  # alpha / n_tests, uncorrected
            control, alpha = "fpr", alpha / int(n_tests)
        # no voxel: the data-free thresholds (uncorrected, Bonferroni) still hold; FDR is inf
        data = values if values.size else np.zeros(1)
        return float(threshold_map(data, alpha=alpha, height_control=control,
                                   two_sided=two_sided).threshold)
    if kind == "logp" and method == "fdr":
        if not values.size:
            return float("inf")
        # BH on p = 10**-v, through z = isf(p) (monotone), back in -log10 p units
        tiny = np.finfo(float).tiny
        z = norm.isf(np.maximum(10.0 ** (-values), tiny))
        z_thr = fdr_threshold(z, alpha)
        return float(-np.log10(norm.sf(z_thr))) if np.isfinite(z_thr) else float("inf")
    # uncorrected -log10 p, logp_bonferroni and logp_fwer: the map already holds the p value
    return float(-math.log10(alpha))


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
    if connectivity not in CONNECTIVITY:
        raise ParameterError(f"connectivity must be 6, 18 or 26; got {connectivity!r}")
    d = np.nan_to_num(np.asarray(data, dtype=float), nan=0.0)
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY[connectivity])
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
        [(k, "+" if r[0] > 0 else "-", r[1], r[2], r[3], r[4], r[5])
         for k, r in enumerate(rows, 1)],
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
    specs, mask, affine = _read_maps(maps)
    out = [_viewer_map(name, spec, specs, mask, affine, thresholds.get(name))
           for name, spec in specs.items()]
    return out, mask, affine


def _read_maps(maps: Mapping[str, Any]) -> tuple[dict[str, dict], np.ndarray, np.ndarray]:
    """Specs with their data on one canonical grid, the mask and the grid's affine."""
    specs: dict[str, dict] = {}
    mask = None
    shape = affine = None
    for name, obj in maps.items():
        spec = dict(obj) if isinstance(obj, Mapping) else {"image": obj}
        if "image" not in spec:
            raise ParameterError(f"map {name!r}: a dict spec needs an 'image' key; "
                                 f"got {sorted(spec)}")
        data, aff = _to_array(name, spec["image"])
        if shape is None:
            shape, affine = data.shape, aff
        elif data.shape != shape or not np.allclose(aff, affine, atol=1e-4):
            raise ImageError(
                f"map {name!r} is on grid {data.shape} / {np.diag(aff)[:3]} but the first map is "
                f"on {shape} / {np.diag(affine)[:3]}; resample the maps to one grid first"
            )
        if name == "mask":
            mask = np.nan_to_num(data) > 0
            continue
        spec["data"] = data
        specs[name] = spec
    if not specs:
        raise ParameterError("maps holds only a 'mask'; give at least one map to show")
    if mask is None:
        mask = np.zeros(shape, dtype=bool)
        for spec in specs.values():
            d = spec["data"]
            mask |= np.isfinite(d) & (d != 0)
    return specs, mask, affine


def _viewer_map(name: str, spec: dict, specs: dict[str, dict], mask: np.ndarray,
                affine: np.ndarray, override: Any) -> ViewerMap:
    """One :class:`ViewerMap`: its kind, method table and initial threshold."""
    data = np.where(mask & np.isfinite(spec["data"]), spec["data"], np.nan)
    kind = spec.get("kind") or infer_kind(name)
    if kind not in KIND_METHODS:
        raise ParameterError(f"map {name!r}: kind must be one of {list(KIND_METHODS)}; "
                             f"got {kind!r}")
    two_sided = bool(spec.get("two_sided", kind == "z"))
    reference = spec.get("methods_from")
    if reference is not None and reference not in specs:
        raise ParameterError(
            f"map {name!r}: methods_from={reference!r} is not one of the maps {list(specs)}")
    ref_data = specs[reference]["data"] if reference else data
    vals = ref_data[mask & np.isfinite(ref_data)]
    n_tests = spec.get("n_tests") or int(mask.sum())
    methods = {
        m: {a: method_threshold(vals, kind, m, a, two_sided=two_sided, n_tests=n_tests)
            for a in ALPHAS}
        for m in KIND_METHODS[kind]
    }
    given = [spec.get("methods") or {}, override if isinstance(override, Mapping) else {}]
    for table_of in given:  # the caller's thresholds (e.g. the run's) replace computed ones
        for m, table in table_of.items():
            methods.setdefault(m, {}).update(_alpha_table(name, m, table, spec.get("alpha", 0.05)))
    threshold = spec.get("threshold")
    if override is not None and not isinstance(override, Mapping):
        threshold = float(override)
    method, alpha = _initial_method(name, kind, spec, methods)
    if threshold is None and method == "value":
        threshold = _default_value_threshold(data[np.isfinite(data)], two_sided)
    return ViewerMap(
        name=name, label=str(spec.get("label") or name), data=data, affine=affine, kind=kind,
        two_sided=two_sided, methods=methods, reference=reference,
        threshold=None if threshold is None else float(threshold),
        method="value" if threshold is not None else method, alpha=alpha or 0.05,
    )


def _initial_method(name: str, kind: str, spec: dict, methods: dict) -> tuple[str, float]:
    """The method and alpha a map opens with (the spec's, else one per kind)."""
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
    return method, alpha


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
    cut_coords : (x, y, z) or None
        Requested cut in mm (e.g. :data:`glmkit.data.DEFAULT_CUT_COORDS`, the reference cut);
        None: the peak of ``values`` (or the centre of the data), without a note.
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
    mask = np.asarray(mask, dtype=bool)
    affine = np.asarray(affine, dtype=float)
    if cut_coords is None and mask.ndim == 3 and mask.any():  # none asked for: the peak
        return _peak_or_centre(mask, affine, values, two_sided, label)[0], None
    try:
        cut = tuple(float(c) for c in cut_coords)
        if len(cut) != 3 or not all(np.isfinite(cut)):
            raise ValueError
    except (TypeError, ValueError):
        raise ParameterError(
            f"cut_coords must be three finite numbers (x, y, z mm); got {cut_coords!r}") from None
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
    xyz, where = _peak_or_centre(mask, affine, values, two_sided, label)
    shown = ", ".join(f"{c:g}" for c in cut)
    note = (f"the cut ({shown}) mm lies outside the data ({extent} mm); slices are shown at "
            f"{where}, ({', '.join(f'{c:.0f}' for c in xyz)}) mm, instead")
    return xyz, note


def _peak_or_centre(mask, affine, values, two_sided, label) -> tuple[tuple[float, ...], str]:
    """The mm position of the peak of ``values`` in ``mask`` (of |values| when two-sided), or
    of the data's centre when ``values`` has nothing there; and how to name it."""
    data = None if values is None else np.where(mask, np.nan_to_num(
        np.asarray(values, dtype=float), nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    if data is not None and data.shape == mask.shape and np.any(data[mask] != 0):
        score = np.abs(data) if two_sided else np.where(mask, data, -np.inf)
        target = np.unravel_index(int(np.argmax(score)), mask.shape)
        where = f"the peak of the {label}"
    else:
        inside = np.argwhere(mask)
        centre = inside.mean(axis=0)
        target = inside[int(np.argmin(((inside - centre) ** 2).sum(axis=1)))]
        where = "the centre of the data"
    xyz = tuple(float(v) for v in (affine @ np.r_[np.asarray(target, dtype=float), 1.0])[:3])
    return xyz, where


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
    perm = getattr(result, "permutation", None)
    for stat in perm.statistics if perm is not None else ():  # in the order of the run's
        spec = get_statistic(stat)
        if spec.map_name not in imgs:
            raise ReportError(f"result.maps() has no {spec.map_name!r} for permutation "
                              f"statistic {stat!r}; found {sorted(imgs)}")
        specs[spec.map_name] = fwer_map_spec(stat, imgs[spec.map_name])
    clusters = getattr(result, "clusters", None)
    return specs, clusters


def run_view(specs: Mapping[str, dict], *, alpha: float, statistics: Any = ()
             ) -> tuple[dict[str, dict], str | None]:
    """How a viewer of a run opens: the report's viewer and the explorer both start here.

    The corrected -log10 p maps (Bonferroni, permutation FWER) open at the run's ``alpha``
    when the viewer offers it (:data:`ALPHAS`); the map shown first is the headline: the
    first permutation statistic's map of ``statistics``, else the FDR-thresholded z map,
    else z.

    Returns
    -------
    specs : dict
        A copy of ``specs`` with those alphas set.
    default_map : str or None
        The name of the map to show first (None when none of them is there).

    Examples
    --------
    >>> specs = {"z": {"kind": "z"}, "logp_maxt": {"kind": "logp_fwer"}}
    >>> opened, first = run_view(specs, alpha=0.05, statistics=["voxel"])
    >>> opened["logp_maxt"]["alpha"], first
    (0.05, 'logp_maxt')
    """
    out = {name: dict(spec) for name, spec in specs.items()}
    if alpha in ALPHAS:
        for spec in out.values():
            if spec.get("kind") in ("logp_bonferroni", "logp_fwer"):
                spec["alpha"] = alpha
    first = get_statistic(list(statistics)[0]).map_name if len(statistics) else None
    return out, next((name for name in (first, "z_fdr", "z") if name in out), None)


def fwer_map_spec(statistic: str, image: Any) -> dict:
    """The viewer spec of a permutation statistic's -log10 FWER p map (label from the registry).

    Examples
    --------
    >>> fwer_map_spec("tfce", None)["label"]
    '-log10 p, FWER (TFCE, permutation)'
    """
    spec = get_statistic(statistic)
    return {"image": image, "kind": "logp_fwer",
            "label": f"-log10 p, FWER ({spec.short}, permutation)"}


@functools.lru_cache(maxsize=1)
def _mni_template() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's bundled 1 mm MNI152 T1 template (no download; read without importing nilearn)."""
    import importlib.util

    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    path = (Path(spec.origin).parent / "datasets" / "data"
            / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
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
        grid_mm = np.asarray(affine) @ np.vstack([grid, np.ones(grid.shape[1])])
        src = np.linalg.solve(aff, grid_mm)[:3]
        data = ndimage.map_coordinates(np.asarray(data, dtype=np.float32), src, order=1,
                                       mode="constant",
                                       cval=0.0).reshape(shape)
    d = np.nan_to_num(data)
    inside = d[mask] if mask.any() else d.ravel()
    lo, hi = np.percentile(inside, [2, 99.5]) if inside.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1
    return np.clip((d - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)


