"""Readers behind ``datasets.load_folder``: map lists, images, tables, matching.

An internal module of the data layer: its public names are for :mod:`glmkit.data.datasets`,
not glmkit's API. :func:`list_maps` resolves a folder, glob or list to image files,
:func:`open_image` checks a map cheaply, :func:`read_table` reads the subject table,
:func:`match_maps` pairs maps with subject ids and :func:`split_4d` caches the volumes of a
4-D file as 3-D maps; :func:`check_unique` rejects duplicated subject ids.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from glmkit._util import atomic_folder, get_data_dir, logger, sha256_file
from glmkit.errors import DataFileNotFoundError, DatasetError, ImageError

__all__ = ["check_unique", "list_maps", "open_image", "read_table", "match_maps", "split_4d"]

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


def list_maps(maps: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by a folder, a glob, a file or a list of files (Analyze as .hdr)."""
    if isinstance(maps, (str, os.PathLike)):
        text = str(maps)
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and _suffix(p) in _IMAGE_SUFFIXES
            )
            if not found:
                others = sorted(p.name for p in path.iterdir())[:5]
                raise DataFileNotFoundError(
                    f"maps folder {path} holds no image (.nii, .nii.gz, .hdr/.img); found "
                    f"{others or 'nothing'}. Point `maps` at the folder holding the maps."
                )
        elif _glob.has_magic(text):
            found = sorted(Path(p) for p in _glob.glob(os.path.expanduser(text)))
            if not found:
                raise DataFileNotFoundError(
                    f"maps glob {text!r} matches no file; check the pattern."
                )
        elif path.exists():
            found = [path]
        else:
            raise DataFileNotFoundError(
                f"maps {text!r} does not exist; pass an existing folder, glob or file."
            )
    else:
        found = [Path(p).expanduser() for p in maps]
        missing = [str(p) for p in found if not p.is_file()]
        if missing:
            raise DataFileNotFoundError(f"map files not found: {missing}; check the paths.")
    bad = [str(p) for p in found if _suffix(p) not in _IMAGE_SUFFIXES]
    if bad:
        raise ImageError(
            f"maps {bad} have an unsupported extension; expected one of {_IMAGE_SUFFIXES} "
            "(NIfTI or Analyze). Convert them or leave them out of the folder/glob."
        )
    # an Analyze pair is one map: keep the .hdr (an .img whose .hdr is absent is an error)
    out = []
    for p in found:
        if _suffix(p) == ".img":
            headers = [h for h in (p.with_suffix(".hdr"), p.with_suffix(".HDR")) if h.exists()]
            if not headers:
                raise ImageError(f"Analyze image {p} has no header {p.stem}.hdr; add it.")
            if headers[0] in found:
                continue
            p = headers[0]
        out.append(p.resolve())
    return sorted(set(out), key=out.index)


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


def read_table(table: str | os.PathLike | pd.DataFrame, subject_column: str) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
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
            frame = pd.read_csv(path, sep=sep, dtype={subject_column: str})
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DatasetError(
                f"table {path} cannot be read as {'TSV' if sep == chr(9) else 'CSV'} "
                f"({type(exc).__name__}: {exc}); check its format and encoding."
            ) from exc
    if subject_column not in frame.columns:
        bids = ("participant_id" in frame.columns and subject_column != "participant_id")
        raise DatasetError(
            f"table has no subject column {subject_column!r}; its columns are "
            f"{list(frame.columns)}. Pass subject_column=<the column holding the subject ids>"
            + (" (a BIDS participants table: subject_column='participant_id')." if bids
               else ".")
        )
    ids = frame.pop(subject_column)
    if ids.isna().any():
        raise DatasetError(f"table column {subject_column!r} has empty subject ids; fill them.")
    frame.insert(0, "subject", ids.astype(str).str.strip())
    check_unique(frame["subject"], f"table column {subject_column!r}")
    return frame.reset_index(drop=True)


def match_maps(paths: list[Path], subjects: list[str]) -> tuple[dict[str, Path], list[Path]]:
    """Map subject -> file by the id appearing as a token in the file name (longest wins)."""
    patterns = {s: re.compile(rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])") for s in subjects}
    by_subject: dict[str, list[Path]] = {}
    unmatched, ambiguous = [], []
    for path in paths:
        stem = re.sub(r"(\.nii\.gz|\.nii|\.hdr|\.img)$", "", path.name, flags=re.IGNORECASE)
        hits = [s for s, pattern in patterns.items() if pattern.search(stem)]
        if not hits:
            unmatched.append(path)
            continue
        longest = max(map(len, hits))
        best = [s for s in hits if len(s) == longest]
        if len(best) > 1:
            ambiguous.append(f"{path.name} -> {best}")
            continue
        by_subject.setdefault(best[0], []).append(path)
    ambiguous += [f"{s} -> {[p.name for p in ps]}" for s, ps in by_subject.items() if len(ps) > 1]
    if ambiguous:
        raise DatasetError(
            f"ambiguous subject/map matches: {ambiguous}; each map name must contain exactly one "
            "subject id and each id exactly one map. Rename the files or narrow the glob."
        )
    return {s: ps[0] for s, ps in by_subject.items()}, unmatched


def split_4d(img, path: Path, subjects: list[str], data_dir) -> list[str]:
    """Write each volume of a 4-D image as <subject>.nii.gz in a cache folder; return paths."""
    key = hashlib.sha256((sha256_file(path) + "\n".join(subjects)).encode()).hexdigest()[:16]
    folder = get_data_dir(data_dir) / "split" / key
    out = [str(folder / f"{re.sub(r'[^A-Za-z0-9._-]', '_', s)}.nii.gz") for s in subjects]
    if not all(Path(p).is_file() for p in out):
        data = np.asanyarray(img.dataobj)
        try:
            with atomic_folder(folder, overwrite=folder.exists()) as tmp:
                for i, target in enumerate(out):
                    volume = nib.Nifti1Image(data[..., i], img.affine, img.header)
                    nib.save(volume, tmp / Path(target).name)
        except OSError:
            if not all(Path(p).is_file() for p in out):
                raise
        logger.info("split 4-D %s into %d maps in %s", path, len(subjects), folder)
    return out
