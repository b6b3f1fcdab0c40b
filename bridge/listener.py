"""The one LISTEN connection of a process: connect, LISTEN, pump, health-check, reconnect.

It lives outside the pool, in autocommit. psycopg's ``notifies()`` holds the connection for
as long as it runs, so it runs in slices of ``health_interval``; between two slices a
``SELECT 1`` must answer within ``health_timeout`` (a stop waits for it). A server restart
or a terminated backend shows up as an error; a stalled TCP connection shows up only as
that query's silence. Notifications that arrive during the query are kept by psycopg and
come with the next slice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskStatus
from psycopg import sql

from bridge.backoff import Backoff
from bridge.config import BridgeConfig

log = logging.getLogger("courtside.bridge")


class Listener:
    def __init__(self, dsn: str, config: BridgeConfig, application_name: str, *,
                 on_notify: Callable[[str], None],
                 on_up: Callable[[bool], Coroutine[Any, Any, None]],
                 on_down: Callable[[], None]) -> None:
        self._dsn = dsn
        self._config = config
        self._application_name = application_name
        self._on_notify = on_notify
        self._on_up = on_up
        self._on_down = on_down
        self.connected = False
        self.backend_pid: int | None = None
        self.reconnects = 0
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)

    def caught_up(self) -> None:
        """The owner says this connection's catch-up finished: the next loss starts afresh."""
        self._backoff.reset()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        first = True
        while True:
            conn = await self._connect()
            if conn is not None:
                try:
                    async with anyio.create_task_group() as tg:
                        self.connected = True
                        self.backend_pid = conn.info.backend_pid
                        if first:
                            task_status.started()
                        else:
                            self.reconnects += 1
                        tg.start_soon(self._on_up, first)
                        first = False
                        await self._pump(conn)
                except Exception as exc:
                    log.warning("LISTEN connection lost (%r); reconnecting", _cause(exc))
                finally:
                    self.connected = False
                    self.backend_pid = None
                    self._on_down()
                    # Closing only drops the socket: it cannot hang on a stalled peer.
                    await conn.close()
            await anyio.sleep(self._backoff.next())

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]] | None:
        cfg = self._config
        conn = None
        try:
            with anyio.fail_after(cfg.connect_timeout):
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, application_name=self._application_name,
                    connect_timeout=max(2, int(cfg.connect_timeout)))
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(cfg.channel)))
            return conn
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("LISTEN connection failed (%r); retrying", exc)
            if conn is not None:
                await conn.close()
            return None

    async def _pump(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        cfg = self._config
        while True:
            async with contextlib.aclosing(conn.notifies(timeout=cfg.health_interval)) as gen:
                async for notify in gen:
                    if notify.channel == cfg.channel:
                        self._on_notify(notify.payload)
            # Shielded (bridge/finish.py): a stop that lands mid-query would make psycopg
            # try to cancel it, be interrupted again, and warn as it closes the connection.
            with anyio.CancelScope(shield=True), anyio.fail_after(cfg.health_timeout):
                await conn.execute("SELECT 1")


def _cause(exc: BaseException) -> BaseException:
    """The first real error inside the task groups' exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
