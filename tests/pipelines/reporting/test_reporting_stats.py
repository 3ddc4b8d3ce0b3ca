"""p-values that say what they know: the resampling floor and Holm's adjustment, by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from mift_kedro.pipelines.reporting import metrics as M
from mift_kedro.pipelines.reporting import stats


def test_holm_matches_hand_computed_values():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; NaN (no test) is neither adjusted nor counted in m
    adjusted = stats.holm([0.5, math.nan, 0.4])
    assert adjusted[0] == pytest.approx(0.8) and adjusted[2] == pytest.approx(0.8) and math.isnan(adjusted[1])
    assert stats.holm([0.6, 0.7, 0.9]).tolist() == [1.0, 1.0, 1.0]
    assert stats.holm([0.02]).tolist() == [0.02]  # a family of one is not adjusted


def test_the_floor_is_the_paired_bootstraps_smallest_p_value():
    # no resample is as extreme as a large, consistent difference: p = (1 + 0) / (B + 1)
    truth = np.ones(200)
    good, bad = M.mean_metric("a", truth), M.mean_metric("a", np.zeros(200))
    for resamples in (100, 1000):
        test = M.paired_bootstrap(good, bad, M.bootstrap_weights(200, resamples, seed=0))
        assert test.p_value == stats.p_floor(resamples) == 1 / (resamples + 1)
        assert stats.at_floor(test.p_value, resamples)
    assert not stats.at_floor(2 / 1001, 1000) and not stats.at_floor(1 / 1001, None)


@pytest.mark.parametrize(
    ("p", "resamples", "bound", "text"),
    [
        (1 / 1001, 1000, False, "p < 0.001"),
        (1 / 101, 100, False, "p < 0.01"),
        (1 / 201, 200, False, "p < 0.005"),
        (1 / 1000, 999, False, "p ≤ 0.001"),  # the floor is exactly 0.001
        (0.0629, 1000, False, "p=0.063"),
        (0.0016, 1000, False, "p=0.002"),  # above the floor: a measurement
        (0.016, 1000, True, "p ≤ 0.016"),
        (math.nan, 1000, False, "p n/a"),
    ],
)
def test_format_p(p, resamples, bound, text):
    assert stats.format_p(p, resamples, bound=bound) == text


def test_comparison_texts_mark_holm_values_that_come_from_the_floor():
    family = pd.DataFrame({"p_value_vs_base": [math.nan, 1 / 1001, 0.2, 0.01], "bootstrap_resamples": 1000})
    texts = stats.comparison_texts(family)
    # Holm, m = 3: 1/1001 x 3 = 0.0030; 0.01 x 2 = 0.02; 0.2 x 1 -> 0.2
    assert texts.tolist() == ["", "p < 0.001, Holm p ≤ 0.003", "p=0.200, Holm p=0.200", "p=0.010, Holm p=0.020"]
    note = stats.family_note(family, "in this table")
    assert "the 3 comparisons with the base model in this table" in note and "`p < 0.001`" in note
