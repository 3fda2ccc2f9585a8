"""Second-level design matrices: from column names or a formula, checked before any fit.

:func:`make_design` turns a subject table into a :class:`Design` whose ``matrix`` is a
float DataFrame indexed by subject, with the intercept (if any) named ``"intercept"`` and
placed last, as in nilearn's second-level association example (``["fluency", "intercept"]``).

Every way a design can be unusable is an error that says which column and how to fix it:
unknown column, non-numeric column, missing values, an all-missing or constant covariate,
duplicated subject ids, too few subjects, and rank deficiency (naming the collinear
columns). Variance inflation factors (VIF) are reported per covariate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from glmkit._util import logger
from glmkit.errors import checked_arguments
from glmkit.errors import DesignError, ParameterError

__all__ = ["Design", "make_design", "variance_inflation"]

INTERCEPT = "intercept"
_VIF_WARN = 10.0
#: a VIF above this (R^2 > 1 - 1e-10, or infinite) is collinearity within rounding: an error
_VIF_ERROR = 1e10


@dataclass(frozen=True, eq=False)
class Design:
    """A checked, full-rank design matrix.

    Attributes
    ----------
    matrix : pandas.DataFrame
        Float columns, one row per subject, index named ``"subject"`` (str). The
        intercept, when present, is the last column and is named ``"intercept"``.
    formula : str or None
        The formula the matrix was built from (``None`` for the column path).
    vif : pandas.Series
        Variance inflation factor of each non-intercept column (1 = uncorrelated with
        the other covariates; above ~10 the estimate of that column is unstable).
    levels : dict
        Categorical factors: factor -> {level: its column, or None for the reference level
        (absorbed by the intercept)}. Contrasts may name levels: ``'patient - control'``.
        Also kept in ``matrix.attrs["levels"]`` for consumers of the bare DataFrame.
    """

    matrix: pd.DataFrame
    formula: str | None
    vif: pd.Series
    levels: dict = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names, in matrix order."""
        return tuple(self.matrix.columns)

    @property
    def subjects(self) -> tuple[str, ...]:
        """Subject ids, in row order."""
        return tuple(self.matrix.index)

    @property
    def has_intercept(self) -> bool:
        """Whether the design has an ``"intercept"`` column."""
        return INTERCEPT in self.matrix.columns

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_subjects, n_columns)``."""
        return self.matrix.shape

    def to_frame(self) -> pd.DataFrame:
        """A copy of the design matrix (index ``subject``), e.g. to save as ``design.csv``."""
        return self.matrix.copy()

    def correlation(self) -> pd.DataFrame:
        """Pearson correlation between the non-intercept columns."""
        return self.matrix.drop(columns=[INTERCEPT], errors="ignore").corr()

    def summary(self) -> str:
        """A short human-readable description of the design."""
        n, p = self.matrix.shape
        lines = [f"Design: {n} subjects x {p} columns {list(self.columns)}"]
        if self.formula is not None:
            lines.append(f"  formula: {self.formula}")
        for factor, cols in self.levels.items():
            counts = {lv: int(self.matrix[c].sum()) if c else None for lv, c in cols.items()}
            ref = next((lv for lv, c in cols.items() if c is None), None)
            n_ref = n - sum(v for v in counts.values() if v is not None)
            lines.append(f"  {factor}: levels " + ", ".join(
                f"{lv} (reference, n={n_ref})" if lv == ref else f"{lv} (n={counts[lv]})"
                for lv in cols) + "; contrasts may name levels, e.g. "
                f"'{next((lv for lv in cols if lv != ref), ref)} - {ref}'")
        for col in self.columns:
            x = self.matrix[col]
            if col == INTERCEPT:
                lines.append(f"  {col}: constant 1")
                continue
            vif = self.vif.get(col, np.nan)
            lines.append(
                f"  {col}: mean {x.mean():.4g}, sd {x.std(ddof=1):.4g}, "
                f"range [{x.min():.4g}, {x.max():.4g}], VIF {vif:.3g}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        n, p = self.matrix.shape
        return f"Design(n_subjects={n}, columns={list(self.columns)}, formula={self.formula!r})"


@checked_arguments(matrix="frame")
def variance_inflation(matrix: pd.DataFrame) -> pd.Series:
    """Variance inflation factor of each non-intercept column.

    ``VIF_j = 1 / (1 - R_j^2)`` where ``R_j^2`` is the R-squared of column ``j`` regressed
    on the other non-intercept columns plus a constant (the usual centred definition,
    whether or not the design has an intercept). A column with no variance gets NaN.

    Examples
    --------
    >>> import pandas as pd
    >>> m = pd.DataFrame({"a": [1.0, -1, 1, -1], "b": [1.0, 1, -1, -1], "intercept": 1.0})
    >>> variance_inflation(m).round(6).tolist()
    [1.0, 1.0]
    """
    X = matrix.drop(columns=[INTERCEPT], errors="ignore").to_numpy(dtype=float)
    names = [c for c in matrix.columns if c != INTERCEPT]
    Xc = X - X.mean(axis=0)
    out = np.full(len(names), np.nan)
    ones = np.ones((Xc.shape[0], 1))
    for j in range(len(names)):
        y = Xc[:, j]
        ss = float(y @ y)
        if ss <= 0:
            continue
        others = np.column_stack([ones, np.delete(Xc, j, axis=1)])
        beta, *_ = np.linalg.lstsq(others, y, rcond=None)
        resid = y - others @ beta
        ss_res = float(resid @ resid)
        out[j] = np.inf if ss_res <= ss * 1e-14 else ss / ss_res
    return pd.Series(out, index=pd.Index(names, dtype=object), name="vif")


@checked_arguments(columns="names?", subject_column="text", intercept="flag",
                   center="flag", standardize="flag")
def make_design(
    table: pd.DataFrame,
    columns: Sequence[str] | str | None = None,
    *,
    formula: str | None = None,
    intercept: bool = True,
    rename: Mapping[str, str] | None = None,
    center: bool = False,
    standardize: bool = False,
    subject_column: str = "subject",
) -> Design:
    """Build a checked second-level design matrix from a subject table.

    Parameters
    ----------
    table : pandas.DataFrame or Dataset
        One row per subject; must contain ``subject_column``. A ``Dataset`` is accepted
        (its ``table`` is used).
    columns : list of str, optional
        Numeric columns to use as covariates, in order. Give either ``columns`` or
        ``formula``; with neither, the design is the intercept alone (one-sample test).
    formula : str, optional
        Right-hand side formula evaluated with formulaic, e.g. ``"pseudo + age + C(sex)"``.
        Categorical variables must be wrapped in ``C(...)`` or be strings in the table.
    intercept : bool
        Add an intercept column (named ``"intercept"``, placed last). With a formula the
        formula's own intercept term is used: ``intercept=False`` removes it (as ``- 1``
        would); a formula that removes it itself (``"x - 1"``, ``"0 + x"``) has none.
    rename : dict, optional
        New names for columns, ``{"pseudo": "fluency"}``; keys are the table column (or
        formula column) names.
    center : bool
        Subtract the mean of every non-intercept column.
    standardize : bool
        Centre and divide every non-intercept column by its sample SD (ddof=1, as R's
        ``scale()``). Implies ``center``.
    subject_column : str
        Column holding the subject ids; they become the matrix index (as str).

    Returns
    -------
    Design

    Raises
    ------
    DesignError
        Unknown, non-numeric, all-missing, constant (with an intercept) or partly missing
        column; duplicated subject ids; fewer subjects than columns + 1; rank deficiency
        (the message names the collinear columns).
    ParameterError
        Invalid argument types or both ``columns`` and ``formula``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"subject": ["S1", "S2", "S3", "S4"], "pseudo": [10.0, 12, 9, 15]})
    >>> d = make_design(t, ["pseudo"], rename={"pseudo": "fluency"})
    >>> d.columns
    ('fluency', 'intercept')
    >>> d.matrix.loc["S2"].tolist()
    [12.0, 1.0]
    """
    table, columns = _check_arguments(table, columns, formula, rename)
    subjects = _subject_index(table, subject_column)

    if formula is not None:
        matrix = _from_formula(table, formula, intercept=intercept, subjects=subjects)
        levels = _formula_levels(matrix, table)
    else:
        matrix, levels = _from_columns(table, list(columns or []), intercept=intercept,
                                       subjects=subjects, subject_column=subject_column)
    matrix = _renamed(matrix, rename)
    levels = {factor: {lv: (rename or {}).get(c, c) if c else None for lv, c in cols.items()}
              for factor, cols in levels.items()}
    _check_estimable(matrix)
    if center or standardize:
        dummies = {c for cols in levels.values() for c in cols.values() if c}
        _center(matrix, standardize=standardize, skip=dummies)
    matrix.attrs["levels"] = levels
    return Design(matrix=matrix, formula=formula, vif=_vif_with_warning(matrix), levels=levels)


def _check_arguments(table, columns, formula, rename) -> tuple[pd.DataFrame, list | None]:
    """The table (a Dataset's, if given one) and the columns as a list, after type checks."""
    if hasattr(table, "table") and isinstance(getattr(table, "table"), pd.DataFrame):
        table = table.table
    if not isinstance(table, pd.DataFrame):
        raise ParameterError(
            f"table: expected a pandas DataFrame (or a Dataset), found {type(table).__name__}"
        )
    if columns is not None and formula is not None:
        raise ParameterError(
            "make_design: give either columns= or formula=, not both "
            f"(found columns={list(columns)!r} and formula={formula!r})"
        )
    if isinstance(columns, str):
        columns = [columns]
    if rename is not None and not isinstance(rename, Mapping):
        raise ParameterError(f"rename: expected a dict old -> new name, found {rename!r}")
    return table, columns


def _renamed(matrix: pd.DataFrame, rename: Mapping[str, str] | None) -> pd.DataFrame:
    """Columns renamed (keys must be design columns); the names must stay unique."""
    if rename:
        unknown = [k for k in rename if k not in matrix.columns]
        if unknown:
            raise DesignError(
                f"rename: {unknown} not among the design columns {list(matrix.columns)}; "
                "use the table column (or formula column) names as keys"
            )
        matrix = matrix.rename(columns=dict(rename))
    dup = matrix.columns[matrix.columns.duplicated()].tolist()
    if dup:
        raise DesignError(f"design columns must be unique; {dup} appear twice (check rename=)")
    return matrix


def _check_estimable(matrix: pd.DataFrame) -> None:
    """At least one column, one residual degree of freedom (too few subjects is said first:
    with one subject every covariate is constant), no covariate constant next to an
    intercept, full rank."""
    n, p = matrix.shape
    if p == 0:
        raise DesignError(
            "the design has no column (intercept=False and no covariate); give columns=, "
            "a formula, or keep intercept=True"
        )
    if n < p + 1:
        raise DesignError(
            f"the design has {n} subjects for {p} columns {list(matrix.columns)}; at least "
            f"{p + 1} subjects are needed (one residual degree of freedom). Use fewer "
            "covariates or more subjects"
        )
    if INTERCEPT in matrix.columns:
        for col in (c for c in matrix.columns if c != INTERCEPT):
            x = matrix[col].to_numpy()
            if np.ptp(x) == 0:
                raise DesignError(
                    f"column {col!r} is constant (value {x[0]:.6g} for all {len(x)} subjects); "
                    "with an intercept it is collinear with the intercept and its effect is "
                    "not estimable. Drop it, or check the table"
                )
    _check_rank(matrix)
    _check_separable(matrix)


def _check_separable(matrix: pd.DataFrame) -> None:
    """Raise DesignError naming the columns that the other columns reproduce up to rounding
    (inflation ``|x_j|^2 / |x_j - fit of x_j on the other columns|^2`` above ``_VIF_ERROR``,
    with x_j centred when the design has an intercept: its VIF). They pass the rank check,
    but their effects cannot be told apart and the fit would report numerical noise."""
    X = matrix.to_numpy(dtype=float)
    near = {}
    for j, col in enumerate(matrix.columns):
        if col == INTERCEPT:
            continue
        x, others = X[:, j], np.delete(X, j, axis=1)
        ss = float(((x - x.mean()) if INTERCEPT in matrix.columns else x) @ x)
        resid = x - others @ np.linalg.lstsq(others, x, rcond=None)[0] if others.size else x
        ss_res = float(resid @ resid)
        if ss > 0 and not ss_res * _VIF_ERROR > ss:
            near[col] = ss / ss_res if ss_res > 0 else np.inf
    if near:
        shown = ", ".join(f"{k}={v:.3g}" for k, v in near.items())
        raise DesignError(
            f"columns {list(near)} are nearly linearly dependent (variance inflation "
            f"{shown}; above {_VIF_ERROR:g} each is another column up to rounding): their "
            "effects cannot be separated. Remove one of them, or check the table for a "
            "column copied with tiny changes"
        )


def _center(matrix: pd.DataFrame, *, standardize: bool, skip=frozenset()) -> None:
    """Centre (and with ``standardize`` scale to SD 1) every non-intercept column but the
    level indicators in ``skip``, in place."""
    for col in [c for c in matrix.columns if c != INTERCEPT and c not in skip]:
        x = matrix[col] - matrix[col].mean()
        if standardize:
            sd = x.std(ddof=1)
            if not sd > 0:
                raise DesignError(f"cannot standardize column {col!r}: its SD is 0")
            x = x / sd
        matrix[col] = x


def _vif_with_warning(matrix: pd.DataFrame) -> pd.Series:
    """:func:`variance_inflation`, logging a warning for columns above ``_VIF_WARN``."""
    vif = variance_inflation(matrix)
    high = vif[vif > _VIF_WARN]
    if len(high):
        logger.warning(
            "design columns %s have VIF > %g (%s): their effects are poorly separated",
            list(high.index), _VIF_WARN, ", ".join(f"{k}={v:.3g}" for k, v in high.items()),
        )
    return vif


def _subject_index(table: pd.DataFrame, subject_column: str) -> pd.Index:
    if subject_column not in table.columns:
        raise DesignError(
            f"subject_column {subject_column!r} not in the table; name one of its columns: "
            f"{list(table.columns)}"
        )
    ids = table[subject_column]
    if ids.isna().any():
        rows = np.flatnonzero(ids.isna().to_numpy()).tolist()
        raise DesignError(f"subject column {subject_column!r} has missing ids at rows {rows}")
    ids = ids.astype(str)
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        raise DesignError(
            f"subject ids must be unique; duplicated in column {subject_column!r}: "
            f"{sorted(set(dup))} ({len(dup)} rows). Remove or merge the duplicate rows"
        )
    return pd.Index(ids.to_list(), name="subject", dtype=object)


def _check_column_values(table: pd.DataFrame, col: str, subjects: pd.Index) -> None:
    """All-missing and partly-missing columns are errors with the subject ids."""
    values = table[col]
    na = values.isna().to_numpy()
    if na.all():
        raise DesignError(
            f"column {col!r} is entirely missing (all {len(values)} values are NaN/n/a); "
            "check the table (wrong column, failed join?) or leave it out of the design"
        )
    if na.any():
        ids = subjects[na].tolist()
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        raise DesignError(
            f"column {col!r} has {int(na.sum())} missing values (subjects {shown}); "
            "drop those subjects first, e.g. run_qc(dataset, variables=[...]).apply(dataset), "
            "or impute them"
        )
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        inf = np.isinf(values.to_numpy(dtype=float))
        if inf.any():
            ids = subjects[inf].tolist()[:10]
            raise DesignError(
                f"column {col!r} has {int(inf.sum())} infinite values (subjects {ids}); "
                "fix the table (division by zero upstream?)"
            )


def _from_columns(table, columns, *, intercept, subjects, subject_column
                  ) -> tuple[pd.DataFrame, dict]:
    """Numeric columns as they are; a categorical (text) column as one indicator column
    ``name[level]`` per level but the first (the reference), with an intercept."""
    bad = [c for c in columns if not isinstance(c, str)]
    if bad:
        raise ParameterError(f"columns: expected column names (str), found {bad!r}")
    available = [c for c in table.columns if c != subject_column]
    unknown = [c for c in columns if c not in table.columns]
    if unknown:
        raise DesignError(
            f"column(s) {unknown} not in the table; use the table's columns: {available}"
        )
    if len(set(columns)) != len(columns):
        raise DesignError(f"columns: {columns} repeats a column; list each column once")
    data: dict[str, np.ndarray] = {}
    levels: dict[str, dict[str, str | None]] = {}
    for col in columns:
        values = table[col]
        if pd.api.types.is_bool_dtype(values):
            values = values.astype(float)
        if not pd.api.types.is_numeric_dtype(values):
            if not _is_categorical(values):
                _raise_non_numeric(col, values)
            _check_column_values(table, col, subjects)
            if not intercept:
                raise DesignError(f"column {col!r} is categorical: its levels are coded against "
                                  "a reference level, which needs the intercept; keep "
                                  "intercept=True or code the levels yourself")
            indicators, levels[col] = _indicators(col, values, subjects)
            data.update(indicators)
            continue
        _check_column_values(table, col, subjects)
        data[col] = values.to_numpy(dtype=float)
    matrix = pd.DataFrame(data, index=subjects, dtype=float)
    if intercept:
        matrix[INTERCEPT] = 1.0
    return matrix, levels


def _is_categorical(values: pd.Series) -> bool:
    """Text (or category) values, not a numeric column with a few typos."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return True
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce").notna()
    return bool(len(present)) and numeric.mean() < 0.5


def _indicators(col: str, values: pd.Series, subjects: pd.Index
                ) -> tuple[dict[str, np.ndarray], dict[str, str | None]]:
    """Treatment coding of a categorical column: the first level (sorted) is the reference."""
    text = values.astype(str).str.strip()
    counts = text.value_counts()
    order = sorted(counts.index, key=str)
    if len(order) < 2:
        raise DesignError(
            f"column {col!r} is categorical with a single level ({order[0]!r}, all "
            f"{len(text)} subjects): there is nothing to compare; drop it from the design or "
            "check the table")
    small = [lv for lv in order if counts[lv] < 2]
    if small:
        who = {lv: subjects[(text == lv).to_numpy()].tolist() for lv in small}
        raise DesignError(
            f"column {col!r}: level(s) {small} have a single subject ({who}); a group needs at "
            "least 2 subjects to be compared; merge the level with another, or drop the subject")
    names = {lv: f"{col}[{lv}]" for lv in order[1:]}
    data = {names[lv]: (text == lv).to_numpy(dtype=float) for lv in order[1:]}
    return data, {order[0]: None, **names}


_FORMULA_LEVEL = re.compile(
    r"^(?:C\((?P<c>[^,)]+)[^)]*\)|(?P<v>[A-Za-z_][\w.]*))\[T\.(?P<lv>.+)\]$")


def _formula_levels(matrix: pd.DataFrame, table: pd.DataFrame) -> dict:
    """Levels of the treatment-coded factors of a formula design (``C(g)[T.patient]``)."""
    levels: dict[str, dict[str, str | None]] = {}
    for column in matrix.columns:
        match = _FORMULA_LEVEL.match(str(column))
        if not match:
            continue
        factor = (match["c"] or match["v"]).strip()
        levels.setdefault(factor, {})[match["lv"]] = str(column)
    for factor, cols in levels.items():
        if factor in table.columns:
            present = sorted({str(v) for v in table[factor].dropna()}, key=str)
            missing = [lv for lv in present if lv not in cols]
            if len(missing) == 1:
                levels[factor] = {missing[0]: None, **cols}
    return levels


def _raise_non_numeric(col: str, values: pd.Series) -> None:
    coerced = pd.to_numeric(values, errors="coerce")
    bad = values[coerced.isna() & values.notna()]
    examples = [repr(v) for v in pd.unique(bad)[:5]]
    hint = (
        f"encode it: use formula='... + C({col})' for a categorical variable, or map it "
        "to numbers"
    )
    if 0 < len(bad) <= max(1, len(values) // 5):
        hint = (
            "most values are numbers: fix the non-numeric entries (e.g. read the table with "
            "na_values=[...]) or " + hint
        )
    raise DesignError(
        f"column {col!r} is not numeric (dtype {values.dtype}; non-numeric values such as "
        f"{', '.join(examples)}); {hint}"
    )


def _from_formula(table, formula, *, intercept, subjects) -> pd.DataFrame:
    try:
        from formulaic import Formula, model_matrix
    except ImportError as exc:  # pragma: no cover - formulaic is a dependency
        raise DesignError("formula designs need the 'formulaic' package") from exc
    if not isinstance(formula, str) or not formula.strip():
        raise ParameterError(f"formula: expected a non-empty string, found {formula!r}")
    if "~" in formula:
        raise ParameterError(
            f"formula: give the right-hand side only (e.g. 'pseudo + age'), found {formula!r}"
        )
    rhs = formula if intercept else f"({formula}) - 1"
    try:
        required = Formula(rhs).required_variables
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DesignError(f"formula {formula!r} cannot be parsed: {first}; check its syntax, "
                          "e.g. 'age + C(group)'") from exc
    known = set(table.columns)
    unknown = sorted(v for v in required if v not in known and not _is_module_name(v))
    if unknown:
        raise DesignError(
            f"formula {formula!r} uses {unknown}, not in the table; use the table's columns: "
            f"{list(table.columns)}"
        )
    for var in sorted(v for v in required if v in known):
        _check_column_values(table, var, subjects)
    data = table.reset_index(drop=True)
    try:
        mm = model_matrix(rhs, data, na_action="raise")
    except Exception as exc:
        raise DesignError(f"formula {formula!r} cannot be evaluated on the table: {exc}") from exc
    matrix = pd.DataFrame(np.asarray(mm, dtype=float), columns=[str(c) for c in mm.columns],
                          index=subjects)
    if "Intercept" in matrix.columns:
        matrix = matrix.rename(columns={"Intercept": INTERCEPT})
        matrix = matrix[[c for c in matrix.columns if c != INTERCEPT] + [INTERCEPT]]
    elif intercept:
        logger.info("formula %r removes the intercept; the design has none", formula)
    return matrix


def _is_module_name(name: str) -> bool:
    return name in {"np", "numpy", "pd", "pandas", "math", "scipy"}


def _check_rank(matrix: pd.DataFrame) -> None:
    """Raise DesignError naming the linearly dependent columns if the matrix is rank deficient."""
    X = matrix.to_numpy(dtype=float)
    norms = np.linalg.norm(X, axis=0)
    zero = [c for c, nrm in zip(matrix.columns, norms) if nrm == 0]
    if zero:
        raise DesignError(f"column(s) {zero} are all zero; drop them from the design")
    Xn = X / norms
    _, s, vt = np.linalg.svd(Xn, full_matrices=False)
    tol = s.max() * max(X.shape) * np.finfo(float).eps * 10
    null = vt[s <= tol]
    if len(null) == 0:
        return
    groups, equations = [], []
    for vec in null:
        w = np.abs(vec) / np.abs(vec).max()
        keep = w > 1e-6
        groups.append([c for c, k in zip(matrix.columns, keep) if k])
        coef = vec / norms  # X @ coef == 0 in the original units
        coef = coef / coef[np.flatnonzero(keep)[0]]
        terms = [f"{cf:+.3g}*{c}" for c, cf, k in zip(matrix.columns, coef, keep) if k]
        equations.append(" ".join(terms).lstrip("+") + " = 0")
    involved = [c for c in matrix.columns if any(c in g for g in groups)]
    rank = X.shape[1] - len(null)
    detail = "; ".join(equations)
    raise DesignError(
        f"design matrix is rank deficient (rank {rank} < {X.shape[1]} columns): columns "
        f"{involved} are linearly dependent ({detail}). "
        "Remove one of them (e.g. a covariate that duplicates another, or a dummy that "
        "duplicates the intercept)"
    )
