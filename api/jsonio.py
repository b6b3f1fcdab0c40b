"""JSON in and out, with the same bytes everywhere (docs/INTERNALS.md "JSON bytes").

jsonb from PostgreSQL is parsed by orjson, which keeps jsonb's key order, and every body is
written by ``orjson.dumps`` without options: a comment rendered by SQL comes out of the API
exactly as it comes out of the event log.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_loads
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def configure_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Pool hook: json and jsonb columns are parsed by orjson on this connection."""
    set_json_loads(orjson.loads, conn)


def jsonb(value: Any) -> Jsonb:
    """A value to store as jsonb, serialized the same way as responses."""
    return Jsonb(value, dumps=_dumps_str)


def _dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()
