"""The cyclic garbage collector of a server process: short pauses, however many connections.

Every open realtime connection keeps a few hundred container objects alive for as long as
it is open. CPython's collector walks every object of the generations it collects, so what
matters is how many live objects a collection walks, not how much garbage it finds:

- CPython's defaults (700, 10, 10) walk the whole heap in a full collection several times
  a second under load: 100-250 ms stalls with thousands of connections (bench/results).
- Thresholds raised to (100,000, 20, 100) made collections rare but not short: a young
  collection walks up to 100,000 objects, 25-90 ms on this machine, and one falls after
  every burst of connections (reconnect storms, and the bench's subscriber set-up).

What this module does instead (CPython 3.11-3.13's three generations):

- At startup, one full collection, then `gc.freeze()`: modules, the app, its pools and the
  bridge go to the permanent generation, which no collection walks.
- A young collection every 10,000 net allocations, a middle one after every second young
  one (`THRESHOLDS`). Each walks at most the objects of the last ~20,000 allocations
  that are still alive: a few milliseconds; 10-25 ms while 1,000 connections arrive at once
  (30-60 ms before), and up to ~85 ms while 5,000 leave at once (136 ms before), when each
  departing connection's presence leave waits for a pooled connection.
- What survives a middle collection has lived through two young ones: it is long-lived
  state (a connection, its subscriptions). It is frozen at once, from the collector's own
  callback, so no later collection walks it again, and a full collection only walks what
  the last middle collection left: as short as a middle one.
- The price: a frozen object that later dies in a reference cycle is not collected. A
  closed /ws or Pusher connection leaves no cycle of its own
  (tests/test_connection_memory.py), so little accumulates; to bound it anyway, once the
  frozen heap has grown by half since the last *compaction* (and at most every
  `Policy.min_interval` seconds) everything is unfrozen, collected in full and frozen
  again. That is one long pause, as rare as the full collections CPython itself makes
  (it waits for the long-lived heap to grow by a quarter).
- The frozen heap's size is tracked, not counted: `gc.get_freeze_count()` walks the whole
  permanent generation, 60-100 ms of stalled loop at 5,000 connections (seen every 10 s
  in a profile, when the compaction check counted). The tuner adds what each of its
  freezes moves (what the collection left in the generations: at most what ~20,000
  allocations made) to the count taken at start-up or the last compaction. Frozen objects
  that die are not subtracted, so the sum is an upper bound: the heap is counted for real
  only when the bound says a compaction may be due, and at most once per
  `Policy.min_interval`.

CPython 3.14 replaced this collector with an incremental one of two generations, which
this tuning was not measured against: there only the startup freeze applies.
`python_gc_*` metrics on /metrics show the pauses.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette

log = logging.getLogger("courtside.gc")

THRESHOLDS = (10_000, 1, 100)
# Pauses are counted into these buckets (seconds), per generation.
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_GENERATIONAL = sys.version_info < (3, 14)


@dataclass(frozen=True)
class Policy:
    """When to compact: the frozen heap has grown by `growth` (a fraction) since the last
    compaction, and `min_interval` seconds have passed since it."""

    growth: float = 0.5
    min_interval: float = 900.0
    check_every: float = 10.0

    def should_compact(self, frozen: int, baseline: int, now: float, last: float) -> bool:
        return now - last >= self.min_interval and frozen > baseline * (1.0 + self.growth)


@dataclass
class Pauses:
    """A histogram of pauses (a generation's; the event loop's, courtside/looplag.py), in
    the shape Prometheus wants (cumulative bucket counts are derived when read)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(PAUSE_BUCKETS) + 1))
    total: float = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(PAUSE_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) pairs, +Inf last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(str, PAUSE_BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class Tuner:
    """The collector's settings and callback for one server process (see the module)."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.pauses = {generation: Pauses() for generation in range(3)}
        self.freezes = 0
        self.compactions = 0
        self.baseline = 0
        # Objects frozen: counted at start-up, at each compaction and at each count, plus
        # what the tuner froze since (an upper bound: see the module).
        self.frozen = 0
        # Never, rather than 0.0: the monotonic clock starts near 0 at boot, and 0.0 made
        # "the interval has passed" false for the first min_interval seconds of uptime.
        self.last_compaction = -math.inf
        self.last_count = -math.inf
        self._started_at = 0.0
        self._previous: tuple[int, ...] | None = None
        self._compacting = False

    def start(self) -> None:
        self._previous = gc.get_threshold()
        gc.collect()  # what startup left as garbage must not be frozen with the rest
        gc.freeze()
        self.baseline = self.frozen = gc.get_freeze_count()
        self.last_compaction = time.monotonic()
        if _GENERATIONAL:
            gc.set_threshold(*THRESHOLDS)
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)
        if self._previous is not None:
            gc.set_threshold(*self._previous)
            self._previous = None
        gc.unfreeze()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside every collection, in whichever thread triggered it: kept minimal.
        if phase == "start":
            self._started_at = time.perf_counter()
            return
        generation = info["generation"]
        self.pauses[generation].add(time.perf_counter() - self._started_at)
        if generation >= 1 and _GENERATIONAL:
            # The survivors of this middle (or full) collection, and nothing older: what an
            # earlier collection left was frozen then. Listing them costs what they are:
            # ~0.1 ms added to a middle pause of ~0.75 ms with 20,000 survivors.
            if not self._compacting:  # which sets `frozen` from a count of its own
                self.frozen += len(gc.get_objects())
            gc.freeze()  # see the module
            self.freezes += 1

    def compact(self) -> int:
        """Unfreeze, collect everything, freeze again; returns the objects collected."""
        frozen = gc.get_freeze_count()
        started = time.perf_counter()
        self._compacting = True
        try:
            gc.unfreeze()
            collected = gc.collect()
            gc.freeze()
        finally:
            self._compacting = False
        self.baseline = self.frozen = gc.get_freeze_count()
        self.last_compaction = time.monotonic()
        self.compactions += 1
        log.info("gc compaction: %d objects frozen before, %d collected, %d frozen now;"
                 " %.0f ms", frozen, collected, self.baseline,
                 (time.perf_counter() - started) * 1e3)
        return collected

    def maybe_compact(self) -> bool:
        """Compact if the policy says so. The frozen heap is counted (walked) only when the
        tracked upper bound says a compaction is due, and at most once per min_interval."""
        now = time.monotonic()
        if not self.policy.should_compact(self.frozen, self.baseline, now,
                                          max(self.last_compaction, self.last_count)):
            return False
        self.frozen = gc.get_freeze_count()
        self.last_count = now
        if not self.policy.should_compact(self.frozen, self.baseline, now,
                                          self.last_compaction):
            return False
        self.compact()
        return True

    async def run(self) -> None:
        """Check the compaction rule every `check_every` seconds, until cancelled."""
        while True:
            await anyio.sleep(self.policy.check_every)
            self.maybe_compact()


def tuned_gc(
    inner: Callable[[Starlette], AbstractAsyncContextManager[None]],
    policy: Policy | None = None,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Wrap an `extra_lifespan`: once it has started, tune the collector (`Tuner`, kept as
    ``app.state.gc_tuner`` for /metrics); on shutdown, put it back as it was."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app):
            tuner = Tuner(policy)
            tuner.start()
            app.state.gc_tuner = tuner
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(tuner.run)
                    try:
                        yield
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                tuner.stop()

    return lifespan
