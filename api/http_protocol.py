"""courtside's HTTP protocol for uvicorn: httptools, plus pre-built body chunks for streams.

An SSE stream sends each event as one chunk of a chunked HTTP/1.1 body, and every subscriber
of a session gets the same bytes. Through ASGI each chunk costs a task waking up per stream
and a `send` that passes through every middleware layer and frames the chunk again: about
100 µs of server CPU per delivery, ten times a WebSocket's (bench/results/README.md, "SSE
fan-out"). With a `ChunkWriter` the stream hands its subscription a `Direct`
(bridge/direct.py) and the bridge's fan-out writes the pre-built chunk to the socket itself,
as it does for WebSocket frames.

`courtside serve` runs uvicorn with ``http="api.http_protocol:CourtsideHttpProtocol"``.
Every request's scope then carries a writer, ``scope["extensions"][CHUNKS_EXTENSION]
["writer"]``; `chunk_writer(scope)` finds it. The response starts through ASGI as usual (so
middleware still sets its headers); `ChunkWriter.start` then lets the body be written here,
and `finish` gives it back before the app sends the body's end through ASGI. Everything else
is uvicorn's own. Without the writer (uvicorn's h11 protocol, another server) the app
streams through ASGI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from api.ws_protocol import bound_send_buffers
from bridge import Gate

CHUNKS_EXTENSION = "courtside.prebuilt_chunks"


def http_chunk(payload: bytes) -> bytes:
    """``payload`` as one chunk of a chunked HTTP/1.1 body (RFC 9112 §7.1). Nothing for an
    empty payload: a chunk of size 0 is the body's end, which only uvicorn writes."""
    if not payload:
        return b""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _closed(data: bytes) -> None:
    raise RuntimeError("not streaming")


class ChunkWriter:
    """One response's body, written as chunks without awaiting, once `start`-ed."""

    __slots__ = ("_cycle", "_on_lost", "_on_stop", "_protocol", "gate", "streaming")

    def __init__(self, protocol: CourtsideHttpProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._cycle = cycle
        # The connection as the fan-out sees it: open exactly while `write` would write and
        # the transport's buffer is under its high-water mark.
        self.gate = Gate()
        self.gate.write = _closed
        self.streaming = False
        self._on_lost: Callable[[], object] | None = None
        self._on_stop: Callable[[], object] | None = None

    def start(self, on_lost: Callable[[], object], on_stop: Callable[[], object]) -> bool:
        """After the app has sent ``http.response.start`` through ASGI: the body is written
        here from now on. False (nothing changes) unless the response is a chunked body
        still being sent on a live connection.

        ``on_lost()`` is called when the connection is lost, ``on_stop()`` when the server
        starts shutting down (at once if it already has): callbacks, so that a stream needs
        no task of its own waiting for either."""
        cycle, protocol = self._cycle, self._protocol
        transport = protocol.transport
        if (not cycle.response_started or cycle.chunked_encoding is not True
                or cycle.response_complete or cycle.disconnected or transport.is_closing()
                or protocol.cycle is not cycle):
            return False
        self.streaming = True
        protocol.streaming = self
        self._on_lost, self._on_stop = on_lost, on_stop
        self.gate.write = transport.write
        # As for a WebSocket: a peer that stops reading holds a bounded amount here before
        # its events queue in the bridge and it is cut off.
        bound_send_buffers(transport)
        self.regate()
        if protocol.stopping:
            on_stop()
        return True

    def finish(self) -> None:
        """The app takes the body back (to end it through ASGI); later writes are refused."""
        self.streaming = False
        self.gate.open = False
        self.gate.write = _closed
        self._on_lost = self._on_stop = None
        if self._protocol.streaming is self:
            self._protocol.streaming = None

    def lost(self) -> None:
        """The protocol's: the connection is gone."""
        self.regate()
        if self._on_lost is not None:
            self._on_lost()

    def stop(self) -> None:
        """The protocol's: the server is shutting down."""
        if self._on_stop is not None:
            self._on_stop()

    def regate(self) -> None:
        self.gate.open = (self.streaming and not self._cycle.disconnected
                          and not self._protocol.flow.write_paused)

    def write(self, chunk: bytes) -> bool:
        """Write one pre-built chunk (`http_chunk`) now; False when the stream takes no
        more (finished, or the connection is closing or lost)."""
        if (not self.streaming or self._cycle.disconnected
                or self._protocol.transport.is_closing()):
            return False
        self._protocol.transport.write(chunk)
        return True

    @property
    def write_paused(self) -> bool:
        """The transport's buffer is above its high-water mark: the peer is not reading."""
        return bool(self._protocol.flow.write_paused)

    async def drained(self) -> None:
        """Returns once the buffer is back under the low-water mark (or the peer is gone)."""
        await self._protocol.flow.drain()

    def abort(self) -> None:
        """Drop the connection at once, unsent bytes and all (a peer that stopped reading).
        Nothing more is written; `on_lost` is called once the transport has closed."""
        self.streaming = False
        self.gate.open = False
        self._protocol.transport.abort()


class CourtsideHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a `ChunkWriter` in every request's scope."""

    writer_class = ChunkWriter

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streaming: ChunkWriter | None = None  # the writer whose body is written directly
        self.stopping = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # No cycle of this request: an upgrade (the WebSocket protocol takes over).
        if cycle is not None and cycle.scope is self.scope:
            extensions = self.scope.setdefault("extensions", {})
            extensions[CHUNKS_EXTENSION] = {"writer": self.writer_class(self, cycle)}

    def on_response_complete(self) -> None:
        self._forget_writer()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.streaming is not None:
            self.streaming.lost()
        self._forget_writer()

    def _forget_writer(self) -> None:
        # The scope refers to the cycle through the writer, and the cycle to the scope:
        # break that loop once the response is over, so it is freed by reference counting.
        cycle = self.cycle
        if cycle is not None and (cycle.response_complete or cycle.disconnected):
            cycle.scope.get("extensions", {}).pop(CHUNKS_EXTENSION, None)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.streaming is not None:
            self.streaming.regate()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.streaming is not None:
            self.streaming.regate()

    def shutdown(self) -> None:
        # The server stops: uvicorn only stops keeping the connection alive, and would wait
        # out its graceful-shutdown timeout for a stream that never ends by itself.
        super().shutdown()
        self.stopping = True
        if self.streaming is not None:
            self.streaming.stop()


def chunk_writer(scope: Mapping[str, Any]) -> ChunkWriter | None:
    ext = scope.get("extensions") or {}
    entry = ext.get(CHUNKS_EXTENSION)
    if entry is None:
        return None
    writer: ChunkWriter = entry["writer"]
    return writer


__all__ = ["CHUNKS_EXTENSION", "ChunkWriter", "CourtsideHttpProtocol", "chunk_writer",
           "http_chunk"]
