"""The :class:`Dataset` every loader returns: subject maps plus a subject table, in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

import nibabel as nib
import pandas as pd

from glmkit.data.folder import check_unique
from glmkit.errors import DatasetError

__all__ = ["Dataset"]


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
