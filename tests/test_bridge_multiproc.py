"""Two bridge processes on one database: both deliver every event; presence spans them; a
SIGKILLed node's users go offline through the other's reaper; SIGTERM leaves cleanly."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import psycopg
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tests import factories
from tests.bridge_helpers import log_rows, wait_for

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Node:
    node_id: str
    process: Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            async for chunk in self.process.stderr:
                self.stderr += chunk

    async def read(self) -> None:
        assert self.process.stdout is not None
        stream = BufferedByteReceiveStream(self.process.stdout)
        with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead):
            while True:
                self.lines.append(orjson.loads(await stream.receive_until(b"\n", 1 << 20)))

    @property
    def ready(self) -> bool:
        return {"ready": self.node_id} in self.lines

    def seqs(self, topic: str) -> list[int]:
        return [x["s"] for x in self.lines if x.get("t") == topic and x.get("s") is not None]

    def durable(self, topic: str) -> list[tuple[int, str, bytes]]:
        return [(x["s"], x["e"], orjson.dumps(x["d"])) for x in self.lines
                if x.get("t") == topic and x.get("s") is not None]

    def presence(self, topic: str) -> list[tuple[str, str]]:
        return [(x["e"], x["d"]["userId"]) for x in self.lines
                if x.get("t") == topic and x.get("s") is None and "e" in x]


@contextlib.asynccontextmanager
async def node(tg: anyio.abc.TaskGroup, dsn: str, node_id: str, topics: list[str],
               joins: list[str]) -> AsyncIterator[Node]:
    cmd = [sys.executable, "-m", "tests.bridge_node", "--dsn", dsn, "--node-id", node_id]
    for t in topics:
        cmd += ["--topic", t]
    for j in joins:
        cmd += ["--join", j]
    process = await anyio.open_process(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
    n = Node(node_id, process)
    tg.start_soon(n.read)
    tg.start_soon(n.read_stderr)
    try:
        await wait_for(lambda: n.ready or process.returncode is not None, 20, f"{node_id} ready")
        assert n.ready, n.stderr.decode(errors="replace")
        yield n
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()


def write(dsn: str, session_id: object, user_id: object, n: int, tag: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(n):
            conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                         " VALUES (%s, %s, %s)", (session_id, user_id, f"{tag} {i}"))


def presence_ids(dsn: str, topic: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT p->>'id' FROM realtime.presence_list_v1(%s) p",
                            (topic,)).fetchall()
    return [str(r[0]) for r in rows]


def nodes(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {str(r[0]) for r in conn.execute("SELECT node_id FROM realtime.nodes")}


async def test_two_processes_deliver_every_event_and_share_presence(db: str) -> None:
    w = factories.world(db, participants=3)
    other = factories.world(db, participants=2)
    alice, bob = (str(u) for u in w.participants[1:3])
    topics = [w.topic, other.topic]
    async with anyio.create_task_group() as tg:
        async with node(tg, db, "node-a", topics, [f"{w.topic},{alice},a1"]) as a, \
                node(tg, db, "node-b", topics, [f"{w.topic},{bob},b1"]) as b:
            # Every event, on both nodes, exactly once and in order, same bytes as the log.
            await anyio.to_thread.run_sync(write, db, w.session_id, w.owner, 30, "w")
            await anyio.to_thread.run_sync(write, db, other.session_id, other.owner, 20, "o")
            await wait_for(lambda: all(len(n.seqs(t)) >= count for n in (a, b)
                                       for t, count in ((w.topic, 30), (other.topic, 20))),
                           10, "both nodes to get both topics")
            for n in (a, b):
                for t in topics:
                    assert n.durable(t) == log_rows(db, t)
            # Presence spans the nodes: each row lives on its own node.
            assert sorted(presence_ids(db, w.topic)) == sorted([alice, bob])
            assert nodes(db) == {"node-a", "node-b"}
            await wait_for(lambda: ("user.online", bob) in a.presence(w.topic), 5,
                           "node-a to hear bob come online on node-b")
            # node-a dies without a word. node-b's reaper must notice and say alice left.
            a.process.send_signal(signal.SIGKILL)
            await a.process.wait()
            await wait_for(lambda: ("user.offline", alice) in b.presence(w.topic), 10,
                           "node-b's reaper to take alice offline")
            assert presence_ids(db, w.topic) == [bob]
            assert nodes(db) == {"node-b"}
            # The survivor keeps delivering.
            await anyio.to_thread.run_sync(write, db, w.session_id, w.owner, 5, "after")
            await wait_for(lambda: len(b.seqs(w.topic)) >= 35, 10, "node-b after the kill")
            assert b.durable(w.topic) == log_rows(db, w.topic)
            await anyio.sleep(0.7)  # two more reaper rounds: offline is said once
            assert b.presence(w.topic).count(("user.offline", alice)) == 1
            # A clean stop leaves at once, without waiting for a reaper.
            b.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                assert await b.process.wait() == 0
            assert presence_ids(db, w.topic) == []
            assert nodes(db) == set()
        tg.cancel_scope.cancel()
