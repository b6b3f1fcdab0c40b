"""Reconnect delays: exponential, capped, with jitter. Pure."""

from __future__ import annotations

import random


class Backoff:
    """Each failure doubles the delay up to ``maximum``; half of it is fixed, half random, so
    a fleet of nodes that lost the database together does not reconnect in lockstep."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._current = initial

    def next(self) -> float:
        base = self._current
        self._current = min(self.maximum, self._current * 2)
        return base / 2 + self._rng.uniform(0, base / 2)

    def reset(self) -> None:
        self._current = self.initial
