"""Settings: environment and YAML sources, secrets kept secret, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.config import load_settings
from hub.logs import get_logger, setup_logging


def test_nats_and_database_urls_keep_their_usual_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://10.0.0.5:4222")
    monkeypatch.setenv("DATABASE_URL", "postgresql://ml@db/masterlinc")
    settings = load_settings()
    assert settings.nats_url == "nats://10.0.0.5:4222"
    assert settings.database_url == "postgresql+asyncpg://ml@db/masterlinc"


def test_pbx_list_from_nested_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_PBXS__0__ID", "main")
    monkeypatch.setenv("ML_PBXS__0__BASE_URL", "https://pbx.example.com:5001/")
    monkeypatch.setenv("ML_PBXS__0__CLIENT_ID", "800")
    monkeypatch.setenv("ML_PBXS__0__CLIENT_SECRET", "s3cr3t-value")
    settings = load_settings()
    pbx = settings.pbx("main")
    assert pbx.base_url == "https://pbx.example.com:5001"
    assert pbx.secret() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings.model_dump())


def test_secret_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    config = tmp_path / "ml.yaml"
    config.write_text(
        f"pbxs:\n  - id: main\n    base_url: https://pbx.example.com\n    client_id: '800'\n"
        f"    client_secret_file: {secret}\n"
    )
    monkeypatch.setenv("ML_CONFIG", str(config))
    assert load_settings().pbx("main").secret() == "from-file"


def test_a_missing_secret_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_PBXS__0__ID", "main")
    monkeypatch.setenv("ML_PBXS__0__BASE_URL", "https://pbx.example.com")
    monkeypatch.setenv("ML_PBXS__0__CLIENT_ID", "800")
    with pytest.raises(ValueError, match="ML_PBXS__0__CLIENT_SECRET"):
        load_settings().pbx("main").secret()


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("DATABASE_URL", "mysql://x", "SQLAlchemy async URL"),
        ("NATS_URL", "http://nats:4222", "nats://host:4222"),
        ("ML_PBXS__0__ID", "Main PBX", "pbx id"),
    ],
)
def test_bad_values_are_explained(monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=message):
        load_settings()


def test_unknown_pbx_lists_the_configured_ones() -> None:
    with pytest.raises(KeyError, match="none configured"):
        load_settings().pbx("nope")


def test_log_lines_never_carry_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "json")
    try:
        get_logger("test").info("token fetched", access_token="eyJhbGciOi.secret.part", client_secret="s3cr3t")
        get_logger("test").info("upgrade failed: Authorization: Bearer eyJhbGciOi.abc.def")
        err = capsys.readouterr().err
        assert "eyJhbGciOi" not in err
        assert "s3cr3t" not in err
        assert err.count("***") >= 3
    finally:
        logging.getLogger().handlers.clear()
