"""The command line against a real service over HTTP: import, export, train, status, models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from helpers import DroppingListener, overconfident_feedback, wait_for_run

from app import migrations
from app.cli import main
from app.config import Settings
from app.devserver import serve_in_thread
from app.main import create_app


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def stored(base_url: str) -> list[dict]:
    return httpx.get(f"{base_url}/v1/feedback", params={"limit": 1000}).json()["items"]


def test_csv_import_reports_bad_lines_and_stores_only_good_ones(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(
        "score,label,segment,external_id,metadata\n"
        '0.9,true,default,a-1,"{""rule"": ""R1""}"\n'
        "nan,true,default,a-2,\n"
        "0.4,maybe,default,a-3,\n"
        "0.3,false,,,\n"
        "1.5,true,default,a-5,\n"
        "0.7,1,other,a-6,\n"
    )
    code, out, _ = run(capsys, "feedback", "import", str(path), "--url", live_server)
    assert code == 1
    assert "inserted 3, duplicates 0, conflicts 0, rejected 3 of 6 rows" in out
    assert "line 3: score" in out and "line 4: label" in out and "line 6: score" in out
    rows = stored(live_server)
    assert sorted(r["score"] for r in rows) == [0.3, 0.7, 0.9]
    assert next(r for r in rows if r["score"] == 0.9)["metadata"] == {"rule": "R1"}

    code, out, _ = run(capsys, "feedback", "import", str(path), "--url", live_server)
    assert "inserted 0, duplicates 3" in out
    assert len(stored(live_server)) == 3


def test_ndjson_import_names_lines_that_are_not_records(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "reviews.ndjson"
    path.write_text(
        '{"score": 0.2, "label": false}\n'
        "not json\n"
        "[1, 2]\n"
        '{"score": 0.8, "label": "true"}\n'
        '{"score": 0.6, "label": true, "source": "v2"}\n'
    )
    code, out, _ = run(capsys, "feedback", "import", str(path), "--url", live_server)
    assert code == 1
    assert "inserted 2" in out and "rejected 3 of 5 rows" in out
    assert "line 2: not JSON" in out and "line 3: not a JSON object" in out
    assert "line 4: label" in out


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_export_round_trips_through_import(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    items = [
        *overconfident_feedback(120),
        {
            "score": 0.5,
            "label": True,
            "external_id": 'x,"y"',
            "metadata": {"a": [1, "b"]},
            "source": "v1",
            "occurred_at": "2026-01-02T03:04:05.123456Z",
            "segment": "s2",
        },
    ]
    httpx.post(f"{live_server}/v1/feedback/batch", json={"items": items}).raise_for_status()
    exported = tmp_path / f"out.{fmt}"
    code, _, _ = run(
        capsys, "feedback", "export", "--format", fmt, "-o", str(exported), "--url", live_server
    )
    assert code == 0
    if fmt == "ndjson":
        lines = [json.loads(line) for line in exported.read_text().splitlines()]
        assert len(lines) == 121
        assert lines[-1]["external_id"] == 'x,"y"' and lines[-1]["metadata"] == {"a": [1, "b"]}

    other_db = f"sqlite:///{tmp_path / 'other.db'}"
    migrations.upgrade(other_db)
    with serve_in_thread(create_app(Settings(database_url=other_db))) as other:
        code, out, _ = run(capsys, "feedback", "import", str(exported), "--url", other)
        assert code == 0, out
        assert "inserted 121" in out
        original, copied = stored(live_server), stored(other)
    keys = ("segment", "score", "label", "source", "occurred_at", "metadata")
    assert [tuple(r[k] for k in keys) for r in copied] == [
        tuple(r[k] for k in keys) for r in original
    ]


def test_train_status_and_models_commands(
    live_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "status", "--url", live_server)
    assert code == 0 and "status: degraded" in out and "no_data" in out

    httpx.post(
        f"{live_server}/v1/feedback/batch", json={"items": overconfident_feedback(300)}
    ).raise_for_status()
    code, out, _ = run(capsys, "train", "--wait", "--url", live_server)
    assert code == 0
    assert "training run 1 (default): deployed" in out and "ECE" in out
    # An auto fit is an average of maps, stored as a table: the command names the average.
    weights = httpx.get(f"{live_server}/v1/training-runs/1").json()["evaluation_results"]
    used = [name for name, w in weights["selection"]["weights"].items() if w > 0]
    assert "fit: average of " in out and all(name in out for name in used)
    assert "method isotonic" not in out
    run(capsys, "train", "--wait", "--force", "--url", live_server)

    code, out, _ = run(capsys, "models", "list", "--url", live_server)
    assert code == 0
    assert out.splitlines()[0].split() == [
        "segment",
        "version",
        "status",
        "method",
        "ECE",
        "Brier",
        "n_train",
        "created",
    ]
    assert "rejected" in out and "active" in out

    code, out, _ = run(capsys, "models", "activate", "default", "2", "--url", live_server)
    assert code == 0 and "version 2 is active" in out
    code, _, err = run(
        capsys, "models", "activate", "default", "1", "--expected", "1", "--url", live_server
    )
    assert code == 1 and "409" in err and len(err.strip().splitlines()) == 1

    code, out, _ = run(capsys, "status", "--url", live_server)
    assert "status: healthy" in out


def test_unreachable_service_is_one_line_and_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--url", "http://127.0.0.1:9")
    assert code == 1
    assert err.startswith("calibration-service: cannot reach http://127.0.0.1:9")
    assert len(err.strip().splitlines()) == 1


def test_import_shows_progress_when_asked(
    live_server: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALIB_PROGRESS", "1")
    path = tmp_path / "many.ndjson"
    path.write_text("".join(json.dumps(item) + "\n" for item in overconfident_feedback(300)))
    code, out, err = run(
        capsys, "feedback", "import", str(path), "--batch-size", "100", "--url", live_server
    )
    assert code == 0 and "inserted 300" in out
    # rich's bar: 30 cells, all drawn complete at the end.
    assert "100% 300 rows" in err and "━" * 30 in err


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_own_export_reimports_as_duplicates(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Records sent without occurred_at are exported with the received time filled in."""
    from app.client import CalibrationClient

    items = overconfident_feedback(40)
    items[0] |= {"occurred_at": "2026-01-02T03:04:05.5+01:00", "metadata": {"b": 1, "a": [2]}}
    items[1] |= {"source": "analyzer-2.3"}
    with CalibrationClient(live_server) as client:
        assert client.send_feedback(items).inserted == 40
    exported = tmp_path / f"out.{fmt}"
    code, _, _ = run(
        capsys, "feedback", "export", "--format", fmt, "-o", str(exported), "--url", live_server
    )
    assert code == 0
    code, out, _ = run(capsys, "feedback", "import", str(exported), "--url", live_server)
    assert "inserted 0, duplicates 40, conflicts 0, rejected 0 of 40 rows" in out
    assert code == 0
    assert len(stored(live_server)) == 40


