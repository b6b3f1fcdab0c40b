"""The scenarios of issue 6, by name, in the order a full run takes them.

`writes` runs first: it needs no server, and the tables are smallest before the others
have written their comments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.harness import Run
from bench.scenarios import connections, fanout, latency, resume, writes

Scenario = Callable[[Run], dict[str, Any]]

SCENARIOS: dict[str, Scenario] = {
    "writes": writes.run,
    "latency": latency.run,
    "fanout": fanout.run,
    "connections": connections.run,
    "resume": resume.run,
}
