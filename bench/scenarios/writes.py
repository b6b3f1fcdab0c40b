"""Scenario `writes`: comment inserts/s with courtside's triggers against the same inserts
without them, with 1 / 4 / 8 concurrent writers, measured by pgbench. Two trigger-only
baselines beside them: `minimum`, the least any trigger keeping DESIGN §4 does (counter row,
log row, NOTIFY: what bounds courtside's ratio), and, in full mode, `naive`, a row trigger
that NOTIFYs the row and keeps nothing.

Writers spread over 100 sessions, as independent users would: they never wait on each
other's topic lock, only on what PostgreSQL serializes for every NOTIFYing transaction —
its commit-time notification queue lock, held through the commit record's flush. So the
measurement is made with durable commits (synchronous_commit on, the target's setting) and,
in full mode, again with synchronous_commit off, where that flush is not waited for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.database import BenchDB, make_sessions
from bench.harness import BenchError, Run
from bench.stats import ratio

_TARGETS = 100
_SCRIPT = """\\set n random(1, {targets})
INSERT INTO sport_session_comments (sport_session_id, user_id, content)
SELECT session_id, user_id, 'bench write ' || :n FROM bench_write_targets WHERE n = :n;
"""
# Trigger-only baselines, each a trigger named bench_baseline (see the files).
_BASELINES = {"naive": "writes_naive.sql", "minimum": "writes_minimum.sql"}
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")


def run(r: Run) -> dict[str, Any]:
    p = r.profile
    sessions = make_sessions(r.db, _TARGETS, 1)
    with psycopg.connect(r.db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_write_targets"
                     " (n int PRIMARY KEY, session_id uuid NOT NULL, user_id uuid NOT NULL)")
        conn.execute("TRUNCATE bench_write_targets")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_write_targets VALUES (%s, %s, %s)",
                            [(i + 1, s.id, s.users[0]) for i, s in enumerate(sessions)])
    pgbench = _pgbench(r.db)
    out: dict[str, Any] = {
        "workload": {"writers": list(p.write_clients), "seconds": p.write_duration,
                     "modes": list(p.write_modes), "repeats": p.write_repeats,
                     "sessions": _TARGETS},
        "tool": str(pgbench) if pgbench else "python threads (pgbench not found)",
        "durable_commits": r.db.durable,
        "results": {},
    }
    for commit in p.write_commits:
        key = "results" if commit == "on" else f"results_synchronous_commit_{commit}"
        out[key] = _series(r, pgbench, commit)
    if "courtside" in r.profile_systems and pgbench is not None:
        with r.leg(out, "function_profile") as entry:
            r.need(p.write_duration + 5, "writes/function profile")
            r.profiles["writes-1-writer-trigger-functions"] = _function_profile(
                r.db, pgbench, p.write_duration)
            entry["done"] = True
    return out


def _function_profile(db: BenchDB, pgbench: Path, seconds: float) -> dict[str, Any]:
    """Where one writer's trigger time goes: pg_stat_user_functions (track_functions = all,
    which slows the functions it times) over a 1-writer pgbench run with the triggers on."""
    with tempfile.TemporaryDirectory(prefix="courtside-bench-") as tmp:
        script = Path(tmp) / "insert.sql"
        script.write_text(_SCRIPT.format(targets=_TARGETS))
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_reset()")
        env = {**os.environ, "PGOPTIONS": "-c track_functions=all"}
        done = subprocess.run(
            [str(pgbench), "-n", "-M", "prepared", "-c", "1", "-T", str(max(1, round(seconds))),
             "-f", str(script), db.dsn], capture_output=True, text=True, timeout=seconds + 60,
            check=False, env=env)
    match = _TPS.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise BenchError(f"pgbench failed ({done.returncode}): {done.stderr[-500:]}")
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        time.sleep(1.0)  # the backend reports its function counters when it exits
        rows = conn.execute(
            "SELECT schemaname || '.' || funcname, calls, total_time, self_time"
            " FROM pg_stat_user_functions ORDER BY self_time DESC").fetchall()
    tps = float(match.group(1))
    inserts = tps * max(1, round(seconds))
    return {"kind": "functions", "inserts_per_s": tps,
            "insert_us": 1e6 / tps if tps else None,
            "rows": [[name, int(calls), round(float(total) * 1000 / inserts, 1),
                      round(float(own) * 1000 / inserts, 1)]
                     for name, calls, total, own in rows]}


def _series(r: Run, pgbench: Path | None, commit: str) -> dict[str, Any]:
    p = r.profile
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="courtside-bench-") as tmp:
        script = Path(tmp) / "insert.sql"
        script.write_text(_SCRIPT.format(targets=_TARGETS))
        for clients in p.write_clients:
            row: dict[str, Any] = {}
            results[str(clients)] = row
            runs: dict[str, list[float]] = {mode: [] for mode in p.write_modes}
            for _ in range(p.write_repeats):
                for mode in p.write_modes:  # alternated, so drift hits every mode alike
                    with r.leg(row, mode) as entry:
                        r.need(p.write_duration + 3, f"writes/{mode}/{clients}/{commit}")
                        tps = _measure(r.db, pgbench, script, mode, clients, p.write_duration,
                                       commit)
                        runs[mode].append(tps)
                        entry.update({"tps": sum(runs[mode]) / len(runs[mode]),
                                      "runs": list(runs[mode])})
            base = row.get("none", {}).get("tps")
            for mode in p.write_modes:
                if mode != "none" and "tps" in row.get(mode, {}):
                    row[mode]["ratio_to_none"] = ratio(row[mode]["tps"], base)
    return results


def _pgbench(db: BenchDB) -> Path | None:
    if db.cluster is not None and (db.cluster.bindir / "pgbench").exists():
        return db.cluster.bindir / "pgbench"
    found = shutil.which("pgbench")
    return Path(found) if found else None


def set_mode(db: BenchDB, mode: str) -> None:
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("DROP TRIGGER IF EXISTS bench_baseline ON sport_session_comments")
        if mode == "triggers":
            conn.execute("ALTER TABLE sport_session_comments ENABLE TRIGGER USER")
        else:
            # USER: every trigger but the internal foreign-key ones.
            conn.execute("ALTER TABLE sport_session_comments DISABLE TRIGGER USER")
            if mode in _BASELINES:
                conn.execute((Path(__file__).parent / _BASELINES[mode]).read_bytes())
        conn.execute("CHECKPOINT")


def _measure(db: BenchDB, pgbench: Path | None, script: Path, mode: str, clients: int,
             seconds: float, commit: str) -> float:
    try:
        set_mode(db, mode)
        if pgbench is None:
            return _python_writers(db, clients, seconds, commit)
        env = {**os.environ, "PGOPTIONS": f"-c synchronous_commit={commit}"}
        result = subprocess.run(
            [str(pgbench), "-n", "-M", "prepared", "-c", str(clients),
             "-j", str(min(clients, 4)), "-T", str(max(1, round(seconds))), "-f", str(script),
             db.dsn], capture_output=True, text=True, timeout=seconds + 60, check=False,
            env=env)
        match = _TPS.search(result.stdout)
        if result.returncode != 0 or match is None:
            raise BenchError(f"pgbench failed ({result.returncode}): "
                             f"{(result.stderr or result.stdout)[-500:]}")
        return float(match.group(1))
    finally:
        set_mode(db, "triggers")


def _python_writers(db: BenchDB, clients: int, seconds: float, commit: str) -> float:
    """The same inserts from `clients` threads (psycopg releases the GIL while it waits)."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def writer(k: int) -> None:
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(f"SET synchronous_commit = {commit}")
            i = k
            while time.monotonic() < stop:
                conn.execute(
                    "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                    " SELECT session_id, user_id, 'bench write' FROM bench_write_targets"
                    " WHERE n = %s", (i % _TARGETS + 1,))
                counts[k] += 1
                i += clients

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return sum(counts) / (time.monotonic() - started)
