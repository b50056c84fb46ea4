"""Calibrated scores: a cosine against the scores of real matches, and within its population."""

import numpy as np
import pytest

from probex.language.calibration import (calibrated_match, match_strength, standard_scores, true_match_scores,
                                         true_matches)


def test_match_is_the_share_of_reference_scores_below():
    reference = np.array([0.9, 0.5, 0.7, 0.8])
    assert list(calibrated_match([0.4, 0.5, 0.75, 0.95], reference)) == [0.0, 0.0, 0.5, 1.0]


def test_a_best_score_below_the_reference_quantile_is_weak_and_above_is_strong():
    reference = np.linspace(0.8, 1.0, 101)
    weak = match_strength(0.35, reference)
    assert weak.weak and weak.match == 0.0 and weak.threshold == pytest.approx(0.81)
    strong = match_strength(0.95, reference)
    assert not strong.weak and strong.match == pytest.approx(0.75, abs=0.01)
    assert strong.typical == pytest.approx((0.81, 0.99))


def test_standard_scores_are_centred_and_scaled_and_zero_when_all_equal():
    z = standard_scores(np.array([1.0, 2.0, 3.0, 4.0]))
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    assert list(standard_scores(np.ones(3))) == [0.0, 0.0, 0.0]


def test_true_match_scores_pair_each_model_with_its_own_concepts_name():
    models = np.eye(3)
    names = np.eye(3)[[2, 0]]  # class 0 = axis 2, class 1 = axis 0
    rows, columns = true_matches([["b"], ["x"], ["a", "b"]], ["a", "b"])
    assert (rows, columns) == ([0, 2, 2], [1, 0, 1])
    assert list(true_match_scores(models, names, rows, columns)) == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="cannot be calibrated"):
        true_matches([["x"]], ["a"])
