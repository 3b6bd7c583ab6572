"""Real-data runs with less test-set luck: the same classifiers, their held-out half re-split.

``bench/calibration_quality.py`` reads each real-data run once: calibrate on a quarter of the
data, test on the other quarter. On breast_cancer that quarter is 143 samples, and which of
scikit-learn's sigmoid and isotonic wins a run, and by how much, turns on a few of them. Here
each run's classifier is trained exactly as there (same seed, same half), and its held-out half
is split ``--resplits`` more times into calibration and test halves; every engine and both
scikit-learn methods are fitted on each. The geometric means then say which method is better
on these analyzers, not on one draw of their test set.

    python bench/calibration_resplits.py [--cases breast_cancer/RandomForest,...]
        [--resplits 10] [--baseline-ref main]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calibration_quality import SEEDS, classifiers, datasets, geomean
from engines import other_engine_predictions, resolve

from app.calibration import fit_calibrator

DEFAULT_CASES = "breast_cancer/RandomForest,breast_cancer/HistGB"


def _brier(q: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((q - y) ** 2))


def case_ratios(case: str, resplits: int, baseline_ref: str) -> dict[str, list[float]]:
    """Per re-split Brier ratios of each engine and sklearn method to the better sklearn one."""
    data_name, clf_name = case.split("/")
    x, y = datasets()[data_name]
    tasks, rows = [], []
    for seed in SEEDS:
        # The split of calibration_quality.run_case: the classifier's half, then the rest.
        x_fit, x_rest, y_fit, y_rest = train_test_split(
            x, y, train_size=0.5, stratify=y, random_state=seed
        )
        clf = classifiers(seed)[clf_name].fit(x_fit, y_fit)
        raw_rest = clf.predict_proba(x_rest)[:, 1]
        for k in range(resplits):
            cal, test = train_test_split(
                np.arange(y_rest.shape[0]), train_size=0.5, stratify=y_rest, random_state=1000 + k
            )
            y_cal, y_test = y_rest[cal].astype(np.float64), y_rest[test].astype(np.float64)
            ours = fit_calibrator(raw_rest[cal], y_cal, random_state=seed).predict(raw_rest[test])
            briers = {"ours": _brier(ours, y_test)}
            for method in ("sigmoid", "isotonic"):
                sk = CalibratedClassifierCV(FrozenEstimator(clf), method=method)
                sk.fit(x_rest[cal], y_cal)
                briers[method] = _brier(sk.predict_proba(x_rest[test])[:, 1], y_test)
            tasks.append((raw_rest[cal], y_cal, raw_rest[test], seed))
            rows.append((briers, y_test))
    out: dict[str, list[float]] = {"ours": [], "base": [], "sigmoid": [], "isotonic": []}
    for (briers, y_test), base in zip(
        rows, other_engine_predictions(baseline_ref, tasks), strict=True
    ):
        briers["base"] = _brier(base, y_test)
        best = min(briers["sigmoid"], briers["isotonic"])
        for name in out:
            out[name].append(briers[name] / best)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", default=DEFAULT_CASES, help="dataset/classifier, comma-separated"
    )
    parser.add_argument("--resplits", type=int, default=10)
    parser.add_argument("--baseline-ref", default="main", help="git revision to compare with")
    args = parser.parse_args()
    print(f"baseline engine: {args.baseline_ref} = {resolve(args.baseline_ref)}; today: HEAD")
    print(
        f"Brier over the better of sklearn's sigmoid and isotonic on each re-split "
        f"({len(SEEDS)} seeds x {args.resplits} re-splits): geometric mean / worst"
    )
    print(f"{'case':28s} {'ours':>13s} {'base':>13s} {'sigmoid':>13s} {'isotonic':>13s}")
    for case in args.cases.split(","):
        r = case_ratios(case, args.resplits, args.baseline_ref)
        cells = " ".join(f"{geomean(v):6.3f}/{max(v):6.3f}" for v in r.values())
        ours_sig = geomean([o / s for o, s in zip(r["ours"], r["sigmoid"], strict=True)])
        base_sig = geomean([o / s for o, s in zip(r["base"], r["sigmoid"], strict=True)])
        print(f"{case:28s} {cells}  ours/sigmoid {ours_sig:.3f}, base/sigmoid {base_sig:.3f}")


if __name__ == "__main__":
    main()
