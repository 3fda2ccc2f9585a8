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
from collections.abc import Iterable, Sequence
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
from glmkit.data.folder import (
    check_unique,
    list_maps,
    match_maps,
    open_image,
    read_table,
    split_4d,
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
    "load_dataset",
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


def load_folder(
    maps: str | os.PathLike | Sequence[str | os.PathLike],
    table: str | os.PathLike | pd.DataFrame,
    *,
    subject_column: str = "subject",
    on_missing: str = "error",
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load subject maps from a folder or glob plus a subject table.

    Maps (``.nii``, ``.nii.gz`` or Analyze ``.hdr``/``.img``) are matched to table rows by the
    subject id appearing as a whole token in the file name: ``sub-01_con.nii.gz`` matches
    ``01`` or ``sub-01`` but not ``1``. When several ids match, the longest wins; ties, or
    two maps for one id, are an error. A single 4-D file with one volume per table row is
    split (in table order) into 3-D files cached under ``<data_dir>/split/``. Analyze 7.5
    pairs are kept as they are (both files are hashed); Analyze stores no orientation and
    nibabel reads them as x-flipped (radiological).

    Parameters
    ----------
    maps : path, glob or list of paths
        Folder of maps, glob pattern (``"derivatives/*_con.nii.gz"``), one 4-D file, or files.
    table : path or DataFrame
        ``.tsv``/``.txt`` (tab) or ``.csv`` (comma) file, or a DataFrame.
    subject_column : str
        Column holding the subject ids (read as text, so ``01`` stays ``01``); for a BIDS
        ``participants.tsv``, ``"participant_id"``.
    on_missing : {"error", "drop"}
        What to do with maps without a row and rows without a map: raise, or drop and log.
    name : str, optional
        Dataset name (default: the folder name).
    data_dir : path, optional
        Where split 4-D files are cached (default ``$GLMKIT_DATA`` or ``~/glmkit_data``).

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
    ...     img = nib.Nifti1Image(np.zeros((2, 2, 2), "f4"), np.eye(4))
    ...     nib.save(img, root / f"sub-{s}_con.nii.gz")
    >>> table = pd.DataFrame({"participant_id": ["02", "01"], "age": [30, 25]})
    >>> table.to_csv(root / "participants.csv", index=False)
    >>> ds = load_folder(root, root / "participants.csv", subject_column="participant_id")
    >>> ds.subjects, [pathlib.Path(m).name for m in ds.maps]
    (('02', '01'), ['sub-02_con.nii.gz', 'sub-01_con.nii.gz'])
    """
    if on_missing not in ("error", "drop"):
        raise ParameterError(f"load_folder(on_missing={on_missing!r}): expected 'error' or 'drop'.")
    paths = list_maps(maps)
    frame = read_table(table, subject_column)
    images = {p: open_image(p) for p in paths}
    shapes = {p: img.shape for p, img in images.items()}
    bad_dims = [f"{p.name} {s}" for p, s in shapes.items() if len(s) not in (3, 4)]
    if bad_dims:
        raise ImageError(f"maps must be 3-D (or one 4-D file); found {bad_dims}.")
    if name is None:
        source = Path(maps) if isinstance(maps, (str, os.PathLike)) else paths[0]
        name = (source if source.is_dir() else source.parent).name or "folder"
    provenance: dict[str, Any] = {
        "source": "load_folder",
        "maps": str(maps) if isinstance(maps, (str, os.PathLike)) else [str(p) for p in paths],
        "table": "DataFrame" if isinstance(table, pd.DataFrame) else str(Path(table).resolve()),
        "subject_column": subject_column,
    }
    four_d = {p: s for p, s in shapes.items() if len(s) == 4 and s[3] > 1}
    if four_d:
        return _split_folder(name, four_d, paths, frame, images, data_dir, provenance)

    frame, matched = _match_rows(paths, frame, subject_column, on_missing)
    return _matched_folder(name, maps, frame, matched, images, data_dir, provenance)


def _matched_folder(name, maps, frame, matched, images, data_dir, provenance) -> Dataset:
    """The dataset of maps matched to table rows: hashes (of the Analyze data files too),
    ``(x, y, z, 1)`` maps stored as 3-D, and a description that warns about Analyze."""
    provenance["sha256"] = {str(matched[s]): sha256_file(matched[s]) for s in frame["subject"]}
    analyze = [images[matched[s]] for s in frame["subject"]
               if not isinstance(images[matched[s]], nib.Nifti1Image)]
    if analyze:  # "sha256" is keyed by the maps (.hdr); the data live in the .img files
        provenance["sha256_analyze_img"] = {
            str(Path(img.file_map["image"].filename).resolve()):
            sha256_file(img.file_map["image"].filename) for img in analyze
        }
    files = []
    for subject in frame["subject"]:
        path = matched[subject]
        if len(images[path].shape) == 4:  # (x, y, z, 1), as some tools write: store it as 3-D
            path = split_4d(images[path], path, [subject], data_dir)[0]
        files.append(str(path))
    description = f"{len(files)} maps from {maps}"
    if analyze:
        description += (f" ({len(analyze)} Analyze 7.5 maps: Analyze stores no orientation, "
                        "nibabel reads them as x-flipped (radiological); check left and right)")
        logger.info("load_folder: %d Analyze 7.5 maps; Analyze stores no orientation, nibabel "
                    "reads them as x-flipped (radiological): check left and right", len(analyze))
    return Dataset(name, tuple(files), frame, None, description, provenance)


def _split_folder(name, four_d, paths, frame, images, data_dir, provenance) -> Dataset:
    """The dataset of a single 4-D file with one volume per table row, split in table order."""
    path, shape = next(iter(four_d.items()))
    if len(paths) > 1 or shape[3] != len(frame):
        raise ImageError(
            f"map {path.name} is 4-D with {shape[3]} volumes where 3-D maps were expected "
            f"({len(paths)} files, {len(frame)} table rows). Pass one 3-D map per subject, "
            "or a single 4-D file with exactly one volume per table row."
        )
    files = split_4d(images[path], path, frame["subject"].tolist(), data_dir)
    provenance.update(sha256={str(path): sha256_file(path)}, split_from=str(path))
    description = f"{len(files)} maps split (in table order) from 4-D {path}"
    return Dataset(name, tuple(files), frame, None, description, provenance)


def _match_rows(paths, frame, subject_column, on_missing) -> tuple[pd.DataFrame, dict]:
    """Table rows paired with maps (subject -> path); unmatched maps or rows are an error,
    or dropped with a warning (``on_missing="drop"``)."""
    matched, unmatched_maps = match_maps(paths, frame["subject"].tolist())
    unmatched_rows = [s for s in frame["subject"] if s not in matched]
    if unmatched_maps or unmatched_rows:
        detail = (
            f"{len(paths)} maps, {len(frame)} table rows; maps without a row: "
            f"{[p.name for p in unmatched_maps]}; rows without a map: {unmatched_rows}"
        )
        if on_missing == "error":
            raise DatasetError(
                f"maps and table {subject_column!r} do not match ({detail}). Ids are matched as "
                "whole tokens of the file name ('01' matches 'sub-01_con.nii.gz', '1' does not). "
                "Fix the names or ids, or pass on_missing='drop' to drop them."
            )
        logger.warning("load_folder: dropping unmatched %s", detail)
    frame = frame[frame["subject"].isin(list(matched))].reset_index(drop=True)
    if frame.empty:
        raise DatasetError(f"no map matches any subject id of column {subject_column!r}.")
    return frame, matched


def load_dataset(spec: str | os.PathLike, **kwargs: Any) -> Dataset:
    """Load a dataset by name (``"demo"``, ``"demo-null"``, ``"localizer"``) or folder path.

    Parameters
    ----------
    spec : str or path
        A dataset name, or a folder/glob/file of maps (then ``table=`` is required).
    **kwargs
        Passed to :func:`load_demo`, :func:`load_localizer` or :func:`load_folder`.

    Examples
    --------
    >>> load_dataset("nonexistent-name")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    glmkit.errors.DataFileNotFoundError: dataset 'nonexistent-name' is neither a known name ...
    """
    if spec in ("demo", "demo-null", "localizer") and kwargs.pop("table", None) is not None:
        raise ParameterError(
            f"load_dataset({spec!r}, table=...): the {spec!r} dataset brings its own table; "
            "table= is only for a folder of maps."
        )
    if spec == "demo":
        return load_demo(**kwargs)
    if spec == "demo-null":
        return load_demo("null", **kwargs)
    if spec == "localizer":
        return load_localizer(**kwargs)
    text = str(spec)
    if not (Path(text).expanduser().exists() or _glob.has_magic(text)):
        raise DataFileNotFoundError(
            f"dataset {text!r} is neither a known name ('demo', 'demo-null', 'localizer') "
            "nor an existing folder, glob or file."
        )
    if kwargs.get("table") is None:
        raise ParameterError(
            f"load_dataset({text!r}) needs table=<TSV/CSV of subject variables> for a folder."
        )
    return load_folder(spec, kwargs.pop("table"), **kwargs)
