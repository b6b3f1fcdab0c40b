"""Sampling profiles of a Python server under load (py-spy), summarised for the report.

py-spy attaches to the running server (no instrumentation, no restart) for exactly the
measured window and writes collapsed stacks; the summary is the share of samples in which
each function is on top of the stack (self) or anywhere in it (inclusive).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@contextlib.contextmanager
def sampler(command: list[str], out_path: Path, stop_timeout: float = 30) -> Iterator[bool]:
    """Run a sampling profiler's `command` (writing `out_path`) while the block runs,
    attached before it starts; SIGINT stops it, and it writes out what it sampled. Yields
    whether it is running. Its output goes to `out_path` with the suffix .log."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.with_suffix(".log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(0.5)  # attached before the measurement starts
    try:
        yield proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def record(pid: int, raw_path: Path, rate: int = 250) -> Iterator[bool]:
    """Profile `pid` while the block runs; yields whether a profiler is attached."""
    exe = py_spy()
    if exe is None:
        yield False
        return
    with sampler([exe, "record", "-p", str(pid), "-r", str(rate), "-f", "raw",
                  "-o", str(raw_path), "--nonblocking"], raw_path) as attached:
        yield attached


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def _frame_name(frame: str) -> str:
    """'send_text (/x/site-packages/starlette/websockets.py:170)' →
    'send_text (starlette/websockets.py)'."""
    name, _, where = frame.partition(" (")
    path = _short_path(where.rstrip(")").rsplit(":", 1)[0])
    return f"{name} ({path})" if path else name


def summarize(raw_path: Path, top: int = 15) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    stacks: list[list[str]] = []
    total = 0
    try:
        lines = raw_path.read_text(errors="replace").splitlines()
    except OSError:
        return {"samples": 0, "self": [], "inclusive": []}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        stacks.append(frames)
        for name in set(frames):
            inclusive[name] += count
    # Frames every sample shares (interpreter start, uvicorn.run, the event loop) say nothing.
    common = 0
    if stacks:
        shortest = min(len(s) for s in stacks)
        while common < shortest and all(s[common] == stacks[0][common] for s in stacks):
            common += 1
        for name in stacks[0][:common]:
            inclusive.pop(name, None)

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100.0 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "self": share(own) if total else [],
            "inclusive": share(inclusive) if total else []}


def memory_diff(before: Path, after: Path, per: int, top: int = 12) -> dict[str, Any]:
    """What Python allocated between two tracemalloc snapshots, per `per` (connections)."""
    import tracemalloc

    ignore = [tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
              tracemalloc.Filter(False, "<unknown>")]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(ignore)

    def where(stat: tracemalloc.StatisticDiff, line: bool = True) -> str:
        frame = stat.traceback[0]
        return _short_path(frame.filename) + (f":{frame.lineno}" if line else "")

    by_line = new.compare_to(old, "lineno")
    by_file = new.compare_to(old, "filename")
    total = sum(s.size_diff for s in by_line)
    return {
        "kind": "memory", "connections": per,
        "python_bytes_per_connection": total / per,
        "by_line": [[where(s), round(s.size_diff / per), round(s.count_diff / per, 2)]
                    for s in by_line[:top]],
        "by_file": [[where(s, line=False), round(s.size_diff / per)] for s in by_file[:top]],
    }
