"""Datasets: the embedded demo cohort, the Localizer fetcher, folders of maps, BIDS roots.

Every loader returns a :class:`Dataset`: one 3-D map per subject (absolute paths) and a
subject table whose first column is ``subject``, in the same order as the maps; the built-in
datasets also carry the run parameters of their reference analysis (``defaults``).

* :func:`load_demo` builds a simulated cohort from real ingredients shipped in the nilearn
  wheel (the Localizer behavioural/participants tables and a 3 mm motor map), with a planted,
  documented association with ``pseudo`` and two defects for quality control to catch.
  It is generated deterministically on first use and cached under the data directory.
* :func:`load_localizer` fetches the real Localizer contrast maps with nilearn.
* :func:`load_folder` reads a folder (searched recursively), glob, list, nibabel images or a
  mapping of NIfTI/Analyze maps plus a TSV/CSV table or DataFrame, and matches maps to rows by
  the subject id found in their paths; :func:`load_bids` reads a BIDS derivatives root
  (both in :mod:`glmkit.data.local`).
* :func:`load_dataset` dispatches on a name, a BIDS root or paths.

The demo simulation and generation live in :mod:`glmkit.data.demo`, the folder, image and table
readers in :mod:`glmkit.data.folder`, BIDS entities in :mod:`glmkit.data.bids`, the
:class:`Dataset` class in :mod:`glmkit.data.dataset`.
"""

from __future__ import annotations

import glob as _glob
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glmkit.data.demo import (  # noqa: F401 - the DEMO_* constants stay public here
    DEMO_DEFECTS,
    DEMO_EFFECT_SIZE,
    DEMO_GENERATOR_VERSION,
    DEMO_NOISE_FWHM_MM,
    DEMO_RANDOM_STATE,
    DEMO_REGION_CENTER_MM,
    DEMO_REGION_RADIUS_MM,
    demo_cache_problem,
    generate_demo,
)
from glmkit.data import bids
from glmkit.data.choices import BUILTIN_DATASETS, BUILTIN_DEFAULTS
from glmkit.data.dataset import Dataset
from glmkit.data.folder import open_image
from glmkit.data.local import load_bids, load_folder
from glmkit._util import atomic_folder, get_data_dir, logger, sha256_file
from glmkit.errors import checked_arguments
from glmkit.errors import (
    DataFileNotFoundError,
    DatasetError,
    ImageError,
    ParameterError,
)

__all__ = [
    "Dataset",
    "load_demo",
    "load_localizer",
    "load_folder",
    "load_bids",
    "load_dataset",
    "builtin_defaults",
    "DEMO_RANDOM_STATE",
]

_DEMO_VARIANTS = ("association", "null")
_DEMO_NAMES = {"association": "demo", "null": "demo-null"}


# --------------------------------------------------------------------------- built-in


@checked_arguments(name="text")
def builtin_defaults(name: str) -> dict[str, Any]:
    """The run parameters a built-in dataset supplies when they are left unset (a copy).

    Examples
    --------
    >>> builtin_defaults("demo")["rename"]
    {'pseudo': 'fluency'}
    """
    if name not in BUILTIN_DEFAULTS:
        raise ParameterError(f"{name!r} is not a built-in dataset; use one of "
                             f"{sorted(BUILTIN_DEFAULTS)}")
    return {key: dict(value) if isinstance(value, Mapping) else value
            for key, value in BUILTIN_DEFAULTS[name].items()}


# --------------------------------------------------------------------------- demo


