"""Evidence-shrunk Platt with one prior precision per weight (automatic relevance determination)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from app.calibration.priors import fit_platt_ard, fit_platt_prior


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def _draw(slope: float, intercept: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(2.0, 2.0, n)
    truth = 1.0 / (1.0 + np.exp(-(slope * _logit(scores) + intercept)))
    return scores, (rng.random(n) < truth).astype(np.float64)


def _identity(p: np.ndarray) -> np.ndarray:
    return p


def test_an_intercept_the_labels_do_not_need_is_pinned_to_the_reference():
    # Temperature-like miscalibration: the slope is off, the intercept is the reference's.
    pinned = 0
    for seed in range(6):
        scores, labels = _draw(0.5, 0.0, 3000, seed)
        fitted = fit_platt_ard(scores, labels, _identity, np.random.default_rng(seed))
        slope_precision, intercept_precision = fitted.fit.lam
        plain = LogisticRegression(C=np.inf).fit(_logit(scores)[:, None], labels)
        assert intercept_precision > 10.0 * slope_precision
        assert abs(fitted.fit.weights[1]) < abs(plain.intercept_[0])
        if intercept_precision >= 1e5:
            pinned += 1
            # The slope is then the one-parameter maximum-likelihood fit (temperature
            # scaling), up to the slope's own weak prior.
            no_intercept = LogisticRegression(C=np.inf, fit_intercept=False)
            no_intercept.fit(_logit(scores)[:, None], labels)
            assert abs(fitted.fit.weights[1]) < 1e-3
            assert fitted.fit.weights[0] == pytest.approx(no_intercept.coef_[0, 0], abs=0.01)
    # An intercept estimate within about one standard error of 0 is pruned (Tipping 2001).
    assert pinned >= 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_weights_are_freed_when_the_labels_need_them(seed):
    scores, labels = _draw(1.6, -1.0, 3000, seed)
    fitted = fit_platt_ard(scores, labels, _identity, np.random.default_rng(seed))
    plain = LogisticRegression(C=np.inf).fit(_logit(scores)[:, None], labels)
    assert np.all(fitted.fit.lam < 10.0)
    assert fitted.fit.weights[0] == pytest.approx(plain.coef_[0, 0], abs=0.02)
    assert fitted.fit.weights[1] == pytest.approx(plain.intercept_[0], abs=0.02)


def test_one_precision_each_shrinks_a_needless_intercept_harder_than_a_shared_one():
    # With one precision for both weights, the slope far from 1 keeps the prior weak,
    # so the intercept is left nearly free; apart, the intercept's precision grows.
    scores, labels = _draw(0.5, 0.0, 500, 3)
    rng = np.random.default_rng(0)
    shared = fit_platt_prior(scores, labels, _identity, rng)
    apart = fit_platt_ard(scores, labels, _identity, rng)
    assert apart.fit.lam[1] > 10.0 * shared.fit.lam[0]
    assert abs(apart.fit.weights[1]) <= abs(shared.fit.weights[1])
