"""The seed's demo: the installed command plays in-process, on a throwaway database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DroppingListener

COMMAND = str(Path(sys.executable).parent / "calibration-service")


@pytest.mark.slow
def test_demo_prints_method_metrics_and_decision(
    tmp_path: Path, dropping_listener: DroppingListener
) -> None:
    """No --url: nothing reaches CALIB_URL's service, its database or ./data.

    CALIB_URL points at a listener that counts connections, CALIB_DATABASE_URL at a file that
    must not appear, CALIB_API_KEYS would lock the demo out if the service used it.
    """
    real_db = tmp_path / "real" / "calibration.db"
    env = os.environ | {
        "CALIB_URL": dropping_listener.url,
        "CALIB_DATABASE_URL": f"sqlite:///{real_db}",
        "CALIB_API_KEYS": '{"0123456789abcdef-key": ["admin"]}',
        "CALIB_SCHEDULER_ENABLED": "true",
    }
    env.pop("CALIB_API_KEY", None)
    done = subprocess.run(
        [COMMAND, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "72 feedback samples" in out
    fit = re.search(r"fit: average of (.+), stored as an isotonic table;", out)
    assert fit, out
    weights = dict(part.rsplit(" ", 1) for part in fit.group(1).split(", "))
    assert set(weights) <= {"platt", "platt_flat", "platt_ard", "beta", "spline", "isotonic"}
    # Each weight is printed to 2 decimals, so the sum may miss 1 by 0.005 per weight.
    assert sum(float(w) for w in weights.values()) == pytest.approx(1.0, abs=0.005 * len(weights))
    ece = re.search(r"ECE\s+before (\d\.\d+)\s+after (\d\.\d+)", out)
    assert ece and float(ece.group(2)) < float(ece.group(1))
    assert re.search(r"Brier before \d\.\d+\s+after \d\.\d+", out)
    assert "band: not checked (15 held-out samples; the check needs 20)" in out
    assert "gate: deployed" in out
    assert dropping_listener.connections == 0
    assert not real_db.exists() and not (tmp_path / "data").exists()
    assert "Traceback" not in done.stderr


def test_demo_with_url_plays_against_that_service(
    live_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    from app.cli import main

    assert main(["demo", "--url", live_server]) == 0
    out = capsys.readouterr().out
    assert "gate: deployed" in out
    # The averaged map names its parts; "method chosen: isotonic" would describe only its storage.
    assert "fit: average of " in out and "method chosen" not in out
    segments = httpx.get(f"{live_server}/v1/feedback/stats").json()["by_segment"]
    assert [s for s in segments if s.startswith("demo-")] and sum(
        s["total"] for s in segments.values()
    ) == 72


def test_a_named_method_fit_is_described_by_its_method() -> None:
    from app.demo import describe_fit

    assert describe_fit({"method": "platt", "selection": None}) == "method chosen: platt"
    auto = {
        "method": "isotonic",
        "selection": {"weights": {"platt": 0.25, "beta": 0.0, "isotonic": 0.75}},
    }
    assert (
        describe_fit(auto)
        == "fit: average of isotonic 0.75, platt 0.25, stored as an isotonic table"
    )


def test_the_band_line_reports_the_gate_band_check() -> None:
    from app.demo import describe_band

    band = {"checked": True, "level": 0.9, "n_groups": 10, "groups_inside": 8}
    band["groups_inconsistent"] = 0
    assert describe_band(band) == (
        "band: held-out rates inside the 90% band in 8 of 10 score groups; 0 contradict it"
    )
