"""Champion/challenger on simulated paired streams: anytime validity and time to promotion.

The world: a finding's true probability of being right is p ~ Beta(2, 2), its label y ~
Bernoulli(p). Champion and challenger map p through sigmoid(a * logit(p)) with different slopes
a (over- or under-confident). Their expected Brier scores come from quadrature, and the slopes
are solved so that the challenger's expected Brier score is exactly equal to the champion's
(null; two such pairs, one close and one far apart) or exactly 0.01 lower (better). Each
stream feeds the per-record Brier differences (challenger - champion) to
``paired_confidence_sequence`` and looks after every record.

Targets (issue 15): with equal calibrators, the share of streams whose interval ever excludes 0
is at most alpha; with the better challenger, the median number of records to promotion is at
most the fixed-sample two-sided t-test's size at 80% power, computed here from the exact mean
and standard deviation of the differences. The naive t-test re-run after every record is shown
for contrast.

    python bench/shadow.py [--streams 300] [--records 5000] [--alpha 0.05] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import integrate, optimize, stats
from scipy.special import expit, logit
from support import PROJECT_ROOT  # noqa: F401  (puts the project on sys.path)

from app.calibration.sequential import paired_confidence_sequence

TRUE_P = stats.beta(2, 2)
CHALLENGER_SLOPE = 0.9
# Equal pairs: a challenger this under-confident against a champion over-confident just as much
# (in expected Brier score); the further from 1, the more the two disagree record by record.
NULL_CHALLENGER_SLOPES = (0.9, 0.5)
EFFECT = 0.01
POWER = 0.8


def _expect(function) -> float:
    """E over p ~ Beta(2, 2) of ``function(p)``, by adaptive quadrature."""
    value, _ = integrate.quad(
        lambda p: function(p) * TRUE_P.pdf(p), 0.0, 1.0, epsabs=1e-14, epsrel=1e-12, limit=400
    )
    return value


def _calibrated(slope: float, p: np.ndarray | float) -> np.ndarray | float:
    return expit(slope * logit(p))


def excess_brier(slope: float) -> float:
    """Expected Brier score above the ideal, E[(q - p)^2]."""
    return _expect(lambda p: (_calibrated(slope, p) - p) ** 2)


def champion_slope(target_excess: float) -> float:
    """The over-confident slope (> 1) whose excess Brier score is ``target_excess``."""
    return optimize.brentq(lambda a: excess_brier(a) - target_excess, 1.0, 20.0, xtol=1e-14)


def difference_moments(champion: float, challenger: float) -> tuple[float, float]:
    """Exact mean and standard deviation of one record's Brier difference."""

    def squared(p: float) -> float:
        q1, q2 = _calibrated(champion, p), _calibrated(challenger, p)
        when_right = (q2 - 1.0) ** 2 - (q1 - 1.0) ** 2
        when_wrong = q2**2 - q1**2
        return p * when_right**2 + (1.0 - p) * when_wrong**2

    def mean(p: float) -> float:
        q1, q2 = _calibrated(champion, p), _calibrated(challenger, p)
        return p * ((q2 - 1.0) ** 2 - (q1 - 1.0) ** 2) + (1.0 - p) * (q2**2 - q1**2)

    mu = _expect(mean)
    return mu, math.sqrt(_expect(squared) - mu**2)


def t_test_size(effect: float, sd: float, alpha: float, power: float) -> int:
    """Smallest n at which a two-sided one-sample t-test has the given power (noncentral t)."""

    def achieved(n: int) -> float:
        critical = stats.t.ppf(1.0 - alpha / 2.0, n - 1)
        shift = effect * math.sqrt(n) / sd
        return stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)

    n = 2
    while achieved(n) < power:
        n += 1
    return n


def streams(
    rng: np.random.Generator, count: int, records: int, champion: float, challenger: float
) -> np.ndarray:
    p = TRUE_P.rvs(size=(count, records), random_state=rng)
    y = rng.random((count, records)) < p
    return (_calibrated(challenger, p) - y) ** 2 - (_calibrated(champion, p) - y) ** 2


