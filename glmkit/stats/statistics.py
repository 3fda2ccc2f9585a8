"""The registry of permutation statistics: one :class:`StatisticSpec` per statistic.

A statistic is declared once, here (or by :func:`register_statistic` from anywhere): its
name, the name of its FWER map, its labels and units for people, whether it needs the mask
(voxel neighbours), its references and its two kernels. The permutation engine, the run
settings (the choices of ``statistics``), the command line's help, the report (labels,
methods text, citations, null-distribution figures) and the viewer's map list all read this
registry; adding a statistic touches one place.

Kernels
    ``observed(stat_map, ctx, cache)`` returns the per-voxel observed statistic (1-D, one value
    per voxel) from the observed statistic map (a t map). ``null_max(maps, ctx, cache)`` returns
    the maximum of the statistic for each row of ``maps`` (``(B, n_voxels)`` statistic maps of
    ``B`` permutations), so the FWER p of a voxel is the share of those maxima at or above its
    observed value. ``cache`` is a dict shared by the statistics of one call (the observed map,
    or one block of permutations), so statistics computed by one pass (cluster size and mass)
    share it. ``null_max=None`` marks the
    engine's own voxel maximum, computed in the same pass as the uncorrected counts without
    forming whole t maps.

Scores
    A voxel's p-value compares ``|observed|`` (two-sided) or ``observed`` (one-sided) with the
    null maxima; with ``nonzero_only`` the voxels whose observed value is 0 (outside every
    cluster) get p = 1.

Examples
--------
>>> spec = get_statistic("tfce")
>>> spec.map_name, spec.needs_mask, spec.short
('logp_tfce', True, 'TFCE')
>>> statistic_names()[:2]
('voxel', 'cluster_size')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from glmkit.errors import ParameterError

if TYPE_CHECKING:  # numpy is imported by the kernels when they run: settings and the CLI
    import numpy as np  # read this registry without paying for it

__all__ = [
    "StatisticSpec",
    "StatContext",
    "REFERENCES",
    "SCHEMES",
    "TFCE_DEFAULTS",
    "register_statistic",
    "unregister_statistic",
    "get_statistic",
    "statistic_names",
    "spatial_statistics",
]

#: resampling schemes: permute reduced- or full-model residuals, or flip their signs
#: (one-sample tests always sign-flip)
SCHEMES = ("freedman_lane", "ter_braak", "sign_flip")
#: TFCE defaults (Smith & Nichols 2009; ``"auto"``: 100 steps up to the map's maximum)
TFCE_DEFAULTS = {"E": 0.5, "H": 2.0, "dh": "auto"}
#: citation key -> reference text (the statistics' and the engine's own)
REFERENCES = {
    "nichols2002": "Nichols TE, Holmes AP (2002). Nonparametric permutation tests for functional "
                   "neuroimaging: a primer with examples. Hum Brain Mapp 15:1-25.",
    "winkler2014": "Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE (2014). Permutation "
                   "inference for the general linear model. NeuroImage 92:381-397.",
    "smith2009": "Smith SM, Nichols TE (2009). Threshold-free cluster enhancement: addressing "
                 "problems of smoothing, threshold dependence and localisation in cluster "
                 "inference. NeuroImage 44:83-98.",
    "freedman1983": "Freedman D, Lane D (1983). A nonstochastic interpretation of reported "
                    "significance levels. J Bus Econ Stat 1:292-298.",
    "terbraak1992": "ter Braak CJF (1992). Permutation versus bootstrap significance tests in "
                    "multiple regression and ANOVA. In: Bootstrapping and Related Techniques, "
                    "Springer, 79-86.",
    "winkler2016": "Winkler AM, Ridgway GR, Douaud G, Nichols TE, Smith SM (2016). Faster "
                   "permutation inference in brain imaging. NeuroImage 141:502-516.",
    "poline1997": "Poline JB, Worsley KJ, Evans AC, Friston KJ (1997). Combining spatial extent "
                  "and peak intensity to test for activations in functional imaging. "
                  "NeuroImage 5:83-96.",
}


# ----------------------------------------------------------------------------- context
class StatContext:
    """What the kernels may use: degrees of freedom, sidedness, neighbours, thresholds.

    Derived values (``neighbours``, ``cluster_t``, ``tfce``) are computed on first use and
    kept, so the engine computes them once in the calling process (through the observed
    statistics) before handing the context to workers.

    Parameters
    ----------
    dof : int
        Residual degrees of freedom of the statistic maps.
    two_sided : bool
        Whether the test is two-sided (kernels take positive and negative parts).
    mask : ndarray of bool or None
        3-D mask whose in-mask voxels (C order) are the columns of the maps.
    connectivity : {6, 18, 26}
        Neighbourhood of clusters and TFCE.
    cluster_threshold : float
        Cluster-forming uncorrected p (two-sided: p/2 per tail).
    tfce_params : mapping
        TFCE ``E``, ``H`` and ``dh`` (``"auto"`` or a step).
    stat_type : {"t", "F"}
        The maps the kernels see: t maps, or sqrt(F) maps for an F test (non-negative, on
        the scale of |t|; clusters are sign-less).
    df1 : int
        Numerator degrees of freedom of an F test (rank of the contrast).
    """

    def __init__(self, *, dof: int, two_sided: bool, mask: np.ndarray | None = None,
                 connectivity: int = 6, cluster_threshold: float = 0.001,
                 tfce_params: Mapping[str, Any] | None = None, stat_type: str = "t",
                 df1: int = 1) -> None:
        self.stat_type = stat_type
        self.df1 = int(df1)
        self.dof = int(dof)
        self.two_sided = bool(two_sided)
        self.mask = mask
        self.connectivity = int(connectivity)
        self.cluster_threshold = float(cluster_threshold)
        self.tfce_params = dict(TFCE_DEFAULTS if tfce_params is None else tfce_params)

    @cached_property
    def neighbours(self) -> np.ndarray:
        """(n_voxels, k) in-mask neighbour indices (-1 padded) of the mask's voxels."""
        if self.mask is None:
            raise ParameterError("this statistic needs mask_img (the 3-D mask that produced "
                                 "Y) to define voxel neighbours; pass mask_img=")
        from glmkit.stats import cluster

        return cluster.neighbors(self.mask, self.connectivity)

    @cached_property
    def cluster_t(self) -> float:
        """Cluster-forming threshold on the maps (t, or sqrt(F)) from ``cluster_threshold``."""
        import numpy as np
        from scipy import stats

        if self.stat_type == "F":
            return float(np.sqrt(stats.f.isf(self.cluster_threshold, self.df1, self.dof)))
        q = self.cluster_threshold / 2 if self.two_sided else self.cluster_threshold
        return float(stats.t.isf(q, self.dof))

    @cached_property
    def tfce(self) -> dict[str, float]:
        """TFCE ``E``, ``H`` and ``dh`` as numbers (``dh`` 0.0 stands for ``"auto"``)."""
        p = self.tfce_params
        dh = 0.0 if p.get("dh", "auto") == "auto" else float(p["dh"])
        return {"E": float(p["E"]), "H": float(p["H"]), "dh": dh}

    def used(self) -> dict[str, Any]:
        """The derived values the kernels asked for (what a result should record)."""
        return {k: self.__dict__[k] for k in ("cluster_t", "tfce") if k in self.__dict__}


