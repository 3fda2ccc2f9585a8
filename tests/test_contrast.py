"""glmkit.stats.contrast: the one contrast parser (symbolic step, design step, estimability),
and the proof that the GLM, the permutation engine, the settings and the pipeline use it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import glmkit
from glmkit import pipeline
from glmkit.errors import ContrastError, ParameterError
from glmkit.settings import RunSettings
from glmkit.stats import glm
from glmkit.stats.contrast import Contrast, contrast_vector, parse_contrast
from glmkit.stats.glm import compute_contrast, ols_fit
from glmkit.stats.permutation import permutation_test

COLUMNS = ["fluency", "age", "intercept"]


# ------------------------------------------------------------------ step 1: no design
@pytest.mark.parametrize(
    ("text", "row"),
    [
        ("fluency", {"fluency": 1.0}),
        ("2*fluency", {"fluency": 2.0}),
        ("fluency - age", {"fluency": 1.0, "age": -1.0}),
        ("-(a + b) * 3", {"a": -3.0, "b": -3.0}),
        ("a/4 - b*0.5 + a", {"a": 1.25, "b": -0.5}),
        ("(1 + 1) * a", {"a": 2.0}),
        ("`C(sex)[T.M]` - 0.5*age", {"C(sex)[T.M]": 1.0, "age": -0.5}),
        ("  fluency  ", {"fluency": 1.0}),
    ],
)
def test_expressions_become_rows_of_weights(text, row):
    parsed = parse_contrast(text)
    assert parsed.rows == (row,) and parsed.weights is None and not parsed.is_list
    assert parsed.name == text.strip()


@pytest.mark.parametrize(
    ("contrast", "match"),
    [
        ("score - score", r"contrast 'score - score' is all zeros \(score: 0\): it tests "
                          r"nothing, whatever the design"),
        ("0*score", r"contrast '0\*score' is all zeros \(score: 0\)"),
        ("0.1*a + 0.2*a - 0.3*a", r"is all zeros \(a: 0\)"),  # exact arithmetic
        ("a - 2*b + 2*(b - a/2)", r"is all zeros \(a: 0, b: 0\)"),
        ([0, 0], r"contrast '\[0, 0\]' is all zeros"),
        ([[1, 0], [0, 0]], r"all zeros in row\(s\) \[1\]"),
        ("a * b", "multiplies two columns"),
        ("a + 1", "adds a number to a column"),
        ("a / b", "divides by a column"),
        ("a / 0", "divides by zero"),
        ("a * 1e999", "non-finite"),
        ("3", "is a number and names no column"),
        ("", "contrast is empty"),
        ("   ", "contrast is empty"),
        ([1, np.nan], "NaN or infinite"),
        ([[1, 0], [0]], "is not understood"),
        (["a", 1.0], "is not understood"),
        (np.zeros((2, 2, 2)) + 1, r"shape \(2, 2, 2\)"),
    ],
)
def test_symbolic_step_rejects_what_no_design_can_rescue(contrast, match):
    with pytest.raises(ContrastError, match=match):
        parse_contrast(contrast)


def test_zero_check_is_exact_not_rounded():
    """0.1 + 0.2 - 0.3 is 5.6e-17 in floating point; in the parser it is exactly zero, while
    a genuinely tiny weight is kept."""
    assert 0.1 + 0.2 - 0.3 != 0
    assert parse_contrast("1e-20*a").rows == ({"a": 1e-20},)


def test_lists_and_matrices_are_marked_as_lists():
    names = parse_contrast(["age", "fluency - age"])
    assert names.is_list and names.n_rows == 2 and names.name == "age, fluency - age"
    assert names.rows == ({"age": 1.0}, {"fluency": 1.0, "age": -1.0})
    matrix = parse_contrast([[1, 0, 0], [0, 1, 0]])
    assert matrix.is_list and matrix.n_rows == 2 and matrix.name == "[[1, 0, 0], [0, 1, 0]]"
    vector = parse_contrast((1.0, -0.5, 0))
    assert not vector.is_list and vector.n_rows == 1 and vector.name == "[1, -0.5, 0]"
    assert not parse_contrast([[1, 0, 0]]).is_list  # one row: a vector
    assert parse_contrast(vector) is vector


# ------------------------------------------------------------------ step 2: the design
def test_design_step_resolves_names_and_checks_lengths():
    assert parse_contrast("2*fluency - intercept").matrix(COLUMNS).tolist() == [[2, 0, -1]]
    assert parse_contrast([1, -1, 0]).vector(COLUMNS).tolist() == [1, -1, 0]
    assert contrast_vector(["age", "fluency"], COLUMNS).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert contrast_vector([[0, 1, 0]], COLUMNS).tolist() == [0, 1, 0]
    with pytest.raises(ContrastError, match=r"contrast '\[1, 0\]' has 2 weights but the design "
                                            r"has 3 columns \['fluency', 'age', 'intercept'\]: "
                                            r"expected 3 weights, got 2"):
        contrast_vector([1, 0], COLUMNS)
    with pytest.raises(ContrastError, match=r"has 2 rows \(a list of contrasts, i.e. an F-test\)"):
        parse_contrast(["age", "fluency"]).vector(COLUMNS)


def test_unknown_column_lists_the_columns_with_a_did_you_mean():
    with pytest.raises(ContrastError) as info:
        contrast_vector("fluensy - age", COLUMNS)
    assert str(info.value) == (
        "contrast 'fluensy - age' names 'fluensy', which is not a design column: the design "
        "has columns ['fluency', 'age', 'intercept'] (did you mean 'fluency'?); pass a design "
        "column, an expression of columns such as 'a - b' or '2*a', or one weight per column.")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("fluency -", "invalid syntax"),
        ("C(sex)[M]", "it contains brackets [...], which is not allowed"),
        ("np.log(age)", "it contains a function call, which is not allowed"),
        ("age ** 2", "it contains a power **, which is not allowed"),
        ("__import__('os').getcwd()", "a function call"),
    ],
)
def test_text_outside_the_grammar_is_a_verbatim_name_or_says_why(text, why):
    columns = ["C(sex)[M]", "C(sex)[F]", "age"]
    if text in columns:  # a formula column: the verbatim name wins
        assert contrast_vector(text, columns).tolist() == [1, 0, 0]
        with pytest.raises(ContrastError, match=f"neither a design column nor a valid "
                                                f"expression \\({why[:20]}"):
            contrast_vector(text, ["age", "intercept"])
        return
    with pytest.raises(ContrastError) as info:
        contrast_vector(text, columns)
    message = str(info.value)
    assert message.startswith(f"contrast {text!r} is neither a design column nor a valid "
                              "expression (")
    assert why in message and str(columns) in message


def test_backticks_reach_formula_columns_inside_expressions():
    columns = ["C(sex)[F]", "C(sex)[M]", "age"]
    assert contrast_vector("`C(sex)[F]` - `C(sex)[M]`", columns).tolist() == [1, -1, 0]
    with pytest.raises(ContrastError, match="quotes an empty name"):
        parse_contrast("`` - age")


def test_a_column_named_like_an_expression_is_that_column():
    assert contrast_vector("a-b", ["a-b", "a", "b"]).tolist() == [1, 0, 0]
    assert contrast_vector("a - b", ["a-b", "a", "b"]).tolist() == [0, 1, -1]


def test_unnamed_design_takes_weights_only():
    X = np.column_stack([np.arange(5.0), np.ones(5)])
    assert contrast_vector([0, 1], None, X=X).tolist() == [0, 1]
    with pytest.raises(ContrastError, match="uses a column name but design is an array without "
                                            "column names"):
        contrast_vector("x0", None, X=X)


# ------------------------------------------------------------------ estimability
def _rank_deficient(rng, n=12):
    a = rng.normal(size=n)
    return np.column_stack([a, 2 * a, rng.normal(size=n), np.ones(n)]), ["a", "b", "c",
                                                                          "intercept"]


def test_estimability_agrees_with_an_independent_rank_criterion(rng):
    """A row c is estimable iff appending it to X does not raise the rank."""
    X, columns = _rank_deficient(rng)
    rank = np.linalg.matrix_rank(X)
    seen = set()
    candidates = [rng.integers(-2, 3, size=4).astype(float) for _ in range(200)]
    candidates += [np.array([2.0, -1, 0, 0]), np.array([1.0, 2, 0, 0])]  # one of each kind
    for c in candidates:
        if not c.any():
            continue
        estimable = np.linalg.matrix_rank(np.vstack([X, c])) == rank
        seen.add(estimable)
        if estimable:
            np.testing.assert_array_equal(contrast_vector(c, columns, X=X), c)
        else:
            with pytest.raises(ContrastError, match="is not estimable with the design"):
                contrast_vector(c, columns, X=X)
    assert seen == {True, False}


def test_not_estimable_says_which_columns_and_why(rng):
    X, columns = _rank_deficient(rng)
    with pytest.raises(ContrastError) as info:
        contrast_vector("a", columns, X=X)
    message = str(info.value)
    assert message.startswith("contrast 'a' is not estimable with the design (columns "
                              "['a', 'b', 'c', 'intercept']): the design has rank 3 < 4 "
                              "columns and ")
    assert "-0.5*b = 0 for every subject" in message or "+2*a" in message
    assert "cannot separate ['a', 'b']" in message
    assert contrast_vector("a + 2*b", columns, X=X).tolist() == [1, 2, 0, 0]  # estimable
    assert contrast_vector("c", columns, X=X).tolist() == [0, 0, 1, 0]  # untouched by it


def test_a_column_no_subject_carries_is_named(rng):
    X = np.column_stack([rng.normal(size=10), np.zeros(10), np.ones(10)])
    with pytest.raises(ContrastError, match=r"contrast 'level_c' is not estimable with the "
                                            r"design \(columns .*\): column\(s\) \['level_c'\] "
                                            r"are zero for every subject"):
        contrast_vector("level_c", ["score", "level_c", "intercept"], X=X)


# ------------------------------------------------------------------ one parser, four callers
def test_public_names_are_the_parser():
    assert glmkit.contrast_vector is contrast_vector
    assert glm.contrast_vector is contrast_vector
    assert issubclass(ContrastError, ParameterError) and issubclass(ContrastError, ValueError)


@pytest.fixture(scope="module")
def small():
    """A 20-subject design and data with an effect of fluency, on a 5x5x4 mask."""
    rng = np.random.default_rng(7)
    n = 20
    design = pd.DataFrame({"fluency": rng.normal(size=n), "age": rng.normal(size=n),
                           "intercept": 1.0},
                          index=pd.Index([f"S{i:02d}" for i in range(n)], name="subject"))
    mask = np.ones((5, 5, 4), bool)
    Y = rng.normal(size=(n, int(mask.sum()))) + 0.8 * design["fluency"].to_numpy()[:, None]
    return design, Y, mask


@pytest.mark.parametrize("contrast", ["fluency - fluency", "0*age", "fluensy", [1, 0]])
def test_every_caller_gives_the_same_message(small, contrast, monkeypatch):
    """The GLM, the permutation engine, the settings and the pipeline's check raise the very
    same message for the same contrast: one parser, no copies."""
    design, Y, _ = small
    fit = ols_fit(Y, design)
    messages = []
    for call in (lambda: compute_contrast(fit, contrast),
                 lambda: permutation_test(Y, design, contrast, n_perm=5, verbose=False),
                 lambda: pipeline._check_contrast(contrast, _Design(design), "the design")):
        with pytest.raises(ContrastError) as info:
            call()
        messages.append(str(info.value))
    assert len(set(messages)) == 1, messages
    if contrast in ("fluensy", [1, 0]):
        # names and weight counts need the design: only the table says which covariates are
        # categorical (glmkit run checks them against it before the notebook starts)
        RunSettings(covariates=("fluency", "age"), rename={}, contrast=contrast)
        return
    with pytest.raises(ContrastError) as info:  # zero whatever the design: the same message
        RunSettings(covariates=("fluency", "age"), rename={}, contrast=contrast)
    assert str(info.value) == messages[0]


class _Design:
    def __init__(self, matrix: pd.DataFrame) -> None:
        self.matrix, self.columns, self.levels = matrix, tuple(matrix.columns), {}


# ------------------------------------------------------------------ permutations end to end
def test_permuted_maps_of_a_scaled_contrast_equal_the_plain_one(small):
    design, Y, mask = small
    kwargs = dict(n_perm=99, random_state=5, statistics=("voxel", "cluster_size", "tfce"),
                  mask_img=mask, verbose=False)
    plain = permutation_test(Y, design, "fluency", **kwargs)
    scaled = permutation_test(Y, design, "2*fluency", **kwargs)
    assert scaled.contrast == "2*fluency"
    np.testing.assert_array_equal(scaled.t, plain.t)
    for stat in plain.statistics:
        np.testing.assert_array_equal(scaled.null_max[stat], plain.null_max[stat])
        np.testing.assert_array_equal(scaled.logp_fwer[stat], plain.logp_fwer[stat])
    assert plain.logp_fwer["voxel"].max() > 1  # the planted effect is found: not a null test


def test_permuted_difference_equals_its_vector(small):
    design, Y, mask = small
    kwargs = dict(n_perm=49, random_state=2, two_sided=True, verbose=False)
    expression = permutation_test(Y, design, "fluency - age", **kwargs)
    vector = permutation_test(Y, design, [1, -1, 0], **kwargs)
    assert (expression.contrast, vector.contrast) == ("fluency - age", "[1, -1, 0]")
    np.testing.assert_array_equal(expression.t, vector.t)
    np.testing.assert_array_equal(expression.null_max["voxel"], vector.null_max["voxel"])
    np.testing.assert_array_equal(expression.logp_fwer["voxel"], vector.logp_fwer["voxel"])
    # and the t map is the closed-form OLS t of c = [1, -1, 0]
    X = design.to_numpy()
    c = np.array([1.0, -1.0, 0.0])
    beta = np.linalg.lstsq(X, Y, rcond=None)[0]
    s2 = ((Y - X @ beta) ** 2).sum(0) / (X.shape[0] - 3)
    t = (c @ beta) / np.sqrt(s2 * (c @ np.linalg.inv(X.T @ X) @ c))
    np.testing.assert_allclose(vector.t, t, rtol=1e-9)


def test_contrast_object_is_frozen():
    parsed = parse_contrast("a")
    assert isinstance(parsed, Contrast)
    with pytest.raises(AttributeError):
        parsed.name = "b"  # type: ignore[misc]
