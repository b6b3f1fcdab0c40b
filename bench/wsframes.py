"""A minimal WebSocket client codec (RFC 6455), without I/O, for the load generator.

The load generator holds thousands of connections in one process; a full client library
costs more per frame than the servers it measures. This codec does only what the bench
needs: the opening handshake, unmasked server frames (text, binary, ping, close, fragments)
and masked client frames. No extensions are offered, so no server compresses.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class ProtocolError(Exception):
    """The server broke the protocol (or refused the upgrade)."""


def handshake_request(host: str, port: int, path: str,
                      headers: dict[str, str] | None = None) -> tuple[bytes, str]:
    """The HTTP upgrade request and the Sec-WebSocket-Key it carries."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324


@dataclass
class HandshakeResult:
    status: int
    rest: bytes  # bytes after the response head: the first frames


def parse_handshake(buffer: bytes, key: str) -> HandshakeResult | None:
    """None while the response head is incomplete; raises ProtocolError on a refusal."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > 65536:
            raise ProtocolError("handshake response too large")
        return None
    head = buffer[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {head[0]!r}")
    status = int(parts[1])
    if status != 101:
        raise ProtocolError(f"upgrade refused: {head[0]} {buffer[end + 4:end + 300]!r}")
    fields = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("sec-websocket-accept") != accept_value(key):
        raise ProtocolError("bad Sec-WebSocket-Accept")
    return HandshakeResult(status, buffer[end + 4:])


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: FIN set, masked with an all-zero key (valid, and free to apply)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


def encode_server_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked frame as a server sends it (the plain-socket floor sends these)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


@dataclass
class FrameParser:
    """Feed bytes from the server; get complete messages as (opcode, payload)."""

    max_size: int = 16 * 1024 * 1024
    _buf: bytearray = field(default_factory=bytearray)
    _frag_op: int | None = None
    _frag: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b1 & 0x80:
                raise ProtocolError("server frames must not be masked")
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            if length > self.max_size:
                raise ProtocolError(f"frame of {length} bytes")
            if n - pos < head + length:
                break
            payload = bytes(buf[pos + head:pos + head + length])
            pos += head + length
            opcode = b0 & 0x0F
            fin = bool(b0 & 0x80)
            if opcode >= 0x8:  # control frames are never fragmented
                out.append((opcode, payload))
            elif opcode == OP_CONT:
                if self._frag_op is None:
                    raise ProtocolError("continuation without a start")
                self._frag += payload
                if fin:
                    out.append((self._frag_op, bytes(self._frag)))
                    self._frag_op = None
                    self._frag = bytearray()
            elif fin:
                out.append((opcode, payload))
            else:
                self._frag_op = opcode
                self._frag = bytearray(payload)
        if pos:
            del buf[:pos]
        return out