@checked_arguments(variant="text", data_dir="path?", force="flag")
def load_demo(
    variant: str = "association", *, data_dir: str | os.PathLike | None = None, force: bool = False
) -> Dataset:
    """Load the embedded demo cohort, generating it on first use (about 5 s, no network).

    94 simulated subjects on the 3 mm Localizer grid (53x63x46), with the real Localizer
    table (``subject, pseudo, age, sex, site``; ``pseudo`` missing for 5 subjects). Each map is
    amplitude x a real motor activation pattern + a site offset + smooth noise (6 mm FWHM,
    unit variance) and, for ``variant="association"``, ``0.3 x standardised pseudo`` inside a
    10 mm sphere centred on (38, -17, -3) mm (the ground truth). Two documented defects are
    planted: ``provenance["defects"]`` maps subject to ``"scale_x100"`` or
    ``"missing_coverage"``. See the ``README.md`` written next to the data.

    Parameters
    ----------
    variant : {"association", "null"}
        ``"null"`` is the same cohort, noise and defects without the planted effect.
    data_dir : path, optional
        Data directory (default ``$GLMKIT_DATA`` or ``~/glmkit_data``); files go to
        ``<data_dir>/demo/<variant>/``.
    force : bool
        Regenerate even if a valid cached copy exists (the bytes are identical).

    Returns
    -------
    Dataset
        Named ``"demo"`` or ``"demo-null"``; ``ground_truth`` is the planted-region mask
        (None for the null variant).

    Notes
    -----
    Detection, measured at generation-design time on the 87 clean subjects (5 missing
    ``pseudo`` and the 2 defects excluded), 5 mm smoothing, design ``[pseudo, intercept]``,
    one-sided: with this random state the peak t in the region is 6.8 (z 6.1) and the largest
    t elsewhere in the mask 3.8; the max-T 5 % critical t is about 5.2 (200 permutations,
    ~67 000 voxels). Over 20 other random states the region's peak t exceeded 5.2 in 15
    (median peak t 5.5): found most of the time, not trivially. Smoothing spreads the effect
    a voxel or two beyond the sphere, so count detections next to its border as true.

    Examples
    --------
    >>> ds = load_demo()  # doctest: +SKIP
    >>> len(ds), ds.provenance["defects"]  # doctest: +SKIP
    (94, {'S23': 'scale_x100', 'S71': 'missing_coverage'})
    """
    if variant not in _DEMO_VARIANTS:
        raise ParameterError(f"load_demo(variant={variant!r}): expected one of {_DEMO_VARIANTS}.")
    folder = get_data_dir(data_dir) / "demo" / variant
    _ensure_demo(folder, variant, force=force)
    return _read_demo(folder, variant)


def _ensure_demo(folder: Path, variant: str, *, force: bool) -> None:
    """Generate the demo into ``folder`` unless an intact copy is cached there."""
    problem = "regeneration forced" if force else (
        demo_cache_problem(folder) if folder.exists() else "not generated yet"
    )
    if problem is None:
        return
    if folder.exists() and not force:
        logger.warning("cached demo %s is unusable (%s); regenerating it", folder, problem)
    try:
        with atomic_folder(folder, overwrite=folder.exists()) as tmp:
            generate_demo(tmp, variant)
    except OSError:
        # another process (e.g. a pytest-xdist worker) renamed its copy in first
        if demo_cache_problem(folder) is not None:
            raise
        logger.info("demo %r was generated concurrently; using %s", variant, folder)


def _read_demo(folder: Path, variant: str) -> Dataset:
    """The generated demo in ``folder`` as a Dataset, with its description and provenance."""
    provenance = json.loads((folder / "provenance.json").read_text())
    table = pd.read_csv(folder / "participants.tsv", sep="\t", dtype={"subject": str})
    maps = tuple(str(folder / "maps" / f"{s}.nii.gz") for s in table["subject"])
    truth = folder / "ground_truth.nii.gz"
    region = provenance["planted_region"]
    description = (
        f"glmkit demo cohort ({variant}): 94 simulated subjects on real Localizer tables; "
        + (
            f"planted effect {provenance['effect_size']} SD-units per SD of pseudo in a "
            f"{region['radius_mm']:g} mm sphere at {tuple(region['center_mm'])} mm; "
            if variant == "association"
            else "no planted effect; "
        )
        + f"defects {provenance['defects']}."
    )
    # as for every loader: absolute path -> sha256 (provenance.json stores relative names)
    hashes = {str(folder / name): digest for name, digest in provenance["sha256"].items()}
    provenance = {**provenance, "sha256": hashes, "root": str(folder)}
    return Dataset(
        name=_DEMO_NAMES[variant],
        maps=maps,
        table=table,
        ground_truth=str(truth) if truth.exists() else None,
        description=description,
        provenance=provenance,
        defaults=builtin_defaults(_DEMO_NAMES[variant]),
    )


# --------------------------------------------------------------------------- localizer


