"""One bench run: the database, the load-generator agents, the servers, the time budget.

Scenarios get a `Run` and use it to start systems, open subscriber connections across the
client agents, write comments through the writer agent and collect what was received.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import perfprof, profiling, servers
from bench.agent import Agent, AgentError, call_all
from bench.database import BenchDB, SessionFx, make_sessions
from bench.dialects import marker_content
from bench.profiles import Profile
from bench.servers import Server
from bench.writers import INSERT, WARM_UP_COMMITS, WARM_UP_CONTENT


class BenchError(RuntimeError):
    """A scenario leg could not be measured (its result says why; the run goes on)."""


class OutOfTime(BenchError):
    """The run's time budget would be exceeded."""


@dataclass
class Received:
    """What the client agents received since the last reset."""

    events: array[int]
    latencies: array[int]
    conns: int
    open: int
    unexpected_closes: int
    seqs: list[list[Any]] = field(default_factory=list)
    close_codes: dict[str, int] = field(default_factory=dict)  # server close frames, by code
    notices: dict[str, int] = field(default_factory=dict)  # reset / error frames after ready

    def for_range(self, first: int, last: int) -> tuple[list[int], list[int]]:
        """(event numbers, latencies) of events first..last only."""
        ev: list[int] = []
        lat: list[int] = []
        for n, v in zip(self.events, self.latencies, strict=True):
            if first <= n <= last:
                ev.append(n)
                lat.append(v)
        return ev, lat


