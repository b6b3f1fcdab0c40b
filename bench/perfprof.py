"""Whole-stack profiles of a server under load (`perf record`), summarised for the report.

py-spy sees Python frames only. At thousands of subscribers most of a delivery's cost lies
below them: the send system call, the loopback receive the kernel runs inline in the
sender, uvloop's write path. perf samples every stack, kernel included, over the same
measured window (`python -m bench fanout --profile courtside --profiler perf`). The
summary gives each sample to an area by the binary its top frame is in (kernel,
interpreter, libc, an extension module), then the functions on top (self) and anywhere in
the stack (inclusive). Python functions do not appear: 3.11 has no perf trampoline.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import profiling

Frame = tuple[str, str]  # (function, binary)


def perf() -> str | None:
    return shutil.which("perf")


@contextlib.contextmanager
def record(pid: int, path: Path, freq: int = 999) -> Iterator[bool]:
    """Sample `pid`'s threads with call stacks while the block runs; yields whether perf
    is attached (it is not without the binary, or where perf_event_paranoid forbids)."""
    exe = perf()
    if exe is None:
        yield False
        return
    # Stopping takes a while: perf writes out its buffers and the binaries' build ids.
    with profiling.sampler([exe, "record", "-g", "-F", str(freq), "--no-inherit",
                            "-p", str(pid), "-o", str(path)], path,
                           stop_timeout=60) as attached:
        yield attached


def parse_script(text: str) -> list[list[Frame]]:
    """`perf script -F ip,sym,dso` output → one list of frames per sample, innermost
    first. A sample is a block of tab-indented `address function (binary)` lines."""
    samples: list[list[Frame]] = []
    frames: list[Frame] = []
    for line in text.splitlines():
        if not line.startswith("\t"):
            if frames:
                samples.append(frames)
                frames = []
            continue
        _, _, rest = line.strip().partition(" ")
        name, _, where = rest.rpartition(" (")
        frames.append((name or rest, where.rstrip(")")))
    if frames:
        samples.append(frames)
    return samples


def area(binary: str) -> str:
    """Which part of the process a binary is, for the report."""
    base = binary.rsplit("/", 1)[-1]
    if base == "[kernel.kallsyms]":
        return "kernel"
    if base.startswith(("libpython", "python")):
        return "interpreter"
    if base.startswith("libc."):
        return "libc"
    if ".cpython-" in base:  # an extension module, named by its package folder
        parts = binary.split("/")
        return f"{parts[-2]}/{base.split('.', 1)[0]}" if len(parts) > 1 else base
    return base or "?"


def summarize_stacks(samples: list[list[Frame]], top: int = 15) -> dict[str, Any]:
    areas: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames in samples:
        name, binary = frames[0]
        areas[area(binary)] += 1
        own[name] += 1
        for fn in {f for f, _ in frames if f != "[unknown]"}:
            inclusive[fn] += 1
    total = len(samples)
    # Frames in nearly every sample (the process's entry points) say nothing.
    for fn in [fn for fn, n in inclusive.items() if n >= 0.99 * total]:
        del inclusive[fn]

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100.0 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"kind": "perf", "samples": total, "areas": share(areas) if total else [],
            "self": share(own) if total else [], "inclusive": share(inclusive) if total else []}


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    exe = perf()
    if exe is None or not path.exists():
        return summarize_stacks([], top)
    out = subprocess.run([exe, "script", "-i", str(path), "-F", "ip,sym,dso"],
                         capture_output=True, text=True, errors="replace", timeout=300)
    return summarize_stacks(parse_script(out.stdout), top)
