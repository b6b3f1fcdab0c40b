"""CPU time and resident memory of process trees, read from /proc (Linux).

CPU time comes from each thread's schedstat (nanoseconds; /proc/<pid>/stat counts in 10 ms
ticks, too coarse for a few thousand sends), summed over the live threads of every process
in the tree.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

_PROC = Path("/proc")


def available() -> bool:
    return (_PROC / "self" / "schedstat").exists()


def children_of(pid: int) -> list[int]:
    """pid and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        with contextlib.suppress(IndexError, ValueError):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out = [pid]
    i = 0
    while i < len(out):
        out.extend(parents.get(out[i], []))
        i += 1
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        try:
            tasks = list((_PROC / str(pid) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = (_PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def tree_cpu(pid: int) -> float:
    return cpu_seconds(children_of(pid))


def tree_rss(pid: int) -> int:
    return rss_bytes(children_of(pid))


def self_cpu() -> float:
    return cpu_seconds([os.getpid()])
