"""``GET /metrics``: this process in the Prometheus exposition format (DESIGN §8).

Everything is read at scrape time from state the bridge, the hub and the pools keep anyway;
the only cost on the delivery path is one addition per event (`Hub.pushes`). A scrape walks
the connections and subscriptions of this process once: O(connections), about a millisecond
for ten thousand.

Under ``courtside serve --workers N`` the workers share one port and a scrape is answered by
whichever accepts it: it reports every worker's numbers, merged (api/metrics_workers.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from api.metrics_workers import WorkersCollector

TRANSPORTS = ("ws", "sse", "pusher")

# bridge.stats() key → (metric name, help). Counters restart from zero with the process.
_COUNTERS = {
    "notifications": ("courtside_notifications",
                      "Notifications received on the LISTEN connection (events and control)."),
    "pushes": ("courtside_subscriber_pushes",
               "Events handed to subscriptions: written at once or queued for the connection."),
    "repairs": ("courtside_log_reads",
                "Event-log reads applied: a new topic, a gap, or catch-up after a reconnect."),
    "cutoffs": ("courtside_subscriptions_cut",
                "Subscriptions ended because their client fell too far behind."),
    "reconnects": ("courtside_listen_reconnects",
                   "Times the LISTEN connection was established again after a loss."),
    "leave_batches": ("courtside_presence_leave_batches",
                      "Transactions that made queued presence leaves (bridge/leaves.py)."),
    "leave_retries": ("courtside_presence_leave_retries",
                      "Batches of presence leaves tried again after a database failure."),
    "join_batches": ("courtside_presence_join_batches",
                     "Transactions that made presence joins of this node's connections "
                     "(bridge/joins.py)."),
}
_GAUGES = {
    "ready": ("courtside_ready", "1 while LISTEN is connected and every topic is caught up."),
    "topics": ("courtside_topics", "Topics with at least one subscription in this process."),
    "subscribers": ("courtside_subscriptions", "Live subscriptions in this process."),
    "queued": ("courtside_queued_events", "Events waiting in subscription queues."),
    "leaves_queued": ("courtside_presence_leaves_queued",
                      "Presence leaves of closed connections not made yet."),
    "joins_queued": ("courtside_presence_joins_queued",
                     "Presence joins of subscribing connections waiting or running."),
}
# psycopg_pool's get_stats() keys; the counters appear there once they are non-zero.
_POOL_GAUGES = {
    "pool_size": ("courtside_db_pool_connections", "Connections the pool holds."),
    "pool_available": ("courtside_db_pool_idle", "Connections idle in the pool."),
    "requests_waiting": ("courtside_db_pool_waiting", "Requests waiting for a connection."),
    "pool_max": ("courtside_db_pool_max", "The pool's maximum size."),
}
_POOL_COUNTERS = {
    "requests_num": ("courtside_db_pool_requests", "Connection requests made to the pool."),
    "requests_errors": ("courtside_db_pool_request_errors",
                        "Connection requests that failed (timed out or the pool closed)."),
    "connections_lost": ("courtside_db_pool_connections_lost",
                         "Pooled connections found broken when checked."),
}


class RealtimeCollector(Collector):
    """The bridge, the hub and the database pools of one app, read when scraped."""

    def __init__(self, app: Starlette) -> None:
        self._app = app

    def collect(self) -> Iterable[Metric]:
        state = self._app.state
        rt = getattr(state, "realtime", None)
        node = rt.bridge.node_id if rt is not None else ""
        info = InfoMetricFamily("courtside", "This process.", labels=["node"])
        info.add_metric([node], {})
        yield info
        stats: dict[str, int] = rt.bridge.stats() if rt is not None else {}
        for key, (name, doc) in _GAUGES.items():
            yield GaugeMetricFamily(name, doc, value=stats.get(key, 0))
        for key, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
        by_transport = rt.hub.connections_by_transport() if rt is not None else {}
        connections = GaugeMetricFamily(
            "courtside_connections",
            "Authenticated realtime connections open in this process.", labels=["transport"])
        for transport in TRANSPORTS:
            connections.add_metric([transport], by_transport.get(transport, 0))
        yield connections
        yield from _pool_metrics(_pools(state, rt))


class GcCollector(Collector):
    """The collector's pauses and frozen heap, when `courtside.gctune` tunes it. Named
    `python_*`: one process's numbers, reported per worker under --workers."""

    def __init__(self, app: Starlette) -> None:
        self._app = app

    def collect(self) -> Iterable[Metric]:
        tuner = getattr(self._app.state, "gc_tuner", None)
        if tuner is None:
            return
        pauses = HistogramMetricFamily(
            "python_gc_pause_seconds",
            "Time the cyclic garbage collector stopped this process, per generation.",
            labels=["generation"])
        for generation, hist in tuner.pauses.items():
            pauses.add_metric([str(generation)], hist.cumulative(), hist.total)
        yield pauses
        yield GaugeMetricFamily(
            "python_gc_frozen_objects",
            "Objects in the permanent generation, which collections do not walk: as last"
            " counted (at start-up, and when a compaction may be due), plus those frozen since"
            " (an upper bound: frozen objects that died since are not subtracted; counting"
            " walks the whole heap).",
            value=tuner.frozen)
        yield CounterMetricFamily(
            "python_gc_compactions",
            "Full collections of the frozen heap (unfreeze, collect, freeze).",
            value=tuner.compactions)


