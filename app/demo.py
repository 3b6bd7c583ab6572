"""The seed's demo: an overconfident analyzer, 72 reviews, one training run, before and after."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic_settings import BaseSettings

N_SAMPLES = 72


def overconfident_analyzer(n: int, seed: int) -> list[dict[str, Any]]:
    """Findings whose true accuracy is much closer to a coin flip than the scores claim."""
    rng = np.random.default_rng(seed)
    scores = np.clip(rng.beta(0.6, 0.6, n), 0.0, 1.0)
    truth = 0.5 + (scores - 0.5) * 0.35
    labels = rng.uniform(0.0, 1.0, n) < truth
    return [{"score": float(s), "label": bool(y)} for s, y in zip(scores, labels, strict=True)]


@contextmanager
def in_process_service() -> Iterator[str]:
    """Serve the app on a free loopback port from a throwaway SQLite database.

    Its settings are the defaults, whatever ``CALIB_*`` says: the environment describes the
    operator's real service (its database, keys, scheduler), which the demo must not touch.
    """
    from app import migrations
    from app.config import Settings
    from app.devserver import serve_in_thread
    from app.main import create_app

    class ThrowawaySettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: Any, *_sources: Any, **_: Any
        ) -> tuple[Any, ...]:
            return (init_settings,)

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'demo.db'}"
        migrations.upgrade(url)
        with serve_in_thread(create_app(ThrowawaySettings(database_url=url))) as base_url:
            yield base_url


def play(base_url: str, *, api_key: str | None = None, seed: int = 7) -> dict[str, Any]:
    """Post the demo's feedback, train, and return the finished run."""
    from app.client import CalibrationClient

    segment = f"demo-{uuid.uuid4().hex[:8]}"
    with CalibrationClient(base_url, api_key=api_key, segment=segment, timeout=30.0) as client:
        client.send_feedback(overconfident_analyzer(N_SAMPLES, seed))
        return client.train(force=True, wait=True, timeout=120, poll_interval=0.1)


def report(run: dict[str, Any]) -> str:
    """The figures a person wants from the demo, as text."""
    lines = [
        f"segment {run['segment']}: {N_SAMPLES} feedback samples from an overconfident analyzer"
    ]
    results = run.get("evaluation_results")
    if not results:
        lines.append(f"training run {run['id']}: {run['status']} ({run['reason']})")
        return "\n".join(lines)
    before, after = results["production"], results["candidate"]
    lines += [
        f"training run {run['id']}: {run['status']}",
        f"{describe_fit(results)}; "
        f"train {results['n_train']}, validation {results['n_validation']}",
        f"ECE   before {before['ece']:.4f}  after {after['ece']:.4f}"
        f"  ({results['ece_improvement']:+.1%})",
        f"Brier before {before['brier']:.4f}  after {after['brier']:.4f}"
        f"  ({results['brier_improvement']:+.1%})",
        describe_band(results.get("band_check")),
        f"gate: {'deployed' if results['deployed'] else 'rejected'}: {results['reason']}",
    ]
    return "\n".join(lines)


def describe_fit(results: dict[str, Any]) -> str:
    """What the candidate is: the averaged maps and their stacking weights for an ``auto`` fit
    (stored as an isotonic table, which is not what was chosen), else the one method."""
    weights = (results.get("selection") or {}).get("weights")
    if not weights:
        return f"method chosen: {results['method']}"
    used = sorted(((w, name) for name, w in weights.items() if w > 0.0), reverse=True)
    parts = ", ".join(f"{name} {w:.2f}" for w, name in used)
    return f"fit: average of {parts}, stored as an {results['method']} table"


def describe_band(band: dict[str, Any] | None) -> str:
    """How the held-out outcomes sat against the candidate's band (the gate's band check)."""
    if not band or not band["checked"]:
        return f"band: not checked ({band['reason'] if band else 'no band check in this run'})"
    return (
        f"band: held-out rates inside the {band['level']:.0%} band in {band['groups_inside']} of "
        f"{band['n_groups']} score groups; {band['groups_inconsistent']} contradict it"
    )


def main(url: str | None = None, api_key: str | None = None) -> int:
    """Play against ``url``, or without it in-process on a throwaway database."""
    if url:
        run = play(url, api_key=api_key)
    else:
        with in_process_service() as base_url:
            run = play(base_url)
    print(report(run))
    return 0 if run["status"] in ("deployed", "rejected") else 1
