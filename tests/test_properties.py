"""Property-based tests (hypothesis) of table parsing and subject matching.

Tables: whatever ids and values a table holds, the subject table reads back the ids as the
text written (``007`` stays ``007``), every column once, the values unchanged; a repeated
column name or subject id is always a DatasetError, never a renamed column or a dropped row.
Matching: whatever the ids, each map is matched to the one id its path holds (in the file name,
a folder, or a ``sub-<label>`` entity), and a path holding two ids is always an error.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmkit.data.folder import MapFile, ids_in, match_maps, read_table
from glmkit.errors import DatasetError

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

#: ids: letters and digits (upper case, so that they never equal the lower-case words of the
#: file names below), leading zeros included
IDS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=6)
COLUMN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
    lambda c: c not in ("subject", "participant_id"))
VALUE = st.one_of(st.integers(-10**6, 10**6),
                  st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)))


@st.composite
def tables(draw):
    ids = draw(st.lists(IDS, min_size=1, max_size=12, unique=True))
    columns = draw(st.lists(COLUMN, min_size=0, max_size=4, unique=True))
    data = {c: [draw(VALUE) for _ in ids] for c in columns}
    return ids, columns, data


def _write(folder: Path, name: str, header: list[str], rows: list[list], sep: str) -> Path:
    path = folder / name
    lines = [sep.join(header)] + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@SETTINGS
@given(tables(), st.sampled_from([".tsv", ".csv"]))
def test_a_table_reads_back_as_written(table, suffix):
    ids, columns, data = table
    sep = "\t" if suffix == ".tsv" else ","
    with tempfile.TemporaryDirectory() as tmp:
        rows = [[s, *(data[c][i] for c in columns)] for i, s in enumerate(ids)]
        path = _write(Path(tmp), f"t{suffix}", ["subject", *columns], rows, sep)
        frame = read_table(path, None)
    assert frame["subject"].tolist() == ids  # as text, in order
    assert list(frame.columns) == ["subject", *columns]
    for c in columns:
        assert [float(v) for v in frame[c]] == pytest.approx([float(v) for v in data[c]])


@SETTINGS
@given(tables(), st.data())
def test_a_repeated_column_is_always_an_error(table, data):
    ids, columns, values = table
    if not columns:
        columns, values = ["x"], {"x": [1] * len(ids)}
    repeated = data.draw(st.sampled_from(columns))
    header = ["subject", *columns, repeated]
    rows = [[s, *(values[c][i] for c in columns), values[repeated][i]]
            for i, s in enumerate(ids)]
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "t.tsv", header, rows, "\t")
        with pytest.raises(DatasetError, match=rf"several columns named \['{repeated}'\]"):
            read_table(path, None)
    frame = pd.DataFrame(rows, columns=header)
    with pytest.raises(DatasetError, match="several columns named"):
        read_table(frame, None)


@SETTINGS
@given(tables(), st.data())
def test_a_repeated_subject_is_always_an_error(table, data):
    ids, columns, values = table
    twice = data.draw(st.sampled_from(ids))
    frame = pd.DataFrame({"subject": [*ids, twice], **{c: [*v, v[0]] for c, v in
                                                         values.items()}})
    with pytest.raises(DatasetError, match=rf"duplicated subject ids \['{twice}'\]"):
        read_table(frame, None)


#: where a map's path holds its subject id
LAYOUTS = [
    lambda s: f"{s}_con.nii.gz",  # in the file name
    lambda s: f"{s}/con_0001.nii",  # a folder
    lambda s: f"sub-{s}/func/sub-{s}_task-x_effect.nii.gz",  # a BIDS entity
    lambda s: f"group/{s}/stats/beta.nii.gz",  # a deeper folder
    lambda s: f"spm-{s}-con.nii",  # among other tokens
]


@SETTINGS
@given(st.lists(IDS, min_size=1, max_size=10, unique=True),
       st.lists(st.integers(0, len(LAYOUTS) - 1), min_size=10, max_size=10))
def test_each_map_is_matched_to_the_id_its_path_holds(ids, layouts):
    # an id that is a whole token of another id's path would be read there too: the ids are
    # tokens of their own, so none holds another as a token (e.g. "A" in "A-B" is excluded)
    files = [MapFile(Path("/d") / LAYOUTS[layouts[i]](s),
                     PurePosixPath(LAYOUTS[layouts[i]](s)), Path("/d"))
             for i, s in enumerate(ids)]
    for f, s in zip(files, ids):
        assert ids_in(f.where, set(ids)) == [s], f.where
    matched, unmatched = match_maps(files, ids)
    assert unmatched == [] and {s: f.where for s, f in matched.items()} == {
        s: f.where for s, f in zip(ids, files)}


@SETTINGS
@given(st.lists(IDS, min_size=2, max_size=6, unique=True))
def test_a_path_holding_two_ids_is_always_an_error(ids):
    first, second = ids[:2]
    files = [MapFile(Path(f"/d/{first}/{second}_con.nii"),
                     PurePosixPath(f"{first}/{second}_con.nii"), Path("/d"))]
    with pytest.raises(DatasetError, match="paths holding several subject ids"):
        match_maps(files, ids)


@SETTINGS
@given(st.lists(IDS, min_size=1, max_size=8, unique=True))
def test_leading_zeros_never_match_another_id(ids):
    """'01' and '1' are different subjects: 'sub-01' is read as '01' (or 'sub-01'), never
    as '1'."""
    for s in ids:
        padded = f"0{s}"
        found = ids_in(PurePosixPath(f"sub-{padded}/con.nii"), set(ids) | {padded})
        assert found == [padded]
