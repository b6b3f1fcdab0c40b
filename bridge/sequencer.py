"""Per-topic ordering: live notifications vs. the log, gap detection, catch-up. Pure: no I/O.

A topic's *head* is the last seq handed to its subscribers. Live notifications extend the
head while they come as head+1 with their payload. Anything else — a hole (head+2 or more),
a stub (payload too big for NOTIFY), a reconnect, a topic seen for the first time — puts the
topic into *repair*: notifications are held (a bounded number; past it only the highest seq
is remembered), and the caller reads the log after the head (:meth:`TopicSequencer.on_log`)
until the log and the held notifications meet. The caller runs one step at a time with no
await inside a step, which is what makes the handover free of gaps and duplicates.

*Epochs* make a reconnect win over a read already in flight: a log read whose snapshot may
predate the new LISTEN cannot declare the topic caught up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bridge.events import Event, Reset


@dataclass(frozen=True)
class LogRead:
    """One log read for a topic, in one snapshot.

    ``rows``: events with seq > the head the read was made from, in order, at most the page
    size; ``last_seq``: the topic's counter in the same snapshot; ``full``: the page was full
    (more rows may follow).
    """

    rows: list[Event]
    last_seq: int
    full: bool
    epoch: int


class TopicSequencer:
    def __init__(self, topic: str, buffer_limit: int = 1000) -> None:
        self.topic = topic
        self.head: int | None = None
        self.repairing = True  # the head is unknown until the first log read
        self.epoch = 0
        self.completed_epoch = -1
        self._buffer: deque[tuple[int, Event | None]] = deque()
        self._buffer_limit = buffer_limit
        # Highest seq announced while held notifications were dropped for lack of room.
        self._dropped_max = 0

    @property
    def initialized(self) -> bool:
        return self.head is not None

    @property
    def held(self) -> int:
        return len(self._buffer)

    def on_notice(self, seq: int, event: Event | None) -> tuple[Event | None, bool]:
        """A live durable notification. Returns (event to deliver now, repair now needed)."""
        if self.repairing:
            self._hold(seq, event)
            return None, False
        assert self.head is not None
        if seq <= self.head:
            return None, False
        if seq == self.head + 1 and event is not None:
            self.head = seq
            return event, False
        self.repairing = True
        self.epoch += 1
        self._hold(seq, event)
        return None, True

    def request_repair(self) -> bool:
        """Force a log read (after a reconnect). True if the caller must schedule it."""
        self.epoch += 1
        if self.repairing:
            return False
        self.repairing = True
        return True

    def on_log(self, read: LogRead) -> tuple[list[Event | Reset], bool]:
        """Apply a log read. Returns (items to deliver, whether the repair is finished)."""
        out: list[Event | Reset] = []
        if self.head is None:
            # First sight of the topic: "from now" is the counter in the read's snapshot.
            self.head = read.last_seq
        elif read.last_seq < self.head:
            # The counter went backwards (the database was restored or reset).
            self.head = read.last_seq
            out.append(Reset(self.topic, read.last_seq))
        else:
            for event in read.rows:
                assert event.seq is not None
                if event.seq <= self.head:
                    continue
                if event.seq != self.head + 1:
                    break  # a pruned hole: handled below
                out.append(event)
                self.head = event.seq
            if self.head < read.last_seq and not (read.full and read.rows and
                                                  read.rows[-1].seq == self.head):
                # The log no longer holds what follows the head: a hole the size of the
                # retention window. Never a silent gap.
                self.head = read.last_seq
                out.append(Reset(self.topic, read.last_seq))
            elif read.full:
                return out, False
        done = self._drain(out) and read.epoch == self.epoch
        if done:
            self.repairing = False
            self.completed_epoch = read.epoch
            self._buffer.clear()
            self._dropped_max = 0
        return out, done

    def _hold(self, seq: int, event: Event | None) -> None:
        if len(self._buffer) < self._buffer_limit:
            self._buffer.append((seq, event))
        else:
            self._dropped_max = max(self._dropped_max, seq)

    def _drain(self, out: list[Event | Reset]) -> bool:
        """Deliver held notifications that extend the head; False if the log must be read again."""
        assert self.head is not None
        while self._buffer:
            seq, event = self._buffer[0]
            if seq <= self.head:
                self._buffer.popleft()
                continue
            if seq == self.head + 1 and event is not None:
                self._buffer.popleft()
                out.append(event)
                self.head = seq
                continue
            return False
        return self._dropped_max <= self.head
