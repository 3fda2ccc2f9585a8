"""Readers behind ``datasets.load_folder``: map lists, images, tables, matching.

An internal module of the data layer: its public names are for :mod:`glmkit.data.datasets`,
not glmkit's API. :func:`list_maps` resolves a folder (searched recursively), glob or list to
image files, each with its path below the folder searched (:class:`MapFile`);
:func:`open_image` checks a map cheaply, :func:`read_table` reads the subject table,
:func:`match_maps` pairs maps with subject ids found in those paths (:func:`ids_in`),
:func:`split_4d` caches the volumes of a 4-D file as 3-D maps and :func:`store_images` the
nibabel images given from Python; :func:`check_unique` rejects duplicated subject ids.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import itertools
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
import pandas as pd

from glmkit._util import atomic_folder, get_data_dir, logger, map_header_problem, sha256_file
from glmkit.data.choices import BIDS_SUBJECT_COLUMN, FOLDER_SUBJECT_COLUMN
from glmkit.errors import DataFileNotFoundError, DatasetError, ImageError

__all__ = ["MapFile", "check_unique", "list_maps", "open_image", "read_table", "ids_in",
           "match_maps", "subject_folders", "split_4d", "store_images"]

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img")
_TABLE_SEPARATORS = {".tsv": "\t", ".txt": "\t", ".csv": ","}


def check_unique(subjects: pd.Series, where: str) -> None:
    duplicated = sorted(set(subjects[subjects.duplicated()].astype(str)))
    if duplicated:
        raise DatasetError(
            f"{where}: duplicated subject ids {duplicated}; each subject must appear once. "
            "Remove or rename the duplicated rows."
        )


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


@dataclass(frozen=True)
class MapFile:
    """A map found for a dataset.

    Attributes
    ----------
    path : pathlib.Path
        Absolute path (an Analyze pair by its ``.hdr``).
    where : pathlib.PurePosixPath
        Its path below the folder searched (``sub-01/con_0001.nii``): subject ids and BIDS
        entities are read from these folders and the file name, never from above them.
    root : pathlib.Path
        The folder searched (a glob's folder before its first wildcard).
    """

    path: Path
    where: PurePosixPath
    root: Path

    @property
    def shown(self) -> str:
        """How messages name the map (its path below the folder searched)."""
        return str(self.where)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _walk(root: Path) -> list[Path]:
    """Image files under ``root``, in sub-folders too (hidden files and folders skipped)."""
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and _suffix(p) in _IMAGE_SUFFIXES and not _hidden(p, root))


def _glob_root(pattern: str) -> Path:
    """The folder of a glob before its first wildcard (``a/b`` for ``a/b/*/c*.nii``)."""
    parts = Path(pattern).parts
    static = [p for p in itertools.takewhile(lambda p: not _glob.has_magic(p), parts)]
    return Path(*static) if static else Path(".")


def _found(paths: list[Path], root: Path) -> list[MapFile]:
    root = root.resolve()
    return [MapFile(p.resolve(), PurePosixPath(p.resolve().relative_to(root).as_posix()), root)
            for p in paths]


def _expand(text: str) -> tuple[list[Path], Path | None]:
    """The image files of one folder, glob or file, and the folder they are read below
    (None for a file: its folder is decided with the other files of a list)."""
    path = Path(text).expanduser()
    if path.is_dir():
        found = _walk(path)
        if not found:
            others = sorted(p.name for p in path.iterdir())[:5]
            raise DataFileNotFoundError(
                f"maps folder {path} holds no image (.nii, .nii.gz, .hdr/.img), not even in "
                f"its sub-folders; found {others or 'nothing'}. Point `maps` at the folder "
                "holding the maps.")
        return found, path
    if _glob.has_magic(text):
        matches = sorted(Path(p) for p in _glob.glob(os.path.expanduser(text), recursive=True))
        if not matches:
            raise DataFileNotFoundError(
                f"maps glob {text!r} matches no file; check the pattern (relative paths are "
                "taken from the current folder; '**' matches any number of folders).")
        found = [f for m in matches for f in (_walk(m) if m.is_dir() else [m])]
        return found, _glob_root(os.path.expanduser(text))
    if path.exists():
        return [path], None
    raise DataFileNotFoundError(
        f"maps {text!r} does not exist; pass an existing folder, glob or file.")


def list_maps(maps: str | os.PathLike | Sequence[str | os.PathLike]) -> list[MapFile]:
    """Image files named by a folder (searched recursively), a glob (``**`` allowed), a file,
    or a list of these (Analyze pairs by their ``.hdr``), each with where it sits."""
    items = [maps] if isinstance(maps, (str, os.PathLike)) else list(maps)
    if not items:
        raise DataFileNotFoundError("maps is an empty list; pass a folder, a glob or files.")
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise DatasetError(
                f"maps: an item is a {type(item).__name__}; expected paths, or nibabel images "
                "(all of them) in table order, or a mapping of subject id to image or path.")
    if not isinstance(maps, (str, os.PathLike)):
        missing = [os.fspath(p) for p in items if not _glob.has_magic(os.fspath(p))
                   and not Path(p).expanduser().exists()]
        if missing:
            raise DataFileNotFoundError(f"map files not found: {missing}; check the paths.")
    found: list[MapFile] = []
    loose: list[Path] = []
    for item in items:
        files, root = _expand(os.fspath(item))
        if root is None:
            loose += files
        else:
            found += _found(files, root)
    if loose:
        parents = [str(p.resolve().parent) for p in loose]
        found += _found(loose, Path(os.path.commonpath(parents)))
    resolved = [f.path.resolve() for f in found]
    twice = sorted({str(p) for p in resolved if resolved.count(p) > 1})
    if twice:
        raise DatasetError(
            f"maps names the same file more than once: {twice[:5]} (a list item repeated, or "
            "a file inside a folder also given); list each map once")
    bad = [f.shown for f in found if _suffix(f.path) not in _IMAGE_SUFFIXES]
    if bad:
        raise ImageError(
            f"maps {bad} have an unsupported extension; expected one of {_IMAGE_SUFFIXES} "
            "(NIfTI or Analyze). Convert them or leave them out of the folder/glob.")
    return _analyze_pairs(found)


def _analyze_pairs(found: list[MapFile]) -> list[MapFile]:
    """An Analyze pair is one map: keep the .hdr (an .img whose .hdr is absent is an error);
    each file once."""
    paths = {f.path for f in found}
    out: dict[Path, MapFile] = {}
    for f in found:
        if _suffix(f.path) == ".img":
            headers = [h for h in (f.path.with_suffix(".hdr"), f.path.with_suffix(".HDR"))
                       if h.exists()]
            if not headers:
                raise ImageError(f"Analyze image {f.path} has no header {f.path.stem}.hdr; "
                                 "add it.")
            if headers[0] in paths:
                continue
            f = MapFile(headers[0], f.where.with_name(headers[0].name), f.root)
        out.setdefault(f.path, f)
    return list(out.values())


def _expected_bytes(img: nib.spatialimages.SpatialImage) -> int:
    header = img.header
    n = int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    offset = int(header.get("vox_offset", 0)) if isinstance(img, nib.Nifti1Image) else 0
    return offset + n


def open_image(path: Path) -> nib.spatialimages.SpatialImage:
    """Load a header and check, cheaply, that the data block is complete."""
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for corrupt input
        raise ImageError(
            f"map {path} cannot be read as NIfTI/Analyze ({type(exc).__name__}: {exc}); "
            "re-export or re-download the file."
        ) from exc
    problem = map_header_problem(img)
    if problem:
        raise ImageError(f"map {path}: {problem}.")
    expected = _expected_bytes(img)
    data_file = Path(img.file_map["image"].filename)
    if _suffix(data_file) == ".nii.gz":
        with open(data_file, "rb") as handle:  # gzip trailer: uncompressed size mod 2**32
            handle.seek(-4, os.SEEK_END)
            complete = struct.unpack("<I", handle.read(4))[0] == expected % 2**32
    else:
        complete = data_file.stat().st_size >= expected
    if not complete:
        try:  # the trailer check can be fooled (multi-member gzip): read to be sure
            np.asarray(img.dataobj)
        except Exception as exc:
            raise ImageError(
                f"map {path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                "re-export or re-download the file."
            ) from exc
    return img


#: what a table cell holds for a missing value (pandas' default markers)
_MISSING = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
            "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]

#: the subject-id columns looked for when none is named, in order
_SUBJECT_COLUMNS = (FOLDER_SUBJECT_COLUMN, BIDS_SUBJECT_COLUMN)


def read_table(table: str | os.PathLike | pd.DataFrame, subject_column: str | None, *,
               unique: bool = True) -> pd.DataFrame:
    """The subject table with its ids (as text) in a first column ``subject``.

    ``subject_column=None`` takes ``subject``, else a BIDS table's ``participant_id``; the
    column used is in ``frame.attrs["subject_column"]``. ``unique=False`` allows several rows
    per subject (one per level of a within-subject design).
    """
    wanted = (subject_column,) if subject_column else _SUBJECT_COLUMNS
    if isinstance(table, pd.DataFrame):
        _check_columns(list(table.columns), "table")
        frame = table.copy()
    else:
        path = Path(table).expanduser()
        if not path.is_file():
            raise DataFileNotFoundError(
                f"table file {path} does not exist; pass an existing TSV or CSV file."
            )
        sep = _TABLE_SEPARATORS.get(path.suffix.lower())
        if sep is None:
            raise DatasetError(
                f"table {path} has extension {path.suffix!r}; expected one of "
                f"{sorted(_TABLE_SEPARATORS)} (tab- or comma-separated). Export it as TSV/CSV."
            )
        try:
            header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str,
                                 keep_default_na=False)
            names = header.iloc[0].tolist() if len(header) else []
            _check_columns(names, f"table {path}")
            # subject ids are text as written ('NA' and 'NULL' are ids); other columns read
            # pandas' usual missing-value markers (n/a, NA, ...) as missing
            frame = pd.read_csv(path, sep=sep, dtype=dict.fromkeys(wanted, str),
                                keep_default_na=False,
                                na_values={c: _MISSING for c in names if c not in wanted})
        except pd.errors.EmptyDataError:
            raise DatasetError(f"table {path} is empty; expected a header line of column "
                               "names and one row per subject.") from None
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DatasetError(
                f"table {path} cannot be read as {'TSV' if sep == chr(9) else 'CSV'} "
                f"({type(exc).__name__}: {exc}); check its format and encoding."
            ) from exc
    subject_column = next((c for c in wanted if c in frame.columns), None)
    if subject_column is None:
        what = " or ".join(repr(c) for c in wanted)
        glued = [sep for sep in (";", ",", "\t", "|") if len(frame.columns) == 1
                 and sep in str(frame.columns[0])]
        if glued:
            raise DatasetError(
                f"table has one column {str(frame.columns[0])[:80]!r}: its values are "
                f"separated by {glued[0]!r}, not by tabs (.tsv) or commas (.csv); save it "
                "tab- or comma-separated, as its extension says.")
        raise DatasetError(
            f"table has no subject column {what}; its columns are {_columns(frame)}. Pass "
            "subject_column=<the column holding the subject ids>.")
    if subject_column != "subject" and "subject" in frame.columns:
        raise DatasetError(
            f"table has a 'subject' column and subject_column={subject_column!r}: the ids come "
            f"from {subject_column!r} and would replace 'subject'; leave subject_column unset "
            "to use 'subject', or rename or drop the 'subject' column")
    ids = frame.pop(subject_column)
    if ids.isna().any() or (ids.astype(str).str.strip() == "").any():
        raise DatasetError(f"table column {subject_column!r} has empty subject ids; fill them.")
    frame.insert(0, "subject", ids.astype(str).str.strip())
    if unique:
        check_unique(frame["subject"], f"table column {subject_column!r}")
    frame = frame.reset_index(drop=True)
    frame.attrs["subject_column"] = subject_column  # the column the ids came from
    return frame


def _check_columns(names: list, where: str) -> None:
    """Column names given once each (pandas would rename a second ``score`` to ``score.1``)."""
    names = [str(n).strip() for n in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(f"{where} has several columns named {repeated}; each column needs "
                           "its own name: rename or remove the repeated ones.")


def _columns(frame: pd.DataFrame, limit: int = 20) -> str:
    names = [str(c) for c in frame.columns]
    more = f" ... {len(names) - limit} more" if len(names) > limit else ""
    return repr(names[:limit])[:-1] + more + "]" if more else repr(names)


def _spans(text: str) -> list[tuple[int, int]]:
    """Every (start, end) of a whole token of ``text``: preceded and followed by a character
    that is not a letter or digit, or by the string's ends."""
    def alnum(ch: str) -> bool:
        return ch.isascii() and ch.isalnum()

    starts = [i for i in range(len(text)) if i == 0 or not alnum(text[i - 1])]
    ends = [j for j in range(1, len(text) + 1) if j == len(text) or not alnum(text[j])]
    return [(i, j) for i in starts for j in ends if i < j]


def ids_in(where: PurePosixPath, subjects: set[str]) -> list[str]:
    """The subject ids found in a map's path below the folder searched (distinct, in order).

    A ``sub-<label>`` entity (file name or any folder) decides when there is one: the id is
    ``sub-<label>`` or ``<label>``, whichever the table holds (``sub-<label>`` if both).
    Otherwise the table's ids found as whole tokens of the folders or the file name, where a
    token inside a longer one found at the same place does not count (``sub-1`` wins over
    ``1`` in ``sub-1_con``).

    Examples
    --------
    >>> ids_in(PurePosixPath("sub-01/con_0001.nii"), {"01", "02"})
    ['01']
    >>> ids_in(PurePosixPath("S02/S02_con.nii"), {"S01", "S02"})
    ['S02']
    >>> ids_in(PurePosixPath("S01/S02_con.nii"), {"S01", "S02"})
    ['S01', 'S02']
    """
    from glmkit.data.bids import strip_image_suffix, subject_labels

    labels = subject_labels(where)
    if labels:
        return [next((c for c in (f"sub-{label}", label) if c in subjects), f"sub-{label}")
                for label in labels]
    found: list[str] = []
    for part in (*where.parent.parts, strip_image_suffix(where.name)[0]):
        hits = [(i, j) for i, j in _spans(part) if part[i:j] in subjects]
        for i, j in hits:
            inside = any(a <= i and j <= b and (a, b) != (i, j) for a, b in hits)
            if not inside and part[i:j] not in found:
                found.append(part[i:j])
    return found


def match_maps(files: list[MapFile], subjects: list[str]
               ) -> tuple[dict[str, MapFile], list[MapFile]]:
    """Map subject -> file by the id found in its path (:func:`ids_in`); files whose id is
    not a subject are returned apart.

    Raises
    ------
    DatasetError
        A path holding several subject ids, or a subject with several maps, listing them (and
        the BIDS entities that tell the maps apart).
    """
    from glmkit.data.bids import differing

    wanted = set(subjects)
    by_subject: dict[str, list[MapFile]] = {}
    unmatched, several_ids = [], []
    for f in files:
        ids = ids_in(f.where, wanted)
        if len(ids) > 1:
            several_ids.append(f"{f.shown} -> {ids}")
        elif ids and ids[0] in wanted:
            by_subject.setdefault(ids[0], []).append(f)
        else:
            unmatched.append(f)
    several_maps = {s: fs for s, fs in by_subject.items() if len(fs) > 1}
    if several_ids or several_maps:
        problems = []
        if several_ids:
            problems.append(f"paths holding several subject ids: {several_ids}")
        if several_maps:
            listed = [f"{s} -> {[f.shown for f in fs]}" for s, fs in several_maps.items()]
            apart: dict[str, set[str]] = {}
            for fs in several_maps.values():
                for key, values in differing(f.where for f in fs).items():
                    apart.setdefault(key, set()).update(values)
            shown = {key: sorted(values) for key, values in sorted(apart.items())}
            problems.append(f"subjects with several maps: {listed}" + (
                f" (their BIDS entities differ in {shown}: add one to bids_filter)"
                if shown else ""))
        raise DatasetError(
            f"ambiguous subject/map matches: {'; '.join(problems)}. Each map's path must hold "
            "exactly one subject id (file name or folders) and each subject exactly one map: "
            "rename the files, narrow the glob (e.g. 'spm/sub-*/con_0001.nii') or, for BIDS "
            "names, pass bids_filter.")
    return {s: fs[0] for s, fs in by_subject.items()}, unmatched


def subject_folders(roots: set[Path], subjects: list[str]) -> dict[str, Path]:
    """Folders below ``roots`` named by a subject (``S03``, ``sub-03`` for ``03``)."""
    names = {}
    for s in subjects:
        names.setdefault(s, s)
        if not s.startswith("sub-"):
            names.setdefault(f"sub-{s}", s)
    out: dict[str, Path] = {}
    for root in sorted(roots):
        for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
            subject = names.get(folder.name)
            if subject is not None and not _hidden(folder, root):
                out.setdefault(subject, folder)
    return out


def _cached(kind: str, key: str, subjects: list[str], data_dir, write) -> list[str]:
    """Paths ``<data_dir>/<kind>/<key>/<subject>.nii.gz``, written by ``write(tmp, names)``
    into a temporary folder renamed when complete (unless they are cached already)."""
    folder = get_data_dir(data_dir) / kind / key
    out = [str(folder / f"{re.sub(r'[^A-Za-z0-9._-]', '_', s)}.nii.gz") for s in subjects]
    if not all(Path(p).is_file() for p in out):
        try:
            with atomic_folder(folder, overwrite=folder.exists()) as tmp:
                write(tmp, [Path(p).name for p in out])
        except OSError:
            if not all(Path(p).is_file() for p in out):
                raise
        logger.info("wrote %d maps into %s", len(subjects), folder)
    return out


def split_4d(img, path: Path, subjects: list[str], data_dir) -> list[str]:
    """Write each volume of a 4-D image as <subject>.nii.gz in a cache folder; return paths."""
    key = hashlib.sha256((sha256_file(path) + "\n".join(subjects)).encode()).hexdigest()[:16]

    def write(tmp: Path, names: list[str]) -> None:
        data = np.asanyarray(img.dataobj)
        for i, name in enumerate(names):
            nib.save(nib.Nifti1Image(data[..., i], img.affine, img.header), tmp / name)

    return _cached("split", key, subjects, data_dir, write)


def store_images(images: list, subjects: list[str], data_dir) -> list[str]:
    """Write in-memory images (one per subject, 3-D or (x, y, z, 1)) as
    ``<data_dir>/images/<hash>/<subject>.nii.gz``, keeping their headers; return the paths.

    The folder is named by a hash of the ids, affines and data, so the same images are
    written once.
    """
    digest = hashlib.sha256()
    arrays = []
    for subject, img in zip(subjects, images, strict=True):
        data = np.asanyarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ImageError(f"the image given for subject {subject!r} has shape {data.shape}; "
                             "expected one 3-D map per subject.")
        arrays.append(data)
        for part in (subject.encode(), np.asarray(img.affine, "f8").tobytes(),
                     str(data.dtype).encode(), str(data.shape).encode(),
                     np.ascontiguousarray(data).tobytes()):
            digest.update(part)

    def write(tmp: Path, names: list[str]) -> None:
        for img, data, name in zip(images, arrays, names):
            header = img.header if isinstance(img, nib.Nifti1Image) else None
            nib.save(nib.Nifti1Image(data, img.affine, header), tmp / name)

    return _cached("images", digest.hexdigest()[:16], subjects, data_dir, write)
