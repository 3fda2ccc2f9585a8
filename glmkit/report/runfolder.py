"""The run folder: every file one analysis writes, written by one function, and its manifest.

:func:`glmkit.report.write_report` renders the page and hands it to :func:`write_run_folder`,
which writes the whole folder and returns a :class:`RunManifest` (every file with its size
and sha256), also saved as ``manifest.json``::

    report.html        the self-contained page
    params.json        the parameters as given (``RunSettings.to_json()``: runner fields left out)
    provenance.json    versions, input hashes, seed, stage timings; the notebook's name and
                       sha256 when the run was written from a notebook
    summary.json       the headline numbers (``AnalysisResult.headline()``)
    design.csv         the design matrix, indexed by the kept subjects' ids
    qc.csv             every quality-control check of every subject
    clusters.csv       the run's cluster table
    maps/<name>.nii.gz :data:`RUN_MAPS` (``t`` is ``F`` for an F contrast), and one FWER map
                       per permutation statistic, named by the registry
                       (``get_statistic(name).map_name``); float32 with NIfTI intents and the
                       input's space codes (:func:`glmkit.data.nifti.result_map`)
    bids/              with ``export: bids`` only: the BIDS-derivatives export
                       (:mod:`glmkit.report.export`), written into a temporary folder renamed
                       when complete; an existing ``bids/`` is an error, raised before
                       anything is written
    manifest.json      written last: a folder with a manifest is complete, and
                       :meth:`RunManifest.check` tells later whether a file changed or went
                       missing

:func:`promised_files` lists what a run with given statistics holds; ``glmkit run`` checks
the folder its notebook wrote against it and against the manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from glmkit._util import atomic_folder, sha256_file
from glmkit.errors import ReportError, checked_arguments
from glmkit.report.export import EXPORT_DIR, bids_files

__all__ = ["RunManifest", "FileRecord", "RUN_FILES", "RUN_MAPS", "MANIFEST_NAME",
           "map_names", "promised_files", "result_maps", "notebook_record", "write_run_folder"]

MANIFEST_NAME = "manifest.json"
#: maps of every run in ``maps/`` (plus one per permutation statistic, see :func:`map_names`)
RUN_MAPS = ("mask", "z", "t", "p", "effect", "variance", "z_fdr", "logp_bonferroni")
_FORMAT = 1


# ----------------------------------------------------------------------------- the files
@dataclass(frozen=True)
class _Run:
    """What the files are made of."""

    result: Any
    page: str
    provenance: dict[str, Any]


def _json(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


def _design_csv(run: _Run) -> str:
    design = run.result.design.matrix.copy()
    design.index = design.index.astype(str)
    design.index.name = "subject"
    return design.to_csv()


def _table_csv(table: pd.DataFrame | None) -> str:
    return (table if table is not None else pd.DataFrame()).to_csv(index=False)


#: file name -> its text, in the order they are written (the page last but the manifest)
_CONTENTS: dict[str, Callable[[_Run], str]] = {
    "params.json": lambda run: run.result.settings.to_json() + "\n",
    "provenance.json": lambda run: _json(run.provenance),
    "summary.json": lambda run: _json(run.result.headline()),
    "design.csv": _design_csv,
    "qc.csv": lambda run: _table_csv(getattr(run.result.qc, "table", None)),
    "clusters.csv": lambda run: _table_csv(run.result.clusters),
    "report.html": lambda run: run.page,
}
#: files of every run folder beside ``maps/`` and ``manifest.json``
RUN_FILES = tuple(_CONTENTS)


@checked_arguments(statistics="names")
def map_names(statistics: Iterable[str] = (), *, stat_type: str = "t") -> tuple[str, ...]:
    """Names of the maps of a run with these permutation statistics (``maps/<name>.nii.gz``);
    ``stat_type="F"`` names the statistic's map ``F``.

    Examples
    --------
    >>> map_names(["voxel", "tfce"])[-2:]
    ('logp_maxt', 'logp_tfce')
    """
    from glmkit.stats.statistics import get_statistic

    own = tuple(stat_type if name == "t" else name for name in RUN_MAPS)
    return own + tuple(get_statistic(name).map_name for name in statistics)


@checked_arguments(statistics="names")
def promised_files(statistics: Iterable[str] = (), *, stat_type: str = "t",
                   export: str | None = None) -> tuple[str, ...]:
    """Paths (relative, ``/``-separated) that :func:`write_run_folder` writes for a run with
    these permutation statistics, ``manifest.json`` excepted (of an export, its
    ``dataset_description.json``)."""
    maps = tuple(f"maps/{name}.nii.gz" for name in map_names(statistics, stat_type=stat_type))
    exported = (f"{EXPORT_DIR}/dataset_description.json",) if export else ()
    return RUN_FILES + maps + exported


@checked_arguments(result="result")
def result_maps(result) -> dict[str, Any]:
    """``result.maps()``, checked to hold every map the run folder promises.

    The promise follows the statistics the permutation stage computed (none without it).
    """
    images = dict(result.maps())
    permutation = getattr(result, "permutation", None)
    statistics = tuple(permutation.statistics) if permutation is not None else ()
    stat_type = getattr(getattr(result, "contrast", None), "stat_type", "t")
    missing = [name for name in map_names(statistics, stat_type=stat_type) if name not in images]
    if missing:
        raise ReportError(f"write_report: result.maps() lacks {missing}; found "
                          f"{sorted(images)}. Pass the AnalysisResult of run_analysis")
    return images


@checked_arguments(notebook_path="path?")
def notebook_record(notebook_path: str | os.PathLike | None) -> dict[str, str] | None:
    """Name and sha256 of the executed notebook (what ``provenance.json`` records)."""
    if notebook_path is None:
        return None
    path = Path(notebook_path)
    if not path.is_file():
        raise ReportError(f"write_report: notebook_path={str(path)!r} does not exist: "
                          "expected the notebook that produced the result (its hash is "
                          "recorded); pass its path or leave notebook_path unset")
    return {"name": path.name, "sha256": sha256_file(path)}


def write_run_folder(out_dir: str | os.PathLike, result, images: Mapping[str, Any], page: str,
                     *, notebook: Mapping[str, str] | None = None) -> RunManifest:
    """Write every file of a run into ``out_dir`` and return its manifest.

    Called by :func:`glmkit.report.write_report` with the rendered page. Each file is written
    to a temporary name and renamed, so none is ever half-written; an earlier
    ``manifest.json`` is removed first and the new one is written last, so the folder claims
    to be complete only once it is. With ``result.settings.export == "bids"`` the export is
    written into ``bids/`` (a temporary folder renamed when complete) and listed in the
    manifest; a ``bids/`` already there is an error raised before anything is written.

    Parameters
    ----------
    out_dir : path-like
        An existing, writable folder.
    result : glmkit.pipeline.AnalysisResult
        Supplies the settings, provenance, headline, design, QC and cluster tables.
    images : mapping of str to nibabel image
        The maps (``result.maps()``), written as ``maps/<name>.nii.gz``.
    page : str
        The report's HTML.
    notebook : mapping, optional
        :func:`notebook_record` of the executed notebook, added to ``provenance.json``.
    """
    import nibabel as nib

    out = Path(out_dir)
    export = getattr(result.settings, "export", None)
    if export is not None and (out / EXPORT_DIR).exists():
        raise ReportError(
            f"export folder {str(out / EXPORT_DIR)!r} already exists: refusing to overwrite or "
            "merge into it (nothing was written); remove it, or write the run into another "
            "folder (glmkit run writes each run into a new one)")
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    provenance = dict(result.provenance())
    if notebook is not None:
        provenance["notebook"] = dict(notebook)
    run = _Run(result=result, page=page, provenance=provenance)
    written = []
    for name, img in images.items():
        path = f"maps/{name}.nii.gz"
        _replace(out / path, lambda tmp, img=img: nib.save(img, tmp))
        written.append(path)
    for path, content in _CONTENTS.items():
        text = content(run)
        _replace(out / path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        written.append(path)
    if export is not None:
        written += _write_export(out, bids_files(result, images, provenance))
    manifest = RunManifest.of_files(out, written)
    manifest.write()
    return manifest


def _write_export(out: Path, files: Mapping[str, Callable[[Path], Any]]) -> list[str]:
    """Write the export's files into ``out/bids`` through a temporary folder renamed when
    complete; return their paths relative to ``out``."""
    with atomic_folder(out / EXPORT_DIR) as tmp:
        for path, write in files.items():
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            write(tmp / path)
    return [f"{EXPORT_DIR}/{path}" for path in files]


def _replace(path: Path, write: Callable[[Path], Any]) -> None:
    """Write ``path`` through a temporary sibling (same extension), then rename it."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class FileRecord:
    """One file of a run folder: its path in the folder, size in bytes and sha256."""

    path: str
    size: int
    sha256: str

    @classmethod
    def of(cls, folder: str | os.PathLike, path: str) -> FileRecord:
        """Measure ``folder / path`` as it is on disk."""
        full = Path(folder) / path
        return cls(path=path, size=full.stat().st_size, sha256=sha256_file(full))

    def problem(self, folder: str | os.PathLike) -> str | None:
        """Why ``folder / path`` does not match this record (None when it does)."""
        full = Path(folder) / self.path
        if not full.is_file():
            return f"{self.path} is missing"
        size = full.stat().st_size
        if size != self.size:
            return f"{self.path} has {size} bytes, the manifest says {self.size}"
        if sha256_file(full) != self.sha256:
            return f"{self.path} has another sha256 than the manifest's"
        return None


