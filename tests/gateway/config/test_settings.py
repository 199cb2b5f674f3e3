"""Settings: defaults that match a configuration loaded with nothing set, and the startup log's
redacted view."""

from __future__ import annotations

from dataclasses import fields

import pytest

from gateway.config import Settings, load_settings


def test_settings_built_directly_match_settings_loaded_with_nothing_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.hardware.has_nvidia_gpu", lambda: False)
    loaded, direct = load_settings({}, {}), Settings()
    differ = {
        f.name for f in fields(Settings) if getattr(loaded, f.name) != getattr(direct, f.name)
    }
    # The built-in model, and the user's data folder rather than a temporary one per app.
    assert differ == {"models", "batch_dir"}


def test_reliability_defaults_and_redaction() -> None:
    settings = load_settings({}, {"GATEWAY_API_KEYS": "sk-very-secret"})
    assert (
        settings.max_body_bytes,
        settings.max_inputs,
        settings.max_request_tokens,
        settings.max_rerank_documents,
        settings.max_inflight_inputs,
    ) == (8 * 1024 * 1024, 2048, 300_000, 1000, 4096)
    assert (settings.request_timeout_s, settings.drain_grace_s) == (60.0, 30.0)
    assert settings.cors_allow_origins == () and settings.public_metrics is False
    assert "sk-very-secret" not in str(settings.redacted())
    assert settings.redacted()["api_keys"] == "<1 keys>"


def test_engine_kwargs_credentials_are_redacted_in_the_startup_config() -> None:
    settings = load_settings(
        {
            "engine_kwargs": '{"hf_token": "hf_abcdef123", '
            '"enforce_eager": true, "download_dir": "/data", '
            '"aws_secret_access_key": "s3cr3t"}'
        },
        {},
    )
    text = str(settings.redacted())
    assert "hf_abcdef123" not in text and "s3cr3t" not in text
    engine = settings.redacted()["models"][0]["engine"]
    assert engine["engine_kwargs"] == {
        "hf_token": "<redacted>",
        "enforce_eager": True,
        "download_dir": "/data",
        "aws_secret_access_key": "<redacted>",
    }
    assert engine["max_num_batched_tokens"] == 16384  # "...tokens" is not a credential


def test_the_batch_database_url_comes_from_its_env_twin_and_is_logged_without_password() -> None:
    url = "postgresql://gateway:pa55word@db.internal:5432/batches?sslmode=require"
    settings = load_settings({}, {"GATEWAY_BATCH_DATABASE_URL": url})
    assert settings.batch_database_url == url
    assert settings.redacted()["batch_database_url"] == (
        "postgresql://gateway:<redacted>@db.internal:5432/batches?sslmode=require"
    )
    assert "pa55word" not in str(settings.redacted())
    assert load_settings({}, {}).batch_database_url is None
