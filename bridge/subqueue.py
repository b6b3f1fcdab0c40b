"""A subscriber's bounded queue. Pure: no I/O, no awaiting; the fan-out only ever calls push."""

from __future__ import annotations

from collections import deque

from bridge.events import Event, Reset


class BoundedQueue:
    """FIFO bounded by item count and by the bytes of the events it references.

    ``push`` never blocks: it returns False when the item would cross a bound, and the owner
    cuts the subscriber off. Events are shared, so the byte count is what this queue keeps
    alive, not a copy.
    """

    __slots__ = ("_items", "max_bytes", "max_items", "nbytes")

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("queue bounds must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: deque[Event | Reset] = deque()

    def push(self, item: Event | Reset) -> bool:
        size = len(item.data) if isinstance(item, Event) else 0
        if len(self._items) >= self.max_items or (
            self._items and self.nbytes + size > self.max_bytes
        ):
            return False
        self._items.append(item)
        self.nbytes += size
        return True

    def pop(self) -> Event | Reset | None:
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, Event):
            self.nbytes -= len(item.data)
        return item

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)