# ----------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class StatisticSpec:
    """One permutation statistic.

    Parameters
    ----------
    name : str
        Identifier used in ``statistics=`` (settings, CLI, API).
    label : str
        Label in tables and figure titles, e.g. ``"permutation TFCE"``.
    short : str
        Short name in sentences, e.g. ``"TFCE"``.
    units : str
        What ``null_max`` holds, e.g. ``"maximum TFCE score"`` (axis label, critical values).
    level : {"voxel", "cluster"}
        What a significant result speaks about: each voxel, or a cluster as a whole.
    needs_mask : bool
        Needs voxel neighbours (the 3-D mask).
    observed : callable
        ``observed(stat_map, ctx, cache) -> ndarray`` per-voxel observed statistic.
    null_max : callable or None
        ``null_max(maps, ctx, cache) -> ndarray (B,)``; None: the engine's voxel maximum.
    methods : callable
        ``methods(result) -> str``: the statistic in the methods text (plain text, citation
        markers ``[@key]`` for keys of :data:`REFERENCES` or of ``references``), from the
        :class:`~glmkit.stats.permutation.PermutationResult` (its ``cluster_threshold``,
        ``cluster_forming_t``, ``tfce_params``).
    references : mapping
        Extra citation key -> reference text.
    nonzero_only : bool
        Voxels whose observed value is 0 get p = 1 (outside every cluster).
    map_name : str
        Name of the FWER -log10 p map (``maps/<map_name>.nii.gz``); default ``logp_<name>``.
    f_words : mapping
        ``label``, ``short`` and ``units`` to use for an F test where they differ (max-F).
    """

    name: str
    label: str
    short: str
    units: str
    observed: Callable[..., np.ndarray]
    null_max: Callable[..., np.ndarray] | None
    methods: Callable[[Any], str]
    level: str = "voxel"
    needs_mask: bool = False
    nonzero_only: bool = False
    references: Mapping[str, str] = field(default_factory=dict)
    map_name: str = ""
    f_words: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ParameterError(f"statistic name {self.name!r} must be an identifier "
                                 "(letters, digits, '_')")
        if self.level not in ("voxel", "cluster"):
            raise ParameterError(f"statistic {self.name!r}: level must be 'voxel' or 'cluster'; "
                                 f"got {self.level!r}")
        if not self.map_name:
            object.__setattr__(self, "map_name", f"logp_{self.name}")

    def words(self, stat_type: str = "t") -> tuple[str, str, str]:
        """``(label, short, units)`` for a t test or, with ``stat_type="F"``, an F test."""
        own = self.f_words if stat_type == "F" else {}
        return (own.get("label", self.label), own.get("short", self.short),
                own.get("units", self.units))

    @property
    def all_references(self) -> dict[str, str]:
        """Citation key -> text for every ``[@key]`` its methods text may use."""
        return {**REFERENCES, **self.references}


