"""Tests of glmkit.stats.design: closed-form VIF, rank deficiency, formula path, bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from glmkit.stats.design import Design, make_design, variance_inflation
from glmkit.errors import DesignError, ParameterError


@pytest.fixture
def table(rng) -> pd.DataFrame:
    n = 24
    return pd.DataFrame(
        {
            "subject": [f"S{i:02d}" for i in range(1, n + 1)],
            "pseudo": rng.normal(12, 3, n).round(1),
            "age": rng.integers(18, 40, n).astype(float),
            "sex": np.tile(["F", "M"], n // 2),
            "site": np.repeat(["a", "b", "c"], n // 3),
        }
    )


def _pair_with_correlation(n: int, r: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Two vectors whose sample correlation is exactly r."""
    z = rng.normal(size=(n, 2))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)  # orthonormal, centred columns (centred input stays centred)
    u, v = q[:, 0], q[:, 1]
    return u, r * u + np.sqrt(1 - r**2) * v


# --- reference design -------------------------------------------------------------------


def test_reference_design_matches_nilearn_example(table):
    """The design of nilearn's second-level association example, built the way the example
    builds it (``[pseudo, 1]`` as ``["fluency", "intercept"]``) and with nilearn's
    ``make_second_level_design_matrix``."""
    from nilearn.glm.second_level import make_second_level_design_matrix

    d = make_design(table, ["pseudo"], rename={"pseudo": "fluency"})
    tested_var = table["pseudo"].to_numpy()
    example = pd.DataFrame(np.column_stack([tested_var, np.ones_like(tested_var)]),
                           columns=["fluency", "intercept"])
    confounds = pd.DataFrame({"subject_label": table["subject"], "fluency": tested_var})
    with warnings.catch_warnings():  # nilearn calls cond(X) > X.size "singular" (it is not)
        warnings.simplefilter("ignore", UserWarning)
        nilearn_dm = make_second_level_design_matrix(table["subject"].tolist(), confounds)
    assert np.linalg.matrix_rank(nilearn_dm.to_numpy(dtype=float)) == 2
    for ref in (example, nilearn_dm):
        assert list(ref.columns) == list(d.columns)
        np.testing.assert_array_equal(d.matrix.to_numpy(), ref.to_numpy(dtype=float))
    assert isinstance(d, Design)
    assert d.columns == ("fluency", "intercept")
    assert d.matrix.index.name == "subject"
    assert d.matrix.index.tolist() == table["subject"].tolist()
    np.testing.assert_array_equal(d.matrix["fluency"], table["pseudo"])  # not centred
    np.testing.assert_array_equal(d.matrix["intercept"], 1.0)
    assert all(dt == np.float64 for dt in d.matrix.dtypes)
    assert d.formula is None
    assert d.vif.index.tolist() == ["fluency"] and d.vif["fluency"] == pytest.approx(1.0)
    assert "fluency" in d.summary() and "24 subjects" in d.summary()
    assert d.to_frame() is not d.matrix


def test_intercept_only_and_no_intercept(table):
    assert make_design(table).columns == ("intercept",)
    d = make_design(table, ["pseudo", "age"], intercept=False)
    assert d.columns == ("pseudo", "age") and not d.has_intercept


def test_accepts_dataset_like_object(table):
    class Stand:
        pass

    ds = Stand()
    ds.table = table
    assert make_design(ds, ["age"]).shape == (24, 2)


# --- closed forms: VIF ------------------------------------------------------------------


