"""Settings come from TINYSERVE_* variables, with documented defaults and a cached getter."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import DEFAULT_MODEL_ROOT, Settings, SettingsError, get_settings, unknown_variables


def test_defaults():
    s = Settings()
    assert s.model_root == DEFAULT_MODEL_ROOT == Path(__file__).resolve().parents[2] / "models"
    assert (s.default_model, s.host, s.port, s.threads, s.log_level, s.http) == (None, "127.0.0.1", 8000, 1, "info", "corked")
    assert all(field.description for field in Settings.model_fields.values())


def test_environment_with_prefix(monkeypatch, tmp_path):
    for key, value in {"MODEL_ROOT": str(tmp_path), "DEFAULT_MODEL": "digits", "HOST": "0.0.0.0",
                       "PORT": "9000", "THREADS": "2", "LOG_LEVEL": "DEBUG", "MAX_BODY_BYTES": "1024",
                       "MAX_ROWS": "7"}.items():
        monkeypatch.setenv(f"TINYSERVE_{key}", value)
    s = get_settings()
    assert (s.model_root, s.default_model, s.host, s.port, s.threads, s.log_level, s.max_body_bytes,
            s.max_rows) == (tmp_path, "digits", "0.0.0.0", 9000, 2, "debug", 1024, 7)
    assert get_settings() is s  # cached until cache_clear()


@pytest.mark.parametrize("key, value", [("THREADS", "0"), ("PORT", "70000"), ("LOG_LEVEL", "loud"),
                                        ("MAX_ROWS", "0"), ("HTTP", "h2"),
                                        # "inf" would hold every request (or never poll, or never stop)
                                        ("BATCH_MAX_DELAY_MS", "inf"), ("BATCH_MAX_DELAY_MS", "1e400"),
                                        ("REQUEST_TIMEOUT_SECONDS", "nan"), ("POLL_SECONDS", "inf"),
                                        ("GRACEFUL_SHUTDOWN_SECONDS", "inf"), ("HEAD_TIMEOUT_SECONDS", "inf"),
                                        # empty (a template's blank): the working directory, a model
                                        # named "", every interface
                                        ("MODEL_ROOT", ""), ("DEFAULT_MODEL", " "), ("HOST", "")])
def test_invalid_values_are_refused(monkeypatch, key, value):
    monkeypatch.setenv(f"TINYSERVE_{key}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_variables_that_name_no_setting_are_said_with_the_nearest_one():
    # TINYSERVE_API_TOKEN (singular) with admin on left the server open, with no word of the typo.
    environ = {"TINYSERVE_API_TOKEN": "s3cret", "TINYSERVE_PORT": "8000", "tinyserve_worker": "2",
               "TINYSERVE_XYZZY": "1", "TINYSERVE_XPORT": "1", "HOME": "/root",
               # Kubernetes' links to a Service named tinyserve are not settings and not typos
               "TINYSERVE_SERVICE_HOST": "10.0.0.1", "TINYSERVE_SERVICE_PORT": "80", "TINYSERVE_PORT_80_TCP": "tcp://x",
               "TINYSERVE_PREDICTOR_SERVICE_HOST": "10.0.0.2", "TINYSERVE_PREDICTOR_SERVICE_PORT_HTTP": "80",
               "TINYSERVE_PREDICTOR_PORT": "tcp://10.0.0.2:80", "TINYSERVE_PREDICTOR_PORT_80_TCP_ADDR": "10.0.0.2"}
    assert unknown_variables(environ) == [
        "TINYSERVE_API_TOKEN is not a setting (did you mean TINYSERVE_API_TOKENS?): it is ignored",
        "TINYSERVE_WORKER is not a setting (did you mean TINYSERVE_WORKERS?): it is ignored",
        "TINYSERVE_XPORT is not a setting (did you mean TINYSERVE_PORT?): it is ignored",
        "TINYSERVE_XYZZY is not a setting: it is ignored"]


def test_a_misspelt_token_variable_stops_start_up_rather_than_serve_without_auth(monkeypatch):
    get_settings.cache_clear()
    monkeypatch.setenv("TINYSERVE_API_TOKEN", "s3cret")
    with pytest.raises(SettingsError) as refused:
        get_settings()
    assert str(refused.value) == ("TINYSERVE_API_TOKEN is not a setting (did you mean TINYSERVE_API_TOKENS?), and "
                                  "without TINYSERVE_API_TOKENS the server would answer every client: rename it")
    assert "s3cret" not in str(refused.value)
    for other in ("TINYSERVE_API_TOKENS_FILE", "TINYSERVE_ADMIN_TOKENS", "TINYSERVE_TOKEN"):
        monkeypatch.delenv("TINYSERVE_API_TOKEN")  # not misspellings of it: warned of, not refused
        monkeypatch.setenv(other, "/run/secrets/tokens")
        get_settings.cache_clear()
        assert get_settings().api_tokens == ()
        monkeypatch.delenv(other)
        monkeypatch.setenv("TINYSERVE_API_TOKEN", "s3cret")
    monkeypatch.setenv("TINYSERVE_API_TOKEN", "")  # empty: it would have set no token either
    get_settings.cache_clear()
    assert get_settings().api_tokens == ()
    monkeypatch.setenv("TINYSERVE_API_TOKEN", "s3cret")
    monkeypatch.setenv("TINYSERVE_API_TOKENS", "s3cret")  # set as well: auth is on, the other one is only a typo
    get_settings.cache_clear()
    assert get_settings().api_tokens == ("s3cret",)
    get_settings.cache_clear()


def test_the_body_budget_is_64_mib_or_one_largest_body_unless_set():
    # A configuration with bodies over 64 MiB, started before the budget was a setting, kept starting.
    assert Settings().body_budget == 64 * 1024 * 1024
    assert Settings(max_body_bytes=100_000_000).body_budget == 100_000_000
    assert Settings(max_body_bytes=1000, max_pending_body_bytes=5000).body_budget == 5000
