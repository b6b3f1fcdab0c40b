"""One connection's typing indicator in one topic, without I/O: shared by the native WebSocket
core (api/ws_core.py) and the Pusher core (api/pusher_protocol.py), so both transports
coalesce, rate-limit and expire typing the same way."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from api.realtime_limits import RealtimeLimits, TokenBucket
from api.realtime_protocol import Topic


@dataclass(frozen=True)
class PublishTyping:
    """Action for the I/O layer: publish `user.typing` for this connection's user."""

    topic: Topic
    is_typing: bool


class TypingOutcome(Enum):
    PUBLISH = "publish"  # say it: the state changed, or a refresh is due
    QUIET = "quiet"  # nothing new to say (a repeat inside typing_refresh, or already off)
    RATE_LIMITED = "rate_limited"


@dataclass
class TypingState:
    bucket: TokenBucket
    active: bool = False
    published_at: float = float("-inf")
    deadline: float | None = None  # when an unrenewed `true` turns itself off

    @classmethod
    def new(cls, limits: RealtimeLimits, now: float) -> TypingState:
        return cls(TokenBucket(limits.typing_per_second, limits.typing_burst, now))

    def request(self, is_typing: bool, now: float, limits: RealtimeLimits) -> TypingOutcome:
        """The client says it is (or stopped) typing at `now`."""
        if is_typing:
            if self.active and now - self.published_at < limits.typing_refresh:
                self.deadline = now + limits.typing_ttl
                return TypingOutcome.QUIET
        elif not self.active:
            return TypingOutcome.QUIET
        if not self.bucket.allow(now):
            return TypingOutcome.RATE_LIMITED
        self.active = is_typing
        self.published_at = now
        self.deadline = now + limits.typing_ttl if is_typing else None
        return TypingOutcome.PUBLISH

    def expire(self, now: float) -> bool:
        """True when an unrenewed `true` just ran out (publish `false`)."""
        if self.deadline is not None and self.deadline <= now:
            self.active = False
            self.deadline = None
            return True
        return False
