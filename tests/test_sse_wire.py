"""The SSE stream, byte for byte, read with a raw HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import orjson
import pytest

from api.realtime_limits import RealtimeLimits
from tests import factories
from tests.test_realtime_support import build_app, rest, running, ws_client


async def messages(lines: AsyncIterator[str]) -> AsyncIterator[list[str]]:
    """Group the stream's lines into messages (blank-line separated)."""
    block: list[str] = []
    async for line in lines:
        if line == "":
            if block:
                yield block
            block = []
        else:
            block.append(line)


@pytest.mark.anyio
async def test_sse_wire_format(db: str) -> None:
    world = factories.world(db, participants=2)
    reader, other = world.participants
    limits = RealtimeLimits(sse_heartbeat=0.3, sse_retry_ms=1500)
    with running(build_app(db, limits)) as base:
        headers = {"Authorization": f"Bearer {factories.token(db, reader)}"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as http, \
                http.stream("GET", f"/api/sessions/{world.session_id}/events",
                            headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "no-cache" in response.headers["cache-control"]
            assert response.headers["x-accel-buffering"] == "no"
            stream = messages(response.aiter_lines())
            with anyio.fail_after(10):
                assert await anext(stream) == ["retry: 1500"]
                # An ephemeral event: no id, so Last-Event-ID does not move.
                async with ws_client(base, factories.token(db, other)) as ws:
                    await ws.subscribe(world.topic)
                    while True:
                        online = await anext(stream)
                        if online[0] == "event: user.online" and str(other) in online[1]:
                            break
                assert len(online) == 2
                assert orjson.loads(online[1].removeprefix("data: "))["userId"] == str(other)

                async with rest(base, factories.token(db, other)) as api:
                    r = await api.http.post(f"/api/sessions/{world.session_id}/comments",
                                            json={"content": "octets"}, headers=api.headers)
                    assert r.status_code == 201
                seen_heartbeat = False
                while True:
                    message = await anext(stream)
                    if message[0].startswith(":"):
                        seen_heartbeat = True
                        continue
                    if message[0].startswith("id:"):
                        break
                # The data line is the REST body's `data`, byte for byte, in {"comment": ...}.
                raw_data = orjson.dumps(orjson.loads(r.content)["data"]).decode()
                assert message == ["id: 1", "event: comment.created",
                                   f'data: {{"comment":{raw_data}}}']
                while not seen_heartbeat:
                    message = await anext(stream)
                    seen_heartbeat = message[0].startswith(":")