class PipelineCollector(Collector):
    """Whether the database's triggers are as `courtside migrate` installed them, when
    `courtside.pipeline_check` watches them."""

    def __init__(self, app: Starlette) -> None:
        self._app = app

    def collect(self) -> Iterable[Metric]:
        installed = getattr(getattr(self._app.state, "pipeline_check", None), "installed", None)
        if installed is None:
            return
        yield GaugeMetricFamily(
            "courtside_pipeline_installed",
            "1 while the database's triggers and functions are those courtside migrate"
            " installed; 0 when they were dropped, disabled, replaced, or are another"
            " version's (the log says which).",
            value=int(installed))


class LoopLagCollector(Collector):
    """How late the event loop ran its timers, when `courtside.looplag` measures it."""

    def __init__(self, app: Starlette) -> None:
        self._app = app

    def collect(self) -> Iterable[Metric]:
        lag = getattr(self._app.state, "loop_lag", None)
        if lag is None:
            return
        family = HistogramMetricFamily(
            "python_event_loop_lag_seconds",
            "How much later than asked this process's event loop ran a timer: a stall of the"
            " loop delays every connection of the process by as much.")
        family.add_metric([], lag.lags.cumulative(), lag.lags.total)
        yield family


def _pools(state: Any, rt: Any) -> dict[str, AsyncConnectionPool[Any]]:
    found: dict[str, AsyncConnectionPool[Any]] = {}
    for pool in (getattr(state, "pool", None), getattr(rt, "pool", None),
                 getattr(getattr(rt, "bridge", None), "pool", None)):
        if isinstance(pool, AsyncConnectionPool):
            found.setdefault(pool.name, pool)
    return found


def _pool_metrics(pools: dict[str, AsyncConnectionPool[Any]]) -> Iterator[Metric]:
    stats = {name: pool.get_stats() for name, pool in pools.items()}
    for table, kind in ((_POOL_GAUGES, GaugeMetricFamily), (_POOL_COUNTERS, CounterMetricFamily)):
        for key, (metric, doc) in table.items():
            family = kind(metric, doc, labels=["pool"])
            for name, values in stats.items():
                family.add_metric([name], values.get(key, 0))
            yield family


def local_registry(app: Starlette) -> CollectorRegistry:
    """This process's metrics."""
    registry: CollectorRegistry | None = getattr(app.state, "metrics_local", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        registry.register(RealtimeCollector(app))
        registry.register(GcCollector(app))
        registry.register(LoopLagCollector(app))
        registry.register(PipelineCollector(app))
        app.state.metrics_local = registry
    return registry


def registry_for(app: Starlette) -> CollectorRegistry:
    """What a scrape reports: this process, or every worker of the server when the app
    shares a metrics directory with its siblings (api/metrics_workers.py)."""
    directory: Path | None = getattr(app.state, "metrics_dir", None)
    if directory is None:
        return local_registry(app)
    registry: CollectorRegistry | None = getattr(app.state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkersCollector(local_registry(app), directory))
        app.state.metrics_registry = registry
    return registry


async def metrics(request: Request) -> Response:
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = encoder(registry_for(request.app))
    return Response(body, media_type=content_type,
                    headers={"Cache-Control": "no-store"})
