"""The embedded PostgreSQL: what `courtside` uses when no DATABASE_URL is set.

A real server in ``COURTSIDE_DATA_DIR`` (default ``./.courtside``), kept between runs, so the
first `courtside serve` on a bare machine works and the next one finds its data again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg

from courtside.pgcluster import Cluster

log = logging.getLogger("courtside.embedded")

DBNAME = "courtside"


@dataclass
class Embedded:
    cluster: Cluster
    started_here: bool

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(DBNAME)

    def close(self) -> None:
        """Stop the server if this process started it; leave one someone else started."""
        if self.started_here:
            log.info("stopping embedded PostgreSQL in %s", self.cluster.datadir)
            self.cluster.stop()


def cluster_for(data_dir: Path) -> Cluster:
    return Cluster(data_dir / "pgdata")


def ensure_running(data_dir: Path) -> Embedded:
    cluster = cluster_for(data_dir)
    fresh = not cluster.initialized
    if fresh:
        log.info("initializing embedded PostgreSQL in %s (binaries: %s)",
                 cluster.datadir, cluster.bindir)
        cluster.init()
    already = cluster.running_port() is not None
    cluster.start()
    log.info("embedded PostgreSQL %s %s on 127.0.0.1:%s (data: %s)", cluster.version(),
             "already running" if already else "started", cluster.port, cluster.datadir)
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DBNAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DBNAME}"')
    return Embedded(cluster, started_here=not already)
