"""Partial pooling across segments against one pooled calibrator and independent per-segment fits.

A simulation: 40 segments of 5 to 1,000 labels (log-spaced) whose true maps scatter around a
common beta-calibration map (Kull et al. 2017) by a controlled spread of its three parameters:
none, moderate, large. Each segment also has its own score distribution. Error of a method on a
segment = mean |fitted(p) - true_s(p)| over fresh scores from that segment; figures are the
mean over segments (each segment counts once), over all segments and over those under 50
labels. Baselines, fitted in the same run on the same data:

- pooled: ``fit_calibrator(auto)`` on all labels, used for every segment;
- independent: ``fit_calibrator(auto)`` per segment, the pooled one below 50 labels.

Also shown (not a baseline), where ``fit_calibrator`` takes a ``prior``: ``fit_calibrator(auto,
prior=pooled)`` per segment, whose prior strength is learned from that segment's labels alone,
not from how much segments differ.

For scale, an oracle that no method can beat on average: each segment's map estimated under
the *true* common map and spread, by importance sampling from that true prior. With the error
measured as mean |fitted - true|, the Bayes estimate at each score is the posterior *median*
of the map there (the mean is printed too: it minimises squared error, not this one). It shows
how much a segment's labels can tell at all. The importance sampler's effective sample size is
printed (smallest over segments and data sets) to show the draws suffice.

The hierarchical fit's 90% band is checked too: the share of fresh scores at which it covers
the true segment map, for segments under and over 50 labels.

Run: ``.venv/bin/python bench/segments.py [--reps 10]``.
"""

from __future__ import annotations

import argparse
import inspect
import time

import numpy as np

from app.calibration import fit_calibrator
from app.calibration.segments import POOLED_SEGMENT, fit_segments

N_SEGMENTS = 40
SIZES = np.round(np.geomspace(5, 1000, N_SEGMENTS)).astype(int)
SMALL = 50
# Common map: sigmoid(A ln p - B ln(1 - p) + C), an over-confident analyzer.
COMMON = (1.6, 0.9, -0.3)
# Standard deviation of each of the three parameters across segments.
SPREADS = {"none": 0.0, "moderate": 0.25, "large": 0.6}
N_EVAL = 4000
ORACLE_DRAWS = 4000
# fit_calibrator(prior=...) arrives with the engine's priors; the bench runs with or without it.
HAS_PRIOR = "prior" in inspect.signature(fit_calibrator).parameters
FALLBACK_BELOW = 50

TARGET_NONE = 1.05
TARGET_ALL = 1.0
TARGET_SMALL = 0.7


def true_map(params: np.ndarray, p: np.ndarray) -> np.ndarray:
    a, b, c = params
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return 1.0 / (1.0 + np.exp(-(a * np.log(p) - b * np.log1p(-p) + c)))


def simulate(spread: float, rng: np.random.Generator) -> dict:
    segments = []
    for i, n in enumerate(SIZES):
        params = np.array(COMMON) + spread * rng.standard_normal(3)
        params[:2] = np.maximum(params[:2], 0.05)
        shape = rng.uniform(0.7, 2.5, size=2)
        segments.append(
            {
                "name": f"s{i:02d}",
                "n": int(n),
                "params": params,
                "shape": shape,
                "scores": rng.beta(*shape, size=n),
                "eval": rng.beta(*shape, size=N_EVAL),
            }
        )
    for seg in segments:
        q = true_map(seg["params"], seg["scores"])
        seg["labels"] = (rng.random(seg["n"]) < q).astype(float)
        seg["truth"] = true_map(seg["params"], seg["eval"])
    return {"segments": segments}