def test_vif_orthogonal_columns_is_one(rng):
    n = 16
    a = np.tile([1.0, -1.0], n // 2)
    b = np.tile([1.0, 1.0, -1.0, -1.0], n // 4)
    t = pd.DataFrame({"subject": [f"s{i}" for i in range(n)], "a": a, "b": b})
    d = make_design(t, ["a", "b"])
    np.testing.assert_allclose(d.vif.to_numpy(), [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(d.correlation().to_numpy(), np.eye(2), atol=1e-12)


@pytest.mark.parametrize("r", [0.0, 0.3, 0.8, -0.95])
def test_vif_two_correlated_columns_closed_form(r, rng):
    x1, x2 = _pair_with_correlation(30, r, rng)
    t = pd.DataFrame({"subject": [f"s{i}" for i in range(30)], "x1": x1 + 5, "x2": 3 * x2})
    d = make_design(t, ["x1", "x2"])
    expected = 1.0 / (1.0 - r**2)
    np.testing.assert_allclose(d.vif.to_numpy(), [expected, expected], rtol=1e-9)
    assert d.correlation().loc["x1", "x2"] == pytest.approx(r, abs=1e-12)


def test_vif_three_columns_matches_inverse_correlation(rng):
    X = rng.normal(size=(40, 3)) @ np.array([[1, 0.5, 0.2], [0, 1, 0.7], [0, 0, 1.0]])
    t = pd.DataFrame(X, columns=["a", "b", "c"]).assign(subject=[f"s{i}" for i in range(40)])
    vif = make_design(t, ["a", "b", "c"]).vif.to_numpy()
    np.testing.assert_allclose(vif, np.diag(np.linalg.inv(np.corrcoef(X.T))), rtol=1e-9)


def test_variance_inflation_direct():
    m = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [1.0, 2, 3, 5]})
    v = variance_inflation(m)
    r = np.corrcoef(m["a"], m["b"])[0, 1]
    np.testing.assert_allclose(v.to_numpy(), 1 / (1 - r**2))


# --- centring / standardising -----------------------------------------------------------


def test_center(table):
    d = make_design(table, ["pseudo", "age"], center=True)
    np.testing.assert_allclose(d.matrix[["pseudo", "age"]].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(d.matrix["pseudo"].std(), table["pseudo"].std())
    np.testing.assert_array_equal(d.matrix["intercept"], 1.0)


def test_standardize(table):
    d = make_design(table, ["pseudo", "age"], standardize=True)
    np.testing.assert_allclose(d.matrix[["pseudo", "age"]].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(d.matrix[["pseudo", "age"]].std(ddof=1), 1, rtol=1e-12)
    z = (table["pseudo"] - table["pseudo"].mean()) / table["pseudo"].std(ddof=1)
    np.testing.assert_allclose(d.matrix["pseudo"], z)
    # VIF is scale free
    raw = make_design(table, ["pseudo", "age"])
    np.testing.assert_allclose(d.vif, raw.vif)


# --- formula path -----------------------------------------------------------------------


def test_formula_with_categorical(table):
    d = make_design(table, formula="pseudo + age + C(sex)")
    assert d.columns == ("pseudo", "age", "C(sex)[T.M]", "intercept")
    assert d.formula == "pseudo + age + C(sex)"
    np.testing.assert_array_equal(d.matrix["C(sex)[T.M]"], (table["sex"] == "M").astype(float))
    np.testing.assert_array_equal(d.matrix["pseudo"], table["pseudo"])
    # same numbers as the column path for the numeric part
    c = make_design(table, ["pseudo", "age"])
    np.testing.assert_array_equal(d.matrix[["pseudo", "age", "intercept"]], c.matrix)


def test_formula_intercept_rules(table):
    assert make_design(table, formula="pseudo").columns == ("pseudo", "intercept")
    assert make_design(table, formula="1 + pseudo").columns == ("pseudo", "intercept")
    assert make_design(table, formula="pseudo", intercept=False).columns == ("pseudo",)
    assert make_design(table, formula="pseudo - 1").columns == ("pseudo",)
    assert make_design(table, formula="pseudo + 1", intercept=False).columns == ("pseudo",)
    # without intercept, a categorical gets full dummy coding (still full rank)
    d = make_design(table, formula="pseudo + C(sex)", intercept=False)
    assert d.columns == ("pseudo", "C(sex)[F]", "C(sex)[M]")


def test_formula_rename_and_transform(table):
    d = make_design(table, formula="pseudo + np.log(age)", rename={"pseudo": "fluency"})
    assert d.columns == ("fluency", "np.log(age)", "intercept")
    np.testing.assert_allclose(d.matrix["np.log(age)"], np.log(table["age"]))


# --- rank deficiency --------------------------------------------------------------------


def test_rank_deficiency_names_collinear_columns(table):
    t = table.assign(double=2 * table["pseudo"], other=table["age"])
    with pytest.raises(DesignError, match=r"rank deficient.*\['pseudo', 'double'\]") as exc:
        make_design(t, ["pseudo", "age", "double"])
    assert "'age'" not in str(exc.value).split("linearly")[0]
    # the dependency, scaled so that its first column has coefficient 1
    assert "(1*pseudo -0.5*double = 0)" in str(exc.value)


def test_one_residual_degree_of_freedom_is_enough(table):
    """p columns need p + 1 subjects: exactly that many is a valid design, one fewer is not."""
    three = table.iloc[:3]
    assert make_design(three, ["pseudo"]).shape == (3, 2)
    with pytest.raises(DesignError, match="at least 3 subjects"):
        make_design(table.iloc[:2], ["pseudo"])


def test_rank_deficiency_sum_of_columns(table):
    t = table.assign(total=table["pseudo"] + table["age"])
    with pytest.raises(DesignError, match=r"\['pseudo', 'age', 'total'\] are linearly"):
        make_design(t, ["pseudo", "age", "total"])


def test_rank_deficiency_with_intercept_in_formula(table):
    # site dummies + a covariate that equals the sum of two dummies + intercept... -> dependent
    t = table.assign(not_a=(table["site"] != "a").astype(float))
    with pytest.raises(DesignError, match=r"rank deficient.*not_a"):
        make_design(t, formula="C(site) + not_a")


# --- bad inputs -------------------------------------------------------------------------


def _bad_tables(table):
    t = table.copy()
    cases = {
        "unknown column": (t, dict(columns=["fluency"]),
                           r"\['fluency'\] not in the table; use the table's columns: "
                           r"\['pseudo', 'age', 'sex', 'site'\]"),
        "all-NaN covariate": (t.assign(iq=np.nan), dict(columns=["iq"]),
                              r"'iq' is entirely missing \(all 24 values"),
        "constant covariate": (t.assign(scanner=3.0), dict(columns=["pseudo", "scanner"]),
                               r"'scanner' is constant \(value 3 for all 24 subjects\); "
                               r"with an intercept it is collinear"),
        "categorical with a one-subject level": (
            t.assign(sex=["F"] + ["M"] * (len(t) - 1)), dict(columns=["sex"]),
            r"column 'sex': level\(s\) \['F'\] have a single subject"),
        "numbers stored as text": (t.assign(p=t["pseudo"].astype(str).where(t.index != 3, "n/a")),
                                   dict(columns=["p"]), r"'p' is not numeric.*'n/a'.*na_values"),
        "missing values": (t.assign(pseudo=t["pseudo"].where(~t.index.isin([2, 5]))),
                           dict(columns=["pseudo"]),
                           r"'pseudo' has 2 missing values \(subjects S03, S06\).*run_qc"),
        "infinite value": (t.assign(age=t["age"].where(t.index != 0, np.inf)),
                           dict(columns=["age"]), r"'age' has 1 infinite values \(subjects \['S01'\]"),
        "duplicated subject ids": (t.assign(subject=["S01"] + t["subject"].tolist()[:-1]),
                                   dict(columns=["pseudo"]),
                                   r"subject ids must be unique.*\['S01'\] \(2 rows\)"),
        "too few subjects": (t.iloc[:3], dict(columns=["pseudo", "age"]),
                             r"3 subjects for 3 columns.*at least 4 subjects"),
        "missing subject column": (t.drop(columns="subject"), dict(columns=["pseudo"]),
                                   r"subject_column 'subject' not in the table"),
        "formula unknown variable": (t, dict(formula="pseudo + iq"),
                                     r"formula 'pseudo \+ iq' uses \['iq'\], not in the table"),
        "formula missing values": (t.assign(age=t["age"].where(t.index != 7)),
                                   dict(formula="pseudo + C(sex) + age"),
                                   r"'age' has 1 missing values \(subjects S08\)"),
        "formula constant": (t.assign(k=1.5), dict(formula="pseudo + k"),
                             r"'k' is constant"),
        "bad rename": (t, dict(columns=["pseudo"], rename={"pseudoo": "fluency"}),
                       r"rename: \['pseudoo'\] not among the design columns"),
        "rename collision": (t, dict(columns=["pseudo", "age"], rename={"age": "pseudo"}),
                             r"\['pseudo'\] appear twice"),
    }
    return cases


BAD = [
    "unknown column", "all-NaN covariate", "constant covariate", "categorical with a one-subject level",
    "numbers stored as text", "missing values", "infinite value", "duplicated subject ids",
    "too few subjects", "missing subject column", "formula unknown variable",
    "formula missing values", "formula constant", "bad rename", "rename collision",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_raise_design_error(case, table):
    t, kwargs, match = _bad_tables(table)[case]
    with pytest.raises(DesignError, match=match):
        make_design(t, **kwargs)


def test_design_error_is_value_error(table):
    with pytest.raises(ValueError):
        make_design(table, ["nope"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(columns=["pseudo"], formula="pseudo"), r"either columns= or formula="),
        (dict(formula="y ~ pseudo"), r"right-hand side only"),
        (dict(formula=""), r"non-empty string"),
        (dict(columns=["pseudo"], rename=["fluency"]), r"rename: expected a dict"),
    ],
)
def test_bad_parameters(kwargs, match, table):
    with pytest.raises(ParameterError, match=match):
        make_design(table, **kwargs)


def test_not_a_table():
    with pytest.raises(ParameterError, match=r"expected a pandas DataFrame.*found list"):
        make_design([1, 2, 3], ["a"])


def test_constant_column_allowed_without_intercept(table):
    d = make_design(table.assign(k=1.0), ["pseudo", "k"], intercept=False)
    assert d.columns == ("pseudo", "k")
    assert np.isnan(d.vif["k"])


def test_high_vif_is_logged(rng, caplog):
    x1, x2 = _pair_with_correlation(30, 0.99, rng)
    t = pd.DataFrame({"subject": [f"s{i}" for i in range(30)], "x1": x1, "x2": x2})
    with caplog.at_level("WARNING", logger="glmkit"):
        d = make_design(t, ["x1", "x2"])
    assert d.vif["x1"] == pytest.approx(1 / (1 - 0.99**2))
    assert "VIF > 10" in caplog.text


# --- the demo ---------------------------------------------------------------------------


def test_demo_design_before_and_after_qc(demo):
    with pytest.raises(DesignError, match=r"'pseudo' has 5 missing values "
                                          r"\(subjects S15, S38, S62, S81, S87\)"):
        make_design(demo.table, ["pseudo"])
    from glmkit.data.qc import run_qc

    kept = run_qc(demo, variables=["pseudo"]).apply(demo)
    d = make_design(kept, ["pseudo"], rename={"pseudo": "fluency"})
    assert d.columns == ("fluency", "intercept")
    assert d.subjects == kept.subjects and len(d.subjects) == 88  # S71 flagged, kept
    full = make_design(kept.table, formula="pseudo + age + C(sex) + C(site)")
    assert full.columns[-1] == "intercept" and full.columns[:2] == ("pseudo", "age")
    assert (full.vif < 10).all()
