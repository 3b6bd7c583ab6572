"""Every ValueError the entry-point checks raise, with its message."""

from __future__ import annotations

import numpy as np
import pytest

from app.calibration import fit_calibrator, validate_scores_labels


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3, np.nan], None, "scores contain NaN at index 3"),
        ([0.1, np.inf], None, "scores contain inf at index 1"),
        ([0.1, -np.inf], None, "scores contain -inf at index 1"),
        ([0.1, 1.5, 0.2], None, "scores must lie in [0, 1]; found 1.5 at index 1"),
        ([-0.01, 0.5], None, "scores must lie in [0, 1]; found -0.01 at index 0"),
        ([[0.1, 0.2]], None, "scores must be 1-D, got shape (1, 2)"),
        ([], None, "scores is empty"),
        (["a", "b"], None, "scores must be numeric"),
        ([0.1, 0.2], [0, 1, 1], "scores and labels have different lengths: 2 != 3"),
        ([0.1, 0.2], [0, 2], "labels must be 0 or 1; found 2 at index 1"),
        ([0.1, 0.2], [0.0, 0.5], "labels must be 0 or 1; found 0.5 at index 1"),
        ([0.1, 0.2], ["yes", "no"], "labels must be 0/1 numbers or booleans"),
        ([0.1, 0.2], [[0, 1]], "labels must be 1-D"),
    ],
)
def test_messages(scores, labels, message):
    with pytest.raises(ValueError) as info:
        validate_scores_labels(scores, labels)
    assert message in str(info.value)


def test_fitting_needs_both_classes_and_two_of_each():
    with pytest.raises(ValueError, match=r"only one class: 1 \(positive\)"):
        fit_calibrator([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match=r"only one class: 0 \(negative\)"):
        validate_scores_labels([0.1, 0.2], [False, False], require_both_classes=True)
    with pytest.raises(ValueError, match="at least 2 samples of each class to fit, got 1 positive"):
        fit_calibrator([0.1, 0.2, 0.3, 0.4], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="labels are required"):
        validate_scores_labels([0.1], require_both_classes=True)


def test_min_samples():
    with pytest.raises(ValueError, match="need at least 50 samples, got 3"):
        validate_scores_labels([0.1, 0.2, 0.3], min_samples=50)


@pytest.mark.parametrize(
    "labels", [[0, 1, 1], [0.0, 1.0, 1.0], [False, True, True], np.array([0, 1, 1], np.int8)]
)
def test_accepted_label_types(labels):
    scores, out = validate_scores_labels(np.array([0.0, 0.5, 1.0]), labels)
    assert scores.dtype == np.float64 and out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.0, 1.0, 1.0])


def test_scores_are_not_copied_when_already_float64():
    scores = np.array([0.2, 0.8])
    assert validate_scores_labels(scores)[0] is scores
