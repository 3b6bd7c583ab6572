"""Service settings, read from the environment with the ``CALIB_`` prefix."""

from __future__ import annotations

import json
import logging
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.calibration.segments import POOLED_SEGMENT

logger = logging.getLogger(__name__)

SCOPES = ("feedback:write", "read", "train", "admin")
SEGMENT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# Path words under /v1/models/ cannot name a segment anywhere; the pooled calibrator's name is
# one no feedback may carry, though training runs and the registry use it.
PATH_WORDS = frozenset({"active", "history"})
RESERVED_SEGMENTS = PATH_WORDS | {POOLED_SEGMENT}
DEFAULT_SEGMENT = "default"
DEFAULT_DATABASE_URL = "sqlite:///./data/calibration.db"


def check_segment(value: str) -> str:
    """A segment name feedback may carry: not a path word under ``/v1/models/``, not ``_pooled``."""
    if value in RESERVED_SEGMENTS:
        raise ValueError(f"segment name '{value}' is reserved")
    return value


def check_trainable_segment(value: str) -> str:
    """A segment name a training run may name: ``_pooled`` too, the path words not."""
    if value in PATH_WORDS:
        raise ValueError(f"segment name '{value}' is reserved")
    return value


class Settings(BaseSettings):
    """Everything an operator can set; defaults run a single process on SQLite."""

    model_config = SettingsConfigDict(env_prefix="CALIB_", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(default=5, ge=1)
    # NoDecode: the validator below parses the text, so bad JSON is a one-line settings error.
    api_keys: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    docs_enabled: bool = True

    max_batch_size: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_metadata_bytes: int = Field(default=4096, ge=2)

    scheduler_enabled: bool = False
    training_cron: str = "0 2 * * *"
    timezone: str = "UTC"
    health_check_interval_hours: float = Field(default=6.0, gt=0)

    min_samples_for_training: int = Field(default=50, ge=4)
    # Once a pooled model is active, segments train from this many samples, borrowing the rest.
    min_segment_samples: int = Field(default=10, ge=6)
    training_interval_days: float = Field(default=7.0, ge=0)
    # all: every run trains on all of a segment's feedback, without a prior (the active model
    # saw most of those labels; shrinking toward it would count them twice). new: a run trains
    # on the feedback after the active model's training data, shrunk toward that model.
    training_data: Literal["all", "new"] = "all"
    performance_threshold: float = Field(default=0.05, ge=0)
    require_significant_improvement: bool = False
    bootstrap_resamples: int = Field(default=1000, ge=10)
    max_model_age_days: float = Field(default=14.0, gt=0)
    run_heartbeat_seconds: float = Field(default=5.0, gt=0, le=10)
    run_stale_after_seconds: float = Field(default=30.0, gt=0)
    run_reap_interval_seconds: float = Field(default=10.0, gt=0)
    drift_threshold: float = Field(default=0.05, gt=0)
    drift_window: int = Field(default=10_000, ge=10)
    random_seed: int = 0

    # gate: a candidate that passes the quality gate goes live; shadow: it becomes the
    # challenger of the active model and goes live only on evidence from fresh feedback.
    deploy_mode: Literal["gate", "shadow"] = "gate"
    shadow_alpha: float = Field(default=0.05, gt=0, lt=1)
    shadow_max_records: int = Field(default=20_000, ge=1)
    shadow_auto_promote: bool = True

    log_json: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(
                'must be a JSON object such as {"a-key-of-16-chars+": ["read"]}: '
                f"{exc.msg} at character {exc.pos}"
            ) from exc

    @field_validator("api_keys")
    @classmethod
    def _check_scopes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, scopes in value.items():
            if len(key) < 16:
                raise ValueError("every API key must be at least 16 characters long")
            unknown = set(scopes) - set(SCOPES)
            if unknown:
                raise ValueError(f"unknown scopes {sorted(unknown)}; known: {list(SCOPES)}")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production" and not self.api_keys:
            raise ValueError("CALIB_ENV=production requires CALIB_API_KEYS")
        return self

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_sqlite_directory(self) -> None:
        """Create the folder of a file-backed SQLite database if it is missing."""
        match = re.match(r"sqlite\+?\w*:///(.+)", self.database_url)
        if match and match.group(1) != ":memory:":
            Path(match.group(1)).parent.mkdir(parents=True, exist_ok=True)


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per invalid setting, naming its environment variable and the reason."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        reason = error["msg"].removeprefix("Value error, ")
        lines.append(f"CALIB_{field.upper()}: {reason}" if field else reason)
    return lines
