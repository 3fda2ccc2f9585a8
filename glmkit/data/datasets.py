"""Datasets: the embedded demo cohort, the Localizer fetcher and local folders of maps.

Every loader returns a :class:`Dataset`: one 3-D map per subject (absolute paths) and a
subject table whose first column is ``subject``, in the same order as the maps.

* :func:`load_demo` builds a simulated cohort from real ingredients shipped in the nilearn
  wheel (the Localizer behavioural/participants tables and a 3 mm motor map), with a planted,
  documented association with ``pseudo`` and two defects for quality control to catch.
  It is generated deterministically on first use and cached under the data directory.
* :func:`load_localizer` fetches the real Localizer contrast maps with nilearn.
* :func:`load_folder` reads a folder (or glob) of NIfTI/Analyze maps plus a TSV/CSV table and
  matches maps to rows by the subject id found in each file name.
* :func:`load_dataset` dispatches on a name or a path.

The demo simulation and generation live in :mod:`glmkit.data.demo`, the folder, image and table
readers in :mod:`glmkit.data.folder`; both are internal to the data layer.
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
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
from glmkit.data.choices import (
    BIDS_SUBJECT_COLUMN,
    BIDS_TABLE,
    BUILTIN_DATASETS,
    BUILTIN_DEFAULTS,
    ON_MISSING,
)
from glmkit.data.folder import (
    MapFile,
    check_unique,
    list_maps,
    match_maps,
    open_image,
    read_table,
    split_4d,
    store_images,
    subject_folders,
)
from glmkit._util import atomic_folder, get_data_dir, logger, sha256_file
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


# --------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """Subject maps plus a subject table, in the same order.

    Parameters
    ----------
    name : str
        ``"demo"``, ``"demo-null"``, ``"localizer"`` or the folder name.
    maps : tuple of str
        Absolute paths, one 3-D image per subject.
    table : pandas.DataFrame
        One row per map; first column ``subject`` (str, unique).
    ground_truth : str or None
        Path of the planted-effect mask (demo association variant only).
    description : str
        Human-readable description of the data.
    provenance : dict
        Source, random state, generator version, sha256 of every file, ...
    defaults : dict
        Run parameters this dataset supplies when they are left unset (``covariates``,
        ``rename``, ``contrast``, ``cut_coords``): the reference analysis for the built-in
        datasets, nothing for a folder of maps.

    Examples
    --------
    >>> import pandas as pd
    >>> ds = Dataset("toy", ("/a/S1.nii", "/a/S2.nii"),
    ...              pd.DataFrame({"subject": ["S1", "S2"], "x": [1.0, 2.0]}))
    >>> ds.subset(["S2"]).table["x"].tolist()
    [2.0]
    >>> list(ds.to_frame().columns)
    ['subject', 'map', 'x']
    """

    name: str
    maps: tuple[str, ...]
    table: pd.DataFrame
    ground_truth: str | None = None
    description: str = ""
    provenance: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # never the whole table (errors and settings show it)
        columns = ", ".join(map(str, self.table.columns[1:]))
        return f"<Dataset {self.name!r}: {len(self.maps)} subjects; columns: {columns}>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "maps", tuple(str(m) for m in self.maps))
        if list(self.table.columns[:1]) != ["subject"]:
            raise DatasetError(
                f"Dataset {self.name!r}: the table's first column must be 'subject', found "
                f"{list(self.table.columns)}; reorder the columns."
            )
        if len(self.maps) != len(self.table):
            raise DatasetError(
                f"Dataset {self.name!r}: {len(self.maps)} maps but {len(self.table)} table rows; "
                "there must be one row per map, in the same order."
            )
        check_unique(self.table["subject"], f"dataset {self.name!r}")

    @property
    def subjects(self) -> tuple[str, ...]:
        """Subject ids, in map order."""
        return tuple(self.table["subject"].astype(str))

    def __len__(self) -> int:
        return len(self.maps)

    def subset(self, subjects: Iterable[str]) -> Dataset:
        """Dataset restricted to ``subjects`` (kept in this dataset's order).

        Raises
        ------
        DatasetError
            If a requested subject is not in the dataset.
        """
        wanted = {str(s) for s in subjects}
        unknown = sorted(wanted - set(self.subjects))
        if unknown:
            raise DatasetError(
                f"subset(): subjects {unknown} are not in dataset {self.name!r} "
                f"({len(self)} subjects, e.g. {list(self.subjects[:3])}); check the ids."
            )
        keep = [i for i, s in enumerate(self.subjects) if s in wanted]
        return dataclasses.replace(
            self,
            maps=tuple(self.maps[i] for i in keep),
            table=self.table.iloc[keep].reset_index(drop=True),
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per subject: ``subject``, ``map`` then the other table columns."""
        frame = self.table.reset_index(drop=True).copy()
        frame.insert(1, "map", list(self.maps))
        return frame

    def summary(self) -> str:
        """A few lines: name, subjects, grid of the first map, columns and their missing values."""
        lines = [f"Dataset {self.name!r}: {len(self)} subjects"]
        if self.maps:
            header = nib.load(self.maps[0]).header
            zooms = ", ".join(f"{z:g}" for z in header.get_zooms()[:3])
            lines.append(f"  grid: {header.get_data_shape()} voxels of ({zooms}) mm")
        for column in self.table.columns[1:]:
            n_missing = int(self.table[column].isna().sum())
            lines.append(f"  {column}: {self.table[column].dtype}, {n_missing} missing")
        if self.provenance.get("defects"):
            lines.append(f"  documented defects: {self.provenance['defects']}")
        if self.ground_truth:
            lines.append(f"  ground truth: {self.ground_truth}")
        return "\n".join(lines)


def builtin_defaults(name: str) -> dict[str, Any]:
    """The run parameters a built-in dataset supplies when they are left unset (a copy).

    Examples
    --------
    >>> builtin_defaults("demo")["rename"]
    {'pseudo': 'fluency'}
    """
    return {key: dict(value) if isinstance(value, Mapping) else value
            for key, value in BUILTIN_DEFAULTS[name].items()}


# --------------------------------------------------------------------------- demo


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


# --------------------------------------------------------------------------- folders

#: what ``load_folder(maps=...)`` accepts, in words (for messages)
_MAPS_FORMS = ("a folder, a glob, a file, a list of these, nibabel images in table order, or a "
               "mapping of subject id to image or path")


def load_folder(
    maps: str | os.PathLike | Sequence[Any] | Mapping[str, Any],
    table: str | os.PathLike | pd.DataFrame,
    *,
    subject_column: str | None = None,
    on_missing: str = "error",
    bids_filter: Mapping[str, Any] | None = None,
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load subject maps from a folder, glob, list or nibabel images, plus a subject table.

    Maps (``.nii``, ``.nii.gz`` or Analyze ``.hdr``/``.img``) are found in the folder and its
    sub-folders and matched to table rows by the subject id in their path below the folder:
    a ``sub-<label>`` entity in the file name or any folder (``sub-01/con_0001.nii``,
    fMRIPrep's and FitLins' layouts) is the id ``sub-<label>`` or ``<label>``; otherwise the
    table's ids found as whole tokens of the file name or a folder (``S01/con.nii``;
    ``sub-01_con.nii.gz`` matches ``01``, never ``1``). A path holding two ids, two maps for
    one subject and a subject's folder without a map are errors listing the files. A single
    4-D file with one volume per table row is split (in table order) into 3-D files cached
    under ``<data_dir>/split/``; nibabel images are written once under
    ``<data_dir>/images/``. Analyze stores no orientation and nibabel reads it x-flipped.

    Parameters
    ----------
    maps : path, glob, list, images or mapping
        A folder of maps (searched recursively), a glob (``"spm/sub-*/con_0001.nii"``,
        ``**`` allowed), one 4-D file, a list of files, folders or globs; or nibabel images,
        one per table row in table order; or a mapping of subject id to image or path.
    table : path or DataFrame
        ``.tsv``/``.txt`` (tab) or ``.csv`` (comma) file, or a DataFrame.
    subject_column : str, optional
        Column holding the subject ids (read as text, so ``01`` stays ``01``); default
        ``"subject"``, or ``"participant_id"`` when the table has no ``subject`` column (a
        BIDS participants table).
    on_missing : {"error", "drop"}
        What to do with maps without a row and rows without a map: raise, or drop and log.
    bids_filter : mapping, optional
        Keep the maps whose BIDS entities match (``{"desc": "fluency", "suffix": "effect"}``,
        values a string or a list); see :func:`glmkit.data.bids.select`.
    name : str, optional
        Dataset name (default: the folder name).
    data_dir : path, optional
        Where split 4-D files and images are cached (default ``$GLMKIT_DATA``).

    Returns
    -------
    Dataset
        In table order; the table's subject column is renamed ``subject`` and put first.

    Raises
    ------
    DataFileNotFoundError, ImageError, DatasetError, ParameterError
        Before any image data is read, with a message naming the files or ids at fault.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import nibabel as nib, numpy as np, pandas as pd
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for s in ("01", "02"):
    ...     (root / f"sub-{s}").mkdir()
    ...     img = nib.Nifti1Image(np.zeros((2, 2, 2), "f4"), np.eye(4))
    ...     nib.save(img, root / f"sub-{s}" / "con_0001.nii")
    >>> table = pd.DataFrame({"participant_id": ["02", "01"], "age": [30, 25]})
    >>> ds = load_folder(root, table, subject_column="participant_id")
    >>> ds.subjects, [str(pathlib.Path(m).relative_to(root)) for m in ds.maps]
    (('02', '01'), ['sub-02/con_0001.nii', 'sub-01/con_0001.nii'])
    """
    if on_missing not in ON_MISSING:
        raise ParameterError(f"load_folder(on_missing={on_missing!r}): expected one of "
                             f"{list(ON_MISSING)}.")
    if _in_memory(maps) is not None:
        frame = read_table(table, subject_column)
        return _images_dataset(maps, frame, frame.attrs["subject_column"], on_missing, name,
                               data_dir)
    files = list_maps(maps)
    if bids_filter:
        files = _filtered(files, bids_filter, f"{maps}")
    if name is None:
        source = Path(maps) if isinstance(maps, (str, os.PathLike)) else files[0].path
        name = (source if source.is_dir() else files[0].root).name or "folder"
    frame = read_table(table, subject_column)
    provenance: dict[str, Any] = {
        "source": "load_folder",
        "maps": str(maps) if isinstance(maps, (str, os.PathLike))
        else [os.fspath(p) for p in maps],
        "table": "DataFrame" if isinstance(table, pd.DataFrame) else str(Path(table).resolve()),
        "subject_column": frame.attrs["subject_column"],
    }
    if bids_filter:
        provenance["bids_filter"] = {k: list(v) for k, v in
                                     bids.normalise_filter(bids_filter).items()}
    return _files_dataset(files, frame, frame.attrs["subject_column"], on_missing, name,
                          data_dir, provenance)


def load_bids(
    root: str | os.PathLike,
    *,
    bids_filter: Mapping[str, Any] | None = None,
    table: str | os.PathLike | pd.DataFrame | None = None,
    subject_column: str | None = None,
    on_missing: str = "error",
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load the subject maps of a BIDS derivatives root (a folder with
    ``dataset_description.json``).

    The maps are the images below ``root`` whose path has a ``sub-<label>`` entity (file
    name or folder) and whose entities match ``bids_filter``; the table is
    ``root/participants.tsv`` unless given, its ``participant_id`` column the subject ids
    (``sub-01`` or ``01`` both match ``sub-01``). Entities are read by
    :mod:`glmkit.data.bids` (a small parser, not pybids: see its docstring for why).

    Parameters
    ----------
    root : path
        The derivatives root (fMRIPrep, FitLins, nilearn's ``save_glm_to_bids``, ...).
    bids_filter : mapping, optional
        Entities the maps must have, e.g. ``{"desc": "fluency", "space":
        "MNI152NLin2009cAsym", "suffix": "effect"}`` (values a string or a list of strings).
    table, subject_column, on_missing, name, data_dir
        As for :func:`load_folder`; defaults ``root/participants.tsv`` and
        ``"participant_id"``.

    Raises
    ------
    DatasetError, DataFileNotFoundError
        Not a BIDS root, no ``participants.tsv``, a filter that matches no map or leaves two
        maps for a subject (naming the entities that differ), a subject folder without a map.
    """
    root = Path(root).expanduser()
    if not bids.is_bids_root(root):
        raise DatasetError(f"{root} is not a BIDS root: it has no dataset_description.json; "
                           "use load_folder for a plain folder of maps.")
    if table is None:
        table = root / BIDS_TABLE
        if not table.is_file():
            raise DataFileNotFoundError(
                f"BIDS root {root} has no {BIDS_TABLE}: pass the subject table (table=..., "
                f"--table on the command line) or add {BIDS_TABLE} with a "
                f"{BIDS_SUBJECT_COLUMN} column to the root.")
    subject_column = subject_column or BIDS_SUBJECT_COLUMN
    files = [f for f in list_maps(root) if bids.subject_labels(f.where)]
    if not files:
        raise DatasetError(f"BIDS root {root} holds no map with a sub-<label> entity in its "
                           "path; subject maps sit in sub-<label>/ folders.")
    files = _filtered(files, bids_filter, f"BIDS root {root}")
    provenance: dict[str, Any] = {
        "source": "load_bids", "root": str(root.resolve()),
        "bids_filter": {k: list(v) for k, v in bids.normalise_filter(bids_filter).items()},
        "table": "DataFrame" if isinstance(table, pd.DataFrame) else str(Path(table).resolve()),
        "subject_column": subject_column, "dataset_description": bids.description(root),
    }
    return _files_dataset(files, read_table(table, subject_column), subject_column, on_missing,
                          name or root.resolve().name, data_dir, provenance)


def _filtered(files: list[MapFile], bids_filter, source: str) -> list[MapFile]:
    keep = bids.select([f.where for f in files], bids_filter, source=source)
    return [files[i] for i in keep]


def _files_dataset(files, frame, subject_column, on_missing, name, data_dir, provenance
                   ) -> Dataset:
    """The dataset of map files and a table: a single 4-D file split, else maps matched to
    rows (unmatched ones an error or dropped) and checked."""
    if len(files) == 1:
        img = open_image(files[0].path)
        if len(img.shape) == 4 and img.shape[3] > 1:
            return _split_folder(name, files[0].path, img, frame, data_dir, provenance)
    frame, matched = _match_rows(files, frame, subject_column, on_missing)
    images = {s: open_image(matched[s].path) for s in frame["subject"]}
    bad_dims = [f"{matched[s].shown} {img.shape}" for s, img in images.items()
                if len(img.shape) not in (3, 4)]
    if bad_dims:
        raise ImageError(f"maps must be 3-D (or one 4-D file); found {bad_dims}.")
    for s, img in images.items():
        if len(img.shape) == 4 and img.shape[3] > 1:
            raise ImageError(
                f"map {matched[s].path.name} is 4-D with {img.shape[3]} volumes where 3-D maps "
                f"were expected ({len(files)} files, {len(frame)} table rows). Pass one 3-D map "
                "per subject, or a single 4-D file with exactly one volume per table row.")
    return _matched_folder(name, frame, matched, images, data_dir, provenance)


def _matched_folder(name, frame, matched, images, data_dir, provenance) -> Dataset:
    """The dataset of maps matched to table rows: hashes (of the Analyze data files too),
    ``(x, y, z, 1)`` maps stored as 3-D, and a description that warns about Analyze."""
    provenance["sha256"] = {str(matched[s].path): sha256_file(matched[s].path)
                            for s in frame["subject"]}
    analyze = [images[s] for s in frame["subject"]
               if not isinstance(images[s], nib.Nifti1Image)]
    if analyze:  # "sha256" is keyed by the maps (.hdr); the data live in the .img files
        provenance["sha256_analyze_img"] = {
            str(Path(img.file_map["image"].filename).resolve()):
            sha256_file(img.file_map["image"].filename) for img in analyze
        }
    files = []
    for subject in frame["subject"]:
        path = matched[subject].path
        if len(images[subject].shape) == 4:  # (x, y, z, 1), as some tools write: store as 3-D
            path = split_4d(images[subject], path, [subject], data_dir)[0]
        files.append(str(path))
    roots = sorted({str(f.root) for f in matched.values()})
    description = f"{len(files)} maps from {roots[0] if len(roots) == 1 else roots}"
    if analyze:
        description += (f" ({len(analyze)} Analyze 7.5 maps: Analyze stores no orientation, "
                        "nibabel reads them as x-flipped (radiological); check left and right)")
        logger.info("load_folder: %d Analyze 7.5 maps; Analyze stores no orientation, nibabel "
                    "reads them as x-flipped (radiological): check left and right", len(analyze))
    return Dataset(name, tuple(files), frame, None, description, provenance)


def _split_folder(name, path, img, frame, data_dir, provenance) -> Dataset:
    """The dataset of a single 4-D file with one volume per table row, split in table order."""
    if img.shape[3] != len(frame):
        raise ImageError(
            f"map {path.name} is 4-D with {img.shape[3]} volumes where 3-D maps were expected "
            f"(1 file, {len(frame)} table rows). Pass one 3-D map per subject, or a single 4-D "
            "file with exactly one volume per table row.")
    files = split_4d(img, path, frame["subject"].tolist(), data_dir)
    provenance.update(sha256={str(path): sha256_file(path)}, split_from=str(path))
    description = f"{len(files)} maps split (in table order) from 4-D {path}"
    return Dataset(name, tuple(files), frame, None, description, provenance)


def _match_rows(files, frame, subject_column, on_missing) -> tuple[pd.DataFrame, dict]:
    """Table rows paired with maps (subject -> MapFile); unmatched maps or rows are an error,
    or dropped with a warning (``on_missing="drop"``). A row without a map whose folder
    exists says what the folder holds."""
    matched, unmatched_maps = match_maps(files, frame["subject"].tolist())
    unmatched_rows = [s for s in frame["subject"] if s not in matched]
    if unmatched_maps or unmatched_rows:
        detail = (f"{len(files)} maps, {len(frame)} table rows; maps without a row: "
                  f"{_listed([f.shown for f in unmatched_maps])}; rows without a map: "
                  f"{_listed(unmatched_rows)}")
        folders = subject_folders({f.root for f in files}, unmatched_rows)
        if folders:
            detail += "; subject folders without a map: " + "; ".join(
                f"{folder.name}/ holds {_listed(_contents(folder))}"
                for folder in list(folders.values())[:5])
        if on_missing == "error":
            raise DatasetError(
                f"maps and table {subject_column!r} do not match ({detail}). Ids are matched "
                "in the file name and its folders: a sub-<label> entity, else whole tokens "
                "('01' matches 'sub-01_con.nii.gz', '1' does not). Fix the names or ids, or "
                "pass on_missing='drop' to drop them.")
        logger.warning("load_folder: dropping unmatched %s", detail)
    frame = frame[frame["subject"].isin(list(matched))].reset_index(drop=True)
    if frame.empty:
        raise DatasetError(f"no map matches any subject id of column {subject_column!r}.")
    return frame, matched


def _listed(items: list[str], limit: int = 10) -> str:
    """A list for a message: at most ``limit`` items, then how many more."""
    shown = repr(list(items[:limit]))
    return shown if len(items) <= limit else f"{shown[:-1]}, ... {len(items) - limit} more]"


def _contents(folder: Path) -> list[str]:
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return found or ["nothing"]


def _in_memory(maps: Any) -> str | None:
    """``"images"`` for a sequence of nibabel images, ``"mapping"`` for a mapping of subject
    id to image or path, None for paths."""
    if isinstance(maps, Mapping):
        return "mapping"
    if isinstance(maps, (str, os.PathLike)):
        return None
    items = list(maps)
    kinds = {isinstance(m, nib.spatialimages.SpatialImage) for m in items}
    if kinds == {True}:
        return "images"
    if kinds == {True, False}:
        raise DatasetError(f"maps mixes nibabel images and other items; expected {_MAPS_FORMS}.")
    return None


def _images_dataset(maps, frame, subject_column, on_missing, name, data_dir) -> Dataset:
    """The dataset of nibabel images (in table order) or of a mapping subject -> image or
    path; the images are written once into the cache so the dataset holds paths."""
    if not isinstance(maps, Mapping):
        maps = list(maps)
        if len(maps) != len(frame):
            raise DatasetError(
                f"maps: {len(maps)} nibabel images for {len(frame)} table rows; images are "
                "taken in table order, one per row. Pass one image per row, or a mapping of "
                f"subject id ({subject_column!r}) to image.")
        maps = dict(zip(frame["subject"], maps))
    given = {str(k): v for k, v in maps.items()}
    unknown = [s for s in given if s not in set(frame["subject"])]
    missing = [s for s in frame["subject"] if s not in given]
    if unknown or missing:
        detail = f"ids not in the table: {_listed(unknown)}; rows without a map: {_listed(missing)}"
        if on_missing == "error":
            raise DatasetError(f"maps (a mapping of subject id to map) and table "
                               f"{subject_column!r} do not match ({detail}); fix the ids or "
                               "pass on_missing='drop'.")
        logger.warning("load_folder: dropping unmatched %s", detail)
    frame = frame[frame["subject"].isin(list(given))].reset_index(drop=True)
    subjects = frame["subject"].tolist()
    images = [given[s] if isinstance(given[s], nib.spatialimages.SpatialImage)
              else open_image(Path(given[s]).expanduser()) for s in subjects]
    files = store_images(images, subjects, data_dir)
    provenance = {"source": "load_folder (nibabel images)", "subject_column": subject_column,
                  "sha256": {f: sha256_file(f) for f in files}}
    return Dataset(name or "images", tuple(files), frame, None,
                   f"{len(files)} maps given as nibabel images", provenance)


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
                "dataset brings its own table and maps; these are for a folder of maps.")
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
