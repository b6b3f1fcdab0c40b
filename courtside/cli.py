"""`courtside serve | migrate | db | token | bench` — the command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Sequence

import psycopg

from bridge import sqlfile
from courtside import embedded, logs
from courtside.migrate import GIVE_UP_AFTER, MigrationError, migrate
from courtside.pgcluster import ClusterError
from courtside.settings import Settings, SettingsError

log = logging.getLogger("courtside")
_SQL = sqlfile.load("courtside.sql", "cli.sql")


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The DSN to use: DATABASE_URL, or the embedded server (started for as long as needed)."""
    if settings.database_url:
        yield settings.database_url
        return
    server = embedded.ensure_running(settings.data_dir)
    try:
        yield server.dsn
    finally:
        server.close()


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    with database(settings) as dsn:
        applied = migrate(dsn, give_up_after=args.lock_wait)
    log.info("database up to date (%d new migrations)", len(applied))
    return 0


def _cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    if settings.database_url:
        if args.action == "url":
            print(settings.database_url)
            return 0
        log.error("DATABASE_URL is set: there is no embedded server to %s", args.action)
        return 2
    cluster = embedded.cluster_for(settings.data_dir)
    if args.action == "stop":
        cluster.stop()
        return 0
    if args.action == "status":
        port = cluster.running_port()
        print(f"running on 127.0.0.1:{port}" if port else "stopped")
        return 0 if port else 3
    # url, start: leave it running, so psql and other tools can reach it.
    server = embedded.ensure_running(settings.data_dir)
    print(server.dsn)
    return 0


def _cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    with database(settings) as dsn, psycopg.connect(dsn) as conn:
        if conn.execute(_SQL.user_exists, {"user_id": args.user}).fetchone() is None:
            log.error("no user with id %s", args.user)
            return 2
        bearer = _mint(conn, args.user, args.name, args.expires_in)
    print(bearer)
    return 0


def _mint(conn: psycopg.Connection[tuple[object, ...]], user_id: object, name: str,
          expires_in: int | None) -> str:
    from api import tokens

    plaintext = tokens.new_plaintext()
    row = conn.execute(_SQL.create_token, {
        "user_id": user_id, "name": name,
        "hash": tokens.hash_plaintext(plaintext), "expires_in": expires_in,
    }).fetchone()
    assert row is not None
    return f"{row[0]}|{plaintext}"


def _cmd_demo(settings: Settings, _args: argparse.Namespace) -> int:
    """A private session with two participants and a token each, to try the API by hand."""
    people = [("Jane", "Smith"), ("John", "Doe")]
    with database(settings) as dsn:
        migrate(dsn)
        with psycopg.connect(dsn) as conn:
            ids = []
            for first, last in people:
                row = conn.execute(_SQL.demo_user, {
                    "firstname": first, "lastname": last,
                    "email": f"{first.lower()}.{last.lower()}@demo.courtside"}).fetchone()
                assert row is not None
                ids.append(row[0])
            row = conn.execute(_SQL.demo_session, {"title": "Demo five-a-side",
                                                   "owner": ids[0]}).fetchone()
            assert row is not None
            session_id = row[0]
            for i, uid in enumerate(ids):
                conn.execute(_SQL.demo_join, {"session_id": session_id, "user_id": uid,
                                              "role": "owner" if i == 0 else "participant"})
            bearer = [_mint(conn, uid, "courtside-demo", None) for uid in ids]
    print(f"session   {session_id}")
    for (first, last), uid, tok in zip(people, ids, bearer, strict=True):
        print(f"user      {first} {last}  {uid}")
        print(f"token     {tok}")
    return 0


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from api.config import ApiConfig
    from api.pusher import PusherConfig
    from api.realtime_limits import RealtimeLimits
    from courtside import serve

    try:  # refuse bad limits here, in one line, rather than in every worker's traceback
        RealtimeLimits.from_env()
        ApiConfig.from_env(settings.database_url or "embedded")
        PusherConfig.from_env()
    except ValueError as exc:
        raise SettingsError(str(exc)) from None

    return serve.run(settings, host=args.host, port=args.port, workers=args.workers)


def _cmd_bench(_settings: Settings, args: argparse.Namespace) -> int:
    from bench.__main__ import main as bench_main

    return bench_main(args.bench_args)


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {value!r}") from None


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="courtside", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the REST API and realtime endpoints")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_cmd_serve)

    migrate_cmd = sub.add_parser("migrate", help="apply migrations and (re)install triggers")
    migrate_cmd.add_argument(
        "--lock-wait", type=_seconds, default=GIVE_UP_AFTER, metavar="SECONDS",
        help="how long, in all, to keep trying for locks other transactions hold on the"
             f" application's tables before giving up (default {GIVE_UP_AFTER:g}; each try"
             " waits at most 2 s, so the application's queries never queue behind it)")
    migrate_cmd.set_defaults(func=_cmd_migrate)

    db = sub.add_parser("db", help="the embedded PostgreSQL (when DATABASE_URL is unset)")
    db.add_argument("action", choices=["url", "start", "stop", "status"])
    db.set_defaults(func=_cmd_db)

    token = sub.add_parser("token", help="Sanctum-compatible personal access tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new token for a user on stdout")
    create.add_argument("--user", required=True, type=_uuid)
    create.add_argument("--name", default="courtside-cli")
    create.add_argument("--expires-in", type=int, default=None, metavar="SECONDS")
    create.set_defaults(func=_cmd_token)

    sub.add_parser("demo", help="create a demo session, two users and their tokens").set_defaults(
        func=_cmd_demo)

    bench = sub.add_parser("bench", help="run the benchmark harness (see bench/)")
    bench.set_defaults(func=_cmd_bench)
    return parser


def _split_bench(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """`courtside [-v] bench ARGS...`: ARGS go to the bench harness untouched.

    argparse's REMAINDER does not capture arguments that start with a dash
    (`courtside bench --quick` would be rejected), so the split happens here.
    """
    for i, arg in enumerate(argv):
        if arg == "bench":
            return list(argv[: i + 1]), list(argv[i + 1 :])
        if not arg.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = _split_bench(argv)
    if split is not None:
        args = _parser().parse_args(split[0])
        args.bench_args = split[1]
    else:
        args = _parser().parse_args(argv)
    if args.verbose:  # the environment, so that serve's workers hear of it too
        os.environ["COURTSIDE_LOG_LEVEL"] = "debug"
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        logs.configure("info", "text")
        log.error("%s", exc)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        code: int = args.func(settings, args)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    except (ClusterError, MigrationError, psycopg.OperationalError) as exc:
        log.error("%s", exc)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
