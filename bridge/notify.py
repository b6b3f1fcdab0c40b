"""Decoding the channel's notifications (format in docs/INTERNALS.md). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bridge.errors import NotifyDecodeError
from bridge.events import Control, Event


@dataclass(frozen=True)
class Durable:
    """A logged event. ``event`` is None for a stub: read ``(topic, seq)`` from the log."""

    topic: str
    seq: int
    event: Event | None


@dataclass(frozen=True)
class Ephemeral:
    event: Event


Notice = Durable | Ephemeral | Control


def _str(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise NotifyDecodeError(f"field {key!r} must be a string, not {value!r}")
    return value


def _opt_str(msg: dict[str, Any], key: str) -> str | None:
    value = msg.get(key)
    if value is not None and not isinstance(value, str):
        raise NotifyDecodeError(f"field {key!r} must be a string or null, not {value!r}")
    return value


def decode(payload: str | bytes) -> Notice:
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise NotifyDecodeError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise NotifyDecodeError("not a JSON object")
    kind = msg.get("k")
    if kind == "e":
        topic = _str(msg, "t")
        seq = msg.get("s")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise NotifyDecodeError(f"bad seq {seq!r}")
        if "e" not in msg:
            return Durable(topic, seq, None)
        return Durable(topic, seq, _event(msg, topic, seq))
    if kind == "x":
        topic = _str(msg, "t")
        return Ephemeral(_event(msg, topic, None))
    if kind == "c":
        data = msg.get("d")
        if not isinstance(data, dict):
            raise NotifyDecodeError("control payload must be an object")
        return Control(_str(msg, "e"), data)
    raise NotifyDecodeError(f"unknown kind {kind!r}")


def _event(msg: dict[str, Any], topic: str, seq: int | None) -> Event:
    if "d" not in msg:
        raise NotifyDecodeError("event without payload")
    payload = msg["d"]
    return Event(topic, seq, _str(msg, "e"), _opt_str(msg, "o"), orjson.dumps(payload), payload)