def test_import_still_reports_a_real_conflict_of_an_exported_record(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    httpx.post(
        f"{live_server}/v1/feedback", json={"score": 0.3, "label": False, "external_id": "k-1"}
    ).raise_for_status()
    exported = tmp_path / "out.ndjson"
    run(capsys, "feedback", "export", "-o", str(exported), "--url", live_server)
    record = json.loads(exported.read_text())
    exported.write_text(json.dumps(record | {"label": True}) + "\n")
    code, out, _ = run(capsys, "feedback", "import", str(exported), "--url", live_server)
    assert code == 1
    assert "inserted 0, duplicates 0, conflicts 1" in out
    assert "line 1: external_id stored with a different body" in out


def test_invalid_settings_are_one_line_each_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALIB_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("CALIB_API_KEYS", '{"k": ["read"]')
    monkeypatch.setenv("CALIB_MAX_BATCH_SIZE", "0")
    code, out, err = run(capsys, "migrate")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("calibration-service: CALIB_API_KEYS: must be a JSON object")
    assert lines[1].startswith("calibration-service: CALIB_MAX_BATCH_SIZE: ")

    monkeypatch.setenv("CALIB_API_KEYS", '{"short-key": ["read"]}')
    monkeypatch.delenv("CALIB_MAX_BATCH_SIZE")
    code, _, err = run(capsys, "serve")
    assert code == 2
    assert err.splitlines() == [
        "calibration-service: CALIB_API_KEYS: every API key must be at least 16 characters long"
    ]
    assert "short-key" not in err

    monkeypatch.delenv("CALIB_API_KEYS")
    monkeypatch.setenv("CALIB_TIMEZONE", "Mars/Olympus_Mons")
    monkeypatch.setenv("CALIB_TRAINING_CRON", "0 2 * *")
    code, _, err = run(capsys, "serve")
    assert code == 2
    assert err.splitlines() == [
        "calibration-service: CALIB_TIMEZONE: unknown time zone 'Mars/Olympus_Mons'",
        "calibration-service: CALIB_TRAINING_CRON: cron expression '0 2 * *' needs 5 fields, got 4",
    ]
    assert not (tmp_path / "x.db").exists()


def test_export_since_takes_a_date_or_a_date_time(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    httpx.post(
        f"{live_server}/v1/feedback/batch", json={"items": overconfident_feedback(5)}
    ).raise_for_status()
    today = datetime.now(UTC).date()
    counts = {}
    for since in (today, today + timedelta(days=1), f"{today}T00:00:00+14:00"):
        exported = tmp_path / "out.ndjson"
        code, _, err = run(
            capsys, "feedback", "export", "--since", str(since), "-o", str(exported),
            "--url", live_server,
        )  # fmt: skip
        assert code == 0, err
        counts[str(since)] = len(exported.read_text().splitlines())
    assert list(counts.values()) == [5, 0, 5]

    with pytest.raises(SystemExit) as exit_info:
        main(["feedback", "export", "--since", "yesterday", "--url", live_server])
    assert exit_info.value.code == 2
    assert "'yesterday' is neither an ISO 8601 date (2026-11-29) nor a date-time" in (
        capsys.readouterr().err
    )


def test_status_against_a_down_server_gives_up_after_two_retries(
    capsys: pytest.CaptureFixture[str], dropping_listener: DroppingListener
) -> None:
    """A server that drops every connection: the attempts are counted, not timed."""
    url = dropping_listener.url
    code, _, err = run(capsys, "status", "--url", url)
    assert code == 1 and err.startswith(f"calibration-service: cannot reach {url}")
    assert dropping_listener.connections == 3


def test_import_of_a_txt_file_says_which_format_it_assumed(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "reviews.txt"
    path.write_text("score,label\n0.9,true\n0.2,false\n")
    code, out, err = run(capsys, "feedback", "import", str(path), "--url", live_server)
    assert code == 0 and "inserted 2" in out
    assert "reviews.txt: read as CSV" in err and "--format" in err

    path.write_text('{"score": 0.4, "label": true}\n')
    code, out, err = run(capsys, "feedback", "import", str(path), "--url", live_server)
    assert code == 0 and "inserted 1" in out and "reviews.txt: read as NDJSON" in err


def test_train_without_wait_tells_where_to_follow_the_run(
    live_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    httpx.post(
        f"{live_server}/v1/feedback/batch", json={"items": overconfident_feedback(100)}
    ).raise_for_status()
    code, out, _ = run(capsys, "train", "--url", live_server)
    assert code == 0
    run_id = int(re.search(r"training run (\d+) \(default\): (queued|running)", out).group(1))
    assert f"{live_server}/v1/training-runs/{run_id}" in out and "--wait" in out
    wait_for_run(httpx.Client(base_url=live_server), run_id)