@checked_arguments(contrast="text", n_subjects="number", data_dir="path?")
def load_localizer(
    contrast: str = "left button press (auditory cue)",
    n_subjects: int = 94,
    *,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Fetch the real Localizer contrast maps with nilearn (network on first use).

    Parameters
    ----------
    contrast : str
        A contrast name accepted by :func:`nilearn.datasets.fetch_localizer_contrasts`.
    n_subjects : int
        Number of subjects, 1..94 (S01..S<n>).
    data_dir : path, optional
        nilearn's data directory (default: nilearn's own, ``$NILEARN_DATA`` or
        ``~/nilearn_data``), so an existing nilearn cache is reused.

    Returns
    -------
    Dataset
        Named ``"localizer"``; table ``subject, pseudo, age, sex, site``.
    """
    _check_localizer_args(contrast, n_subjects)
    folder = _localizer_folder(data_dir)
    bunch = _fetch_localizer(contrast, n_subjects, data_dir, folder)
    table, tables, root = _localizer_table(bunch, n_subjects)
    by_subject = {Path(p).parent.name: str(Path(p).resolve()) for p in bunch.cmaps}
    lost = sorted(set(table["subject"]) - set(by_subject))
    if lost:
        raise DatasetError(f"Localizer: no {contrast!r} map was fetched for subjects {lost}.")
    table = table.reset_index(drop=True)
    maps = tuple(by_subject[s] for s in table["subject"])
    for path in maps:
        try:
            open_image(Path(path))
        except ImageError as exc:
            raise ImageError(
                f"Localizer: {exc} The download was probably cut short: delete {path} and "
                "call load_localizer again (only missing files are downloaded)."
            ) from exc
    return Dataset(
        name="localizer",
        maps=maps,
        table=table,
        description=f"Brainomics/Localizer, contrast {contrast!r}, {len(maps)} subjects "
        "(fetched with nilearn.datasets.fetch_localizer_contrasts).",
        provenance={
            "source": "nilearn.datasets.fetch_localizer_contrasts",
            "contrast": contrast,
            "n_subjects": int(n_subjects),
            "root": str(root),
            "nilearn_version": _nilearn_version(),
            "sha256": {m: sha256_file(m) for m in maps},
            "tables_sha256": {str(t): sha256_file(t) for t in tables if t.is_file()},
        },
        defaults=builtin_defaults("localizer"),
    )


def _check_localizer_args(contrast: str, n_subjects: int) -> None:
    """A contrast nilearn knows and 1 <= n_subjects <= 94, before any download."""
    from nilearn.datasets.func import ALLOWED_CONTRASTS, CONTRAST_NAME_WRAPPER

    if contrast not in ALLOWED_CONTRASTS and contrast not in CONTRAST_NAME_WRAPPER:
        raise ParameterError(
            f"load_localizer(contrast={contrast!r}): unknown contrast; expected one of "
            f"{sorted(ALLOWED_CONTRASTS)}."
        )
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer)) or not (
        1 <= n_subjects <= 94
    ):
        raise ParameterError(
            f"load_localizer(n_subjects={n_subjects!r}): expected an integer from 1 to 94."
        )


def _fetch_localizer(contrast: str, n_subjects: int, data_dir, folder: Path):
    """nilearn's Localizer bunch; a failed or empty download is a DatasetError saying why."""
    from nilearn.datasets import fetch_localizer_contrasts

    try:
        bunch = fetch_localizer_contrasts(
            [contrast], n_subjects=int(n_subjects),
            data_dir=None if data_dir is None else str(data_dir), verbose=0,
        )
    except (OSError, ValueError) as exc:  # requests' errors are OSErrors
        raise DatasetError(_localizer_fetch_failure(exc, folder)) from exc
    if not bunch.get("cmaps"):
        raise DatasetError(
            f"Localizer: nilearn returned no {contrast!r} map; its index in "
            f"{data_dir or 'nilearn_data'}/brainomics_localizer may be stale: delete it and retry."
        )
    return bunch


def _localizer_table(bunch, n_subjects: int) -> tuple[pd.DataFrame, list[Path], Path]:
    """The subject table (``subject, pseudo, age, sex, site``), the table files and the root
    of the download; missing columns or subjects are a DatasetError naming the files."""
    ext = pd.DataFrame(bunch.ext_vars)
    missing_cols = {"participant_id", "pseudo", "age", "sex", "site"} - set(ext.columns)
    if missing_cols:
        raise DatasetError(
            f"Localizer tables lack columns {sorted(missing_cols)}; delete the cached "
            "brainomics_localizer folder in nilearn's data dir and fetch again."
        )
    table = ext.rename(columns={"participant_id": "subject"})[
        ["subject", "pseudo", "age", "sex", "site"]
    ].astype({"subject": str})
    root = Path(bunch.cmaps[0]).resolve().parents[2]  # <root>/brainomics_data/S01/cmaps_*
    tables = [root / "brainomics_data" / "participants.tsv",
              root / "brainomics_data" / "phenotype" / "behavioural.tsv"]
    wanted = [f"S{i:02d}" for i in range(1, int(n_subjects) + 1)]
    unlisted = [s for s in wanted if s not in set(table["subject"])]
    if unlisted:
        raise DatasetError(
            f"Localizer: subjects {unlisted} are missing from the subject tables "
            f"{[str(t) for t in tables]} (truncated or stale download?); delete these two "
            "files and call load_localizer again to download them anew."
        )
    return table, tables, root


