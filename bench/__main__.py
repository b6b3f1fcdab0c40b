"""``courtside bench`` / ``python -m bench``: measure courtside against the floor and its peers.

    python -m bench --quick                      # every scenario, small (CI; < 2 minutes)
    python -m bench latency fanout               # chosen scenarios, full size
    python -m bench --systems courtside,floor    # only some systems
    python -m bench fanout --profile courtside   # py-spy the courtside server while measured
    python -m bench fanout --profile courtside --profiler perf   # perf: kernel included

Writes ``<out>/<name>.json``, ``<out>/<name>.md`` and ``<out>/<name>-latency.png``
(``--out`` defaults to bench/results, ``--name`` to quick or full). Exit status 0 when
every leg that ran produced its numbers, 1 when a leg failed, 2 on bad arguments. Legs that
do not fit in the time budget, or whose system cannot run here (no Node), are skipped and
say so.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import report
from bench.agent import raise_nofile
from bench.database import open_db
from bench.dialects import SYSTEMS
from bench.harness import OutOfTime, Run
from bench.node import NodeUnavailable, ensure_node_peers
from bench.profiles import FULL, QUICK, override
from bench.scenarios import SCENARIOS

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="courtside bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"some of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, from {','.join(SYSTEMS)} (default: all)")
    parser.add_argument("--dsn", help="use a new database on this server instead of a "
                                      "throwaway cluster")
    parser.add_argument("--fast-commits", action="store_true",
                        help="throwaway cluster with fsync and synchronous_commit off")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder")
    parser.add_argument("--name", help="file name stem of the outputs (default: quick/full)")
    parser.add_argument("--time-limit", type=float, help="seconds for the whole run")
    parser.add_argument("--profile", default="", metavar="SYSTEMS",
                        help="profile these servers during the measured windows")
    parser.add_argument("--profiler", choices=("py-spy", "perf"), default="py-spy",
                        help="py-spy: Python frames (Python servers); perf: the whole "
                             "stack, kernel included (default: py-spy)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a size of the profile (see bench/profiles.py), e.g. "
                             "--set fanout_sizes=2000 --set connections=5000")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def _postgres_version(dsn: str) -> str:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except psycopg.Error:
        return "?"


def _has_errors(tree: Any) -> bool:
    if isinstance(tree, dict):
        return "error" in tree or any(_has_errors(v) for v in tree.values())
    return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `courtside bench -- --quick`: the separator reaches us
        argv = argv[1:]
    args = _parser().parse_args(argv)
    if args.list:
        for name, fn in SCENARIOS.items():
            doc = (sys.modules[fn.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:12} {doc}")
        return 0
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    systems = [s for s in args.systems.split(",") if s]
    bad_systems = [s for s in systems if s not in SYSTEMS]
    if unknown or bad_systems or not systems:
        print(f"unknown scenario(s) {unknown} or system(s) {bad_systems}", file=sys.stderr)
        return 2
    chosen = [name for name in SCENARIOS if not args.scenarios or name in args.scenarios]
    try:
        profile = override(QUICK if args.quick else FULL, args.set)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    time_limit = args.time_limit or profile.time_limit
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    unavailable: dict[str, str] = {}
    if "socketio" in systems:
        try:
            ensure_node_peers(timeout=120.0)  # before the clock starts: setup, not bench
        except NodeUnavailable as exc:
            unavailable["socketio"] = str(exc)
    began = time.monotonic()

    results: dict[str, Any] = {
        "meta": {
            "mode": profile.name, "scenarios": chosen, "systems": systems,
            "command": "python -m bench " + shlex.join(argv),
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine(), "kernel": platform.release(),
            "profiled": bool(args.profile),
            "profiler": args.profiler if args.profile else None, "unavailable": unavailable,
            "overrides": list(args.set),
        },
        "scenarios": {},
    }
    with open_db(args.dsn, durable=not args.fast_commits) as db:
        results["meta"]["postgres"] = _postgres_version(db.dsn)
        results["meta"]["database"] = ("throwaway cluster" if db.cluster else "--dsn server") + (
            "" if db.durable is None else
            (", durable commits" if db.durable else ", fsync off"))
        # The database setup counts against the budget too.
        run = Run(profile, systems, db, out_dir, time_limit - (time.monotonic() - began),
                  unavailable)
        run.profile_systems = {s for s in args.profile.split(",") if s}
        run.profiler = args.profiler
        run.start_agents()
        try:
            for name in chosen:
                print(f"[bench] {name} ({run.remaining():.0f}s left)", file=sys.stderr,
                      flush=True)
                try:
                    results["scenarios"][name] = SCENARIOS[name](run)
                except OutOfTime as exc:
                    results["scenarios"][name] = {"skipped": str(exc)}
                except Exception:
                    results["scenarios"][name] = {"error": traceback.format_exc()}
                if name != chosen[-1]:
                    print(f"[bench] settled the database in {run.settle():.1f}s",
                          file=sys.stderr, flush=True)
        finally:
            run.stop_agents()
        results["notes"] = run.notes
        results["profiles"] = run.profiles
    results["meta"]["seconds"] = time.monotonic() - began
    results["targets"] = report.targets(results)
    stem = args.name or profile.name
    report.write_json(out_dir / f"{stem}.json", results)
    (out_dir / f"{stem}.md").write_text(report.markdown(results))
    plotted = report.plot(results, out_dir / f"{stem}-latency.png")
    print(report.markdown(results))
    print(f"[bench] wrote {out_dir / (stem + '.json')}, {stem}.md"
          + (f", {stem}-latency.png" if plotted else ""), file=sys.stderr)
    return 1 if _has_errors(results["scenarios"]) else 0


if __name__ == "__main__":
    sys.exit(main())
