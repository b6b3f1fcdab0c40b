"""Presence leaves, queued and batched: a leave outlives the connection that asked for it.

A realtime connection leaves presence as it closes, and stops waiting for that after
api/live_subs.RELEASE_TIMEOUT. When each leave was its own pooled query, a storm of
disconnects (a node's network blip, a deploy draining thousands of clients) queued them on
the pool: the ones still waiting for a connection when their closing connection stopped
waiting never ran, and their users stayed online on those topics for as long as the node
lived. Here a leave is handed to a queue the bridge runs: the caller may stop waiting, the
leave still happens. The queue runs one batch at a time, each in one transaction and one
round trip (db/functions/presence.sql, presence_leave_many_v1), so a storm costs a few
dozen commits instead of one per connection, and a batch that fails for want of the
database is tried again, in order, until it passes or the node stops (whose rows then go
with `node_leave`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from bridge.errors import BridgeClosed, BridgeUnavailable

log = logging.getLogger("courtside.bridge")

Key = tuple[str, str, str]  # topic, user id, presence connection id
RunBatch = Callable[[list[Key]], Awaitable[list[bool]]]

MAX_BATCH = 256


class Leave:
    """One queued leave: `done` is set once it ran (`went_offline` says whether its user
    went offline) or will not run (`went_offline` is None: the node stopped, or it failed)."""

    __slots__ = ("done", "merged", "went_offline")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.went_offline: bool | None = None
        self.merged: list[Leave] = []  # the same key's later leaves, made by this one

    def finish(self, went_offline: bool | None) -> None:
        self.went_offline = went_offline
        self.done.set()
        for leave in self.merged:
            leave.finish(went_offline)


class LeaveQueue:
    def __init__(self, run_batch: RunBatch, *, max_batch: int = MAX_BATCH,
                 backoff_initial: float = 0.1, backoff_max: float = 5.0) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._backoff = (backoff_initial, backoff_max)
        # Insertion-ordered: leaves run in the order they were asked for.
        self._queue: dict[Key, Leave] = {}
        self._in_flight: dict[Key, Leave] = {}
        self._wake = anyio.Event()
        self._running = False
        self.batches = 0
        self.retries = 0

    def __len__(self) -> int:
        return len(self._queue) + len(self._in_flight)

    def pending(self, key: Key) -> Leave | None:
        """The leave of `key` that has not run yet, if any: a join of the same key waits
        for it, or the leave would remove the row the join just made."""
        return self._queue.get(key) or self._in_flight.get(key)

    def submit(self, key: Key) -> Leave:
        if not self._running:
            raise BridgeClosed("presence leaves are not running (the bridge is not)")
        leave = self._queue.get(key)
        if leave is None:
            leave = self._queue[key] = Leave()
            self._wake.set()
        return leave

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run leaves until cancelled; then release every waiter."""
        self._running = True
        task_status.started()
        delay = self._backoff[0]
        try:
            while True:
                if not self._queue:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                keys = list(itertools.islice(self._queue, self._max_batch))
                batch = self._in_flight = {key: self._queue.pop(key) for key in keys}
                went: list[bool | None]
                try:
                    went = list(await self._run_batch(keys))
                except BridgeUnavailable as exc:
                    self.retries += 1
                    log.warning("%d presence leaves failed (%s); trying again in %.1f s",
                                len(keys), exc, delay)
                    self._in_flight = {}
                    self._requeue(batch)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, self._backoff[1])
                    continue
                except Exception:
                    # A bug, not an outage: trying again would fail the same way and hold up
                    # every leave behind these.
                    log.exception("%d presence leaves failed; dropped", len(keys))
                    went = [None] * len(keys)
                self._in_flight = {}
                delay = self._backoff[0]
                self.batches += 1
                for leave, went_offline in zip(batch.values(), went, strict=True):
                    leave.finish(went_offline)
        finally:
            self._running = False
            for leave in [*self._in_flight.values(), *self._queue.values()]:
                leave.finish(None)
            self._in_flight = {}
            self._queue = {}

    def _requeue(self, batch: dict[Key, Leave]) -> None:
        """Put a failed batch back in front, in its order. A key asked to leave again
        meanwhile needs one leave, not two: the later one's waiters get this one's result."""
        queue = self._queue
        for key, leave in batch.items():
            newer = queue.pop(key, None)
            if newer is not None:
                leave.merged.append(newer)
        self._queue = {**batch, **queue}