def oracle_error(seg: dict, spread: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean |posterior median map - true map|, the same for the posterior mean, and the
    importance sampler's effective sample size, given the true prior of the segment's
    parameters."""
    if spread == 0.0:
        return 0.0, 0.0, float(ORACLE_DRAWS)
    draws = np.array(COMMON) + spread * rng.standard_normal((ORACLE_DRAWS, 3))
    draws[:, :2] = np.maximum(draws[:, :2], 0.05)
    p = np.clip(seg["scores"], 1e-12, 1 - 1e-12)
    eta = draws[:, :1] * np.log(p) - draws[:, 1:2] * np.log1p(-p) + draws[:, 2:]
    y = seg["labels"]
    loglik = (y * eta - np.logaddexp(0.0, eta)).sum(axis=1)
    weights = np.exp(loglik - loglik.max())
    weights /= weights.sum()
    ess = 1.0 / float(np.square(weights).sum())
    # A map is monotone in each parameter's linear predictor, so the weighted median of the
    # linear predictor at a score gives the map's posterior median there.
    e = np.clip(seg["eval"], 1e-12, 1 - 1e-12)
    eta = draws[:, :1] * np.log(e) - draws[:, 1:2] * np.log1p(-e) + draws[:, 2:]
    order = np.argsort(eta, axis=0)
    cumulative = np.cumsum(weights[order], axis=0)
    median_row = np.minimum((cumulative < 0.5).sum(axis=0), ORACLE_DRAWS - 1)
    median = np.take_along_axis(eta, order, axis=0)[median_row, np.arange(e.shape[0])]
    mean = weights @ (1.0 / (1.0 + np.exp(-eta)))
    truth = seg["truth"]
    median_error = float(np.abs(1.0 / (1.0 + np.exp(-median)) - truth).mean())
    return median_error, float(np.abs(mean - truth).mean()), ess


def own_prior(seg: dict, pooled) -> object:
    y = seg["labels"]
    if min(int(y.sum()), int(y.shape[0] - y.sum())) < 2:
        return pooled
    return fit_calibrator(seg["scores"], y, random_state=0, prior=pooled)


def independent(seg: dict, pooled) -> object:
    y = seg["labels"]
    minority = min(int(y.sum()), int(y.shape[0] - y.sum()))
    if seg["n"] < FALLBACK_BELOW or minority < 2:
        return pooled
    return fit_calibrator(seg["scores"], y, random_state=0)


def run_once(spread: float, seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    segments = simulate(spread, rng)["segments"]
    scores = np.concatenate([s["scores"] for s in segments])
    labels = np.concatenate([s["labels"] for s in segments])
    names = np.concatenate([[s["name"]] * s["n"] for s in segments])

    started = time.perf_counter()
    pooled = fit_calibrator(scores, labels, random_state=0)
    pooled_s = time.perf_counter() - started
    started = time.perf_counter()
    hier = fit_segments(scores, labels, names, random_state=0)
    hier_s = time.perf_counter() - started

    errors: dict[str, list[float]] = {"pooled": [], "independent": [], "hierarchical": []}
    if HAS_PRIOR:
        errors["own_prior"] = []
    oracle = np.array([oracle_error(seg, spread, rng) for seg in segments])
    errors["oracle"] = oracle[:, 0].tolist()
    errors["oracle_mean"] = oracle[:, 1].tolist()
    covered = []
    for seg in segments:
        fits = [
            ("pooled", pooled),
            ("independent", independent(seg, pooled)),
            ("hierarchical", hier[seg["name"]]),
        ]
        if HAS_PRIOR:
            fits.append(("own_prior", own_prior(seg, pooled)))
        for method, cal in fits:
            errors[method].append(float(np.abs(cal.predict(seg["eval"]) - seg["truth"]).mean()))
        low, high = hier[seg["name"]].predict_interval(seg["eval"])
        covered.append(float(((low <= seg["truth"]) & (seg["truth"] <= high)).mean()))
    small = SIZES < SMALL
    spread_info = hier[POOLED_SEGMENT].selection["segment_spread"]
    return {
        "all": {m: float(np.mean(e)) for m, e in errors.items()},
        "small": {m: float(np.mean(np.asarray(e)[small])) for m, e in errors.items()},
        "tau": (spread_info["tau_intercept"], spread_info["tau_slope"]),
        "coverage": (
            float(np.mean(np.asarray(covered)[small])),
            float(np.mean(np.asarray(covered)[~small])),
        ),
        "min_ess_small": float(oracle[small, 2].min()),
        "seconds": (pooled_s, hier_s),
    }


def summarize(values: list[float]) -> str:
    arr = np.asarray(values)
    return f"{arr.mean():.3f} (runs {arr.min():.3f}-{arr.max():.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="simulated data sets per spread")
    parser.add_argument(
        "--spread", choices=sorted(SPREADS), action="append", help="only these spreads"
    )
    args = parser.parse_args()
    spreads = {k: v for k, v in SPREADS.items() if not args.spread or k in args.spread}
    print(
        f"{N_SEGMENTS} segments of {SIZES.min()}-{SIZES.max()} labels "
        f"({int((SIZES < SMALL).sum())} under {SMALL}); {args.reps} data sets per spread"
    )
    met_all = True
    for label, spread in spreads.items():
        runs = [run_once(spread, seed) for seed in range(args.reps)]
        print(f"\nspread {label} (parameter sd {spread}):")
        for part in ("all", "small"):
            methods = (
                "pooled",
                "independent",
                "hierarchical",
                "own_prior",
                "oracle",
                "oracle_mean",
            )
            for method in methods:
                if method not in runs[0][part]:
                    continue
                errors = summarize([r[part][method] for r in runs])
                print(f"  {part:5s} {method:12s} mean error {errors}")
        vs_pooled = [r["all"]["hierarchical"] / r["all"]["pooled"] for r in runs]
        vs_best = [
            r["all"]["hierarchical"] / min(r["all"]["pooled"], r["all"]["independent"])
            for r in runs
        ]
        vs_best_small = [
            r["small"]["hierarchical"] / min(r["small"]["pooled"], r["small"]["independent"])
            for r in runs
        ]
        # Ratios of the means over the data sets (per-run ratios in brackets).
        mean_all = np.mean([r["all"]["hierarchical"] for r in runs])
        ratio_pooled = mean_all / np.mean([r["all"]["pooled"] for r in runs])
        ratio_best = mean_all / min(
            np.mean([r["all"]["pooled"] for r in runs]),
            np.mean([r["all"]["independent"] for r in runs]),
        )
        ratio_small = np.mean([r["small"]["hierarchical"] for r in runs]) / min(
            np.mean([r["small"]["pooled"] for r in runs]),
            np.mean([r["small"]["independent"] for r in runs]),
        )
        if spread > 0.0:
            oracle_small = np.mean([r["small"]["oracle"] for r in runs]) / min(
                np.mean([r["small"]["pooled"] for r in runs]),
                np.mean([r["small"]["independent"] for r in runs]),
            )
            print(f"  oracle / better baseline, under {SMALL}: {oracle_small:.3f} (the floor)")
            ess = min(r["min_ess_small"] for r in runs)
            print(f"  oracle effective sample size, under {SMALL}: at least {ess:.0f}")
        coverage = np.array([r["coverage"] for r in runs])
        print(
            f"  90% band coverage of the true map: under {SMALL} {summarize(coverage[:, 0])}, "
            f"{SMALL} and over {summarize(coverage[:, 1])}"
        )
        taus = np.array([r["tau"] for r in runs])
        secs = np.array([r["seconds"] for r in runs])
        print(
            f"  estimated spread: tau_intercept {taus[:, 0].mean():.3f}, "
            f"tau_slope {taus[:, 1].mean():.3f}; fit time pooled {secs[:, 0].mean():.2f} s, "
            f"fit_segments {secs[:, 1].mean():.2f} s"
        )
        if spread == 0.0:
            ok = ratio_pooled <= TARGET_NONE
            met_all &= ok
            print(
                f"  hierarchical / pooled: {ratio_pooled:.3f} [{min(vs_pooled):.3f}-"
                f"{max(vs_pooled):.3f}] target <= {TARGET_NONE}: {'met' if ok else 'NOT met'}"
            )
        else:
            ok_all = ratio_best <= TARGET_ALL
            ok_small = ratio_small <= TARGET_SMALL
            met_all &= ok_all and ok_small
            print(
                f"  hierarchical / better baseline, all: {ratio_best:.3f} [{min(vs_best):.3f}-"
                f"{max(vs_best):.3f}] target <= {TARGET_ALL}: {'met' if ok_all else 'NOT met'}"
            )
            print(
                f"  hierarchical / better baseline, under {SMALL}: {ratio_small:.3f} "
                f"[{min(vs_best_small):.3f}-{max(vs_best_small):.3f}] target <= {TARGET_SMALL}: "
                f"{'met' if ok_small else 'NOT met'}"
            )
    which = "all targets" if len(spreads) == len(SPREADS) else f"targets of {', '.join(spreads)}"
    print(f"\n{which} {'met' if met_all else 'NOT met'}")


if __name__ == "__main__":
    main()
