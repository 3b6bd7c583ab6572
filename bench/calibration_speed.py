"""Speed and memory of app.calibration against scikit-learn's isotonic fit and np.interp."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
from sklearn.isotonic import IsotonicRegression

from app.calibration import METHODS, fit_calibrator

N_FIT = 1_000_000
N_PREDICT = 10_000_000
N_INTERVAL = 1_000_000
REPEATS = 3


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # A non-parametric miscalibration, so "auto" has to run every candidate and
    # ends up on the most expensive final fit (isotonic, possibly a blend).
    scores = rng.beta(0.7, 0.9, size=n)
    truth = 0.1 + 0.8 * scores**2 + 0.08 * np.sin(12.0 * scores)
    labels = (rng.random(n) < np.clip(truth, 0.0, 1.0)).astype(np.float64)
    return scores, labels


def peak_memory(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    rng = np.random.default_rng(0)
    scores, labels = make_data(N_FIT, rng)
    input_bytes = scores.nbytes + labels.nbytes

    t_iso = best_of(lambda: IsotonicRegression(out_of_bounds="clip").fit(scores, labels))
    cal = fit_calibrator(scores, labels, method="auto", random_state=0)
    t_auto = best_of(lambda: fit_calibrator(scores, labels, method="auto", random_state=0))
    print(f"fit on {N_FIT:,} samples (best of {REPEATS})")
    print(f"  sklearn IsotonicRegression.fit   {t_iso:8.3f} s")
    print(
        f"  fit_calibrator(auto) -> {cal.method:9s} {t_auto:8.3f} s   ratio {t_auto / t_iso:5.2f}"
    )
    for method in METHODS[1:]:
        t = best_of(lambda m=method: fit_calibrator(scores, labels, method=m), repeats=1)
        print(f"  fit_calibrator({method!r:11s})     {t:8.3f} s")

    peak_auto = peak_memory(lambda: fit_calibrator(scores, labels, method="auto"))
    peak_iso = peak_memory(lambda: IsotonicRegression(out_of_bounds="clip").fit(scores, labels))
    print(f"peak traced memory, inputs {input_bytes / 2**20:.1f} MiB (float64 scores + labels)")
    for name, peak in (("fit_calibrator(auto)", peak_auto), ("sklearn isotonic fit", peak_iso)):
        print(f"  {name:22s} {peak / 2**20:7.1f} MiB   ratio {peak / input_bytes:5.2f}")

    big = rng.random(N_PREDICT)
    iso = IsotonicRegression(out_of_bounds="clip").fit(scores, labels)
    x, y = iso.X_thresholds_, iso.y_thresholds_
    t_interp = best_of(lambda: np.interp(big, x, y))
    print(f"predict on {N_PREDICT:,} scores (np.interp over {x.size} knots: {t_interp:.3f} s)")
    ratios = {}
    for method in METHODS:
        fitted = cal if method == cal.method else fit_calibrator(scores, labels, method=method)
        t = best_of(lambda c=fitted: c.predict(big))
        ratios[method] = t / t_interp
        size = len(fitted.params.get("x", fitted.params.get("edges", [])))
        print(f"  {method:10s} {t:7.3f} s   ratio {t / t_interp:5.2f}   table size {size}")
    peak_predict = peak_memory(lambda: cal.predict(big))
    mib = 2**20
    print(
        f"  predict peak memory {peak_predict / mib:.1f} MiB for {big.nbytes / mib:.1f} MiB input"
    )

    mid = big[:N_INTERVAL]
    t_interp_mid = best_of(lambda: np.interp(mid, x, y))
    t_interval = best_of(lambda: cal.predict_interval(mid, level=0.9))
    band_size = len(cal.band["x"]) if cal.band else 0
    print(
        f"predict_interval(level=0.9) on {N_INTERVAL:,} scores: {t_interval:.3f} s against "
        f"np.interp {t_interp_mid:.3f} s   ratio {t_interval / t_interp_mid:5.2f}   "
        f"band size {band_size}"
    )

    print(
        "targets: auto fit <= 10x isotonic, predict <= 1.5x np.interp, "
        "predict_interval <= 5x np.interp, memory <= 3x inputs"
    )
    print(
        f"  auto fit ratio {t_auto / t_iso:.2f}; worst predict ratio {max(ratios.values()):.2f}; "
        f"predict_interval ratio {t_interval / t_interp_mid:.2f}; "
        f"memory ratio {peak_auto / input_bytes:.2f}"
    )


if __name__ == "__main__":
    main()
