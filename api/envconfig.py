"""Numeric settings from the environment: ``<PREFIX><FIELD>`` overrides a dataclass field.

Pure parsing, shared by every config class that takes overrides this way; each class checks
its own ranges. Errors name the variable, so a typo reads as one line at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import Any


def overrides(cls: type[Any], prefix: str, environ: Mapping[str, str], *,
              skip: Collection[str] = ()) -> dict[str, int | float]:
    """The int and float fields of dataclass `cls` set in `environ` (blank counts as unset)."""
    values: dict[str, int | float] = {}
    for f in fields(cls):
        if f.name in skip or f.type not in ("int", "float"):
            continue
        name = f"{prefix}{f.name.upper()}"
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            value: int | float = int(raw) if f.type == "int" else float(raw)
        except ValueError:
            expected = "a whole number" if f.type == "int" else "a number"
            raise ValueError(f"{name}={raw!r}: expected {expected}") from None
        if not math.isfinite(value):
            raise ValueError(f"{name}={raw!r}: must be finite")
        values[f.name] = value
    return values
