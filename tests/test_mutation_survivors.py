"""Tests written for the last survivors of benchmarks/mutation.py (run 'after'): each pins a
boundary the rest of the suite did not reach, against a reference computed here."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glmkit.errors import DesignError
from glmkit.stats.design import make_design
from glmkit.stats.glm import fit_second_level
from glmkit.stats.threshold import cluster_table

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def test_smoothing_of_zero_is_no_smoothing(rng):
    """smoothing_fwhm=0 is valid and means no smoothing (as None); a negative one is not."""
    maps = [nib.Nifti1Image(rng.standard_normal((6, 6, 6)) + 1.0, AFFINE) for _ in range(10)]
    design = pd.DataFrame({"x": rng.standard_normal(10), "intercept": 1.0})
    plain = fit_second_level(maps, design).compute_contrast("x").z
    zero = fit_second_level(maps, design, smoothing_fwhm=0).compute_contrast("x").z
    np.testing.assert_array_equal(zero, plain)
    with pytest.raises(ValueError, match="smoothing_fwhm"):
        fit_second_level(maps, design, smoothing_fwhm=-1.0)


def test_one_sided_cluster_table_at_a_threshold_of_zero_lists_positive_clusters():
    """stat_threshold=0, one-sided: the clusters of z > 0 (positive peaks), as for any
    positive threshold; the negative-threshold branch (z < t) starts below 0, not at 0."""
    data = np.zeros((12, 12, 12))
    data[2:4, 2:4, 2:4] = 2.5  # a positive blob
    data[8:10, 8:10, 8:10] = -3.0  # a stronger negative one
    table = cluster_table(nib.Nifti1Image(data, AFFINE), stat_threshold=0.0)
    peaks = table["peak_stat"].to_numpy(dtype=float)
    assert peaks.size == 1 and peaks[0] == pytest.approx(2.5)
    below = cluster_table(nib.Nifti1Image(data, AFFINE), stat_threshold=-1.0)
    assert below["peak_stat"].astype(float).min() == pytest.approx(-3.0)


def test_formula_syntax_error_quotes_the_parsers_first_line():
    """The message carries formulaic's own first line (what is wrong and where)."""
    from formulaic import Formula

    formula = "score + (age"
    with pytest.raises(Exception) as parsed:  # noqa: PT011 - formulaic's own error class
        Formula(formula).required_variables
    first = str(parsed.value).strip().splitlines()[0]
    table = pd.DataFrame({"subject": [f"s{i}" for i in range(4)],
                          "score": [1.0, 2, 3, 4], "age": [20.0, 30, 40, 50]})
    with pytest.raises(DesignError) as info:
        make_design(table, formula=formula)
    assert f"cannot be parsed: {first};" in str(info.value)
