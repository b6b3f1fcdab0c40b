"""The bridge's knobs. Times in seconds. Documented in docs/INTERNALS.md (Bridge API)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BridgeConfig:
    channel: str = "courtside"
    # Per subscriber: the fan-out never waits, so these bound what a slow client can hold.
    max_queue: int = 1000
    max_queue_bytes: int = 8 * 1024 * 1024
    backlog_page: int = 500
    # Per topic, while it is being caught up from the log.
    topic_buffer: int = 256
    repair_batch: int = 200
    # The LISTEN connection: a stalled TCP connection raises no error, only silence, so a
    # query with a deadline is the only way to notice it.
    health_interval: float = 5.0
    health_timeout: float = 3.0
    connect_timeout: float = 5.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    query_timeout: float = 10.0
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout: float = 5.0
    # Presence.
    heartbeat_interval: float = 2.0
    node_ttl: float = 10.0
    reap_interval: float = 2.0
    # Retention of the event log; None: never prune.
    retention: float | None = 7 * 24 * 3600.0
    prune_interval: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_queue < 1 or self.max_queue_bytes < 1 or self.backlog_page < 1:
            raise ValueError("queue bounds and page size must be positive")
        if self.topic_buffer < 0 or self.repair_batch < 1:
            raise ValueError("topic_buffer must be >= 0 and repair_batch >= 1")
        if self.node_ttl <= self.heartbeat_interval:
            raise ValueError("node_ttl must exceed heartbeat_interval")
