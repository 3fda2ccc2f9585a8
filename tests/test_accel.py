"""Tail acceleration (glmkit.stats.tail, permutation_test(accel="tail")).

The accelerated p-values of 500 permutations are checked against 50,000 permutations of the
same data (null data and a planted effect): over 30 seeds their log ratio to the reference
has no bias beyond the Monte Carlo error of both. The fit itself is checked against a
literal transcription of PALM's palm_pareto.m written here, where the two agree by design
(an unbounded tail).
"""

from __future__ import annotations

import numpy as np
import pytest

from glmkit.errors import ParameterError
from glmkit.settings import RunSettings
from glmkit.stats import tail
from glmkit.stats.permutation import permutation_test

N_REF, N_FAST, SEEDS = 50_000, 500, 30


# --------------------------------------------------------------------------- PALM, literally
def _gpdpvals(x, a, k):
    if abs(k) < np.finfo(float).eps:
        return np.exp(-x / a)
    with np.errstate(invalid="ignore"):
        p = (1 - k * x / a) ** (1 / k)
    return np.where(x > a / k, 0.0, p) if k > 0 else p


def _interp1_extrap(x, xp, fp):
    """MATLAB interp1(xp, fp, x, 'linear', 'extrap') for increasing xp."""
    i = int(np.clip(np.searchsorted(xp, x) - 1, 0, xp.size - 2))
    return fp[i] + (x - xp[i]) * (fp[i + 1] - fp[i]) / (xp[i + 1] - xp[i])


def _palm_pareto(G, Gdist, Pthr=0.10):
    """palm_pareto.m (rev=false, G1out=false) transcribed line by line, MATLAB semantics."""
    nP = Gdist.size
    P = np.array([(Gdist >= g).sum() / nP for g in G])  # palm_datapval
    Pidx = P < Pthr
    if not Pidx.any():
        return P, None
    Gs = np.sort(Gdist)
    Gcdf = np.array([(Gs <= g).sum() for g in Gs]) / nP  # palm_competitive, ascend, mod
    Q = np.arange(751, 1000, 10) / 1000
    q = 1
    Ptail = None
    while Ptail is None and q < Q.size - 1:
        qidx = Gcdf >= Q[q - 1]
        Gtail = Gs[qidx]
        qi = int(np.flatnonzero(qidx)[0]) + 1
        upar = Gs[qi - 1] - Gs[qi - 1:qi + 1].mean() if qi == 1 else Gs[qi - 2:qi].mean()
        ytail = Gtail - upar
        y = G[(G > upar) & Pidx] - upar
        x, s2 = ytail.mean(), ytail.var(ddof=1)
        apar = x * (x**2 / s2 + 1) / 2
        kpar = (x**2 / s2 - 1) / 2
        z = _gpdpvals(ytail, apar, kpar)
        z = np.sort(z)
        n = z.size
        j = np.arange(1, n + 1)
        A2 = -n - (1 / n) * np.sum((2 * j - 1) * (np.log(z) + np.log(1 - z[::-1])))
        k = min(max(kpar, -0.5), 0.9)  # the table's range (PALM writes max(0.5, k))
        row = np.array([np.interp(k, tail._AD_K[::-1], tail._AD_A2[::-1, c]) for c in range(8)])
        pval = min(max(_interp1_extrap(A2, row, tail._AD_P), 0.0), 1.0)
        if pval > 0.05:
            Ptail = (Gtail.size / nP) * _gpdpvals(y, apar, kpar)
        else:
            q += 1
    if Ptail is not None:
        P[(G > upar) & Pidx] = Ptail
    return P, (upar, apar, kpar)


def test_fit_equals_palm_transcription_on_a_heavy_tail():
    rng = np.random.default_rng(1)
    null = rng.pareto(4.0, size=1000) + rng.standard_normal(1000) * 0.01
    values = np.quantile(null, [0.5, 0.9, 0.95, 0.99, 0.999]) * np.array([1, 1, 1, 1, 1.5])
    ref, (u, a, k) = _palm_pareto(values, null)
    assert k < 0  # an unbounded tail: the case where glmkit and PALM coincide
    p, fit, n_refined = tail.tail_pvalues(values, null)
    np.testing.assert_allclose([fit.location, fit.scale, fit.shape], [u, a, k], rtol=1e-12)
    np.testing.assert_allclose(p, ref, rtol=1e-12)
    assert n_refined == 3 and p[-1] < 1 / null.size


