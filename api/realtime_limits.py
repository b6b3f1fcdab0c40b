"""Limits on everything a realtime client controls, and the token bucket that meters rates.

Pure code: time is passed in, so the tests drive it without sleeping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from api.envconfig import overrides


@dataclass(frozen=True)
class RealtimeLimits:
    # Frames larger than this close the socket (1009). The ASGI server gets the same bound
    # (uvicorn ws_max_size) so an oversized frame is refused before it is buffered whole.
    max_frame_bytes: int = 4096
    max_subscriptions: int = 50  # per WebSocket connection
    messages_per_second: float = 20.0  # sustained rate of client frames per connection
    message_burst: int = 40
    # After being told RATE_LIMITED, this many more frames over the rate close the socket.
    close_after_rejected: int = 20
    typing_per_second: float = 2.0  # user.typing publications per connection and topic
    typing_burst: int = 4
    typing_ttl: float = 5.0  # a typing indicator not renewed within this goes false
    typing_refresh: float = 1.0  # a repeated isTyping=true inside this only extends the ttl
    connections_per_user: int = 20  # WebSocket + SSE connections of one user on one process
    outbound_queue: int = 1000  # bridge queue per subscription before the subscriber is cut off
    sse_heartbeat: float = 15.0  # seconds between SSE comment lines
    sse_retry_ms: int = 3000  # the EventSource reconnection delay the server asks for
    tickets_per_token: int = 50  # unexpired tickets one token may hold

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> RealtimeLimits:
        """``COURTSIDE_RT_<FIELD>`` overrides a field, e.g. COURTSIDE_RT_MAX_SUBSCRIPTIONS=10."""
        env = os.environ if environ is None else environ
        values = overrides(cls, "COURTSIDE_RT_", env)
        for name, value in values.items():
            # Every limit is a size, a rate or a duration: zero or less would refuse everyone
            # (or nobody), never what was meant.
            if value <= 0:
                raise ValueError(f"COURTSIDE_RT_{name.upper()}={value!r}: must be positive")
        return cls(**values)  # type: ignore[arg-type]


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; each allowed action spends one."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def allow(self, now: float) -> bool:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class UserConnections:
    """How many realtime connections each user holds on this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, user_id: str) -> bool:
        count = self._counts.get(user_id, 0)
        if count >= self.limit:
            return False
        self._counts[user_id] = count + 1
        return True

    def release(self, user_id: str) -> None:
        count = self._counts.get(user_id, 0) - 1
        if count <= 0:
            self._counts.pop(user_id, None)
        else:
            self._counts[user_id] = count

    def count(self, user_id: str) -> int:
        return self._counts.get(user_id, 0)
