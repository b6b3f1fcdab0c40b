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

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            listen_database_url=os.environ.get("LISTEN_DATABASE_URL") or None,
            data_dir=Path(os.environ.get("COURTSIDE_DATA_DIR", ".courtside")),
            retention_days=int(os.environ.get("COURTSIDE_RETENTION_DAYS", "7")),
        )
