"""Presence joins of a node's own connections, batched: one transaction for many.

Each realtime subscription to a session joins its presence before the client is told it is
subscribed. Made one query each, a crowd that connects at once (a deploy's reconnections, a
network blip healing) cost one pooled round trip and one commit per connection, and most of
the server's time went to the driver rather than to the database. Here a join is handed to a
queue that runs one batch at a time, each in one transaction and one round trip
(db/functions/presence.sql, presence_join_many_v1): a join arriving while a batch is in
flight waits for the next one, so a lone join costs what it did and a crowd's joins share
their commits.

Unlike a leave (bridge/leaves.py), a join is not owed to anyone once its caller is gone, and
a failed one is not tried again: its caller hears the error (the client is told the topic is
not ready, and may subscribe again). What a caller must be able to rely on is order: when
`join` returns or raises, its row is written or will never be, so a leave that the caller
queues next cannot be overtaken by its own join.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from bridge.errors import BridgeClosed, BridgeError, BridgeUnavailable
from bridge.leaves import Key

log = logging.getLogger("courtside.bridge")

RunBatch = Callable[[list[Key]], Awaitable[list[bool]]]

MAX_BATCH = 256


class _Join:
    __slots__ = ("came_online", "done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.came_online = False
        self.error: BridgeError | None = None

    def finish(self, came_online: bool | None, error: BridgeError | None = None) -> None:
        self.came_online = bool(came_online)
        self.error = error
        self.done.set()


class JoinQueue:
    def __init__(self, run_batch: RunBatch, *, finish_timeout: float,
                 max_batch: int = MAX_BATCH) -> None:
        self._run_batch = run_batch
        self._finish_timeout = finish_timeout
        self._max_batch = max_batch
        # Insertion-ordered; a join is its own key, as two joins of one connection (a node
        # joining its rows again after it was reaped) may both be waiting.
        self._queue: dict[_Join, Key] = {}
        self._in_flight: dict[_Join, Key] = {}
        self._wake = anyio.Event()
        self._running = False
        self.batches = 0

    def __len__(self) -> int:
        return len(self._queue) + len(self._in_flight)

    async def join(self, key: Key) -> bool:
        """Join; True if the user just came online. Cancelled while queued, the join is not
        made; cancelled while its batch runs, it waits for the batch (within
        `finish_timeout`) before the cancellation goes on, so its row is written first."""
        if not self._running:
            raise BridgeClosed("presence joins are not running (the bridge is not)")
        join = _Join()
        self._queue[join] = key
        self._wake.set()
        try:
            await join.done.wait()
        except anyio.get_cancelled_exc_class():
            if self._queue.pop(join, None) is None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._finish_timeout):
                    await join.done.wait()
            raise
        if join.error is not None:
            # A fresh exception per caller: one instance raised in many tasks would gather
            # all their tracebacks.
            raise type(join.error)(*join.error.args) from join.error.__cause__
        return join.came_online

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run joins until cancelled; then fail every join still waiting."""
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                joins = list(itertools.islice(self._queue, self._max_batch))
                batch = self._in_flight = {join: self._queue.pop(join) for join in joins}
                try:
                    came = await self._run_batch(list(batch.values()))
                except BridgeUnavailable as exc:
                    log.warning("%d presence joins failed: %s", len(batch), exc)
                    for join in batch:
                        join.finish(None, exc)
                except Exception as exc:
                    log.exception("%d presence joins failed", len(batch))
                    error = BridgeUnavailable(f"presence joins failed: {exc!r}")
                    error.__cause__ = exc
                    for join in batch:
                        join.finish(None, error)
                else:
                    for join, came_online in zip(batch, came, strict=True):
                        join.finish(came_online)
                self._in_flight = {}
                self.batches += 1
        finally:
            self._running = False
            # A batch cut short here may have been made or not; either way the node is
            # stopping, and its rows go with it (Bridge.run: presence.leave_node).
            closed = BridgeClosed("the bridge stopped before this presence join was made")
            for join in [*self._in_flight, *self._queue]:
                join.finish(None, closed)
            self._in_flight = {}
            self._queue = {}