class Run:
    def __init__(self, profile: Profile, systems: Sequence[str], db: BenchDB, out_dir: Path,
                 time_limit: float, unavailable: dict[str, str]) -> None:
        self.profile = profile
        self.systems = list(systems)
        self.unavailable = unavailable  # system → why it cannot run here
        self.db = db
        self.out_dir = out_dir
        self.log_dir = out_dir / "logs"
        self.started = time.monotonic()
        self.deadline = self.started + time_limit
        self.notes: list[str] = []
        self._n = itertools.count(1)
        self.clients: list[Agent] = []
        self.writer: Agent | None = None
        self.profile_systems: set[str] = set()  # profile these servers' measured windows
        self.profiler = "py-spy"  # or "perf": the whole stack, kernel included
        self.profiles: dict[str, dict[str, Any]] = {}
        self._insert_conn: psycopg.Connection[Any] | None = None
        self._warm_target: list[str] | None = None

    # -- lifetime ----------------------------------------------------------------------------

    def start_agents(self) -> None:
        self.clients = [Agent(f"bench-client-{i}") for i in range(self.profile.client_agents)]
        self.writer = Agent("bench-writer")
        call_all([*self.clients, self.writer], "ping", 60.0)

    def restart_agents(self) -> None:
        """After a failed command an agent may be mid-command: start fresh ones."""
        self.stop_agents()
        self.start_agents()

    def stop_agents(self) -> None:
        for agent in [*self.clients, *([self.writer] if self.writer else [])]:
            agent.stop()
        self.clients = []
        self.writer = None
        if self._insert_conn is not None:
            self._insert_conn.close()
            self._insert_conn = None

    # -- time --------------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def need(self, seconds: float, what: str) -> None:
        if self.remaining() < seconds:
            raise OutOfTime(f"skipped {what}: needs ~{seconds:.0f}s, "
                            f"{max(0.0, self.remaining()):.0f}s left in the time budget")

    def settle(self) -> float:
        """Between scenarios: vacuum and analyse what the last one wrote, and checkpoint, so
        that autovacuum and the writing out of its dirty pages do not land in the next one's
        measurements (pgbench vacuums before a run for the same reason). Returns seconds."""
        began = time.monotonic()
        with psycopg.connect(self.db.dsn, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
            conn.execute("CHECKPOINT")
        return time.monotonic() - began

    def runnable(self, system: str) -> bool:
        return system in self.systems and system not in self.unavailable

    def next_events(self, count: int) -> int:
        """Reserve `count` event numbers; returns the first."""
        first = next(self._n)
        for _ in range(count - 1):
            next(self._n)
        return first

    # -- servers and clients -----------------------------------------------------------------

    def server(self, system: str, traced: bool = False) -> AbstractContextManager[Server]:
        """`traced`: under tracemalloc, when this system's py-spy profile was asked for
        (a perf profile is of CPU time, which tracemalloc would inflate)."""
        traced_dir = None
        if (traced and self.profiler == "py-spy" and system in self.profile_systems
                and system in ("courtside", "pusher")):
            traced_dir = self.out_dir / "profiles" / f"tracemalloc-{next(self._n)}"
        return servers.running(system, self.db, self.log_dir, traced_dir=traced_dir)

    def connect(self, system: str, server: Server, specs: Sequence[dict[str, Any]],
                timeout: float, concurrency: int = 100, retries: int = 0) -> dict[str, Any]:
        """Open the connections (spread round-robin over the client agents) and wait until
        each is subscribed. Returns counts and the time it took to accept them all.
        `concurrency` is per agent; `retries`: further attempts of a refused connection."""
        shards: list[list[dict[str, Any]]] = [[] for _ in self.clients]
        for i, spec in enumerate(specs):
            shards[i % len(shards)].append(spec)
        results = call_all(self.clients, "connect", timeout + 30.0, [
            {"system": system, "host": "127.0.0.1", "port": server.port, "specs": shard,
             "concurrency": concurrency, "within": timeout, "retries": retries}
            for shard in shards])
        ok = sum(r["ok"] for r in results)
        started = min(r["started_ns"] for r in results)
        last = max(r["last_ready_ns"] for r in results)
        errors = [e for r in results for e in r["errors"]]
        return {"ok": ok, "failed": len(specs) - ok, "errors": errors[:5],
                "retries": sum(r["retries"] for r in results),
                "seconds": (last - started) / 1e9}

    def close_all(self) -> None:
        call_all(self.clients, "close_all", 60.0)

    def reset(self, target: int = -1) -> None:
        call_all(self.clients, "reset", 30.0, [{"target": target} for _ in self.clients])

    def wait_target(self, timeout: float) -> dict[str, Any]:
        results = call_all(self.clients, "wait_target", timeout + 30.0,
                           [{"within": timeout} for _ in self.clients])
        lasts = [r["last_reached_ns"] for r in results if r["last_reached_ns"] is not None]
        return {"reached": sum(r["reached"] for r in results),
                "conns": sum(r["conns"] for r in results),
                "last_reached_ns": max(lasts) if lasts else None,
                "min_count": min(r["min_count"] for r in results),
                "max_count": max(r["max_count"] for r in results)}

    def received(self, samples: bool = True) -> Received:
        results = call_all(self.clients, "stats", 60.0,
                           [{"samples": samples} for _ in self.clients])
        events: array[int] = array("q")
        latencies: array[int] = array("q")
        seqs: list[list[Any]] = []
        close_codes: Counter[str] = Counter()
        notices: Counter[str] = Counter()
        for r in results:
            if samples:
                events.frombytes(r["events"])
                latencies.frombytes(r["latencies"])
            seqs.extend(r["seqs"])
            close_codes.update(r["close_codes"])
            notices.update(r["notices"])
        return Received(events, latencies, sum(r["conns"] for r in results),
                        sum(r["open"] for r in results),
                        sum(r["unexpected_closes"] for r in results), seqs,
                        dict(close_codes), dict(notices))

    def count_received(self) -> int:
        results = call_all(self.clients, "stats", 60.0,
                           [{"samples": False} for _ in self.clients])
        return sum(int(r["received"]) for r in results)

    def wait_received(self, expected: int, timeout: float, quiet: float = 2.0) -> int:
        """Poll until `expected` events were received, or nothing new came for `quiet`
        seconds, or `timeout`. Returns the count."""
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        while True:
            count = self.count_received()
            now = time.monotonic()
            if count >= expected or now >= deadline:
                return count
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change >= quiet:
                return count
            time.sleep(0.05)

    def write(self, plan: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.writer is not None
        result: dict[str, Any] = self.writer.call("write", timeout, **plan)
        return result

    def insert(self, targets: Sequence[Sequence[str]], count: int) -> tuple[int, dict[int, int]]:
        """Commit `count` bench comments one by one from this process (closed-loop scenarios
        that write one event and wait for its deliveries). Returns (first n, n → stamp)."""
        first = self.next_events(count)
        stamps: dict[int, int] = {}
        conn = self._warm_connection()
        for i in range(count):
            session_id, user_id = targets[i % len(targets)][:2]
            n = first + i
            stamp = time.time_ns()
            conn.execute(INSERT, (session_id, user_id, marker_content(n, stamp)))
            stamps[n] = stamp
        return first, stamps

    def warm_target(self) -> list[str]:
        """[session id, user id] of a session nobody subscribes to: where writers warm up."""
        if self._warm_target is None:
            quiet = make_sessions(self.db, 1, 1)[0]
            self._warm_target = [quiet.id, quiet.users[0]]
        return self._warm_target

    def _warm_connection(self) -> psycopg.Connection[Any]:
        """One connection for every `insert`, warmed up (bench/writers.py): a new
        connection per event would put its cold first commits inside every measured
        commit → receipt."""
        conn = self._insert_conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        conn = psycopg.connect(self.db.dsn, autocommit=True)
        try:
            for _ in range(WARM_UP_COMMITS):
                conn.execute(INSERT, (*self.warm_target(), WARM_UP_CONTENT))
        except BaseException:
            conn.close()
            raise
        self._insert_conn = conn
        return conn

    @contextlib.contextmanager
    def profiled(self, server: Server, label: str) -> Iterator[None]:
        """Sample `server` during the block, when its system is profiled: with py-spy
        (Python servers only) or perf."""
        perf = self.profiler == "perf"
        if server.system not in self.profile_systems or (not perf and server.system == "socketio"):
            yield
            return
        tool, suffix = (perfprof, "perf") if perf else (profiling, "txt")
        raw = self.out_dir / "profiles" / f"{label}.{suffix}"
        with tool.record(server.pid, raw) as attached:
            yield
        if attached:
            self.profiles[label] = tool.summarize(raw)

    @contextlib.contextmanager
    def leg(self, results: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
        """A measurement that may fail or run out of time without ending the run: its
        entry in `results` then says why."""
        entry: dict[str, Any] = {}
        results[key] = entry
        try:
            yield entry
        except OutOfTime as exc:
            entry.clear()
            entry["skipped"] = str(exc)
        except (BenchError, AgentError, servers.ServerError, OSError) as exc:
            entry.clear()
            entry["error"] = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, AgentError):
                self.restart_agents()


def subscriber_specs(session: SessionFx, count: int, distinct_users: int,
                     since: int | None = None) -> list[dict[str, Any]]:
    """`count` connections to one session's topic, as `distinct_users` of its participants
    (each courtside join tells every subscriber of the topic that the user came online:
    thousands of distinct users would flood the setup with presence frames)."""
    users = max(1, min(distinct_users, len(session.tokens)))
    return [{"topic": session.topic, "token": session.tokens[i % users], "since": since}
            for i in range(count)]
