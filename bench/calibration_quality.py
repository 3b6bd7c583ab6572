"""Test-set Brier/ECE of fit_calibrator(auto) against scikit-learn's sigmoid and isotonic."""

from __future__ import annotations

import math
import time

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.ensemble import (
    AdaBoostClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB

from app.calibration import evaluate, fit_calibrator

SEEDS = range(5)


def datasets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    cancer = load_breast_cancer()
    digits = load_digits()
    synth_x, synth_y = make_classification(
        n_samples=20000,
        n_features=20,
        n_informative=6,
        n_redundant=4,
        flip_y=0.05,
        class_sep=0.8,
        random_state=0,
    )
    return {
        "breast_cancer": (cancer.data, cancer.target),
        "digits>=5": (digits.data, (digits.target >= 5).astype(int)),
        "synthetic20k": (synth_x, synth_y),
    }


def classifiers(seed: int) -> dict:
    return {
        "GaussianNB": GaussianNB(),
        "RandomForest": RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=seed),
        "HistGB": HistGradientBoostingClassifier(max_iter=200, random_state=seed),
        "AdaBoost": AdaBoostClassifier(n_estimators=100, random_state=seed),
    }


def run_case(x: np.ndarray, y: np.ndarray, clf, seed: int) -> dict[str, dict]:
    # Separate splits: fit the classifier on half, calibrate on a quarter, test on a quarter.
    x_fit, x_rest, y_fit, y_rest = train_test_split(
        x, y, train_size=0.5, stratify=y, random_state=seed
    )
    x_cal, x_test, y_cal, y_test = train_test_split(
        x_rest, y_rest, train_size=0.5, stratify=y_rest, random_state=seed
    )
    clf.fit(x_fit, y_fit)
    raw_cal = clf.predict_proba(x_cal)[:, 1]
    raw_test = clf.predict_proba(x_test)[:, 1]
    ours = fit_calibrator(raw_cal, y_cal, method="auto", random_state=seed)
    probs = {"raw": raw_test, "ours": ours.predict(raw_test)}
    for method in ("sigmoid", "isotonic"):
        sk = CalibratedClassifierCV(FrozenEstimator(clf), method=method).fit(x_cal, y_cal)
        probs[method] = sk.predict_proba(x_test)[:, 1]
    result = {name: evaluate(p, y_test) for name, p in probs.items()}
    result["chosen"] = ours.method + ("+blend" if (ours.selection or {}).get("blend") else "")
    return result


def main() -> None:
    start = time.perf_counter()
    rows = []
    for data_name, (x, y) in datasets().items():
        for clf_name in classifiers(0):
            runs = [run_case(x, y, classifiers(seed)[clf_name], seed) for seed in SEEDS]
            mean = {
                name: {m: float(np.mean([r[name][m] for r in runs])) for m in ("brier", "ece")}
                for name in ("raw", "ours", "sigmoid", "isotonic")
            }
            chosen = sorted({r["chosen"] for r in runs})
            rows.append((f"{data_name}/{clf_name}", mean, chosen, runs))

    def geomean(values: list[float]) -> float:
        return math.exp(float(np.mean(np.log(values))))

    header = (
        f"{'case':28s} {'raw':>7s} {'ours':>7s} {'sigmoid':>7s} {'isotonic':>8s}"
        f"  {'ratio':>6s} {'per-run':>7s}"
    )
    print(
        f"test Brier (mean over {len(SEEDS)} seeds); ratio = ours / better of sklearn's two "
        "(chosen on the seed means); per-run = geometric mean over seeds of ours / better "
        "of the two chosen on each seed"
    )
    print(header)
    ratios, seed_ratios = [], []
    for case, mean, chosen, runs in rows:
        best = min(mean["sigmoid"]["brier"], mean["isotonic"]["brier"])
        ratio = mean["ours"]["brier"] / best
        ratios.append(ratio)
        case_seed_ratios = [
            r["ours"]["brier"] / min(r["sigmoid"]["brier"], r["isotonic"]["brier"]) for r in runs
        ]
        seed_ratios += case_seed_ratios
        b = {k: v["brier"] for k, v in mean.items()}
        print(
            f"{case:28s} {b['raw']:7.4f} {b['ours']:7.4f} {b['sigmoid']:7.4f} {b['isotonic']:8.4f}"
            f"  {ratio:6.3f} {geomean(case_seed_ratios):7.3f}  {','.join(chosen)}"
        )
    print()
    print(f"{'case':28s} {'ECE raw':>8s} {'ours':>7s} {'sigmoid':>7s} {'isotonic':>8s}")
    for case, mean, _, _ in rows:
        e = {k: v["ece"] for k, v in mean.items()}
        print(
            f"{case:28s} {e['raw']:8.4f} {e['ours']:7.4f} {e['sigmoid']:7.4f} {e['isotonic']:8.4f}"
        )

    print()
    print(f"geometric-mean Brier ratio over {len(ratios)} cases: {geomean(ratios):.4f}")
    print(
        f"geometric-mean Brier ratio over {len(seed_ratios)} case-seeds: {geomean(seed_ratios):.4f}"
    )
    print(f"elapsed {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