def test_bounded_moment_fit_becomes_exponential_and_never_gives_zero():
    """A maximum's null (here of 4 normals) has a light tail whose moment fit is bounded
    (k > 0): PALM's p is then 0 beyond the bound; glmkit fits the exponential tail."""
    null = np.random.default_rng(3).standard_normal((1000, 4)).max(axis=1)
    values = np.array([2.0, 3.5, 6.0])
    palm, (_, a, k) = _palm_pareto(values, null)
    assert k > 0 and palm[-1] == 0.0
    fit = tail.fit_tail(null)
    assert fit is not None and fit.shape == 0.0
    y = np.sort(null)[-fit.n_tail:] - fit.location
    assert fit.scale == pytest.approx(y.mean(), rel=1e-12)
    p, _, _ = tail.tail_pvalues(values, null)
    assert np.all(p > 0) and p[2] < p[1] < p[0] and p[2] < 1 / null.size


def test_no_acceptable_fit_keeps_the_permutation_pvalues():
    null = np.repeat([1.0, 2.0, 3.0], [700, 250, 51])  # ties everywhere: every fit rejected
    values = np.array([2.5, 3.0, 4.0])
    p, fit, n_refined = tail.tail_pvalues(values, null)
    assert fit is None and n_refined == 0
    np.testing.assert_array_equal(p, [(null >= v).mean() for v in values])


# --------------------------------------------------------------------------- against 50,000
def _cohort(planted: bool):
    rng = np.random.default_rng(20261129)
    n, v = 16, 120
    x = rng.standard_normal(n)
    Y = rng.standard_normal((n, v))
    if planted:  # effects graded so that FWER p spans 1e-4 .. 1e-2 across voxels
        Y[:, :40] += np.linspace(0.6, 1.6, 40)[None, :] * x[:, None]
    return Y, np.column_stack([x, np.ones(n)])


def _bias_within_mc_error(log_ratios, p_ref):
    """Mean log10(p_fast / p_ref) over seeds within 3 SE (seeds' spread and the reference's
    binomial error, which dominates near 1e-4: about 5 of 50,000 maxima). The SE must be
    small enough for a factor-2 bias (0.3) to fail at most p-values."""
    log_ratios = np.asarray(log_ratios)
    se_ref = np.log10(np.e) * np.sqrt((1 - p_ref) / (p_ref * N_REF))
    se = np.sqrt(log_ratios.var(axis=0, ddof=1) / log_ratios.shape[0] + se_ref**2)
    bias = log_ratios.mean(axis=0)
    assert np.median(se) < 0.1 and np.all(se < 0.25), se
    assert np.all(np.abs(bias) < 3 * se), (bias, se)


def test_null_data_tail_pvalues_agree_with_many_permutations():
    Y, X = _cohort(planted=False)
    ref = permutation_test(Y, X, [1, 0], n_perm=N_REF, random_state=0, verbose=False)
    null_ref = ref.null_max["voxel"]
    values = np.quantile(null_ref, 1 - np.array([9e-3, 3e-3, 1e-3, 3e-4, 1.2e-4]))
    p_ref = np.array([(null_ref >= v).mean() for v in values])
    assert np.all((p_ref >= 1e-4) & (p_ref <= 1e-2))
    ratios = []
    for seed in range(SEEDS):
        res = permutation_test(Y, X, [1, 0], n_perm=N_FAST, random_state=1000 + seed,
                               accel="tail", verbose=False)
        p, fit, _ = tail.tail_pvalues(values, res.null_max["voxel"][1:])
        assert fit is not None
        ratios.append(np.log10(p / p_ref))
    assert np.all(np.isfinite(ratios))  # p > 0 everywhere
    _bias_within_mc_error(ratios, p_ref)


