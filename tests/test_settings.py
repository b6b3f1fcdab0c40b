"""Bad configuration is refused at start, in one line that names the variable, never with a
traceback or a half-started server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from api.config import ApiConfig
from api.realtime_limits import RealtimeLimits


@pytest.mark.parametrize(("value", "why"), [("ten", "expected a whole number"),
                                            ("0", "must be positive"),
                                            ("-3", "must be positive")])
def test_realtime_limit_from_env_names_the_variable(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        RealtimeLimits.from_env({"COURTSIDE_RT_MAX_SUBSCRIPTIONS": value})
    assert "COURTSIDE_RT_MAX_SUBSCRIPTIONS" in str(info.value)


def test_realtime_float_limits_refuse_nan_and_infinity() -> None:
    for value in ("nan", "inf"):
        with pytest.raises(ValueError, match="COURTSIDE_RT_TYPING_TTL"):
            RealtimeLimits.from_env({"COURTSIDE_RT_TYPING_TTL": value})
    assert RealtimeLimits.from_env({"COURTSIDE_RT_TYPING_TTL": " "}) == RealtimeLimits()


def _courtside(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # DATABASE_URL points nowhere: a command that got past its settings would fail differently.
    full_env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", **env}
    return subprocess.run([sys.executable, "-m", "courtside.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_serve_refuses_a_bad_limit_before_starting() -> None:
    out = _courtside("serve", "--port", "0", COURTSIDE_RT_MAX_FRAME_BYTES="4k")
    assert out.returncode == 2
    assert "COURTSIDE_RT_MAX_FRAME_BYTES='4k': expected a whole number" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_retention_is_refused_by_every_command() -> None:
    out = _courtside("migrate", COURTSIDE_RETENTION_DAYS="a week")
    assert out.returncode == 2
    assert "COURTSIDE_RETENTION_DAYS='a week'" in out.stderr
    assert "Traceback" not in out.stderr
    out = _courtside("db", "url", COURTSIDE_RETENTION_DAYS="0")
    assert out.returncode == 2
    assert "must be at least 1" in out.stderr


def test_api_config_from_env_overrides_numbers_and_checks_them() -> None:
    dsn = "postgresql://example/db"
    config = ApiConfig.from_env(dsn, environ={"COURTSIDE_API_COMMENTS_PER_MINUTE": "30",
                                              "COURTSIDE_API_PRESENCE_TTL": "12.5",
                                              "COURTSIDE_API_POOL_MAX_SIZE": ""})
    assert (config.comments_per_minute, config.presence_ttl) == (30, 12.5)
    assert config.pool_max_size == ApiConfig(dsn).pool_max_size
    with pytest.raises(ValueError, match="COURTSIDE_API_COMMENTS_PER_MINUTE='many'"):
        ApiConfig.from_env(dsn, environ={"COURTSIDE_API_COMMENTS_PER_MINUTE": "many"})
    with pytest.raises(ValueError, match="comments_per_minute must be at least 1"):
        ApiConfig.from_env(dsn, environ={"COURTSIDE_API_COMMENTS_PER_MINUTE": "0"})


def test_serve_refuses_a_bad_api_setting_before_starting() -> None:
    out = _courtside("serve", "--port", "0", COURTSIDE_API_POOL_TIMEOUT="soon")
    assert out.returncode == 2
    assert "COURTSIDE_API_POOL_TIMEOUT='soon': expected a number" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_bad_cors_origin_before_starting() -> None:
    out = _courtside("serve", "--port", "0", COURTSIDE_CORS_ORIGINS="https://app.example/")
    assert out.returncode == 2
    assert "COURTSIDE_CORS_ORIGINS: 'https://app.example/' is not an origin" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("name", "value"), [("COURTSIDE_LOG_FORMAT", "xml"),
                                             ("COURTSIDE_LOG_LEVEL", "loud")])
def test_bad_log_settings_are_refused(name: str, value: str) -> None:
    out = _courtside("migrate", **{name: value})
    assert out.returncode == 2
    assert f"{name}={value!r}: expected one of" in out.stderr
    assert "Traceback" not in out.stderr
