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
        # Made on the first push: a subscriber whose events are all taken directly (see
        # Subscription.set_sink) never needs one, and an empty deque is ~700 bytes.
        self._items: deque[Event | Reset] | None = None

    def push(self, item: Event | Reset) -> bool:
        items = self._items
        if items is None:
            items = self._items = deque()
        size = len(item.data) if isinstance(item, Event) else 0
        if len(items) >= self.max_items or (
            items and self.nbytes + size > self.max_bytes
        ):
            return False
        items.append(item)
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
        self._items = None
        self.nbytes = 0

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)