def _nilearn_version() -> str:
    import nilearn

    return str(nilearn.__version__)


def _localizer_folder(data_dir: str | os.PathLike | None) -> Path:
    """The folder nilearn downloads the Localizer into (the first existing, else the first)."""
    from nilearn.datasets import get_data_dirs

    candidates = [
        Path(d).expanduser() / "brainomics_localizer"
        for d in get_data_dirs(None if data_dir is None else str(data_dir))
    ]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _localizer_fetch_failure(exc: BaseException, folder: Path) -> str:
    """Message for a failed Localizer download: what failed, then how to fix it."""
    import requests

    retry = (
        "Check the internet connection and that https://osf.io is reachable, then call "
        "load_localizer again with the same arguments: files already downloaded are reused. "
        f"If it keeps failing, delete {folder} and retry."
    )
    if isinstance(exc, json.JSONDecodeError):
        index = folder / "download"
        return (
            f"Localizer: nilearn's OSF index file {index} is not valid JSON ({exc}); the "
            f"download was cut short or OSF sent an error page. Delete {index} and call "
            "load_localizer again."
        )
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        response = exc.response
        return (
            f"Localizer download failed: the server answered {response.status_code} "
            f"{response.reason} for {response.url}. {retry}"
        )
    if isinstance(exc, requests.RequestException):
        url = getattr(exc.request, "url", None)
        partial = sorted(str(p) for p in folder.rglob("*.part")) if folder.is_dir() else []
        what = f"of {url}" if url else f"interrupted (partial files: {partial})"
        return f"Localizer download {what} failed ({type(exc).__name__}: {exc}). {retry}"
    return f"Localizer download into {folder} failed ({type(exc).__name__}: {exc}). {retry}"


@checked_arguments
def load_dataset(spec: str | os.PathLike | Sequence[Any], **kwargs: Any) -> Dataset:
    """Load a dataset by name (``"demo"``, ``"demo-null"``, ``"localizer"``), BIDS root or
    folder, glob or list of maps.

    Parameters
    ----------
    spec : str, path or list
        A dataset name; a BIDS derivatives root (:func:`load_bids`: ``table=`` optional); or a
        folder/glob/file/list of maps (:func:`load_folder`: ``table=`` required).
    **kwargs
        Passed to :func:`load_demo`, :func:`load_localizer`, :func:`load_bids` or
        :func:`load_folder` (``None`` values are left out).

    Examples
    --------
    >>> load_dataset("nonexistent-name")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    glmkit.errors.DataFileNotFoundError: dataset 'nonexistent-name' is neither a known name ...
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if isinstance(spec, str) and spec in BUILTIN_DATASETS:
        extra = sorted(set(kwargs) & {"table", "bids_filter", "subject_column"})
        if extra:
            raise ParameterError(
                f"load_dataset({spec!r}, {', '.join(f'{k}=...' for k in extra)}): the {spec!r} "
                "dataset brings its own table and maps; leave them unset (they are for a "
                "folder of maps).")
        kwargs.pop("on_missing", None)
        if spec == "localizer":
            return load_localizer(**kwargs)
        return load_demo("null" if spec == "demo-null" else "association", **kwargs)
    if not isinstance(spec, (str, os.PathLike)):
        return load_folder(spec, kwargs.pop("table", None), **kwargs)
    text = str(spec)
    if not (Path(text).expanduser().exists() or _glob.has_magic(text)):
        raise DataFileNotFoundError(
            f"dataset {text!r} is neither a known name ({', '.join(map(repr, BUILTIN_DATASETS))}) "
            "nor an existing folder, glob or file.")
    if bids.is_bids_root(Path(text).expanduser()):
        return load_bids(text, **kwargs)
    if kwargs.get("table") is None:
        raise ParameterError(
            f"load_dataset({text!r}) needs table=<TSV/CSV of subject variables> for a folder.")
    return load_folder(spec, kwargs.pop("table"), **kwargs)
