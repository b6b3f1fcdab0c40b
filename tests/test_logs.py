"""Logs: every process of `courtside serve --workers N` writes them, in one format, and
``COURTSIDE_LOG_FORMAT=json`` gives one parseable object per line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from courtside import logs
from tests.test_realtime_support import serve_process


def test_json_formatter_writes_one_object_with_the_traceback() -> None:
    try:
        raise ValueError("bad \"value\"\nsecond line")
    except ValueError:
        record = logging.LogRecord("courtside.x", logging.WARNING, __file__, 1,
                                   "lost %d of %s", (3, "ten"), sys.exc_info())
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    out = orjson.loads(line)
    assert out["message"] == "lost 3 of ten"
    assert (out["level"], out["logger"], out["pid"]) == ("warning", "courtside.x",
                                                         record.process)
    assert out["ts"].endswith("Z")
    assert "ValueError: bad \"value\"" in out["exc"]


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_again_replaces_only_its_own_handler(
        root_logging: logging.Logger) -> None:
    foreign = logging.NullHandler()
    root_logging.addHandler(foreign)
    logs.configure("info", "text")
    logs.configure("debug", "json")
    ours = [h for h in root_logging.handlers if isinstance(h, logs._Handler)]
    assert len(ours) == 1
    assert isinstance(ours[0].formatter, logs.JsonFormatter)
    assert foreign in root_logging.handlers
    assert root_logging.level == logging.DEBUG


def test_every_worker_logs_as_json(db: str, tmp_path: Path) -> None:
    env = {"COURTSIDE_LOG_FORMAT": "json", "COURTSIDE_LOG_LEVEL": "info"}
    with serve_process(db, tmp_path, workers=2, env=env) as server:
        master = server.proc.pid
    lines = [line for line in server.output().splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # every line, or this raises
    ready = {r["pid"] for r in records
             if r["logger"] == "courtside.bridge" and "ready: LISTEN connected" in r["message"]}
    assert len(ready) == 2  # one bridge per worker, each heard from
    assert master not in ready
    assert any(r["pid"] == master and r["logger"] == "uvicorn.error" for r in records)
