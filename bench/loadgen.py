"""Thousands of WebSocket subscribers in one process, on raw asyncio transports.

Each connection stamps the arrival of every bench event with the wall clock (the writers'
stamps use the same clock, and every process on one machine shares it) and keeps
(event number, commit → receipt) pairs. Work per frame is a few bytes comparisons and, for
events, one regular-expression match: the load generator must not be the bottleneck it
measures.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from bench.dialects import ConnSpec, Dialect, find_marker, make_dialect
from bench.wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    ProtocolError,
    encode_frame,
    handshake_request,
    parse_handshake,
)


@dataclass
class Recorder:
    """Every bench event received by this process: its number and commit → receipt in ns."""

    events: array[int] = field(default_factory=lambda: array("q"))
    latencies: array[int] = field(default_factory=lambda: array("q"))

    def clear(self) -> None:
        self.events = array("q")
        self.latencies = array("q")


class WsConn(asyncio.Protocol):
    def __init__(self, owner: ClientSet, dialect: Dialect, host: str, port: int) -> None:
        self.owner = owner
        self.dialect = dialect
        self.host = host
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.close_code: int | None = None  # from the server's close frame
        self.count = 0  # bench events received on this connection
        self.reached_at: int | None = None  # when count reached the owner's target
        self._upgraded = False
        self._head = b""
        self._key = ""
        self._parser = FrameParser()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        request, self._key = handshake_request(self.host, self.port, self.dialect.path,
                                               self.dialect.headers())
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        try:
            if not self._upgraded:
                self._head += data
                result = parse_handshake(self._head, self._key)
                if result is None:
                    return
                self._upgraded = True
                self._head = b""
                for frame in self.dialect.opened():
                    self._send(OP_TEXT, frame)
                data = result.rest
                if not data:
                    return
            for opcode, payload in self._parser.feed(data):
                if opcode in (OP_TEXT, OP_BINARY):
                    self._on_message(payload, now)
                elif opcode == OP_PING:
                    self._send(OP_PONG, payload)
                elif opcode == OP_CLOSE:
                    if len(payload) >= 2:
                        self.close_code = int.from_bytes(payload[:2], "big")
                    self._fail(f"closed by server: {payload[:2].hex()} {payload[2:80]!r}")
                    if self.transport is not None:
                        self._send(OP_CLOSE, payload[:2])
                        self.transport.close()
                    return
        except ProtocolError as exc:
            self._fail(str(exc))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection lost: {exc!r}")
        self.owner.lost(self)

    # -- internals ---------------------------------------------------------------------------

    def _on_message(self, payload: bytes, now: int) -> None:
        marker = find_marker(payload)
        if marker is not None:
            n, stamp = marker
            rec = self.owner.recorder
            rec.events.append(n)
            rec.latencies.append(now - stamp)
            self.count += 1
            if self.count == self.owner.target:
                self.reached_at = now
                self.owner.reached()
            return
        for reply in self.dialect.on_text(payload):
            self._send(OP_TEXT, reply)
        if self.dialect.error is not None:
            self._fail(f"error frame: {self.dialect.error}")
        elif self.dialect.ready and not self.ready.done():
            self.ready.set_result(None)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(opcode, payload))

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
            self.ready.exception()  # retrieved: a failure nobody awaits is not an error

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(OP_CLOSE, b"\x03\xe8")
            self.transport.close()


class ClientSet:
    """The connections this process holds, and what they received."""

    def __init__(self) -> None:
        self.conns: list[WsConn] = []
        self.recorder = Recorder()
        self.target = -1
        self.unexpected_closes = 0
        self._closing = False
        self._reached = 0
        self._all_reached: asyncio.Event | None = None

    def lost(self, conn: WsConn) -> None:
        if not self._closing and conn.ready.done() and conn.ready.exception() is None:
            self.unexpected_closes += 1

    def reached(self) -> None:
        self._reached += 1
        if self._all_reached is not None and self._reached >= len(self.conns):
            self._all_reached.set()

    async def connect(self, system: str, host: str, port: int, specs: list[dict[str, Any]],
                      concurrency: int, within: float, retries: int = 0) -> dict[str, Any]:
        """Open one connection per spec, at most `concurrency` handshakes in flight; return
        when every one is subscribed (or failed after `retries` more attempts)."""
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)
        deadline = loop.time() + within
        errors: list[str] = []
        done_at: list[int] = []
        retried: list[int] = []

        async def one(spec: ConnSpec) -> WsConn | None:
            last_error = ""
            for attempt in range(retries + 1):
                if attempt:
                    # A client told to come back (NOT_READY, a dropped handshake) does,
                    # after a jittered pause, as real clients do.
                    retried.append(1)
                    await asyncio.sleep(0.2 + random.random() * 0.5 * attempt)
                async with sem:
                    dialect = make_dialect(system, spec)
                    proto: WsConn | None = None
                    try:
                        async with asyncio.timeout_at(deadline):
                            _, proto = await loop.create_connection(
                                functools.partial(WsConn, self, dialect, host, port),
                                host, port)
                            await proto.ready
                        done_at.append(time.time_ns())
                        return proto
                    except TimeoutError as exc:
                        errors.append(f"TimeoutError: {exc}")
                        if proto is not None:
                            proto.close()
                        return None
                    except (OSError, ConnectionError) as exc:
                        last_error = f"{type(exc).__name__}: {exc}"
                        if proto is not None:
                            proto.close()
            errors.append(last_error)
            return None

        self._closing = False
        started = time.time_ns()
        results = await asyncio.gather(*(one(ConnSpec(**s)) for s in specs))
        opened = [c for c in results if c is not None]
        self.conns.extend(opened)
        return {
            "ok": len(opened), "failed": len(specs) - len(opened), "errors": errors[:5],
            "retries": len(retried),
            "started_ns": started, "last_ready_ns": max(done_at) if done_at else started,
        }

    async def close_all(self) -> int:
        self._closing = True
        conns, self.conns = self.conns, []
        for conn in conns:
            conn.close()
        # Let the close frames and FINs go out before the caller measures anything.
        for _ in range(100):
            if all(c.closed for c in conns):
                break
            await asyncio.sleep(0.02)
        return len(conns)

    def reset(self, target: int = -1) -> None:
        self.recorder.clear()
        self.target = target
        self._reached = 0
        for conn in self.conns:
            conn.count = 0
            conn.reached_at = None

    async def wait_target(self, within: float) -> dict[str, Any]:
        """Wait until every connection has received `target` events (see `reset`)."""
        if self._reached < len(self.conns):
            self._all_reached = asyncio.Event()
            try:
                async with asyncio.timeout(within):
                    await self._all_reached.wait()
            except TimeoutError:
                pass
            finally:
                self._all_reached = None
        reached = [c.reached_at for c in self.conns if c.reached_at is not None]
        return {"reached": len(reached), "conns": len(self.conns),
                "last_reached_ns": max(reached) if reached else None,
                "min_count": min((c.count for c in self.conns), default=0),
                "max_count": max((c.count for c in self.conns), default=0)}

    def stats(self, samples: bool) -> dict[str, Any]:
        rec = self.recorder
        out: dict[str, Any] = {
            "received": len(rec.events),
            "conns": len(self.conns),
            "open": sum(1 for c in self.conns if not c.closed),
            "unexpected_closes": self.unexpected_closes,
            "close_codes": dict(Counter(str(c.close_code) for c in self.conns
                                        if c.close_code is not None)),
            "notices": dict(Counter(n for c in self.conns for n in c.dialect.notices)),
            "seqs": [[c.dialect.spec.topic, c.dialect.spec.token, c.dialect.seq]
                     for c in self.conns],
        }
        if samples:
            out["events"] = rec.events.tobytes()
            out["latencies"] = rec.latencies.tobytes()
        return out
