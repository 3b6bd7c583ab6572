"""Installs as a user makes them: the client alone in a fresh virtualenv, the service's wheel.

Both reach the package index for build tools (and the client's httpx and numpy): slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from app import migrations

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SERVER_ONLY = {"fastapi", "starlette", "sqlalchemy", "scikit-learn", "scipy", "matplotlib"}
SERVER_ONLY |= {"psycopg", "psycopg-binary", "alembic", "uvicorn", "pydantic"}

CLIENT_SCRIPT = """
import json, sys
import numpy as np
from calibration_client import CalibrationClient

rng = np.random.default_rng(0)
scores = rng.uniform(0, 1, 300)
labels = rng.uniform(0, 1, 300) < 0.5 + (scores - 0.5) * 0.4
records = [{"score": float(s), "label": bool(y)} for s, y in zip(scores, labels)]
with CalibrationClient(sys.argv[1]) as client:
    sent = client.send_feedback(records)
    run = client.train(force=True, wait=True, timeout=120, poll_interval=0.1)
    local = client.calibrate([0.05, 0.5, 0.95]).tolist()
    remote = client.calibrate_remote([0.05, 0.5, 0.95])
    print(json.dumps({
        "inserted": sent.inserted,
        "status": run.status,
        "model_version": client.model_version,
        "local": local,
        "remote": remote.calibrated,
        "health": client.health().status,
    }))
"""


def test_client_installs_alone_and_talks_to_a_live_service(live_server: str, tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(ROOT / "clients" / "python")],
        check=True,
        timeout=600,
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "calibration-client" in installed
    assert installed & SERVER_ONLY == set()

    script = tmp_path / "analyzer.py"
    script.write_text(CLIENT_SCRIPT)
    out = subprocess.run(
        [python, str(script), live_server],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the source tree: only the installed client can be imported
    )
    result = json.loads(out.stdout)
    assert result["inserted"] == 300
    assert result["status"] == "deployed" and result["model_version"] == 1
    assert max(abs(a - b) for a, b in zip(result["local"], result["remote"], strict=True)) <= 1e-12
    assert result["local"] != [0.05, 0.5, 0.95]
    assert result["health"] == "healthy"


def test_plain_install_migrates_from_any_directory(tmp_path: Path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, ROOT],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("calibration_service-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel],
        check=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    # The wheel's copy of the package, not the source tree's: its dependencies come from here.
    env = {**os.environ, "PYTHONPATH": str(site), "CALIB_DATABASE_URL": url}
    where = subprocess.run(
        [sys.executable, "-c", "import app, calibration_client; print(app.__file__)"],
        env=env,
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)

    migrate = subprocess.run(
        [site / "bin" / "calibration-service", "migrate"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert {"feedback", "training_run", "model_version", "job_firing"} <= tables
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()
    assert list(elsewhere.iterdir()) == []