def test_planted_effect_fwer_pvalues_agree_with_many_permutations():
    Y, X = _cohort(planted=True)
    ref = permutation_test(Y, X, [1, 0], n_perm=N_REF, random_state=0, verbose=False)
    p_ref = 10 ** -ref.logp_fwer["voxel"]
    voxels = np.flatnonzero((p_ref >= 1e-4) & (p_ref <= 1e-2))
    assert voxels.size >= 8
    ratios = []
    below = 0
    for seed in range(SEEDS):
        res = permutation_test(Y, X, [1, 0], n_perm=N_FAST, random_state=2000 + seed,
                               accel="tail", verbose=False)
        assert res.accel == "tail" and res.info["tail"]["voxel"]["fit"] is not None
        p = 10 ** -res.logp_fwer["voxel"][voxels]
        below += int(np.sum(p < 1 / (N_FAST + 1)))
        ratios.append(np.log10(p / p_ref[voxels]))
    assert below > 0  # acceleration reaches below the permutation floor 1/501
    _bias_within_mc_error(ratios, p_ref[voxels])


# --------------------------------------------------------------------------- the result
def test_result_records_the_acceleration_and_stays_plain_above_the_threshold():
    Y, X = _cohort(planted=True)
    kw = dict(n_perm=199, random_state=3, verbose=False)
    plain = permutation_test(Y, X, [1, 0], **kw)
    fast = permutation_test(Y, X, [1, 0], accel="tail", **kw)
    assert plain.accel is None and "tail" not in plain.info and plain.tail_fit() is None
    fit = fast.tail_fit("voxel")
    assert fit is not None and fast.info["tail"]["voxel"]["n_refined"] > 0
    np.testing.assert_array_equal(plain.null_max["voxel"], fast.null_max["voxel"])
    np.testing.assert_array_equal(plain.logp_uncorrected, fast.logp_uncorrected)
    high = 10 ** -plain.logp_fwer["voxel"] >= tail.TAIL_THRESHOLD
    np.testing.assert_array_equal(plain.logp_fwer["voxel"][high], fast.logp_fwer["voxel"][high])
    # the critical value is the fit's: FWER p <= 0.05 exactly above it
    crit = fast.critical_value("voxel", 0.05)
    assert crit == pytest.approx(fit.isf(0.05))
    sig = fast.logp_fwer["voxel"] >= -np.log10(0.05) - 1e-12
    np.testing.assert_array_equal(sig, fast.t > crit)
    text = fast.summary()
    assert "tail acceleration" in text and "generalised Pareto" in text
    assert "tail acceleration" not in plain.summary()


def test_accel_is_validated_in_the_api_and_the_settings():
    Y, X = _cohort(planted=False)
    with pytest.raises(ParameterError, match="accel must be None or one of"):
        permutation_test(Y, X, [1, 0], n_perm=9, accel="gamma", verbose=False)
    assert RunSettings(accel="tail").accel == "tail" and RunSettings().accel is None
    with pytest.raises(ParameterError, match="accel"):
        RunSettings(accel="tails")


def test_methods_say_when_and_how_the_tail_was_used():
    """The report's methods paragraph names the acceleration, its fit and its reference only
    for an accelerated run (the result objects are real; the run around them is minimal)."""
    from types import SimpleNamespace

    import pandas as pd

    from glmkit.report.sections import methods_section

    Y, X = _cohort(planted=True)
    kw = dict(n_perm=199, random_state=3, verbose=False)
    texts = {}
    for accel in (None, "tail"):
        perm = permutation_test(Y, X, [1, 0], accel=accel, **kw)
        result = SimpleNamespace(
            settings=SimpleNamespace(two_sided=False, random_state=3, smoothing_fwhm=None),
            permutation=perm, qc=SimpleNamespace(kept=tuple("abcdefghijklmnop"), excluded=()),
            design=SimpleNamespace(matrix=pd.DataFrame(X, columns=["x", "intercept"]),
                                   formula=None),
            dataset=SimpleNamespace(name="toy"), contrast=SimpleNamespace(stat_type="t"))
        texts[accel] = methods_section(result, 120, 0.05, "x").body
    fit = permutation_test(Y, X, [1, 0], accel="tail", **kw).tail_fit("voxel")
    assert "tail acceleration" not in texts[None] and "Faster permutation" not in texts[None]
    assert (f"the top {fit.tail_fraction:.1%} of its null maxima, shape {fit.shape:.3g}"
            in texts["tail"])
    assert "below 1/(n_perm + 1) = 0.005" in texts["tail"]
    assert "Faster permutation inference" in texts["tail"]  # Winkler et al. 2016, listed
