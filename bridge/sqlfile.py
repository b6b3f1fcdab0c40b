"""Named queries kept in .sql files next to the code that runs them.

A file holds blocks introduced by ``-- name: some_query``; everything up to the next such
line is that query. Loaded once at import, so a missing query fails at start-up, not
mid-request.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class Queries:
    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> LiteralString:
        try:
            # The text comes from a file shipped with the package, never from input.
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None

    def names(self) -> list[str]:
        return list(self._queries)


def parse(text: str) -> dict[str, str]:
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} defined twice")
        queries[name] = body.strip().rstrip(";").strip()
    return queries


def load(package: str, filename: str) -> Queries:
    return Queries(parse((resources.files(package) / filename).read_text(encoding="utf-8")))