@dataclass(frozen=True)
class RunManifest:
    """The files of a run folder as its writer left them (``manifest.json``).

    Attributes
    ----------
    folder : pathlib.Path
        The folder the paths are relative to.
    files : tuple of FileRecord
        Every file written, in writing order, with its size and sha256.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.txt").write_text("abc")
    >>> manifest = RunManifest.of_files(folder, ["a.txt"])
    >>> _ = manifest.write()
    >>> RunManifest.read(folder) == manifest, manifest.problems()
    (True, [])
    >>> _ = (folder / "a.txt").write_text("abd")
    >>> manifest.problems()
    ["a.txt has another sha256 than the manifest's"]
    """

    folder: Path
    files: tuple[FileRecord, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        """The files' paths, relative to :attr:`folder`."""
        return tuple(f.path for f in self.files)

    @property
    def report(self) -> Path:
        """Path of the run's ``report.html``."""
        return self.folder / "report.html"

    @property
    def size(self) -> int:
        """Total bytes of the files."""
        return sum(f.size for f in self.files)

    def problems(self) -> list[str]:
        """Every file that is missing or differs from its record (empty when all match)."""
        found = (record.problem(self.folder) for record in self.files)
        return [problem for problem in found if problem is not None]

    def check(self) -> RunManifest:
        """Raise :class:`~glmkit.errors.ReportError` if a file is missing or changed."""
        problems = self.problems()
        if problems:
            raise ReportError(f"run folder {str(self.folder)!r} does not match its "
                              f"{MANIFEST_NAME}: {'; '.join(problems)}")
        return self

    def summary(self) -> str:
        """One line: the folder, how many files and bytes."""
        return f"{self.folder}: {len(self.files)} files, {self.size / 1e6:.1f} MB"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``manifest.json`` holds; the folder is not recorded)."""
        return {"format": _FORMAT,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256}
                          for f in self.files]}

    def write(self) -> Path:
        """Save ``manifest.json`` in :attr:`folder` (atomically) and return its path."""
        path = self.folder / MANIFEST_NAME
        _replace(path, lambda tmp: tmp.write_text(_json(self.to_dict()), encoding="utf-8"))
        return path

    @classmethod
    def of_files(cls, folder: str | os.PathLike, paths: Iterable[str]) -> RunManifest:
        """Measure ``paths`` (relative to ``folder``) as they are on disk."""
        return cls(folder=Path(folder), files=tuple(FileRecord.of(folder, p) for p in paths))

    @classmethod
    def read(cls, folder: str | os.PathLike) -> RunManifest:
        """Read ``folder/manifest.json`` (a :class:`~glmkit.errors.ReportError` when it is
        missing or unreadable)."""
        path = Path(folder) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            files = tuple(FileRecord(path=str(f["path"]), size=int(f["size"]),
                                     sha256=str(f["sha256"])) for f in data["files"])
        except FileNotFoundError:
            raise ReportError(f"{str(path)!r} does not exist: the folder was not written by "
                              "glmkit.write_report, or not completely; check the path of the "
                              "run folder (reports_dir/run_name)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReportError(f"{str(path)!r} is not a readable manifest ({exc}); rewrite the "
                              "run") from None
        return cls(folder=Path(folder), files=files)
