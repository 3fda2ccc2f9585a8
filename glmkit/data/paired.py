"""Paired and repeated-measures designs: several maps per subject, one per level of a
within-subject column (``session: pre, post``).

The analysis is the summary-statistic one of randomise and PALM: each subject's maps are
combined with the contrast's weights (``post - pre``: the post map minus the pre map), and the
combinations are tested against zero across subjects, by sign flips (subjects are the
exchangeable units). Between-subject covariates may adjust the mean combination.

:func:`load_within` reads a folder (or glob, list, BIDS root) whose table has one row per
map: a subject column and the within column. A map belongs to the row whose subject id *and*
level are found in its path (``sub-01/ses-pre/con.nii``, ``S01_post.nii.gz``). The maps are
kept one per row, with ids ``<subject>:<level>``, so quality control checks each map;
:func:`combination_maps` then writes each subject's combination.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from glmkit._util import logger
from glmkit.errors import ContrastError, DatasetError

__all__ = ["SEPARATOR", "within_weights", "load_within", "subject_table", "check_levels",
           "levels_of",
           "combination_maps", "participants_of"]

#: between a subject id and a level in the id of one map: ``S01:pre``
SEPARATOR = ":"
PARTICIPANT = "participant"


def within_weights(contrast: Any, levels: Sequence[str], within: str) -> dict[str, float]:
    """The weight of each level of ``within`` in ``contrast`` (``'post - pre'``).

    Raises
    ------
    ContrastError
        A list of contrasts, numeric weights, or a name that is not a level (listing them).

    Examples
    --------
    >>> within_weights("post - pre", ["pre", "post"], "session")
    {'post': 1.0, 'pre': -1.0}
    """
    from glmkit.stats.contrast import parse_contrast

    parsed = parse_contrast(contrast)
    if parsed.is_list or parsed.rows is None:
        raise ContrastError(
            f"contrast {parsed.name!r} with within={within!r} must name levels of {within!r} "
            f"({', '.join(map(str, levels))}), e.g. '{_example(levels)}'; weights and lists of "
            "contrasts are not supported for within-subject designs")
    row = parsed.rows[0]
    if parsed.text is not None and parsed.text in levels:
        row = {parsed.text: 1.0}
    unknown = [name for name in row if name not in levels]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], [str(v) for v in levels], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        verb = "is" if len(unknown) == 1 else "are"
        raise ContrastError(
            f"contrast {parsed.name!r} names {unknown}, which {verb} not a level of "
            f"within={within!r}: its levels are {list(levels)}{hint}; name levels, e.g. "
            f"'{_example(levels)}'")
    return {str(k): float(v) for k, v in row.items() if v}


def _example(levels: Sequence[str]) -> str:
    levels = [str(v) for v in levels]
    return f"{levels[-1]} - {levels[0]}" if len(levels) > 1 else str(levels[0])


def _tokens(where: PurePosixPath) -> set[str]:
    return {t for part in where.parts for t in re.split(r"[-_.]", part) if t}


def load_within(maps: Any, table: Any, *, within: str, load: Callable[..., Any],
                subject_column: str | None = None, contrast: Any = None, **kwargs: Any):
    """One map per (subject, level) row of ``table``: the maps of each level are matched
    to the rows of that level by ``load`` (``glmkit.data.local.load_folder``), then joined.

    With ``contrast``, only the levels it names are loaded, and a subject without a row for
    one of them is an error listing them (before any map is read).

    Returns a Dataset whose ids are ``<subject>:<level>``, with columns ``participant`` and
    ``within`` beside the table's.
    """
    from glmkit.data.dataset import Dataset
    from glmkit.data.folder import list_maps, read_table

    frame = read_table(table, subject_column, unique=False)
    levels = levels_of(frame, within)
    if contrast is not None:
        weights = within_weights(contrast, levels, within)
        _check_rows(frame, within, weights)
        levels = [level for level in levels if level in weights]
        frame = frame[frame[within].astype(str).isin(levels)].reset_index(drop=True)
    files = list_maps(maps)
    by_level: dict[str, list[str]] = {level: [] for level in levels}
    for f in files:
        found = [level for level in levels if level in _tokens(f.where)]
        if len(found) > 1:
            raise DatasetError(f"map {f.shown} holds several levels of within={within!r} "
                               f"({found}) in its path: name each map with one level")
        if found:
            by_level[found[0]].append(str(f.path))
    parts = []
    for level in levels:
        rows = frame[frame[within].astype(str) == level].reset_index(drop=True)
        if not by_level[level]:
            raise DatasetError(f"no map's path holds the level {level!r} of within={within!r} "
                               f"({len(rows)} table rows have it); maps are matched to a level "
                               "by a token of their path (ses-pre, S01_pre.nii.gz)")
        parts.append(load(by_level[level], rows, **kwargs))
    table_out = pd.concat([p.table for p in parts], ignore_index=True)
    table_out.insert(1, PARTICIPANT, table_out["subject"].astype(str))
    table_out["subject"] = table_out[PARTICIPANT] + SEPARATOR + table_out[within].astype(str)
    maps_out = tuple(m for p in parts for m in p.maps)
    return Dataset(parts[0].name, maps_out, table_out, None,
                   f"{len(maps_out)} maps: {within} levels {', '.join(levels)}",
                   {"source": "load_within", "within": within, "levels": levels,
                    "parts": [p.provenance for p in parts]})


def _check_rows(frame: pd.DataFrame, within: str, weights: Mapping[str, float]) -> None:
    have = frame.assign(_l=frame[within].astype(str)).groupby("subject")["_l"].agg(set)
    _raise_lacking({p: sorted(set(weights) - lv) for p, lv in have.items()
                    if set(weights) - lv}, within, weights)


def _raise_lacking(lacking: Mapping[str, list], within: str, weights) -> None:
    if lacking:
        shown = "; ".join(f"{p} lacks {v}" for p, v in list(lacking.items())[:10])
        raise DatasetError(
            f"within={within!r}: {len(lacking)} subject(s) lack a level the contrast uses "
            f"({shown}{' ...' if len(lacking) > 10 else ''}); every subject needs a map for "
            f"each of {sorted(weights)}: add the maps or drop those subjects from the table")


def levels_of(frame: pd.DataFrame, within: str) -> list[str]:
    if within not in frame.columns:
        raise DatasetError(f"within={within!r} is not a column of the subject table (columns: "
                           f"{', '.join(map(str, frame.columns))}); name the column of the "
                           "within-subject condition, e.g. session")
    values = frame[within]
    if values.isna().any():
        rows = frame.loc[values.isna(), "subject"].astype(str).tolist()
        raise DatasetError(f"within={within!r} is missing for the rows of {rows[:10]}; every "
                           "map's row needs its level")
    pairs = frame[["subject", within]].astype(str)
    dup = pairs[pairs.duplicated(keep=False)]
    if len(dup):
        shown = sorted({f"{s}:{v}" for s, v in dup.itertuples(index=False)})
        raise DatasetError(f"the table has several rows for {shown[:10]}: one row (one map) "
                           f"per subject and level of {within!r}")
    return sorted({str(v) for v in values}, key=str)


def participants_of(dataset) -> pd.Series:
    """The participant of each row of a within-subject dataset."""
    table = dataset.table
    if PARTICIPANT in table.columns:
        return table[PARTICIPANT].astype(str)
    return table["subject"].astype(str).str.rsplit(SEPARATOR, n=1).str[0]


def check_levels(dataset, within: str, weights: Mapping[str, float]) -> None:
    """Every subject has a map for each level the contrast weighs, or a DatasetError lists the
    subjects and the levels they lack (before any map is read)."""
    table = dataset.table
    if within not in table.columns:
        raise DatasetError(f"within={within!r} is not a column of the subject table (columns: "
                           f"{', '.join(map(str, table.columns))})")
    have = table.assign(_p=participants_of(dataset).to_numpy(),
                        _l=table[within].astype(str)).groupby("_p")["_l"].agg(set)
    _raise_lacking({p: sorted(set(weights) - levels) for p, levels in have.items()
                    if set(weights) - levels}, within, weights)


def subject_table(dataset, within: str, weights: Mapping[str, float],
                  kept: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per subject whose maps of every weighted level are in ``kept`` (map ids; all
    when None), with the between-subject columns (taken from the subject's first row)."""
    table = dataset.table.assign(_p=participants_of(dataset).to_numpy())
    if kept is not None:
        table = table[table["subject"].astype(str).isin(set(kept))]
    table = table[table[within].astype(str).isin(set(weights))]
    complete = table.groupby("_p")[within].agg(lambda v: set(v.astype(str))) == set(weights)
    dropped = sorted(complete.index[~complete])
    if dropped:
        logger.info("within %s: subjects %s lack a kept map of %s and are left out", within,
                    dropped, sorted(weights))
    rows = table[table["_p"].isin(complete.index[complete])]
    out = rows.groupby("_p", sort=False).first().reset_index()
    drop = [c for c in ("subject", PARTICIPANT, within) if c in out.columns]
    out = out.drop(columns=drop).rename(columns={"_p": "subject"})
    return out


