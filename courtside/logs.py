"""Logging, the same in every courtside process: the CLI, uvicorn's master and each worker.

``courtside serve --workers N`` runs the app in spawned workers, fresh interpreters that
never run the CLI: each configures logging again (`serve.build_app`), or its records go
nowhere (they did: a worker's INFO records were lost and its warnings reached stderr bare).
uvicorn is told not to configure logging (``log_config=None``), so its own records take the
same handler and format.

``COURTSIDE_LOG_FORMAT=json`` writes one JSON object per line — ``ts`` (UTC), ``level``,
``logger``, ``message``, ``pid``, and ``exc`` with the traceback when there is one — for a
log pipeline; ``text`` (the default) is for people.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out: dict[str, object] = {
            "ts": ts.replace("+00:00", "Z"), "level": record.levelname.lower(),
            "logger": record.name, "message": record.getMessage(), "pid": record.process}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


class _Handler(logging.StreamHandler[TextIO]):
    """Ours, so configuring again replaces it and leaves other handlers (pytest's) alone."""


def configure(level: str, fmt: str) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
