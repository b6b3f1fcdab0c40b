"""The naive bridge: encode/broadcaster's Postgres backend behind a Starlette WebSocket.

The usual Python answer, written as broadcaster's README writes it: one broadcaster
subscription per socket, on the channel courtside's triggers NOTIFY (``courtside``), and a
send loop per socket (plus a workaround for its concurrent-LISTEN bug, below). Broadcaster
hands every message of a channel to every subscriber of it, so each socket's loop keeps the
messages of its own topic (a substring test, cheaper than parsing) and sends them on as
they came. Run as ``python -m bench.naive_server --port P`` with DATABASE_URL set.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import uvicorn
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CHANNEL = "courtside"


def build_app(dsn: str) -> Starlette:
    broadcast = Broadcast(dsn)
    state = {"connected": False}

    async def websocket(ws: WebSocket) -> None:
        # jsonb renders the NOTIFY payload with this exact spacing.
        needle = f'"t": "{ws.query_params.get("topic", "")}"'
        await ws.accept()
        async with broadcast.subscribe(channel=CHANNEL) as subscriber:
            await ws.send_text("ready")

            async def sender() -> None:
                async for event in subscriber:  # type: ignore[union-attr]
                    if event is not None and needle in event.message:
                        await ws.send_text(event.message)

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                with contextlib.suppress(WebSocketDisconnect):
                    while (await ws.receive())["type"] != "websocket.disconnect":
                        pass
                tg.cancel_scope.cancel()

    async def readyz(_request: Request) -> PlainTextResponse:
        ok = state["connected"]
        return PlainTextResponse("ok" if ok else "starting", status_code=200 if ok else 503)

    async def hold_channel(task_status: anyio.abc.TaskStatus[None]) -> None:
        # Two sockets subscribing first at the same moment both run LISTEN on broadcaster's
        # one asyncpg connection, and one fails ("another operation is in progress",
        # encode/broadcaster#22, open). Holding one subscription from startup means the
        # sockets never run LISTEN; this one drains what it receives.
        async with broadcast.subscribe(channel=CHANNEL) as subscriber:
            task_status.started()
            async for _ in subscriber:  # type: ignore[union-attr]
                pass

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await broadcast.connect()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(hold_channel)
                state["connected"] = True
                yield
                tg.cancel_scope.cancel()
        finally:
            await broadcast.disconnect()

    return Starlette(routes=[WebSocketRoute("/ws", websocket), Route("/readyz", readyz)],
                     lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(os.environ["DATABASE_URL"]), host="127.0.0.1", port=args.port,
                ws="websockets-sansio", ws_per_message_deflate=False, log_level="warning",
                access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
