"""Settings from the environment, and the unsafe combinations they refuse."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALIB_MAX_BATCH_SIZE", "123")
    monkeypatch.setenv("CALIB_API_KEYS", '{"0123456789abcdef": ["read"]}')
    settings = Settings()
    assert settings.max_batch_size == 123
    assert settings.api_keys == {"0123456789abcdef": ["read"]}
    assert settings.min_samples_for_training == 50
    assert settings.training_cron == "0 2 * * *"
    assert settings.database_url.startswith("sqlite:///./data/")


def test_production_requires_api_keys() -> None:
    with pytest.raises(ValidationError, match="requires CALIB_API_KEYS"):
        Settings(env="production")
    assert Settings(env="production", api_keys={"k" * 16: ["admin"]}).env == "production"


@pytest.mark.parametrize("keys", [{"short": ["read"]}, {"0123456789abcdef": ["write-everything"]}])
def test_bad_keys_are_refused(keys: dict[str, list[str]]) -> None:
    with pytest.raises(ValidationError):
        Settings(api_keys=keys)
