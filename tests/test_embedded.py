"""With no DATABASE_URL, courtside runs its own PostgreSQL in a data folder kept between runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from courtside.pgcluster import _pgserver_bindir, _system_bindir

FLAVORS = [
    pytest.param("system", marks=pytest.mark.skipif(
        _system_bindir() is None, reason="no PostgreSQL installed on this machine")),
    pytest.param("pgserver", marks=pytest.mark.skipif(
        _pgserver_bindir() is None, reason="the pgserver wheel is not installed")),
]


def courtside(data_dir: Path, flavor: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "COURTSIDE_PG_BINDIR")}
    env.update(COURTSIDE_DATA_DIR=str(data_dir), COURTSIDE_PG_FLAVOR=flavor)
    return subprocess.run([sys.executable, "-m", "courtside.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_embedded_server_is_created_migrated_and_kept(tmp_path: Path, flavor: str) -> None:
    data = tmp_path / "courtside-data"
    first = courtside(data, flavor, "migrate")
    assert first.returncode == 0, first.stderr
    assert "initializing embedded PostgreSQL" in first.stderr
    assert "applied migration 0001_core.sql" in first.stderr
    # migrate started the server, so it stopped it again.
    status = courtside(data, flavor, "db", "status")
    assert (status.returncode, status.stdout.strip()) == (3, "stopped")

    url = courtside(data, flavor, "db", "url")
    assert url.returncode == 0, url.stderr
    dsn = url.stdout.strip()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO users (firstname, lastname) VALUES ('Kept', 'Row')")
            version = conn.execute("SHOW server_version_num").fetchone()
            assert version is not None
            assert int(version[0]) >= 150000
        # A server someone else started is used as it is and left running.
        again = courtside(data, flavor, "migrate")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert "applied migration" not in again.stderr
        assert courtside(data, flavor, "db", "status").returncode == 0
    finally:
        assert courtside(data, flavor, "db", "stop").returncode == 0

    # The data folder survives a stop: the row is still there next time.
    url = courtside(data, flavor, "db", "url")
    try:
        with psycopg.connect(url.stdout.strip()) as conn:
            assert conn.execute("SELECT count(*) FROM users WHERE firstname = 'Kept'"
                                ).fetchone() == (1,)
    finally:
        courtside(data, flavor, "db", "stop")


def test_db_url_with_database_url_set_prints_it(tmp_path: Path) -> None:
    env = dict(os.environ, DATABASE_URL="postgresql://example.invalid/x",
               COURTSIDE_DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "courtside.cli", "db", "url"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert (out.returncode, out.stdout.strip()) == (0, "postgresql://example.invalid/x")
    assert not (tmp_path / "pgdata").exists()
