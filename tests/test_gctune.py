"""courtside.gctune: the collector's policy (pure), and a real CPython collector driven by
the tuner: long-lived objects end up frozen, frozen garbage waits for a compaction."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from courtside import gctune
from courtside.gctune import PAUSE_BUCKETS, Pauses, Policy, Tuner

pytestmark = pytest.mark.skipif(not gctune._GENERATIONAL,
                                reason="CPython 3.14+ collects incrementally")


class Node:
    """A tracked object that can sit in a reference cycle and be watched by a weakref."""

    def __init__(self) -> None:
        self.other: Node | None = None


def test_compaction_waits_for_growth_and_interval() -> None:
    policy = Policy(growth=0.5, min_interval=900.0)
    assert not policy.should_compact(frozen=150, baseline=100, now=1000.0, last=0.0)
    assert policy.should_compact(frozen=151, baseline=100, now=1000.0, last=0.0)
    assert not policy.should_compact(frozen=10_000, baseline=100, now=899.0, last=0.0)
    assert policy.should_compact(frozen=10_000, baseline=100, now=900.0, last=0.0)


def test_pauses_fall_into_cumulative_buckets() -> None:
    pauses = Pauses()
    for seconds in (0.0005, 0.001, 0.003, 0.003, 2.0):
        pauses.add(seconds)
    buckets = dict(pauses.cumulative())
    assert list(buckets) == [*map(str, PAUSE_BUCKETS), "+Inf"]
    assert buckets["0.001"] == 2  # le is inclusive
    assert buckets["0.0025"] == 2
    assert buckets["0.005"] == 4
    assert buckets["1.0"] == 4
    assert buckets["+Inf"] == 5
    assert pauses.total == pytest.approx(2.0075)


@pytest.fixture
def tuner() -> Iterator[Tuner]:
    before = gc.get_threshold()
    gc.unfreeze()
    t = Tuner(Policy(growth=0.0, min_interval=0.0))
    t.start()
    try:
        yield t
    finally:
        t.stop()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
        assert t._callback not in gc.callbacks


def _churn(allocations: int) -> None:
    """Net tracked allocations, enough to trigger collections; freed when it returns."""
    keep: list[list[int]] = [[] for _ in range(allocations)]
    del keep


def test_long_lived_objects_are_frozen_after_a_middle_collection(tuner: Tuner) -> None:
    assert gc.get_threshold() == gctune.THRESHOLDS
    frozen_at_start = gc.get_freeze_count()
    long_lived = [Node() for _ in range(5000)]
    assert sum(1 for o in gc.get_objects() if type(o) is Node) == 5000
    young = gctune.THRESHOLDS[0]
    for _ in range(4):  # four young collections: two middle ones
        _churn(young + young // 10)
    assert tuner.pauses[0].counts != [0] * len(tuner.pauses[0].counts)
    assert sum(tuner.pauses[1].counts) >= 1
    assert tuner.freezes >= 1
    # No generation holds them any more: no collection walks them again.
    assert not any(type(o) is Node for o in gc.get_objects())
    assert gc.get_freeze_count() >= frozen_at_start + len(long_lived)
    # Tracked without walking the heap, and never below the real count.
    assert tuner.frozen >= gc.get_freeze_count()


def test_frozen_garbage_waits_for_a_compaction(tuner: Tuner) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    young = gctune.THRESHOLDS[0]
    for _ in range(4):  # a middle collection: the tuner freezes them
        _churn(young + young // 10)
    assert not any(o is a for o in gc.get_objects())
    del a, b
    gc.collect()
    assert gone() is not None  # a full collection does not walk the permanent generation
    assert tuner.maybe_compact()  # growth 0, interval 0: due at once
    assert gone() is None
    assert tuner.compactions == 1
    assert tuner.baseline == pytest.approx(gc.get_freeze_count(), abs=100)


def test_no_compaction_before_growth() -> None:
    gc.unfreeze()
    t = Tuner(Policy(growth=10.0, min_interval=0.0))
    t.start()
    try:
        assert not t.maybe_compact()
        assert t.compactions == 0
    finally:
        t.stop()


def test_the_frozen_heap_is_counted_only_when_a_compaction_may_be_due(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting walks the whole permanent generation (tens of ms at thousands of
    connections): the tuner counts only when its upper bound crosses the growth, and at
    most once per interval."""
    gc.unfreeze()
    t = Tuner(Policy(growth=0.5, min_interval=900.0))
    t.start()
    try:
        counts: list[int] = []
        count = gc.get_freeze_count

        def counting() -> int:
            counts.append(count())
            return counts[-1]

        monkeypatch.setattr(gc, "get_freeze_count", counting)
        t.last_compaction = time.monotonic() - 1000  # the interval has passed
        assert not t.maybe_compact()
        assert counts == []  # the bound is below the growth: nothing walked
        # Objects the tuner freezes and that die afterwards: the bound goes up, the heap
        # does not.
        long_lived = [Node() for _ in range(t.baseline // 2 + 1)]
        young = gctune.THRESHOLDS[0]
        for _ in range(4):
            _churn(young + young // 10)
        assert not any(type(o) is Node for o in gc.get_objects())
        del long_lived
        assert t.frozen > t.baseline * 1.5
        assert not t.maybe_compact()
        assert len(counts) == 1  # counted once ...
        assert t.frozen == counts[0] < t.baseline * 1.5  # ... found no growth
        assert not t.maybe_compact()
        assert len(counts) == 1  # and not again within the interval
        assert t.compactions == 0
    finally:
        t.stop()
