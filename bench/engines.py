"""Run a git revision's calibration engine beside today's, so benches compare both in one run.

``other_engine_predictions(ref, tasks)`` extracts ``app/`` of ``ref`` with ``git archive`` into a
temporary folder and, in a subprocess importing only that copy, fits
``fit_calibrator(scores, labels, method="auto", random_state=seed)`` per task and predicts on
the task's evaluation scores. Tasks travel as one ``.npz`` file each way.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import sys
import numpy as np
from app.calibration import fit_calibrator
data = np.load(sys.argv[1])
out = {}
for i in range(int(data["n_tasks"])):
    seed = int(data[f"r{i}"])
    cal = fit_calibrator(data[f"s{i}"], data[f"y{i}"], method="auto", random_state=seed)
    out[f"q{i}"] = cal.predict(data[f"e{i}"])
np.savez(sys.argv[2], **out)
"""

Task = tuple[np.ndarray, np.ndarray, np.ndarray, int]  # scores, labels, evaluation scores, seed


def resolve(ref: str) -> str:
    """The short commit id ``ref`` names now (printed, since branch names move)."""
    return subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def other_engine_predictions(ref: str, tasks: Sequence[Task]) -> list[np.ndarray]:
    """Predictions of ``ref``'s ``fit_calibrator(auto)`` for each (scores, labels, eval, seed)."""
    with tempfile.TemporaryDirectory(prefix="calib_engine_") as folder:
        root = Path(folder)
        # Since the client package owns the artifact apply code, the engine needs it too.
        paths = ["app"]
        listed = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "ls-tree", "--name-only", ref, "clients/python"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        if listed.strip():
            paths.append("clients/python")
        archive = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "archive", ref, *paths],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
        payload: dict[str, np.ndarray] = {"n_tasks": np.array(len(tasks))}
        for i, (scores, labels, evaluation, seed) in enumerate(tasks):
            payload |= {
                f"s{i}": scores,
                f"y{i}": labels,
                f"e{i}": evaluation,
                f"r{i}": np.array(seed),
            }
        np.savez(root / "in.npz", **payload)
        subprocess.run(
            [sys.executable, "-c", WORKER, str(root / "in.npz"), str(root / "out.npz")],
            cwd=root,
            env={
                "PYTHONPATH": f"{root}:{root / 'clients' / 'python'}",
                "OPENBLAS_NUM_THREADS": "1",
                "PATH": "/usr/bin:/bin",
            },
            check=True,
        )
        result = np.load(root / "out.npz")
        return [result[f"q{i}"] for i in range(len(tasks))]
