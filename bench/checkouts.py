"""A checkout of courtside (this one, or another for an A/B) served as `courtside serve`.

The server runs that checkout's code (`PYTHONPATH`, working directory) with this
interpreter: the A/B tools (bench/rest_ab.py, bench/stream_ends.py) compare two versions
on one machine, in one run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from courtside.pgcluster import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    base: str
    pid: int
    proc: subprocess.Popen[bytes]


def _environment(code: Path, dsn: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "DATABASE_URL": dsn,
            "COURTSIDE_API_COMMENTS_PER_MINUTE": "1000000", "COURTSIDE_LOG_LEVEL": "warning"}


def migrate_checkout(code: Path, dsn: str) -> None:
    subprocess.run([sys.executable, "-m", "courtside.cli", "migrate"], cwd=code,
                   env=_environment(code, dsn), check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def serve_checkout(code: Path, dsn: str, log: Path) -> Iterator[Served]:
    """Until /readyz answers; stopped with SIGTERM (then SIGKILL) afterwards, unless it
    has stopped already."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "courtside.cli", "serve", "--port", str(port)], cwd=code,
            env=_environment(code, dsn), stdout=out, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{base}/readyz", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{code}: the server did not start (see {log})") from None
                    time.sleep(0.1)
            yield Served(base, proc.pid, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure_sides(old: Path | None, new: Path, out: Path, log_stem: str,
                  measure: Callable[[Path, Path], dict[str, Any]]) -> list[dict[str, Any]]:
    """`measure(checkout, log)` of the old checkout (if any), then the new one, each result
    printed as a JSON line as it comes; all of them written to `out`, a JSON list. Each
    server's output goes to `<log_stem>-<side>.log` beside `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for side, code in (("old", old), ("new", new)):
        if code is None:
            continue
        result = {"side": side,
                  **measure(code.resolve(), out.with_name(f"{log_stem}-{side}.log"))}
        print(json.dumps(result), flush=True)
        results.append(result)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results
