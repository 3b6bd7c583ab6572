"""How often the gate's band check refuses an honest candidate.

Each simulated analyzer of bench/simulation.py (eight true maps) gives ``--reps`` draws of 200,
500 and 2000 labels; ``evaluate_candidate`` fits ``fit_calibrator(auto)`` on 80% and checks its
90% band against the held-out 20% (docs/calibration.md). The candidate is fitted on the same
distribution it is checked on, so every refusal is a false alarm; the rule allows about 5%.

    python bench/band_gate.py [--reps 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulation import TRUTHS

from app.calibration import identity_calibrator
from app.training.evaluation import TrainingPolicy, evaluate_candidate

SIZES = (200, 500, 2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    # Few bootstrap resamples: the band check does not use them.
    policy = TrainingPolicy(threshold=0.05, bootstrap_resamples=50)
    runs = refused = 0
    inside: list[float] = []
    for t_index, truth in enumerate(TRUTHS):
        for n in SIZES:
            for rep in range(args.reps):
                rng = np.random.default_rng([t_index, n, rep, 7])
                scores = truth.draw_scores(rng, n)
                labels = (rng.random(n) < truth.true_map(scores)).astype(np.float64)
                band = evaluate_candidate(scores, labels, identity_calibrator(), policy).results[
                    "band_check"
                ]
                runs += 1
                inside.append(band["groups_inside"] / band["n_groups"])
                if not band["consistent"]:
                    refused += 1
                    worst = next(g for g in band["groups"] if not g["consistent"])
                    print(
                        f"  refused: {truth.name} n={n} rep={rep}: band "
                        f"{worst['band_low']:.3f}-{worst['band_high']:.3f}, observed "
                        f"{worst['observed_rate']:.3f} of {worst['count']}"
                    )
    print(
        f"band check on {runs} honest candidates: {refused} refused ({refused / runs:.1%}); "
        f"observed group rates inside the band: {np.mean(inside):.3f} on average"
    )


if __name__ == "__main__":
    main()
