"""Simulated analyzers with a known true calibration map: how far each fitted map lands from it.

Each case is a truth (a map from raw score to the real probability of a correct finding) and
a label count n. A repetition draws n scores from the analyzer's score distribution and labels
from the truth; the error of a fitted map is the mean |fitted - true| over a fixed sample of
``N_EVAL`` scores from the same distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

N_EVAL = 4000
SIZES = (50, 100, 200, 500, 2000)
SCORE_CLIP = 1e-12


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, SCORE_CLIP, 1.0 - SCORE_CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * s))


@dataclass(frozen=True)
class Truth:
    name: str
    family: str  # "parametric" (a Platt map) or "non-parametric"
    true_map: Callable[[np.ndarray], np.ndarray]
    draw_scores: Callable[[np.random.Generator, int], np.ndarray]


def _beta_scores(a: float, b: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.beta(a, b, n)


def _saturated_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    # A naive-Bayes-like analyzer: log-odds spread far beyond +-10.
    return _sigmoid(rng.normal(0.5, 6.0, n))


def _kink(p: np.ndarray) -> np.ndarray:
    return np.where(p < 0.6, 0.3 * p, 0.18 + 1.8 * (p - 0.6))


def _plateau(p: np.ndarray) -> np.ndarray:
    return np.where(p < 0.4, 0.1 + 0.75 * p, np.where(p < 0.7, 0.4, 0.4 + 1.8 * (p - 0.7)))


TRUTHS: tuple[Truth, ...] = (
    Truth("calibrated", "parametric", lambda p: p.copy(), _beta_scores(1.5, 1.5)),
    Truth(
        "overconfident", "parametric", lambda p: _sigmoid(0.45 * _logit(p)), _beta_scores(0.6, 0.6)
    ),
    Truth(
        "underconfident", "parametric", lambda p: _sigmoid(2.2 * _logit(p)), _beta_scores(2.0, 2.0)
    ),
    Truth("shifted", "parametric", lambda p: _sigmoid(_logit(p) - 1.2), _beta_scores(1.2, 0.9)),
    Truth("saturated", "parametric", lambda p: _sigmoid(0.2 * _logit(p) + 0.3), _saturated_scores),
    Truth(
        "wavy",
        "non-parametric",
        lambda p: 0.5 + 0.7 * (p - 0.5) - 0.6 * np.sin(2 * np.pi * p) / (2 * np.pi),
        _beta_scores(1.0, 1.0),
    ),
    Truth("kink", "non-parametric", _kink, _beta_scores(1.0, 1.0)),
    Truth("plateau", "non-parametric", _plateau, _beta_scores(1.2, 1.2)),
)


def sklearn_sigmoid(scores: np.ndarray, labels: np.ndarray, evaluation: np.ndarray) -> np.ndarray:
    """Unregularised logistic regression on the log-odds (sigmoid-on-logit, no smoothing)."""
    model = LogisticRegression(C=np.inf, max_iter=1000)
    model.fit(_logit(scores)[:, None], labels)
    return model.predict_proba(_logit(evaluation)[:, None])[:, 1]


def sklearn_isotonic(scores: np.ndarray, labels: np.ndarray, evaluation: np.ndarray) -> np.ndarray:
    model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    return model.fit(scores, labels).predict(evaluation)


@dataclass(frozen=True)
class Draw:
    truth: Truth
    n: int
    rep: int
    scores: np.ndarray
    labels: np.ndarray
    evaluation: np.ndarray
    true_eval: np.ndarray


def draws(reps: int) -> list[Draw]:
    """Every (truth, n, repetition) sample, deterministic; labels always hold both classes."""
    out = []
    for t_index, truth in enumerate(TRUTHS):
        eval_rng = np.random.default_rng([t_index, 10**6])
        evaluation = truth.draw_scores(eval_rng, N_EVAL)
        true_eval = truth.true_map(evaluation)
        for n in SIZES:
            for rep in range(reps):
                rng = np.random.default_rng([t_index, n, rep])
                while True:
                    scores = truth.draw_scores(rng, n)
                    labels = (rng.random(n) < truth.true_map(scores)).astype(np.float64)
                    if min(labels.sum(), n - labels.sum()) >= 2:
                        break
                out.append(Draw(truth, n, rep, scores, labels, evaluation, true_eval))
    return out
