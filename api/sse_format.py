"""Server-Sent Events framing (WHATWG HTML §9.2), without I/O.

A durable event is ``id: <seq>``, ``event: <name>``, ``data: <payload JSON>``; an ephemeral
one has no ``id:`` so it does not move the client's Last-Event-ID. A reset carries the
topic's current seq as its id: the client resumes from there on its next reconnect.
"""

from __future__ import annotations

import orjson

from api.realtime_protocol import MAX_SEQ


class ResumeError(ValueError):
    """A Last-Event-ID or ``since`` that is not a seq."""


def _field(name: bytes, value: bytes) -> bytes:
    # orjson never emits raw line breaks, but a field value must not contain one whatever
    # its source: each line becomes its own field line, as the spec prescribes for data.
    if b"\n" not in value and b"\r" not in value:
        return name + b": " + value + b"\n"
    lines = value.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"".join(name + b": " + line + b"\n" for line in lines)


def _one_line(value: str) -> bytes:
    return value.replace("\r", " ").replace("\n", " ").encode()


def event(name: str, data: bytes, seq: int | None = None) -> bytes:
    parts = []
    if seq is not None:
        parts.append(b"id: " + str(seq).encode() + b"\n")
    parts.append(b"event: " + _one_line(name) + b"\n")
    parts.append(_field(b"data", data))
    parts.append(b"\n")
    return b"".join(parts)


def reset(topic: str, seq: int) -> bytes:
    return event("reset", orjson.dumps({"topic": topic, "seq": seq}), seq)


def comment(text: str) -> bytes:
    return b": " + _one_line(text) + b"\n\n"


def retry(milliseconds: int) -> bytes:
    return b"retry: " + str(int(milliseconds)).encode() + b"\n\n"


def _seq(value: str) -> int:
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise ResumeError(value)
    seq = int(value)
    if seq > MAX_SEQ:
        raise ResumeError(value)
    return seq


def resume_point(last_event_id: str | None, since: str | None) -> int | None:
    """Where a stream resumes. Last-Event-ID wins: a browser's EventSource sends it on every
    reconnect, while the ``since`` in its URL still names where the first connection began.
    An empty Last-Event-ID (nothing seen yet) falls back to ``since``."""
    if last_event_id is not None and last_event_id.strip():
        return _seq(last_event_id)
    if since is not None and since.strip():
        return _seq(since)
    return None
