"""`courtside token create` (run as a user would) prints a token the API accepts."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg

from api.app import ApiConfig, create_app
from tests import factories
from tests.servers import serve

COURTSIDE = Path(sys.executable).with_name("courtside")


def token_create(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db}
    return subprocess.run([str(COURTSIDE), "token", "create", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_token_authenticates_against_the_api(db: str) -> None:
    w = factories.world(db)
    done = token_create(db, "--user", str(w.owner), "--name", "phone")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n"  # the token alone on stdout, for $(...)
    token_id, _, plaintext = token.partition("|")
    assert token_id.isdigit()
    assert len(plaintext) == 48
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT name, tokenable_id, expires_at FROM personal_access_tokens"
                           " WHERE id = %s", (int(token_id),)).fetchone()
    assert row == ("phone", w.owner, None)
    with serve(create_app(ApiConfig(database_url=db))) as base:
        r = httpx.get(f"{base}/api/sessions/{w.session_id}/comments",
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text


def test_cli_expiring_tokens(db: str) -> None:
    w = factories.world(db)
    lasting = token_create(db, "--user", str(w.owner), "--expires-in", "3600")
    gone = token_create(db, "--user", str(w.owner), "--expires-in", "-1")
    assert lasting.returncode == gone.returncode == 0
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM expires_at - (now() AT TIME ZONE 'UTC'))"
            " FROM personal_access_tokens WHERE id = %s",
            (int(lasting.stdout.split("|")[0]),)).fetchone()
    assert row is not None
    assert 3500 < float(row[0]) <= 3601  # timestamp(0): whole seconds, rounded
    with serve(create_app(ApiConfig(database_url=db))) as base:
        url = f"{base}/api/sessions/{w.session_id}/comments"
        ok = httpx.get(url, headers={"Authorization": f"Bearer {lasting.stdout.strip()}"})
        assert ok.status_code == 200
        expired = httpx.get(url, headers={"Authorization": f"Bearer {gone.stdout.strip()}"})
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "UNAUTHENTICATED"


def test_cli_refuses_unknown_users_and_bad_ids(db: str) -> None:
    unknown = token_create(db, "--user", str(uuid.uuid4()))
    assert unknown.returncode == 2
    assert unknown.stdout == ""
    bad = token_create(db, "--user", "not-a-uuid")
    assert bad.returncode == 2
    assert bad.stdout == ""
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM personal_access_tokens").fetchone()
    assert row == (0,)
