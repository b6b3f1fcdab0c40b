"""Process settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    # LISTEN cannot pass a transaction pooler (pgbouncer in transaction mode): point this at
    # the server itself when DATABASE_URL goes through one.
    listen_database_url: str | None
    data_dir: Path
    retention_days: int
    log_level: str = "info"
    log_format: str = "text"

    @classmethod
    def from_env(cls) -> Settings:
        """Raises SettingsError naming the variable when a value cannot be used."""
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            listen_database_url=os.environ.get("LISTEN_DATABASE_URL") or None,
            data_dir=Path(os.environ.get("COURTSIDE_DATA_DIR") or ".courtside"),
            retention_days=_positive_int("COURTSIDE_RETENTION_DAYS", 7),
            log_level=_choice("COURTSIDE_LOG_LEVEL", LOG_LEVELS, "info"),
            log_format=_choice("COURTSIDE_LOG_FORMAT", LOG_FORMATS, "text"),
        )


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    """An environment variable holds a value courtside cannot use."""


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r}: must be at least 1")
    return value


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in choices:
        raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw.lower()
