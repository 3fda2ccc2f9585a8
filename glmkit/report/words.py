"""What was tested, in words that fit the design.

:func:`describe_test` reads the design (its columns and categorical levels), the contrast, the
sidedness and the within-subject factor of a run and says what a significant voxel means:
"a mean effect greater than zero" (one-sample), "a larger effect in patient than in control"
(groups), "a larger effect in post than in pre" (paired), "a positive association with score,
adjusting for age" (ANCOVA), "an effect of age or score (F test)". The summary, the methods,
the figure captions and the viewer use it, so the report never calls a group difference an
association.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from glmkit.stats.contrast import parse_contrast

__all__ = ["TestWords", "describe_test"]

INTERCEPT = "intercept"


@dataclass(frozen=True)
class TestWords:
    """What a run tested.

    Attributes
    ----------
    phrase : str
        Noun phrase completing "voxels show ...": ``"a larger effect in patient than in
        control"``.
    short : str
        For titles and captions: ``"patient > control"``, ``"mean > 0"``, ``"F: age, score"``.
    test : str
        ``"one-sided t test"``, ``"two-sided t test"`` or ``"F test"``.
    design : str
        The kind of design: ``"one-sample"``, ``"paired"``, ``"groups"``, ``"association"``,
        ``"F test"`` or ``"contrast"``.
    """

    phrase: str
    short: str
    test: str
    design: str


def _and(words: Sequence[str]) -> str:
    words = list(words)
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def _level_of(column: str, levels: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    """(factor, level) of an indicator column."""
    for factor, cols in levels.items():
        for level, col in cols.items():
            if col == column:
                return factor, level
    return None


def _reference(factor: str, levels: Mapping[str, Mapping[str, Any]]) -> str:
    return next((lv for lv, col in levels[factor].items() if col is None), "the reference")


def _nuisance(columns: Sequence[str], tested: set[str], levels) -> list[str]:
    """Names of the adjusted-for terms: covariates, and factors by name (not the tested one)."""
    tested_factors = {owner[0] for c in tested if (owner := _level_of(c, levels))}
    out: list[str] = []
    for column in columns:
        if column == INTERCEPT or column in tested:
            continue
        owner = _level_of(column, levels)
        if owner and owner[0] in tested_factors:
            continue
        name = owner[0] if owner else column
        if name not in out:
            out.append(name)
    return out


def describe_test(columns: Sequence[str], contrast: Any, *, two_sided: bool = False,
                  levels: Mapping[str, Mapping[str, Any]] | None = None,
                  within: str | None = None) -> TestWords:
    """The run's test in words.

    Parameters
    ----------
    columns : sequence of str
        Design columns.
    contrast : str, vector or list
        The contrast as given (parsed by :func:`glmkit.stats.contrast.parse_contrast`).
    two_sided : bool
        Whether effects of either sign count.
    levels : mapping, optional
        Categorical factors of the design (:attr:`glmkit.stats.design.Design.levels`).
    within : str, optional
        The within-subject factor of a paired design; ``contrast`` then names its levels.

    Examples
    --------
    >>> describe_test(["intercept"], "intercept").phrase
    'a mean effect greater than zero'
    >>> lv = {"group": {"control": None, "patient": "group[patient]"}}
    >>> describe_test(["group[patient]", "age", "intercept"], "patient - control",
    ...               levels=lv).phrase
    'a larger effect in patient than in control, adjusting for age'
    >>> describe_test(["score", "age", "intercept"], "score").phrase
    'a positive association with score, adjusting for age'
    >>> describe_test(["age", "score", "intercept"], ["age", "score"]).phrase
    'an effect of age or score'
    """
    levels = dict(levels or {})
    parsed = parse_contrast(contrast)
    if parsed.is_list:
        names = [_row_text(row, parsed) for row in range(parsed.n_rows)]
        return TestWords(f"an effect of {' or '.join(names)}",
                         f"F: {', '.join(names)}", "F test", "F test")
    test = f"{'two' if two_sided else 'one'}-sided t test"
    if within is not None:
        return _difference(parsed.rows[0] if parsed.rows else {}, parsed.name, two_sided, test,
                           "paired", adjusting=[])
    weights = parsed.matrix(list(columns), levels=levels)[0]
    tested = {c for c, w in zip(columns, weights) if w}
    adjusting = _nuisance(columns, tested, levels)
    if tested == {INTERCEPT}:
        sign = weights[list(columns).index(INTERCEPT)]
        return _mean(sign, two_sided, test, adjusting)
    by_level = {c: _level_of(c, levels) for c in tested}
    if all(by_level.values()) and len({f for f, _ in by_level.values()}) == 1:
        factor = next(iter(by_level.values()))[0]
        named = {by_level[c][1]: w for c, w in zip(columns, weights) if c in tested}
        if len(named) == 1:
            named[_reference(factor, levels)] = -sum(named.values())
        return _difference(named, parsed.name, two_sided, test, "groups", adjusting)
    if len(tested) == 1 and not any(by_level.values()):
        column = next(iter(tested))
        sign = weights[list(columns).index(column)]
        return _association(column, sign, two_sided, test, adjusting)
    return _generic(parsed.name, two_sided, test, adjusting)


def _row_text(row: int, parsed) -> str:
    if parsed.rows is None:
        return f"row {row + 1}"
    terms = parsed.rows[row]
    if len(terms) == 1 and next(iter(terms.values())) == 1:
        return next(iter(terms))
    return " ".join(f"{w:+g}*{n}" for n, w in terms.items()).lstrip("+")


def _adjusted(text: str, adjusting: list[str]) -> str:
    return f"{text}, adjusting for {_and(adjusting)}" if adjusting else text


def _mean(sign: float, two_sided: bool, test: str, adjusting: list[str]) -> TestWords:
    if two_sided:
        phrase, short = "a mean effect different from zero", "mean ≠ 0"
    elif sign > 0:
        phrase, short = "a mean effect greater than zero", "mean > 0"
    else:
        phrase, short = "a mean effect less than zero", "mean < 0"
    return TestWords(_adjusted(phrase, adjusting), short, test, "one-sample")


def _difference(named: Mapping[str, float], name: str, two_sided: bool, test: str, design: str,
                adjusting: list[str]) -> TestWords:
    """Levels compared: ``{patient: 1, control: -1}``."""
    plus = [lv for lv, w in named.items() if w > 0]
    minus = [lv for lv, w in named.items() if w < 0]
    balanced = np.isclose(sum(named.values()), 0.0)
    if not (plus and minus and balanced):
        return _generic(name, two_sided, test, adjusting, design=design)
    a, b = " and ".join(plus), " and ".join(minus)
    if two_sided:
        phrase, short = f"a difference between {a} and {b}", f"{a} ≠ {b}"
    else:
        phrase, short = f"a larger effect in {a} than in {b}", f"{a} > {b}"
    return TestWords(_adjusted(phrase, adjusting), short, test, design)


def _association(column: str, sign: float, two_sided: bool, test: str, adjusting: list[str]
                 ) -> TestWords:
    if two_sided:
        phrase, short = f"an association with {column}", f"{column} (±)"
    elif sign > 0:
        phrase, short = f"a positive association with {column}", column
    else:
        phrase, short = f"a negative association with {column}", f"−{column}"
    return TestWords(_adjusted(phrase, adjusting), short, test, "association")


def _generic(name: str, two_sided: bool, test: str, adjusting: list[str], *,
             design: str = "contrast") -> TestWords:
    phrase = f"{'a non-zero' if two_sided else 'a positive'} value of the contrast {name}"
    return TestWords(_adjusted(phrase, adjusting), f"{name} {'≠' if two_sided else '>'} 0",
                     test, design)
