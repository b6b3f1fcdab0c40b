"""What an API process is told by its composer (`courtside serve`, tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from api import cors
from api.envconfig import overrides


@dataclass(frozen=True)
class ApiConfig:
    database_url: str
    pool_min_size: int = 1
    pool_max_size: int = 10
    # A request waiting longer than this for a connection gets 503 SERVICE_UNAVAILABLE.
    pool_timeout: float = 10.0
    # A request's database work (once it has a connection) running longer is cancelled in
    # the server, its statement rolled back: 503 SERVICE_UNAVAILABLE. A lock held elsewhere
    # (a migration, a long transaction) then costs a client a clear answer, not a hung
    # request that holds a pooled connection and writes once the lock goes.
    query_timeout: float = 10.0
    # Comments a user may create per minute, over every process (RATE_LIMITED beyond).
    comments_per_minute: int = 10
    # A REST presence join lasts this long unless renewed by another join.
    presence_ttl: float = 60.0
    # isTyping stays true this long after `typing {isTyping: true}`.
    typing_ttl: float = 5.0
    # As the realtime transports' limits (api/realtime_limits.py), per user and session here:
    # a `true` repeated within typing_refresh of the last user.typing only extends it, and
    # user.typing publications are metered (typing_per_second, typing_burst saved up; past
    # it 429 RATE_LIMITED). Each is a NOTIFY and a frame to every subscriber.
    typing_refresh: float = 1.0
    typing_per_second: float = 2.0
    typing_burst: int = 4
    # How long an Idempotency-Key is remembered.
    idempotency_ttl: float = 24 * 3600.0
    # Sanctum's `expiration` (minutes since created_at); None: only expires_at counts.
    token_expiration_minutes: int | None = None
    max_body_bytes: int = 64 * 1024
    # How often this process prunes old idempotency keys and idle rate-limit buckets.
    maintenance_interval: float = 300.0
    # Origins whose web pages may call the API (api/cors.py): ("*",) any, () none.
    cors_origins: tuple[str, ...] = cors.ANY

    @classmethod
    def from_env(cls, database_url: str, *, token_expiration_minutes: int | None = None,
                 environ: Mapping[str, str] | None = None) -> ApiConfig:
        """``COURTSIDE_API_<FIELD>`` overrides a numeric field, e.g.
        COURTSIDE_API_COMMENTS_PER_MINUTE=30, and ``COURTSIDE_CORS_ORIGINS`` the origins;
        raises ValueError naming what is wrong."""
        env = os.environ if environ is None else environ
        base = cls(database_url=database_url, token_expiration_minutes=token_expiration_minutes)
        values = overrides(cls, "COURTSIDE_API_", env, skip=("token_expiration_minutes",))
        origins = cors.origins_from_env(env)
        try:
            return replace(base, cors_origins=origins, **values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"COURTSIDE_API_* settings: {exc}") from None

    def __post_init__(self) -> None:
        if not self.database_url:
            raise ValueError("database_url is required")
        if not 0 <= self.pool_min_size <= self.pool_max_size or self.pool_max_size < 1:
            raise ValueError("need 0 <= pool_min_size <= pool_max_size, pool_max_size >= 1")
        if self.comments_per_minute < 1:
            raise ValueError("comments_per_minute must be at least 1")
        if self.typing_burst < 1:
            raise ValueError("typing_burst must be at least 1")
        for name in ("pool_timeout", "query_timeout", "presence_ttl", "typing_ttl",
                     "typing_refresh", "typing_per_second", "idempotency_ttl",
                     "maintenance_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.token_expiration_minutes is not None and self.token_expiration_minutes < 1:
            raise ValueError("token_expiration_minutes must be positive or None")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
