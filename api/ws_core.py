"""The state of one native WebSocket connection, without I/O.

`WsCore` turns client frames into actions for the I/O layer (`api/ws.py`): replies to send,
subscriptions to start or stop, typing indicators to publish, a close. It enforces every
limit that needs no database: frame size, message rate, subscriptions per connection,
duplicate subscriptions, whose `user:` topic may be subscribed, typing rate and expiry.
Whether a session may be read is the database's answer, so the I/O layer asks it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from api.realtime_limits import RealtimeLimits, TokenBucket
from api.realtime_protocol import (
    PONG_FRAME,
    CloseCode,
    ErrorCode,
    FrameError,
    Language,
    Ping,
    Subscribe,
    Topic,
    Typing,
    Unsubscribe,
    error_frame,
    parse_client_frame,
    unsubscribed_frame,
)
from api.typing_state import PublishTyping, TypingOutcome, TypingState


@dataclass(frozen=True)
class Reply:
    frame: bytes


@dataclass(frozen=True)
class Close:
    code: CloseCode
    reason: str


@dataclass(frozen=True)
class StartSubscription:
    topic: Topic
    since: int | None


@dataclass(frozen=True)
class StopSubscription:
    topic: Topic


Action = Reply | Close | StartSubscription | StopSubscription | PublishTyping


@dataclass
class _Subscription:
    topic: Topic
    active: bool = False  # False while the I/O layer is still authorizing and joining
    typing: TypingState | None = None


@dataclass
class WsCore:
    limits: RealtimeLimits
    user_id: uuid.UUID
    lang: Language
    now: float
    _bucket: TokenBucket = field(init=False)
    _rejected_in_row: int = field(init=False, default=0)
    _subs: dict[str, _Subscription] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.limits.messages_per_second, self.limits.message_burst,
                                   self.now)

    # -- frames from the client --------------------------------------------------------------

    def receive_bytes(self, now: float) -> list[Action]:
        return [Close(CloseCode.UNSUPPORTED_DATA, "binary frames are not part of the protocol")]

    def receive_text(self, text: str, now: float) -> list[Action]:
        limit = self.limits.max_frame_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            return [Close(CloseCode.MESSAGE_TOO_BIG, f"frames are limited to {limit} bytes")]
        if not self._bucket.allow(now):
            self._rejected_in_row += 1
            if self._rejected_in_row > self.limits.close_after_rejected:
                return [Close(CloseCode.RATE_LIMITED, "message rate exceeded")]
            if self._rejected_in_row == 1:
                return [Reply(error_frame(ErrorCode.RATE_LIMITED, self.lang))]
            return []  # already told; dropped
        self._rejected_in_row = 0
        try:
            frame = parse_client_frame(text)
        except FrameError as exc:
            return [Reply(error_frame(exc.code, self.lang, exc.topic, exc.detail))]
        if isinstance(frame, Ping):
            return [Reply(PONG_FRAME)]
        if isinstance(frame, Subscribe):
            return self._subscribe(frame)
        if isinstance(frame, Unsubscribe):
            return self._unsubscribe(frame.topic)
        return self._typing(frame, now)

    def _error(self, code: ErrorCode, topic: Topic | None = None) -> list[Action]:
        return [Reply(error_frame(code, self.lang, None if topic is None else topic.name))]

    def _subscribe(self, frame: Subscribe) -> list[Action]:
        topic = frame.topic
        if topic.name in self._subs:
            return self._error(ErrorCode.ALREADY_SUBSCRIBED, topic)
        if topic.kind == "user" and topic.id != self.user_id:
            return self._error(ErrorCode.FORBIDDEN, topic)
        if len(self._subs) >= self.limits.max_subscriptions:
            return self._error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, topic)
        self._subs[topic.name] = _Subscription(topic)
        return [StartSubscription(topic, frame.since)]

    def _unsubscribe(self, topic: Topic) -> list[Action]:
        sub = self._subs.pop(topic.name, None)
        if sub is None:
            return self._error(ErrorCode.NOT_SUBSCRIBED, topic)
        actions: list[Action] = [StopSubscription(topic)]
        if sub.typing is not None and sub.typing.active:
            actions.append(PublishTyping(topic, False))
        actions.append(Reply(unsubscribed_frame(topic.name)))
        return actions

    def _typing(self, frame: Typing, now: float) -> list[Action]:
        sub = self._subs.get(frame.topic.name)
        if sub is None or not sub.active:
            return self._error(ErrorCode.NOT_SUBSCRIBED, frame.topic)
        if sub.typing is None:
            sub.typing = TypingState.new(self.limits, now)
        outcome = sub.typing.request(frame.is_typing, now, self.limits)
        if outcome is TypingOutcome.RATE_LIMITED:
            return self._error(ErrorCode.TYPING_RATE_LIMITED, frame.topic)
        if outcome is TypingOutcome.QUIET:
            return []
        return [PublishTyping(frame.topic, frame.is_typing)]

    # -- outcomes reported by the I/O layer --------------------------------------------------

    def subscription_started(self, topic: Topic) -> None:
        sub = self._subs.get(topic.name)
        if sub is not None:
            sub.active = True

    def subscription_refused(self, topic: Topic) -> None:
        self._subs.pop(topic.name, None)

    def subscription_revoked(self, topic: Topic, code: ErrorCode) -> list[Action]:
        """The server ends a subscription (participant removed, session closed...)."""
        sub = self._subs.pop(topic.name, None)
        if sub is None:
            return []
        actions: list[Action] = [StopSubscription(topic)]
        if sub.typing is not None and sub.typing.active:
            actions.append(PublishTyping(topic, False))
        actions.append(Reply(error_frame(code, self.lang, topic.name)))
        actions.append(Reply(unsubscribed_frame(topic.name)))
        return actions

    # -- typing expiry -----------------------------------------------------------------------

    def next_typing_deadline(self) -> float | None:
        deadlines = [s.typing.deadline for s in self._subs.values()
                     if s.typing is not None and s.typing.deadline is not None]
        return min(deadlines, default=None)

    def typing_due(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for sub in self._subs.values():
            if sub.typing is not None and sub.typing.expire(now):
                actions.append(PublishTyping(sub.topic, False))
        return actions

    # -- inspection --------------------------------------------------------------------------

    def is_subscribed(self, topic: str) -> bool:
        sub = self._subs.get(topic)
        return sub is not None and sub.active

    def topics(self) -> list[str]:
        return list(self._subs)

    def typing_active(self, topic: str) -> bool:
        sub = self._subs.get(topic)
        return sub is not None and sub.typing is not None and sub.typing.active

