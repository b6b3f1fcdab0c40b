"""How late the event loop runs: every stall of a server process's loop, whatever caused it.

One loop serves every connection of a process, so a stall of the loop — a long collection, a
blocking call, a CPU it does not get — delays every delivery by as much, and nothing else
shows it: the request that caused it is not slow itself. (The stall that made this module:
a 60-100 ms walk of the collector's frozen heap every 10 s, found only by profiling; see
courtside/gctune.py.) A task sleeps `interval` seconds at a time and records how much later
than asked it woke up, in a histogram on /metrics (`python_event_loop_lag_seconds`); a
stall of `warn_after` seconds or more is also logged, at most once per `warn_every`.
"""

from __future__ import annotations

import logging

import anyio

from courtside.beside import Lifespan, beside
from courtside.gctune import Pauses

log = logging.getLogger("courtside.loop")


class LoopLag:
    def __init__(self, interval: float = 0.25, warn_after: float = 0.5,
                 warn_every: float = 30.0) -> None:
        self.interval = interval
        self.warn_after = warn_after
        self.warn_every = warn_every
        self.lags = Pauses()
        self._unwarned = 0  # stalls of warn_after or more not logged yet
        self._unwarned_longest = 0.0
        self._warned_at = float("-inf")

    def record(self, lag: float, now: float) -> None:
        self.lags.add(lag)
        if lag < self.warn_after:
            return
        self._unwarned += 1
        self._unwarned_longest = max(self._unwarned_longest, lag)
        if now - self._warned_at >= self.warn_every:
            log.warning("the event loop stalled: %d time(s) for %.0f ms or more, the longest"
                        " %.0f ms (every connection of this process waited as long)",
                        self._unwarned, self.warn_after * 1e3, self._unwarned_longest * 1e3)
            self._warned_at = now
            self._unwarned = 0
            self._unwarned_longest = 0.0

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            asked = anyio.current_time() + self.interval
            await anyio.sleep(self.interval)
            now = anyio.current_time()
            self.record(max(0.0, now - asked), now)


def measured_loop(inner: Lifespan) -> Lifespan:
    """Wrap an `extra_lifespan`: while the app runs, `LoopLag` measures its loop (kept as
    ``app.state.loop_lag`` for /metrics)."""
    return beside(inner, "loop_lag", lambda _app: LoopLag())