_REGISTRY: dict[str, StatisticSpec] = {}


def register_statistic(spec: StatisticSpec, *, replace: bool = False) -> StatisticSpec:
    """Add ``spec`` to the registry (the settings, engine, report and viewer then know it).

    Raises :class:`~glmkit.errors.ParameterError` if the name (or its map name) is taken,
    unless ``replace``.
    """
    if not isinstance(spec, StatisticSpec):
        raise ParameterError(f"register_statistic expects a StatisticSpec; got "
                             f"{type(spec).__name__}")
    if not replace:
        if spec.name in _REGISTRY:
            raise ParameterError(f"statistic {spec.name!r} is already registered; pass "
                                 "replace=True to replace it")
        taken = {s.map_name: s.name for s in _REGISTRY.values()}
        if spec.map_name in taken:
            raise ParameterError(f"statistic {spec.name!r}: map name {spec.map_name!r} is "
                                 f"already used by {taken[spec.map_name]!r}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_statistic(name: str) -> StatisticSpec:
    """Remove a statistic from the registry and return its spec."""
    get_statistic(name)
    return _REGISTRY.pop(name)


def get_statistic(name: str) -> StatisticSpec:
    """The spec of ``name``; unknown names raise a ParameterError listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        import difflib

        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParameterError(f"statistics: unknown statistic {name!r}{hint}; known statistics "
                             f"are {statistic_names()}") from None


def statistic_names() -> tuple[str, ...]:
    """Names of the registered statistics, in registration order."""
    return tuple(_REGISTRY)


def spatial_statistics() -> tuple[str, ...]:
    """Names of the registered statistics that need the mask (voxel neighbours)."""
    return tuple(name for name, spec in _REGISTRY.items() if spec.needs_mask)


# ----------------------------------------------------------------------------- built-ins
def _voxel_observed(t: np.ndarray, ctx: StatContext, cache: dict) -> np.ndarray:
    import numpy as np

    return np.asarray(t, dtype=np.float64)


def _observed_clusters(t: np.ndarray, ctx: StatContext, cache: dict) -> dict[str, np.ndarray]:
    """Per-voxel size and mass of the observed cluster containing each voxel (0 outside)."""
    import numpy as np

    if "clusters" in cache:
        return cache["clusters"]
    from glmkit.stats import cluster

    thr, nbr = ctx.cluster_t, ctx.neighbours
    size = np.zeros(t.size)
    mass = np.zeros(t.size)
    for sign in (1.0, -1.0) if ctx.two_sided else (1.0,):
        u = np.ascontiguousarray(sign * np.asarray(t, dtype=np.float64))
        lab = cluster.cluster_labels(u, thr, nbr)
        inside = lab >= 0
        if not inside.any():
            continue
        _, inv = np.unique(lab[inside], return_inverse=True)
        size[inside] = np.bincount(inv).astype(float)[inv]
        mass[inside] = np.bincount(inv, weights=u[inside] - thr)[inv]
    cache["clusters"] = {"cluster_size": size, "cluster_mass": mass}
    return cache["clusters"]


def _null_clusters(maps: np.ndarray, ctx: StatContext, cache: dict) -> dict[str, np.ndarray]:
    import numpy as np

    if "clusters" not in cache:
        from glmkit.stats import cluster

        B = maps.shape[0]
        size = np.empty(B, np.int64)
        mass = np.empty(B)
        nbr = np.array(ctx.neighbours)  # writable (numba types)
        cluster.cluster_max(maps, ctx.cluster_t, nbr, ctx.two_sided, size, mass)
        cache["clusters"] = {"cluster_size": size.astype(float), "cluster_mass": mass}
    return cache["clusters"]


def _tfce_observed(t: np.ndarray, ctx: StatContext, cache: dict) -> np.ndarray:
    import numpy as np

    from glmkit.stats import cluster

    p = ctx.tfce
    return cluster.tfce_map(np.ascontiguousarray(t, dtype=np.float64), ctx.neighbours,
                            ctx.two_sided, p["E"], p["H"], p["dh"])


def _tfce_null(maps: np.ndarray, ctx: StatContext, cache: dict) -> np.ndarray:
    import numpy as np

    from glmkit.stats import cluster

    out = np.empty(maps.shape[0])
    p = ctx.tfce
    cluster.tfce_max(maps, np.array(ctx.neighbours), ctx.two_sided, p["E"], p["H"], p["dh"],
                     out)
    return out


def _cluster_methods(kind: str) -> Callable[[Any], str]:
    def text(result: Any) -> str:
        p = getattr(result, "cluster_threshold", None) or 0.001
        t = getattr(result, "cluster_forming_t", None)
        on = "sqrt(F)" if getattr(result, "stat_type", "t") == "F" else "t"
        return (f"cluster {kind} with a cluster-forming threshold of p < {p:g}"
                + (f" ({on} > {t:.3f})" if t is not None else "") + " [@poline1997]")
    return text


def _tfce_methods(result: Any) -> str:
    p = getattr(result, "tfce_params", None) or TFCE_DEFAULTS
    on = " of sqrt(F)" if getattr(result, "stat_type", "t") == "F" else ""
    return (f"threshold-free cluster enhancement{on} (TFCE, E = {float(p['E']):g}, "
            f"H = {float(p['H']):g}) [@smith2009]")


for _spec in (
    StatisticSpec(
        name="voxel", map_name="logp_maxt", label="permutation max-T (voxel level)",
        short="max-T", units="maximum t over voxels", level="voxel",
        f_words={"label": "permutation max-F (voxel level)", "short": "max-F",
                 "units": "maximum F over voxels"},
        observed=_voxel_observed, null_max=None,
        methods=lambda result: ("voxel-wise maximum F (max-F)"
                                if getattr(result, "stat_type", "t") == "F"
                                else "voxel-wise maximum t (max-T)")),
    StatisticSpec(
        name="cluster_size", label="permutation cluster size", short="cluster-size",
        units="largest cluster size (voxels)", level="cluster", needs_mask=True,
        nonzero_only=True,
        observed=lambda t, ctx, cache: _observed_clusters(t, ctx, cache)["cluster_size"],
        null_max=lambda maps, ctx, cache: _null_clusters(maps, ctx, cache)["cluster_size"],
        methods=_cluster_methods("size")),
    StatisticSpec(
        name="cluster_mass", label="permutation cluster mass", short="cluster-mass",
        units="largest cluster mass (sum of t above the threshold)", level="cluster",
        f_words={"units": "largest cluster mass (sum of sqrt(F) above the threshold)"},
        needs_mask=True, nonzero_only=True,
        observed=lambda t, ctx, cache: _observed_clusters(t, ctx, cache)["cluster_mass"],
        null_max=lambda maps, ctx, cache: _null_clusters(maps, ctx, cache)["cluster_mass"],
        methods=_cluster_methods("mass")),
    StatisticSpec(
        name="tfce", label="permutation TFCE", short="TFCE", units="maximum TFCE score",
        f_words={"units": "maximum TFCE score of sqrt(F)"},
        level="voxel", needs_mask=True, nonzero_only=True,
        observed=_tfce_observed, null_max=_tfce_null, methods=_tfce_methods),
):
    register_statistic(_spec)
del _spec

