"""`courtside demo` leaves a usable session: participants, and tokens that verify as Sanctum's."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from api import tokens


def test_demo_creates_a_session_with_two_participants_and_working_tokens(db: str) -> None:
    out = subprocess.run([sys.executable, "-m", "courtside.cli", "demo"],
                         env=dict(os.environ, DATABASE_URL=db), capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines()]
    session_id = next(parts[1] for parts in lines if parts[0] == "session")
    bearers = [parts[1] for parts in lines if parts[0] == "token"]
    assert len(bearers) == 2
    with psycopg.connect(db) as conn:
        members = conn.execute(
            "SELECT user_id::text FROM sport_session_participants WHERE sport_session_id = %s",
            (session_id,)).fetchall()
        assert len(members) == 2
        for bearer in bearers:
            parsed = tokens.parse(bearer)
            assert parsed is not None
            assert parsed.token_id is not None
            row = conn.execute("SELECT token, tokenable_id::text FROM personal_access_tokens"
                               " WHERE id = %s", (parsed.token_id,)).fetchone()
            assert row is not None
            assert tokens.matches(row[0], parsed.plaintext)
            assert (row[1],) in members


def test_bench_subcommand_forwards_leading_options_to_the_harness() -> None:
    # `--list` starts with a dash: argparse's REMAINDER alone would reject it.
    out = subprocess.run([sys.executable, "-m", "courtside.cli", "-v", "bench", "--list"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert sorted(names) == ["connections", "fanout", "latency", "resume", "writes"]


def test_bench_subcommand_reports_bad_harness_arguments() -> None:
    out = subprocess.run([sys.executable, "-m", "courtside.cli", "bench", "no-such-scenario"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "no-such-scenario" in out.stderr
