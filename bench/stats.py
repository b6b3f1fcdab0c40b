"""Summaries of latency samples and of throughput, in the units the report uses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (p in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, Any]:
    """p50/p90/p99/max in milliseconds (NaN when there are no samples)."""
    values = sorted(latencies_ns)
    ms = 1e-6
    return {
        "samples": len(values),
        "p50_ms": percentile(values, 50) * ms,
        "p90_ms": percentile(values, 90) * ms,
        "p99_ms": percentile(values, 99) * ms,
        "max_ms": (values[-1] * ms) if values else math.nan,
        "min_ms": (values[0] * ms) if values else math.nan,
    }


def cdf_points(latencies_ns: Sequence[int], points: int = 400) -> list[tuple[float, float]]:
    """(latency ms, fraction ≤) at up to `points` evenly spaced ranks, for the plot."""
    values = sorted(latencies_ns)
    if not values:
        return []
    n = len(values)
    step = max(1, n // points)
    out = [(values[i] * 1e-6, (i + 1) / n) for i in range(0, n, step)]
    if out[-1][1] < 1.0:
        out.append((values[-1] * 1e-6, 1.0))
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0:
        return None
    return a / b


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)