def naive_t_rejections(d: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per stream: did a t-test re-run after every record (n >= 2) ever reject, and for d < 0?"""
    n = np.arange(1, d.shape[1] + 1, dtype=np.float64)
    mean = np.cumsum(d, axis=1) / n
    variance = (np.cumsum(d**2, axis=1) - n * mean**2) / np.maximum(n - 1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(variance / n)
    critical = stats.t.ppf(1.0 - alpha / 2.0, np.maximum(n - 1.0, 1.0))
    significant = (np.abs(t) > critical) & (n >= 2)
    return significant.any(axis=1), (significant & (t < 0)).any(axis=1)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low = stats.beta.ppf(tail, successes, trials - successes + 1) if successes else 0.0
    high = (
        stats.beta.ppf(1 - tail, successes + 1, trials - successes) if successes < trials else 1.0
    )
    return float(low), float(high)


def median_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for a median from order statistics (binomial ranks)."""
    ordered = np.sort(values)
    n = ordered.shape[0]
    low_rank = int(stats.binom.ppf((1.0 - level) / 2.0, n, 0.5))
    high_rank = int(stats.binom.ppf(1.0 - (1.0 - level) / 2.0, n, 0.5))
    return float(ordered[max(low_rank - 1, 0)]), float(ordered[min(high_rank, n - 1)])


def _null_case(
    rng: np.random.Generator, args: argparse.Namespace, challenger: float
) -> tuple[float, float, float, float, float]:
    """Equal calibrators: shares of streams whose CS ever excludes 0, ever promotes, and the
    naive t-test's shares; plus the sd of one record's difference."""
    champion = champion_slope(excess_brier(challenger))
    _, sd = difference_moments(champion, challenger)
    null = streams(rng, args.streams, args.records, champion, challenger)
    ever_excluded = np.zeros(args.streams, dtype=bool)
    false_promotions = np.zeros(args.streams, dtype=bool)
    for i, d in enumerate(null):
        low, high = paired_confidence_sequence(d, alpha=args.alpha)
        ever_excluded[i] = bool(((high <= 0.0) | (low >= 0.0)).any())
        false_promotions[i] = bool((high <= 0.0).any())
    naive_any, naive_promote = naive_t_rejections(null, args.alpha)
    return (
        ever_excluded.mean(),
        false_promotions.mean(),
        naive_any.mean(),
        naive_promote.mean(),
        sd,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    alpha = args.alpha

    worse_slope = champion_slope(excess_brier(CHALLENGER_SLOPE) + EFFECT)
    better_mean, better_sd = difference_moments(worse_slope, CHALLENGER_SLOPE)
    n_fixed = t_test_size(-better_mean, better_sd, alpha, POWER)
    print(
        f"world: p ~ Beta(2,2); challenger slope {CHALLENGER_SLOPE}, champion slope "
        f"{worse_slope:.4f}: mean difference {better_mean:+.5f}, sd {better_sd:.4f}"
    )
    print(f"fixed-sample t-test size at {POWER:.0%} power, alpha {alpha}: n* = {n_fixed}")
    print(f"{args.streams} streams x {args.records} records per case, checked after every record")

    started = time.perf_counter()
    worst_share = 0.0
    for challenger in NULL_CHALLENGER_SLOPES:
        share, promotes, naive_any, naive_promote, sd = _null_case(rng, args, challenger)
        low, high = clopper_pearson(round(share * args.streams), args.streams)
        worst_share = max(worst_share, share)
        print(f"equal calibrators (challenger slope {challenger}, sd of a difference {sd:.4f}):")
        print(
            f"  confidence sequence ever excludes 0: {share:.3f} (95% CI {low:.3f}-{high:.3f}); "
            f"ever promotes: {promotes:.3f}"
        )
        print(
            f"  naive t-test after every record ever rejects: {naive_any:.3f}; "
            f"ever 'promotes': {naive_promote:.3f}"
        )

    better = streams(rng, args.streams, args.records, worse_slope, CHALLENGER_SLOPE)
    to_promotion = np.full(args.streams, np.inf)
    for i, d in enumerate(better):
        _, high = paired_confidence_sequence(d, alpha=alpha)
        if (high <= 0.0).any():
            to_promotion[i] = float(np.argmax(high <= 0.0) + 1)
    fixed_power = _fixed_sample_power(better[:, :n_fixed], alpha)
    median = float(np.median(to_promotion))
    median_low, median_high = median_interval(to_promotion)
    print(f"challenger better by {EFFECT} Brier:")
    print(
        f"  promoted within {args.records}: {np.isfinite(to_promotion).mean():.3f}; "
        f"median records to promotion {median:.0f} "
        f"(95% CI {median_low:.0f}-{median_high:.0f}); "
        f"quartiles {np.percentile(to_promotion, 25):.0f} / {np.percentile(to_promotion, 75):.0f}"
    )
    print(f"  fixed-sample t-test at n* = {n_fixed}: empirical power {fixed_power:.3f}")
    print(f"  median / n* = {median / n_fixed:.3f}")
    print(f"({time.perf_counter() - started:.0f} s)")
    print("\ntargets:")
    print(
        f"  share ever excluding 0 <= alpha (worst null case): {worst_share:.3f} <= {alpha}: "
        f"{_verdict(worst_share <= alpha)}"
    )
    print(
        f"  median records to promotion <= n*: {median:.0f} <= {n_fixed}: "
        f"{_verdict(median <= n_fixed)}"
    )


def _fixed_sample_power(d: np.ndarray, alpha: float) -> float:
    result = stats.ttest_1samp(d, 0.0, axis=1)
    return float(((result.pvalue < alpha) & (result.statistic < 0)).mean())


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    main()
