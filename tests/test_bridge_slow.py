"""A subscriber that stops reading is cut off; the others' latency does not move and memory
stays bounded. Latency is compared with a baseline taken in the same test."""

from __future__ import annotations

import statistics

import anyio
import pytest

from bridge import CutOff, Event
from tests.bridge_helpers import (
    Collector,
    Writer,
    assert_exactly_once,
    collect,
    running,
    settle,
    topics_of,
    wait_for,
    writing,
)

pytestmark = pytest.mark.anyio

SLOW_BOUND = 20


def latencies(c: Collector, writer: Writer, seqs: range) -> list[float]:
    out = []
    for event in c.durable:
        if event.seq is not None and event.seq in seqs:
            committed = writer.committed_at.get(event.payload["comment"]["content"])
            if committed is not None:  # None: the writer was cancelled between commit and clock
                out.append(c.arrivals[event.seq] - committed)
    return out


async def test_a_subscriber_that_stops_reading_is_cut_off_without_delaying_the_others(
        db: str) -> None:
    sessions = topics_of(db, 1)
    topic = sessions[0][0]
    async with running(db) as bridge, anyio.create_task_group() as tg:
        fast = [await collect(tg, bridge, topic) for _ in range(3)]
        async with writing(Writer(db, sessions, interval=0.005)) as writer:
            # Baseline: the fast subscribers alone.
            await wait_for(lambda: len(fast[0].seqs) >= 60, 15, "baseline events")
            baseline_end = fast[0].seqs[-1]
            # Now one that reads two events, then never again.
            async with bridge.subscribe(topic, max_queue=SLOW_BOUND) as slow:
                read: list[Event] = []
                async for item in slow:
                    assert isinstance(item, Event)
                    read.append(item)
                    if len(read) == 2:
                        break
                peak_queued = 0
                with anyio.fail_after(15):
                    while slow.cut_off is None or len(fast[0].seqs) < baseline_end + 60:
                        peak_queued = max(peak_queued, bridge.stats()["queued"])
                        await anyio.sleep(0.002)
                cut_at = fast[0].seqs[-1]
                # Cut off with what it needs to resume, and its queue dropped at once.
                assert slow.cut_off == CutOff("overflow", read[-1].seq or 0, topic)
                assert slow.queued == 0
                assert bridge.stats()["cutoffs"] == 1
                items = [item async for item in slow]
                assert items == [slow.cut_off]
            measured_end = fast[0].seqs[-1]
        await settle(fast, db)
        for c in fast:
            assert_exactly_once(c, db)
        # Memory: the stuck subscriber never held more than its bound; the fast ones ~nothing.
        assert peak_queued <= SLOW_BOUND + 3 * 5
        assert bridge.stats()["queued"] == 0
        # Latency of the fast subscribers, before vs. while the slow one was stuck.
        start = fast[0].seqs[0]
        before = [x for c in fast for x in latencies(c, writer, range(start, baseline_end + 1))]
        during = [x for c in fast
                  for x in latencies(c, writer, range(baseline_end + 1, measured_end + 1))]
        assert len(before) >= 150
        assert len(during) >= 150
        b50, d50 = statistics.median(before), statistics.median(during)
        b90 = statistics.quantiles(before, n=10)[-1]
        d90 = statistics.quantiles(during, n=10)[-1]
        # Generous slack: a shared machine is noisy; a fan-out that waited on the stuck
        # subscriber would stop the others outright once its queue filled.
        print(f"latency p50 {b50 * 1e3:.2f} -> {d50 * 1e3:.2f} ms,"
              f" p90 {b90 * 1e3:.2f} -> {d90 * 1e3:.2f} ms")
        assert d50 <= max(3 * b50, b50 + 0.05), (b50, d50)
        assert d90 <= max(3 * b90, b90 + 0.1), (b90, d90)
        assert cut_at > baseline_end
        # The cut-off subscriber resumes from its last seq and misses nothing.
        assert slow.cut_off is not None
        again = await collect(tg, bridge, topic, since=slow.cut_off.last_seq)
        await settle([again], db)
        assert assert_exactly_once(again, db) >= measured_end - (read[-1].seq or 0)
        tg.cancel_scope.cancel()
