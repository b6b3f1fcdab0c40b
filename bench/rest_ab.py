"""A/B of the REST API between two checkouts, served at once against one database.

    python -m bench.rest_ab --old /path/to/other/checkout [--new .] [--dsn ...] [--out F]

Each checkout runs `courtside serve` (one worker) on its own loopback port. Blocks of
sequential requests of each kind alternate between the two servers, so both go through the
same phases of a shared machine; the result is each kind's p50 and p90 latency, and the
server's CPU per request (median over its blocks), side by side. Comments are written by
50 authors in turn, each rate-limit bucket keeping its window's hits in an array.

The database (a throwaway cluster, or a fresh database on `--dsn`) is migrated by the old
checkout, then by the new one: functions the new code renamed exist for both, and where
both define one of the same name, both servers run the new one's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import procstat
from bench.checkouts import ROOT, Served, migrate_checkout, serve_checkout
from bench.database import SessionFx, make_sessions, open_db

AUTHORS = 50
MENTIONABLE = 10
SEED_COMMENTS = 3000  # a multiple of AUTHORS: seed comment i % SEED_COMMENTS is author i's

Request = Callable[[httpx.Client, int], httpx.Response]


def _requests(session: SessionFx, seeded: list[str]) -> dict[str, Request]:
    """Each kind's request number i, made by author i % AUTHORS; an edit changes one of
    that author's `seeded` comments."""
    base = f"/api/sessions/{session.id}"
    mentioned = session.users[AUTHORS:]

    def edit(c: httpx.Client, i: int) -> httpx.Response:
        comment_id = seeded[i % SEED_COMMENTS]
        return c.put(f"{base}/comments/{comment_id}", json={
            "content": f"edit {i}", "mentions": mentioned[i % 3:i % 3 + 2]})

    return {
        "create": lambda c, i: c.post(f"{base}/comments", json={"content": f"create {i}"}),
        "create, 2 mentions": lambda c, i: c.post(f"{base}/comments", json={
            "content": f"mention {i}", "mentions": mentioned[:2]}),
        "edit, 2 mentions": edit,
        "list (20)": lambda c, i: c.get(f"{base}/comments",
                                        params={"page": 1 + i % 3, "limit": 20}),
        "typing": lambda c, i: c.post(f"{base}/presence/typing", json={"isTyping": i % 2 == 0}),
        "users online": lambda c, i: c.get(f"{base}/presence/users"),
    }


def measure(old: Path, new: Path, dsn: str | None, block: int, blocks: int,
            log_dir: Path) -> dict[str, Any]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open_db(dsn) as db:
        migrate_checkout(old, db.dsn)
        migrate_checkout(new, db.dsn)
        session = make_sessions(db, 1, AUTHORS + MENTIONABLE)[0]
        # Comments in place, and analysed, before either server plans a query: a backend
        # keeps the plans its PL/pgSQL functions made (the rendering's among them), and a
        # server whose first requests met near-empty tables kept worse ones for the run
        # (an A/A run, this checkout on both sides, then measured the side that wrote
        # first 1.2-2 x slower).
        seeded = _seed(db.dsn, session)
        with serve_checkout(old, db.dsn, log_dir / "rest-ab-old.log") as a, \
                serve_checkout(new, db.dsn, log_dir / "rest-ab-new.log") as b:
            served = {"old": a, "new": b}
            return _alternate(session, seeded, served, block, blocks)


def _seed(dsn: str, session: SessionFx) -> list[str]:
    """SEED_COMMENTS comments, comment i by author i % AUTHORS, each mentioning two users;
    their ids in that order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            rows = conn.execute(
                "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                " SELECT %s, (%s::uuid[])[1 + (i - 1) %% %s], 'seed ' || i"
                " FROM generate_series(1, %s) AS i"
                " RETURNING id, split_part(content, ' ', 2)::int",
                (session.id, session.users[:AUTHORS], AUTHORS, SEED_COMMENTS)).fetchall()
            ids = [str(comment_id) for comment_id, _ in sorted(rows, key=lambda r: r[1])]
            conn.execute(
                "INSERT INTO sport_session_comment_mentions (comment_id, mentioned_user_id)"
                " SELECT c, u FROM unnest(%s::uuid[]) AS c, unnest(%s::uuid[]) AS u",
                (ids, session.users[AUTHORS:AUTHORS + 2]))
        conn.execute("ANALYZE")  # as autovacuum would leave them
    return ids


def _alternate(session: SessionFx, seeded: list[str], served: dict[str, Served], block: int,
               blocks: int) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        clients = {(v, a): stack.enter_context(httpx.Client(
            base_url=s.base, timeout=30,
            headers={"Authorization": f"Bearer {session.tokens[a]}"}))
            for v, s in served.items() for a in range(AUTHORS)}
        kinds = _requests(session, seeded)
        latencies: dict[str, dict[str, list[float]]] = {}
        cpus: dict[str, dict[str, list[float]]] = {}
        n = 0
        for b in range(blocks):
            for kind in kinds:
                for v in ("old", "new") if b % 2 == 0 else ("new", "old"):
                    before = procstat.tree_cpu(served[v].pid)  # seconds
                    for _ in range(block):
                        n += 1
                        started = time.perf_counter()
                        r = kinds[kind](clients[(v, n % AUTHORS)], n)
                        latencies.setdefault(kind, {}).setdefault(v, []).append(
                            time.perf_counter() - started)
                        if r.status_code not in (200, 201):
                            raise RuntimeError(f"{v} {kind}: {r.status_code} {r.text}")
                    cpu = procstat.tree_cpu(served[v].pid) - before
                    cpus.setdefault(kind, {}).setdefault(v, []).append(cpu / block)
    return {kind: {v: {"p50_ms": _ms(lat, 0.5), "p90_ms": _ms(lat, 0.9),
                       "cpu_us": round(statistics.median(cpus[kind][v]) * 1e6)}
                   for v, lat in by_version.items()}
            for kind, by_version in latencies.items()}


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 2)


def table(results: dict[str, Any]) -> str:
    lines = ["| request | p50 old → new (ms) | p90 old → new (ms) | server CPU old → new (µs) |",
             "|---|---|---|---|"]
    for kind, r in results.items():
        lines.append(f"| {kind} | {r['old']['p50_ms']} → {r['new']['p50_ms']} "
                     f"| {r['old']['p90_ms']} → {r['new']['p90_ms']} "
                     f"| {r['old']['cpu_us']:,} → {r['new']['cpu_us']:,} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rest_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the other checkout")
    parser.add_argument("--new", type=Path, default=ROOT, help="default: this checkout")
    parser.add_argument("--dsn", help="a server to create the database on (default: a "
                                      "throwaway cluster)")
    parser.add_argument("--block", type=int, default=50, help="requests per block")
    parser.add_argument("--blocks", type=int, default=10, help="blocks per kind and version")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rest-ab.json")
    args = parser.parse_args(argv)
    results = measure(args.old.resolve(), args.new.resolve(), args.dsn, args.block,
                      args.blocks, args.out.parent / "logs")
    args.out.write_text(json.dumps({"old": str(args.old), "new": str(args.new),
                                    "block": args.block, "blocks": args.blocks,
                                    "results": results}, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
