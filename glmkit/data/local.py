"""Datasets on disk or in memory: folders, globs and lists of maps, BIDS roots, images.

:func:`load_folder` reads maps from a folder (searched recursively), a glob, a list, nibabel
images or a mapping of subject id to map, plus a subject table, and matches maps to rows by
the subject id in their paths (:func:`glmkit.data.folder.ids_in`). :func:`load_bids` reads a
BIDS derivatives root: the maps whose entities match ``bids_filter``
(:mod:`glmkit.data.bids`) and ``participants.tsv``. Both return a
:class:`~glmkit.data.dataset.Dataset`; :mod:`glmkit.data.datasets` re-exports them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from glmkit._util import logger, sha256_file
from glmkit.data import bids
from glmkit.data.choices import BIDS_SUBJECT_COLUMN, BIDS_TABLE, ON_MISSING
from glmkit.data.dataset import Dataset
from glmkit.data.folder import (
    MapFile,
    list_maps,
    match_maps,
    open_image,
    read_table,
    split_4d,
    store_images,
    subject_folders,
)
from glmkit.errors import checked_arguments
from glmkit.errors import DataFileNotFoundError, DatasetError, ImageError, ParameterError

__all__ = ["load_folder", "load_bids"]


#: what ``load_folder(maps=...)`` accepts, in words (for messages)
_MAPS_FORMS = ("a folder, a glob, a file, a list of these, nibabel images in table order, or a "
               "mapping of subject id to image or path")


@checked_arguments(table="table", subject_column="text?", on_missing="text",
                   bids_filter="mapping?", name="text?", data_dir="path?")
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


@checked_arguments(root="path", bids_filter="mapping?", table="table?",
                   subject_column="text?", on_missing="text", name="text?",
                   data_dir="path?")
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
                f"BIDS root {root} has no {BIDS_TABLE}: pass the subject table (table=...) "
                f"or add {BIDS_TABLE} with a "
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
        raise DatasetError(f"no map matches any subject id of column {subject_column!r}; "
                           "check that each map's file name or folder holds its subject's id "
                           "(e.g. sub-01_con.nii.gz or sub-01/con.nii for id sub-01 or 01).")
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
    if not isinstance(maps, Iterable):
        raise DatasetError(f"maps: expected {_MAPS_FORMS}; found {maps!r}")
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
