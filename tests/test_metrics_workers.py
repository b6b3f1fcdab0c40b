"""``/metrics`` under ``courtside serve --workers 2``: whichever worker answers, a scrape counts
every worker's connections and events, and counters never go back, not even when a worker
is killed and replaced. The merge rules themselves are checked on plain values first."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import psutil
import pytest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from api.metrics_workers import DIR_ENV, Snapshot, dump, load, make_directory, merge
from tests import factories
from tests.servers import port_of
from tests.test_metrics import Samples, one, scrape
from tests.test_realtime_support import Ws, serve_process, sql_comment, ws_client
from tests.test_serve_processes import wait_for_listeners

# -- the merge, on values ---------------------------------------------------------------------


def worker(node: str, *, ready: float, connections: float, pushes: float, rss: float,
           pipeline: float = 1) -> list[Metric]:
    info = InfoMetricFamily("courtside", "This process.", labels=["node"])
    info.add_metric([node], {})
    conns = GaugeMetricFamily("courtside_connections", "c", labels=["transport"])
    conns.add_metric(["ws"], connections)
    return [info, GaugeMetricFamily("courtside_ready", "r", value=ready),
            GaugeMetricFamily("courtside_pipeline_installed", "i", value=pipeline), conns,
            CounterMetricFamily("courtside_subscriber_pushes", "p", value=pushes),
            GaugeMetricFamily("process_resident_memory_bytes", "m", value=rss)]


def flat(families: list[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families for s in f.samples}


def test_merge_sums_counters_of_all_and_gauges_of_the_living() -> None:
    own = worker("a", ready=1, connections=3, pushes=10, rss=100)
    live = Snapshot(11, True, load(dump(worker("b", ready=0, connections=4, pushes=20,
                                               rss=200, pipeline=0))))
    dead = Snapshot(12, False, load(dump(worker("c", ready=1, connections=5, pushes=40,
                                               rss=300))))
    merged = flat(merge(10, own, [live, dead]))
    assert merged == {
        ("courtside_info", (("node", "a"),)): 1.0,
        ("courtside_info", (("node", "b"),)): 1.0,
        ("courtside_ready", ()): 0.0,  # one worker is not ready: the service is not
        ("courtside_pipeline_installed", ()): 0.0,  # one worker found the triggers changed
        ("courtside_connections", (("transport", "ws"),)): 7.0,
        ("courtside_subscriber_pushes_total", ()): 70.0,  # the dead worker's count stays
        ("process_resident_memory_bytes", (("pid", "10"),)): 100.0,
        ("process_resident_memory_bytes", (("pid", "11"),)): 200.0,
    }


def test_merge_of_one_worker_is_its_own_numbers() -> None:
    own = worker("a", ready=1, connections=3, pushes=10, rss=100)
    merged = merge(10, own, [])
    assert [(f.name, f.type) for f in merged] == [(f.name, f.type) for f in own]
    assert flat(merged) == {**{k: v for k, v in flat(own).items()
                               if k[0] != "process_resident_memory_bytes"},
                            ("process_resident_memory_bytes", (("pid", "10"),)): 100.0}


def test_a_new_master_removes_what_killed_masters_left(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"courtside-metrics-{gone.pid}-x1"
    stale.mkdir()
    (stale / "123.json").write_text("[]")
    running_master = tmp_path / f"courtside-metrics-{os.getppid()}-x2"  # alive: kept
    running_master.mkdir()
    other = tmp_path / "courtside-metrics-notes-x3"
    other.mkdir()
    made = make_directory(tmp_path)
    assert made.parent == tmp_path
    assert made.name.startswith(f"courtside-metrics-{os.getpid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [made.name, running_master.name, other.name])


# -- a real server with two workers ----------------------------------------------------------


def clients_per_worker(master: int, port: int) -> dict[int, int]:
    """Established client connections of each worker (the children holding the port)."""
    counts = {}
    for proc in psutil.Process(master).children():
        with contextlib.suppress(psutil.Error):
            mine = [c for c in proc.net_connections("tcp") if c.laddr and c.laddr.port == port]
            if mine:
                counts[proc.pid] = sum(1 for c in mine if c.status == psutil.CONN_ESTABLISHED)
    return counts


async def agreed(base: str, expected: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                 times: int = 6, wait: float = 15.0) -> Samples:
    """Scrape (a new connection each time, so either worker may answer) until ``times``
    scrapes in a row show every expected value."""
    in_a_row = 0
    with anyio.fail_after(wait):
        while True:
            now = await scrape(base)
            if all(now.get(k) == v for k, v in expected.items()):
                in_a_row += 1
                if in_a_row == times:
                    return now
            else:
                in_a_row = 0
            await anyio.sleep(0.1)


async def stable(base: str) -> Samples:
    """Two scrapes more than a publishing interval apart with the same event counters."""
    keys = ("courtside_notifications_total", "courtside_subscriber_pushes_total")
    last = await scrape(base)
    with anyio.fail_after(20):
        while True:
            await anyio.sleep(1.3)
            now = await scrape(base)
            if all(one(now, k) == one(last, k) for k in keys):
                return now
            last = now


@pytest.mark.anyio
async def test_two_workers_one_view(db: str, tmp_path: Path) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    env = {"COURTSIDE_RT_CONNECTIONS_PER_USER": "100"}
    with serve_process(db, tmp_path, workers=2, env=env) as server:
        assert wait_for_listeners(db, 2) == 2
        port = port_of(server.base)
        async with contextlib.AsyncExitStack() as stack:
            clients: list[Ws] = []

            async def connect() -> None:
                ws = await stack.enter_async_context(ws_client(server.base, token))
                assert (await ws.subscribe(world.topic))["type"] == "subscribed"
                clients.append(ws)

            # Until both workers hold clients: then neither one's own count is the total.
            while len(clients) < 4 or min(clients_per_worker(server.proc.pid, port)
                                          .values(), default=0) == 0:
                assert len(clients) < 60, clients_per_worker(server.proc.pid, port)
                await connect()
            per_worker = clients_per_worker(server.proc.pid, port)
            assert len(per_worker) == 2, per_worker
            assert min(per_worker.values()) > 0, per_worker
            assert sum(per_worker.values()) == len(clients), per_worker
            n = len(clients)

            view = await agreed(server.base, {
                ("courtside_connections", (("transport", "ws"),)): n,
                ("courtside_subscriptions", ()): n,
                ("courtside_ready", ()): 1,
            })
            assert len([k for k in view if k[0] == "courtside_info"]) == 2
            pids = {dict(k[1])["pid"] for k in view if k[0] == "process_resident_memory_bytes"}
            assert pids == {str(pid) for pid in per_worker}
            metrics_dir = Path(psutil.Process(next(iter(per_worker))).environ()[DIR_ENV])
            published = await anyio.to_thread.run_sync(lambda: sorted(metrics_dir.glob("*.json")))
            assert [p.name for p in published] == sorted(f"{pid}.json" for pid in per_worker)

            # One comment: one notification on each worker's LISTEN, one push per client.
            before = await stable(server.base)
            sql_comment(db, world.session_id, world.owner, "counted once per subscriber")
            for ws in clients:
                await ws.events(world.topic, 1)
            await agreed(server.base, {
                ("courtside_notifications_total", ()):
                    one(before, "courtside_notifications_total") + 2,
                ("courtside_subscriber_pushes_total", ()):
                    one(before, "courtside_subscriber_pushes_total") + n,
            })

            # A worker killed outright: uvicorn replaces it. Its clients are gone, its
            # counts stay in the totals, and a scrape never sees a counter go back.
            victim, survivor = sorted(per_worker, key=lambda pid: per_worker[pid])
            counted = await scrape(server.base)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while True:
                now = await scrape(server.base)
                for key in ("courtside_notifications_total", "courtside_subscriber_pushes_total"):
                    assert one(now, key) >= one(counted, key), (key, now, counted)
                pids = {dict(k[1])["pid"] for k in now
                        if k[0] == "process_resident_memory_bytes"}
                if len(pids) == 2 and str(victim) not in pids \
                        and one(now, "courtside_ready") == 1 \
                        and one(now, "courtside_connections", transport="ws") == \
                        per_worker[survivor]:
                    break
                assert time.monotonic() < deadline, now
                counted = now
                await anyio.sleep(0.2)
            assert str(survivor) in pids
    # The master removed the directory on its way out.
    assert not await anyio.to_thread.run_sync(metrics_dir.exists)