def combination_maps(dataset, within: str, weights: Mapping[str, float],
                     subjects: Sequence[str], data_dir: str | os.PathLike | None = None
                     ) -> list[str]:
    """Each subject's sum of weight x map over the weighted levels, written once (cached by
    content) so the fit reads paths; in ``subjects`` order."""
    import nibabel as nib

    from glmkit._util import get_data_dir
    from glmkit.data.folder import store_images

    table = dataset.table.assign(_p=participants_of(dataset).to_numpy(),
                                 _l=dataset.table[within].astype(str))
    path_of = dict(zip(zip(table["_p"], table["_l"]), dataset.maps))
    images = []
    for subject in subjects:
        total, first = None, None
        for level, weight in weights.items():
            img = nib.load(path_of[(str(subject), level)])
            data = np.asarray(img.get_fdata(dtype=np.float64))
            total = weight * data if total is None else total + weight * data
            first = first or img
        out = nib.Nifti1Image(total.astype(np.float32), first.affine)
        if isinstance(first, nib.Nifti1Image):
            out.set_sform(first.affine, int(first.header["sform_code"]))
            out.set_qform(first.affine, int(first.header["qform_code"]))
        images.append(out)
    return store_images(images, [str(s) for s in subjects],
                        data_dir if data_dir is not None else get_data_dir())
