"""A TCP proxy on loopback that can stall its connections: bytes stop flowing both ways, yet
no socket closes and no error is raised — the network fault a health check has to catch."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus


class _Flow:
    def __init__(self) -> None:
        self.stalled = False
        self.resumed = anyio.Event()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.flows: list[_Flow] = []
        self.accepted = 0
        # While True, new connections are closed at once: the client cannot reconnect.
        self.refusing = False

    def stall(self) -> int:
        """Freeze every connection open now (new ones pass). Returns how many froze."""
        live = [f for f in self.flows if not f.stalled]
        for flow in live:
            flow.stalled = True
        return len(live)

    async def _pump(self, src: SocketStream, dst: SocketStream, flow: _Flow) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError,
                                 anyio.ClosedResourceError):
            while True:
                if flow.stalled:
                    await flow.resumed.wait()  # never set: a stall lasts until the end
                data = await src.receive(65536)
                if flow.stalled:
                    await flow.resumed.wait()
                await dst.send(data)
        await dst.aclose()

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            if self.refusing:
                return
            self.accepted += 1
            try:
                server = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            flow = _Flow()
            self.flows.append(flow)
            async with server, anyio.create_task_group() as pumps:
                pumps.start_soon(self._pump, client, server, flow)
                pumps.start_soon(self._pump, server, client, flow)

    async def serve(self, *, task_status: TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = int(listener.extra(SocketAttribute.local_port))  # noqa: S610 (anyio, not Django)
        async with listener:
            task_status.started()
            await listener.serve(self._handle)


@contextlib.asynccontextmanager
async def proxy(target_host: str, target_port: int) -> AsyncIterator[TcpProxy]:
    p = TcpProxy(target_host, target_port)
    async with anyio.create_task_group() as tg:
        await tg.start(p.serve)
        try:
            yield p
        finally:
            tg.cancel_scope.cancel()
