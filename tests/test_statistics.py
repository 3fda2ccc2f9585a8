"""The registry of permutation statistics (glmkit/stats/statistics.py).

A toy statistic registered from this module alone must be accepted by the run settings,
computed by the engine, written as ``maps/logp_<name>.nii.gz`` and labelled in the report:
adding a statistic touches one place.
"""

from __future__ import annotations

import numpy as np
import pytest

import glmkit
from glmkit.errors import ParameterError
from glmkit.settings import RunSettings
from glmkit.stats.statistics import (StatisticSpec, get_statistic, register_statistic,
                                     statistic_names, unregister_statistic)

TOY = StatisticSpec(
    name="maxabs",
    label="toy permutation maximum of |t|",
    short="max-|t|",
    units="maximum |t| over voxels (toy)",
    observed=lambda t, ctx, cache: np.abs(t),
    null_max=lambda maps, ctx, cache: np.abs(maps).max(axis=1),
    methods=lambda result: "a toy maximum of |t| over voxels [@toy2026]",
    references={"toy2026": "Toy A (2026). A statistic registered by a test. J Tests 1:1."},
)


@pytest.fixture
def toy():
    register_statistic(TOY)
    try:
        yield TOY
    finally:
        unregister_statistic(TOY.name)


def test_builtins_are_registered_with_their_map_names():
    assert statistic_names()[:4] == ("voxel", "cluster_size", "cluster_mass", "tfce")
    names = {s: get_statistic(s).map_name for s in statistic_names()}
    assert names == {"voxel": "logp_maxt", "cluster_size": "logp_cluster_size",
                     "cluster_mass": "logp_cluster_mass", "tfce": "logp_tfce"}


def test_unknown_and_duplicate_statistics_are_clear_errors(toy):
    with pytest.raises(ParameterError, match=r"unknown statistic 'tfcee' \(did you mean 'tfce'"):
        get_statistic("tfcee")
    with pytest.raises(ParameterError, match="already registered"):
        register_statistic(TOY)
    with pytest.raises(ParameterError, match="map name 'logp_maxt' is already used"):
        register_statistic(StatisticSpec(name="other", map_name="logp_maxt", label="x",
                                         short="x", units="x", observed=TOY.observed,
                                         null_max=TOY.null_max, methods=TOY.methods))
    with pytest.raises(ParameterError, match="identifier"):
        StatisticSpec(name="max abs", label="x", short="x", units="x", observed=TOY.observed,
                      null_max=TOY.null_max, methods=TOY.methods)


def test_settings_accept_a_registered_statistic_only_while_registered(toy):
    assert RunSettings(statistics="voxel,maxabs").statistics == ("voxel", "maxabs")
    unregister_statistic("maxabs")
    try:
        with pytest.raises(ParameterError, match="maxabs"):
            RunSettings(statistics="voxel,maxabs")
    finally:
        register_statistic(TOY)


def test_engine_computes_the_toy_as_a_two_sided_max_t(toy):
    """One-sided max |t| is two-sided max-T: same permutations, same null, same p."""
    rng = np.random.default_rng(3)
    n = 24
    Y = rng.gamma(2.0, size=(n, 300))  # skewed
    Y[0] *= 3.0  # one subject at 3x scale
    Y[:, :10] += np.linspace(-1, 1, n)[:, None]
    X = np.column_stack([np.linspace(-1, 1, n) ** 3, rng.standard_normal(n), np.ones(n)])
    perms = np.array([rng.permutation(n) for _ in range(99)])
    toy_run = glmkit.permutation_test(Y, X, [1, 0, 0], n_perm=99, statistics=("maxabs",),
                                      _permutations=perms, verbose=False)
    ref = glmkit.permutation_test(Y, X, [1, 0, 0], n_perm=99, two_sided=True,
                                  _permutations=perms, verbose=False)
    np.testing.assert_allclose(toy_run.null_max["maxabs"], ref.null_max["voxel"], rtol=1e-10)
    np.testing.assert_allclose(toy_run.logp_fwer["maxabs"], ref.logp_fwer["voxel"], rtol=1e-10)
    # and the null maxima equal a plain refit per permutation (Freedman-Lane)
    Z = X[:, 1:]
    hat_z = Z @ np.linalg.pinv(Z)
    resid = Y - hat_z @ Y
    for k in (0, 17, 98):  # permuted data: row i takes the residual of row perms[k][i]
        t = _refit_t(X, hat_z @ Y + resid[perms[k]], n)
        assert np.isclose(toy_run.null_max["maxabs"][k + 1], np.abs(t).max(), rtol=1e-8)


def _refit_t(X, Y, n):
    beta, rss = np.linalg.lstsq(X, Y, rcond=None)[:2]
    return beta[0] / np.sqrt(rss / (n - X.shape[1]) * np.linalg.inv(X.T @ X)[0, 0])


@pytest.mark.slow
def test_toy_statistic_runs_end_to_end_into_the_report(toy, tmp_path):
    from glmkit.pipeline import run_analysis

    result = run_analysis(n_perm=49, statistics=("voxel", "maxabs"), random_state=1)
    assert result.permutation.statistics == ("voxel", "maxabs")
    glmkit.write_report(result, tmp_path)
    assert (tmp_path / "maps" / "logp_maxabs.nii.gz").is_file()
    page = (tmp_path / "report.html").read_text()
    assert TOY.label in page
    assert TOY.units in page
    assert "A statistic registered by a test" in page  # its reference in the methods
