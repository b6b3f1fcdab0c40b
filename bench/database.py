"""The database a bench run uses, and the users, sessions and tokens it writes as.

By default a throwaway cluster (courtside.pgcluster.Cluster) in a temporary folder, with
commit timestamps on, removed afterwards; with ``--dsn`` a fresh database on that server,
dropped afterwards. Either way it is migrated by courtside's own runner.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api import tokens
from bench import procstat
from courtside.migrate import migrate
from courtside.pgcluster import Cluster

CLUSTER_SETTINGS = {
    "track_commit_timestamp": "on",  # commit → receipt for writes made inside the server
    "max_connections": "400",
    "shared_buffers": "256MB",
}


@dataclass
class BenchDB:
    dsn: str
    admin_dsn: str
    dbname: str
    cluster: Cluster | None
    durable: bool | None  # fsync and synchronous_commit on (None: an existing server's)

    def postgres_cpu(self) -> float | None:
        """CPU seconds used so far by every process of our own cluster (None on --dsn)."""
        if self.cluster is None:
            return None
        try:
            pid = int((self.cluster.datadir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return procstat.tree_cpu(pid)

    def stats(self) -> dict[str, int]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit, tup_returned, tup_fetched, tup_inserted, blks_hit,"
                " blks_read FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            conn.execute("SELECT pg_stat_clear_snapshot()")
        assert row is not None
        keys = ("xact_commit", "tup_returned", "tup_fetched", "tup_inserted", "blks_hit",
                "blks_read")
        return {k: int(v) for k, v in zip(keys, row, strict=True)}


def _with_dbname(dsn: str, dbname: str) -> str:
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    params["dbname"] = dbname
    return make_conninfo("", **params)


def _as_url(dsn: str) -> str:
    """A postgresql:// URL (asyncpg and node-postgres take URLs, not key=value strings)."""
    params = conninfo_to_dict(dsn)
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql://{user}{password}@{host}:{port}/{params.get('dbname', 'postgres')}"


@contextlib.contextmanager
def open_db(dsn: str | None, *, durable: bool = True) -> Iterator[BenchDB]:
    if dsn:
        name = f"courtside_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            bench_dsn = _as_url(_with_dbname(dsn, name))
            migrate(bench_dsn)
            yield BenchDB(bench_dsn, dsn, name, None, None)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    tmp = Path(tempfile.mkdtemp(prefix="courtside-bench-"))
    cluster = Cluster(tmp / "data", fsync=durable, settings=CLUSTER_SETTINGS)
    try:
        cluster.init()
        cluster.start()
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "courtside"')
        migrate(cluster.dsn("courtside"))
        yield BenchDB(cluster.dsn("courtside"), cluster.dsn("postgres"), "courtside", cluster,
                      durable)
    finally:
        cluster.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class SessionFx:
    id: str
    users: list[str]  # participants (the owner first)
    tokens: list[str]  # a bearer token for each of them, same order

    @property
    def topic(self) -> str:
        return f"session:{self.id}"


def make_sessions(db: BenchDB, sessions: int, users_per_session: int,
                  visibility: str = "private") -> list[SessionFx]:
    """`sessions` sessions, each with `users_per_session` participants holding a token."""
    run = uuid.uuid4().hex[:8]
    out: list[SessionFx] = []
    with psycopg.connect(db.dsn, autocommit=True) as conn, conn.transaction():
        for s in range(sessions):
            users = [str(r[0]) for r in conn.execute(
                "INSERT INTO users (firstname, lastname, email)"
                " SELECT 'Bench' || g, 'User', 'bench-' || %s || '-' || %s || '-' || g"
                "   || '@example.test' FROM generate_series(1, %s) AS g RETURNING id",
                (run, s, users_per_session)).fetchall()]
            row = conn.execute(
                "INSERT INTO sport_sessions (title, visibility, owner_id)"
                " VALUES (%s, %s, %s) RETURNING id",
                (f"Bench session {s}", visibility, users[0])).fetchone()
            assert row is not None
            session_id = str(row[0])
            conn.execute(
                "INSERT INTO sport_session_participants (sport_session_id, user_id, role)"
                " SELECT %s, u, CASE WHEN o = 1 THEN 'owner' ELSE 'participant' END"
                " FROM unnest(%s::uuid[]) WITH ORDINALITY AS t(u, o)",
                (session_id, users))
            plaintexts = [tokens.new_plaintext() for _ in users]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name,"
                    " token, abilities, created_at, updated_at) VALUES ('App\\Models\\User',"
                    " %s, 'bench', %s, '[\"*\"]', now() AT TIME ZONE 'UTC',"
                    " now() AT TIME ZONE 'UTC') RETURNING id",
                    [(u, tokens.hash_plaintext(p)) for u, p in zip(users, plaintexts,
                                                                   strict=True)],
                    returning=True)
                ids: list[int] = []
                while True:
                    r = cur.fetchone()
                    assert r is not None
                    ids.append(int(r[0]))
                    if not cur.nextset():
                        break
            out.append(SessionFx(session_id, users,
                                 [f"{i}|{p}" for i, p in zip(ids, plaintexts, strict=True)]))
    return out


def commit_times(db: BenchDB, first_n: int, last_n: int) -> dict[int, int]:
    """Commit time (ns since the epoch) of bench events first_n..last_n, from
    track_commit_timestamp; empty when the server does not track commit timestamps."""
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        tracked = conn.execute("SHOW track_commit_timestamp").fetchone()
        if tracked is None or tracked[0] != "on":
            return {}
        rows = conn.execute(
            "SELECT split_part(content, ':', 2)::bigint,"
            " (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1e9)::bigint"
            " FROM sport_session_comments WHERE content LIKE 'bench:%%'"
            " AND split_part(content, ':', 2)::bigint BETWEEN %s AND %s",
            (first_n, last_n)).fetchall()
    return {int(n): int(ts) for n, ts in rows if ts is not None}
