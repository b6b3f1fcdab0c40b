"""The Bridge: composes the LISTEN connection, the hub, the catch-up worker and presence."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import anyio
from anyio.abc import TaskStatus
from psycopg_pool import AsyncConnectionPool

from bridge.backoff import Backoff
from bridge.config import BridgeConfig
from bridge.errors import BridgeClosed, BridgeError, BridgeUnavailable, NotifyDecodeError
from bridge.events import RESYNC, Control
from bridge.hub import COMPILED_FANOUT, Hub
from bridge.listener import Listener
from bridge.notify import Durable, Ephemeral, decode
from bridge.poolcheck import RecentCheck
from bridge.presence import Presence
from bridge.store import Store
from bridge.subqueue import BoundedQueue
from bridge.subscription import Subscription

log = logging.getLogger("courtside.bridge")

ControlCallback = Callable[[Control], None]


def default_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Bridge:
    """PostgreSQL → in-process subscribers. API contract: docs/INTERNALS.md, "Bridge API"."""

    def __init__(self, dsn: str, listen_dsn: str | None = None, node_id: str | None = None,
                 config: BridgeConfig | None = None, *,
                 pool: AsyncConnectionPool | None = None) -> None:
        self.config = cfg = config or BridgeConfig()
        self.node_id = node_id or default_node_id()
        self._own_pool = pool is None
        self.pool: AsyncConnectionPool = pool or AsyncConnectionPool(
            dsn, min_size=cfg.pool_min_size, max_size=cfg.pool_max_size, open=False,
            # No server-side prepares: DATABASE_URL may go through a transaction pooler.
            kwargs={"autocommit": True, "prepare_threshold": None},
            check=RecentCheck(),
            timeout=cfg.pool_timeout, name="courtside-bridge")
        self._store = Store(self.pool, cfg.query_timeout)
        self.presence = Presence(self.pool, self.node_id, cfg)
        self._listener = Listener(
            listen_dsn or dsn, cfg, f"courtside-listen:{self.node_id}"[:63],
            on_notify=self._on_notify, on_up=self._on_up, on_down=self._on_down)
        self._hub: Hub | None = None
        self._controls: dict[int, ControlCallback] = {}
        self._next_control = 0
        self._caught_up = False
        self._ready_changed: anyio.Event | None = None

    # --- state -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """LISTEN connected and every topic caught up since the last (re)connect."""
        return self._listener.connected and self._caught_up

    async def wait_ready(self) -> None:
        while not self.ready:
            if self._ready_changed is None:
                raise BridgeClosed("the bridge is not running")
            await self._ready_changed.wait()

    def _signal_ready_change(self) -> None:
        if self._ready_changed is not None:
            self._ready_changed.set()
            self._ready_changed = anyio.Event()

    @property
    def listen_backend_pid(self) -> int | None:
        return self._listener.backend_pid

    def stats(self) -> dict[str, int]:
        hub = self._hub
        return {
            "ready": int(self.ready),
            "topics": len(hub.topics) if hub else 0,
            "subscribers": hub.subscriber_count() if hub else 0,
            "queued": hub.queued() if hub else 0,
            "notifications": hub.notifications if hub else 0,
            "repairs": hub.repairs if hub else 0,
            "pushes": hub.pushes if hub else 0,
            "cutoffs": hub.cutoffs if hub else 0,
            "reconnects": self._listener.reconnects,
            "leaves_queued": len(self.presence.leaves),
            "leave_batches": self.presence.leaves.batches,
            "leave_retries": self.presence.leaves.retries,
            "joins_queued": len(self.presence.joins),
            "join_batches": self.presence.joins.batches,
        }

    # --- lifetime ----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Reports started once the first LISTEN is up."""
        if self._hub is not None:
            raise BridgeError("a Bridge runs once; make a new one")
        hub = self._hub = Hub(self.config.topic_buffer)
        self._ready_changed = anyio.Event()
        try:
            if self._own_pool:
                await self.pool.open(wait=False)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._catch_up_loop, hub)
                await tg.start(self.presence.leaves.run)
                await tg.start(self.presence.joins.run)
                await tg.start(self._listener.run)
                try:
                    await self.presence.heartbeat()
                except BridgeUnavailable as exc:
                    log.warning("first node heartbeat failed: %s", exc)
                tg.start_soon(self.presence.run_heartbeat)
                tg.start_soon(self.presence.run_rejoin)
                tg.start_soon(self.presence.run_reaper)
                if self.config.retention is not None:
                    tg.start_soon(self._prune_loop, self.config.retention)
                task_status.started()
        finally:
            hub.close()
            self._caught_up = False
            self._signal_ready_change()
            self._ready_changed = None
            with anyio.CancelScope(shield=True):
                try:
                    await self.presence.leave_node(min(self.config.query_timeout, 3.0))
                except BridgeUnavailable as exc:
                    log.warning("could not leave cleanly: %s", exc)
                if self._own_pool:
                    await self.pool.close(timeout=1.0)

    async def _on_up(self, first: bool) -> None:
        hub = self._hub
        assert hub is not None
        marks = hub.request_repair_all()
        if not first:
            self._emit_control(Control(RESYNC, {}))
        while not hub.caught_up(marks) and not hub.closed:
            await hub.wait_progress()
        self._caught_up = True
        self._listener.caught_up()
        self._signal_ready_change()
        log.info("node %s ready: LISTEN connected (backend %s)%s%s", self.node_id,
                 self._listener.backend_pid,
                 "" if first else f", {len(marks)} topics caught up after a reconnect",
                 "" if not first or COMPILED_FANOUT
                 else "; fan-out loop in Python (bridge/_fanout.c not built)")

    def _on_down(self) -> None:
        self._caught_up = False
        self._signal_ready_change()

    async def _catch_up_loop(self, hub: Hub) -> None:
        cfg = self.config
        backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)
        while True:
            await hub.wait_dirty()
            if hub.closed:
                return
            batch = hub.take_dirty(cfg.repair_batch)
            heads = [(t.name, t.seq.head) for t in batch]
            epochs = [t.seq.epoch for t in batch]
            try:
                reads = await self._store.catch_up(heads, cfg.backlog_page, epochs)
            except BridgeUnavailable as exc:
                hub.give_back(batch)
                log.warning("catch-up read failed: %s", exc)
                # A LISTEN reconnect means the database is back: retry at once then.
                with anyio.move_on_after(backoff.next()):
                    await hub.wait_kick()
                continue
            backoff.reset()
            for topic in batch:
                hub.apply(topic, reads[topic.name])
            hub.progressed()

    async def _prune_loop(self, keep: float) -> None:
        while True:
            try:
                gone = await self._store.prune(keep)
            except BridgeUnavailable as exc:
                log.warning("pruning the event log failed: %s", exc)
            else:
                if gone:
                    log.info("pruned %d events older than %ss", gone, keep)
            await anyio.sleep(self.config.prune_interval)

    # --- notifications -----------------------------------------------------------------------

    def _on_notify(self, payload: str) -> None:
        hub = self._hub
        assert hub is not None
        try:
            notice = decode(payload)
        except NotifyDecodeError as exc:
            log.warning("ignoring a notification: %s", exc)
            return
        if isinstance(notice, Durable):
            hub.on_durable(notice.topic, notice.seq, notice.event)
        elif isinstance(notice, Ephemeral):
            hub.on_ephemeral(notice.event)
        else:
            self._emit_control(notice)

    def _emit_control(self, control: Control) -> None:
        for callback in list(self._controls.values()):
            try:
                callback(control)
            except Exception:
                log.exception("control callback %r failed on %s", callback, control.type)

    def on_control(self, callback: ControlCallback) -> Callable[[], None]:
        """Call ``callback(Control)`` for every control notification; returns its remover."""
        key = self._next_control
        self._next_control += 1
        self._controls[key] = callback

        def unregister() -> None:
            self._controls.pop(key, None)

        return unregister

    # --- subscriptions -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: str, since: int | None = None,
                        max_queue: int | None = None) -> AsyncIterator[Subscription]:
        sub = await self.open_subscription(topic, since, max_queue)
        try:
            yield sub
        finally:
            sub.release()

    async def open_subscription(self, topic: str, since: int | None = None,
                                max_queue: int | None = None) -> Subscription:
        """`subscribe` without the context manager, whose suspended generator would live as
        long as the subscription: the caller must call ``sub.release()`` exactly when it is
        done (a transport holding thousands of idle subscriptions)."""
        hub = self._hub
        if hub is None or hub.closed:
            raise BridgeClosed("the bridge is not running")
        cfg = self.config
        entry = hub.acquire(topic)
        try:
            await entry.initialized.wait()
            if hub.closed:
                raise BridgeClosed("the bridge stopped")
            sub = Subscription(topic, since,
                               BoundedQueue(max_queue or cfg.max_queue, cfg.max_queue_bytes),
                               self._store, cfg.backlog_page)
            hub.attach(entry, sub)
        except BaseException:
            hub.release(entry, None)
            raise
        return sub

