"""The scheduler: configured jobs and next runs, a firing that trains, once across replicas."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from fastapi.testclient import TestClient
from helpers import overconfident_feedback, wait_for_run
from sqlalchemy import create_engine, func, select

from app.config import Settings
from app.main import create_app
from app.scheduler import cron_trigger, latest_fire_time
from app.scheduling.models import JobFiring
from app.training.models import TrainingRun


def test_status_lists_jobs_with_zoned_next_run_times(clean_database: str) -> None:
    settings = Settings(
        database_url=clean_database,
        scheduler_enabled=True,
        training_cron="30 3 * * 1",
        timezone="Europe/Paris",
        health_check_interval_hours=6,
    )
    with TestClient(create_app(settings)) as client:
        status = client.get("/v1/scheduler").json()
    assert status["is_running"] is True
    jobs = {job["id"]: job for job in status["jobs"]}
    assert set(jobs) == {"training", "health_check"}
    training_next = datetime.fromisoformat(jobs["training"]["next_run_time"])
    paris = training_next.astimezone(ZoneInfo("Europe/Paris"))
    assert training_next.utcoffset() is not None
    assert (paris.weekday(), paris.hour, paris.minute) == (0, 3, 30)
    assert timedelta(0) < training_next - datetime.now(UTC) <= timedelta(days=7)
    assert "cron" in jobs["training"]["trigger"]
    health_next = datetime.fromisoformat(jobs["health_check"]["next_run_time"])
    assert health_next.astimezone(UTC).hour % 6 == 0 and health_next.minute == 0
    assert jobs["training"]["last_outcome"] is None


def test_disabled_scheduler_has_no_next_run_and_adds_no_jobs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="apscheduler")
    with TestClient(create_app(settings)) as client:
        status = client.get("/v1/scheduler").json()
    assert status["enabled"] is False and status["is_running"] is False
    assert {job["id"] for job in status["jobs"]} == {"training", "health_check"}
    assert [job["next_run_time"] for job in status["jobs"]] == [None, None]
    assert not [r for r in caplog.records if r.name.startswith("apscheduler")]


def test_latest_fire_time_is_the_same_key_for_every_replica() -> None:
    trigger = CronTrigger.from_crontab("0 2 * * *", timezone=ZoneInfo("UTC"))
    now = datetime(2026, 11, 26, 2, 0, 3, tzinfo=UTC)
    expected = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    assert latest_fire_time(trigger, now, timedelta(days=8)) == expected
    later = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    assert latest_fire_time(trigger, later, timedelta(days=8)) == expected


def test_a_scheduled_firing_trains_the_pooled_model_first_then_every_segment(
    client: TestClient, app
) -> None:
    items = overconfident_feedback(300) + overconfident_feedback(20, segment="small")
    assert client.post("/v1/feedback/batch", json={"items": items}).status_code == 201
    outcome = app.state.scheduler.run_training_job(
        scheduled_for=datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    )
    assert outcome.startswith("trained _pooled:1 deployed; started runs default:2, small:3")
    runs = client.get("/v1/training-runs").json()["items"]
    assert [(r["segment"], r["trigger"]) for r in runs] == [
        ("small", "schedule"),
        ("default", "schedule"),
        ("_pooled", "schedule"),
    ]
    # The segments were trained against the pooled model the job had just deployed.
    for run in runs[:2]:
        finished = wait_for_run(client, run["id"])
        assert finished["status"] in ("deployed", "rejected"), finished["reason"]
        assert finished["evaluation_results"]["prior_version"] == 1
    for segment in ("default", "small"):
        served = client.get("/v1/models/active/artifact", params={"segment": segment})
        assert served.status_code == 200
    status = client.get("/v1/scheduler").json()
    training = next(job for job in status["jobs"] if job["id"] == "training")
    assert training["last_outcome"]["outcome"] == outcome
    assert training["last_outcome"]["scheduled_for"].startswith("2026-11-26T02:00:00")

    again = app.state.scheduler.run_training_job(
        scheduled_for=datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    )
    assert again == "no segment has 10 new samples"


def test_health_job_stores_a_snapshot(client: TestClient, app) -> None:
    outcome = app.state.scheduler.run_health_job(
        scheduled_for=datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    )
    assert outcome.startswith("degraded")
    history = client.get("/health/history").json()["items"]
    assert len(history) == 1 and history[0]["status"] == "degraded"
    codes = {alert["code"] for alert in history[0]["report"]["alerts"]}
    assert {"no_data", "no_model"} <= codes


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_instances_on_postgres_run_each_firing_once(clean_database: str) -> None:
    settings = Settings(database_url=clean_database)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        first.post("/v1/feedback/batch", json={"items": overconfident_feedback(200)})
        scheduled_for = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
        outcomes: list[object] = []
        barrier = threading.Barrier(2)

        def fire(client: TestClient) -> None:
            barrier.wait()
            outcomes.append(client.app.state.scheduler.run_training_job(scheduled_for))

        threads = [threading.Thread(target=fire, args=(c,)) for c in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes, key=str)[0] is None
        assert sum(1 for outcome in outcomes if outcome) == 1
        runs = first.get("/v1/training-runs").json()["items"]
        assert [run["segment"] for run in runs] == ["default", "_pooled"]
        assert runs[1]["status"] == "deployed"
        # One segment: nothing to borrow across, so its candidate is the pooled map itself and
        # the gate keeps the pooled model serving it.
        assert wait_for_run(first, runs[0]["id"])["status"] in ("deployed", "rejected")
        served = first.get("/v1/models/active/artifact").json()
        assert served["segment"] in ("default", "_pooled")

        health = [
            c.app.state.scheduler.run_health_job(datetime(2026, 11, 26, 6, tzinfo=UTC))
            for c in (first, second)
        ]
        assert sum(1 for outcome in health if outcome) == 1

    engine = create_engine(clean_database)
    with engine.connect() as connection:
        runs = connection.execute(select(func.count()).select_from(TrainingRun)).scalar_one()
        firings = connection.execute(select(func.count()).select_from(JobFiring)).scalar_one()
    engine.dispose()
    assert (runs, firings) == (2, 2)


@pytest.mark.parametrize(
    ("field", "weekdays"),
    [
        ("1", {0}),
        ("0", {6}),
        ("7", {6}),
        ("1-5", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("*/2", {6, 1, 3, 5}),
        ("5-7", {4, 5, 6}),
    ],
)
def test_cron_day_of_week_means_what_crontab_means(field: str, weekdays: set[int]) -> None:
    trigger = cron_trigger(f"0 2 * * {field}", ZoneInfo("UTC"))
    start = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
    seen, fire = set(), trigger.get_next_fire_time(None, start)
    while fire is not None and fire < start + timedelta(days=7):
        seen.add(fire.weekday())
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    assert seen == weekdays


def test_bad_cron_is_refused() -> None:
    with pytest.raises(ValueError, match="5 fields"):
        cron_trigger("0 2 * *", ZoneInfo("UTC"))
