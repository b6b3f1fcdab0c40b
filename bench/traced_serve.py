"""``courtside serve`` under tracemalloc, for the memory profile of the connections scenario.

Run as ``python -m bench.traced_serve serve --port P ...`` (the arguments of `courtside`).
Each SIGUSR1 writes a snapshot to ``$BENCH_TRACEMALLOC_DIR/<k>.snap`` (k = 0, 1, ...;
renamed into place once complete). tracemalloc sees what Python allocates, not libuv's or
the kernel's buffers: it says which objects a connection costs, not its whole RSS.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> int:
    out = Path(os.environ["BENCH_TRACEMALLOC_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "8")))
    counter = itertools.count()

    def dump(_signum: int, _frame: FrameType | None) -> None:
        k = next(counter)
        tmp = out / f"{k}.snap.tmp"
        tracemalloc.take_snapshot().dump(str(tmp))
        tmp.rename(out / f"{k}.snap")

    signal.signal(signal.SIGUSR1, dump)
    from courtside.cli import main as courtside_main

    return courtside_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
