"""The floor: a bare psycopg LISTEN loop feeding a bare Starlette WebSocket send loop.

No authorization, no log, no resume, no presence, no queues: each notification of the
courtside channel is sent as it came, in turn, to every socket of its topic. Nothing that
delivers the same events can do less work per event in Python; courtside's latency is
judged against this. Run as ``python -m bench.floor_server --port P`` with DATABASE_URL set.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator

import anyio
import orjson
import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CHANNEL = "courtside"


class Floor:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.subscribers: dict[str, set[WebSocket]] = {}
        self.listening = False

    async def listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.listening = True
            async for note in conn.notifies():
                topic = orjson.loads(note.payload).get("t")
                for ws in list(self.subscribers.get(topic, ())):
                    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                        await ws.send_text(note.payload)

    async def websocket(self, ws: WebSocket) -> None:
        topic = ws.query_params.get("topic", "")
        await ws.accept()
        subs = self.subscribers.setdefault(topic, set())
        subs.add(ws)
        try:
            await ws.send_text("ready")
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            subs.discard(ws)

    async def readyz(self, _request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok" if self.listening else "starting",
                                 status_code=200 if self.listening else 503)


def build_app(dsn: str) -> Starlette:
    floor = Floor(dsn)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(floor.listen)
            yield
            tg.cancel_scope.cancel()

    return Starlette(routes=[WebSocketRoute("/ws", floor.websocket),
                             Route("/readyz", floor.readyz)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(os.environ["DATABASE_URL"]), host="127.0.0.1", port=args.port,
                ws="websockets-sansio", ws_per_message_deflate=False, log_level="warning",
                access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
