"""Report sections for real studies: how to reproduce the run (command line, BibTeX), the
warnings every stage raised, the analysis mask and its coverage, and every subject's map at a
glance (as MRIQC's group reports show them), with QC-flagged subjects highlighted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from glmkit.report.markup import Section, attr, table
from glmkit.report.templates import render

__all__ = ["bibtex", "reproduce_section", "warnings_section", "subjects_section",
           "mask_section"]

_REFERENCE = re.compile(r"^(?P<authors>.+?) \((?P<year>\d{4})\)\. (?P<title>.+?)\. "
                        r"(?P<rest>.+?)\.?$")
_JOURNAL = re.compile(r"^(?P<journal>.+?) (?P<volume>\d+):(?P<pages>\d+(?:-\d+)?)$")


def _bib_authors(authors: str) -> str:
    """``"Nichols TE, Holmes AP"`` -> ``"Nichols, T. E. and Holmes, A. P."``."""
    out = []
    for name in (a.strip() for a in authors.split(",")):
        if name in ("et al.", "et al"):
            out.append("others")
            continue
        parts = name.split()
        initials = parts[-1] if len(parts) > 1 and parts[-1].isupper() else ""
        last = " ".join(parts[:-1]) if initials else name
        out.append(f"{last}, {' '.join(ch + '.' for ch in initials)}".rstrip(", "))
    return " and ".join(out)


def bibtex(references: Mapping[str, str]) -> str:
    """BibTeX entries of references written as ``Authors (Year). Title. Journal Vol:Pages.``
    (a text in another form becomes a ``@misc`` with the text as its note).

    Examples
    --------
    >>> print(bibtex({"a2001": "Doe J, Roe RA (2001). A title. J Tests 3:1-9."}))
    @article{a2001,
      author = {Doe, J. and Roe, R. A.},
      year = {2001},
      title = {{A title}},
      journal = {J Tests},
      volume = {3},
      pages = {1--9},
    }
    """
    entries = []
    for key, text in references.items():
        text = str(text)
        ref = _REFERENCE.match(text)
        journal = _JOURNAL.match(ref["rest"]) if ref else None
        if ref and journal:
            fields = {"author": _bib_authors(ref["authors"]), "year": ref["year"],
                      "title": "{" + ref["title"] + "}", "journal": journal["journal"],
                      "volume": journal["volume"], "pages": journal["pages"].replace("-", "--")}
            kind = "article"
        elif ref:
            fields = {"author": _bib_authors(ref["authors"]), "year": ref["year"],
                      "title": "{" + ref["title"] + "}", "note": ref["rest"]}
            kind = "incollection" if ref["rest"].startswith("In:") else "misc"
        else:
            fields, kind = {"note": text}, "misc"
        body = "".join(f"  {name} = {{{value}}},\n" for name, value in fields.items())
        entries.append(f"@{kind}{{{key},\n{body}}}")
    return "\n\n".join(entries)


def reproduce_section(result, cited: Mapping[str, str]) -> Section:
    """The command line that reproduces the run, and BibTeX for the methods' citations."""
    settings = result.settings
    command = settings.command_line() if hasattr(settings, "command_line") else None
    body = render("sections/reproduce.html", command=command, bibtex=bibtex(cited))
    return Section("reproduce", "Reproduce and cite", body, nav="Reproduce")


def warnings_section(result) -> Section:
    """Every warning the stages raised (Python warnings and logged warnings), or "none"."""
    rows = list(attr(result, "warnings", ()) or ())
    frame = pd.DataFrame(rows, columns=["stage", "kind", "message"]) if rows else None
    body = render("sections/warnings.html", table=table(frame) if frame is not None else None)
    return Section("warnings", "Errors and warnings", body, nav="Warnings")


def _slice_at(path: str, z_mm: float) -> np.ndarray | None:
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception:  # noqa: BLE001 - a map QC already reported; show nothing for it
        return None
    k = int(round(float(np.linalg.inv(img.affine)[2] @ np.r_[0.0, 0.0, z_mm, 1.0])))
    k = min(max(k, 0), img.shape[2] - 1)
    data = np.asarray(img.dataobj[:, :, k], dtype=np.float64)
    return np.nan_to_num(data.reshape(data.shape[0], data.shape[1]))


def subjects_section(result, cut_coords: Sequence[float], *, max_subjects: int = 400
                     ) -> Section:
    """Each subject's map at the cut's axial slice, small, in dataset order; excluded and
    flagged subjects outlined. Scaled per map (its 99th percentile of |value|): the shapes are
    compared here, the scales in the QC table."""
    from glmkit.report import figures

    dataset, qc = result.dataset, result.qc
    subjects = [str(s) for s in dataset.table["subject"]][:max_subjects]
    paths = [str(p) for p in dataset.maps][:max_subjects]
    excluded = set(attr(qc, "excluded", ()))
    flagged = set(qc.flags()["subject"]) if hasattr(qc, "flags") else set()
    tiles = []
    for subject, path in zip(subjects, paths):
        data = _slice_at(path, float(cut_coords[2]))
        status = ("excluded" if subject in excluded else "flagged" if subject in flagged
                  else "kept")
        tiles.append({"subject": subject, "status": status,
                      "uri": figures.thumbnail(data) if data is not None else None})
    body = render("sections/subjects.html", tiles=tiles, z=f"{float(cut_coords[2]):g}",
                  more=max(0, len(dataset.maps) - max_subjects))
    return Section("subjects", "Subjects at a glance", body, nav="Subjects")


def mask_section(result, images) -> Section:
    """The analysis mask (axial slices coloured by the share of subjects with data, voxel
    count, source) and how much of it the maps cover."""
    from glmkit.report import figures

    mask = np.asarray(images["mask"].get_fdata()) > 0
    settings = result.settings
    source = attr(settings, "mask", None) or "computed from the data (as nilearn does)"
    shares = np.zeros(mask.shape)
    Y = attr(result.model, "Y")
    if Y is not None and np.asarray(Y).shape[1] == int(mask.sum()):
        shares[mask] = (np.asarray(Y) != 0).mean(axis=0)
    qc_table = attr(result.qc, "table")
    coverage = None
    if qc_table is not None and len(qc_table):
        values = pd.to_numeric(qc_table.loc[qc_table["check"] == "coverage", "value"],
                               errors="coerce").dropna()
        threshold = float(attr(attr(result.qc, "policy"), "min_coverage", 0.8))
        if len(values):
            coverage = {"median": f"{values.median():.0%}", "min": f"{values.min():.0%}",
                        "n_below": int((values < threshold).sum()),
                        "threshold": f"{threshold:.0%}"}
    voxel_mm3 = abs(float(np.linalg.det(images["mask"].affine[:3, :3])))
    body = render("sections/mask.html", uri=figures.mask_figure(mask, shares),
                  n_voxels=f"{int(mask.sum()):,}", source=str(source),
                  mm3=f"{int(mask.sum()) * voxel_mm3:,.0f}", coverage=coverage,
                  qc_mask=attr(result.qc, "mask_source", ""),
                  full=f"{float((shares[mask] == 1).mean()):.0%}" if mask.any() else "0%")
    return Section("mask", "Analysis mask", body, nav="Mask")
