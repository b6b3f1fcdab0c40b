"""Request input to typed values, or a VALIDATION_ERROR that says what is wrong.

Pure functions over bytes, strings and mappings; the handlers feed them what Starlette read.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from api import errors
from api.i18n import Message
from api.models import LIMIT_MAX, PAGE_MAX, ListQuery

M = TypeVar("M", bound=BaseModel)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Socket ids and idempotency keys: visible ASCII, no spaces, bounded.
_HEADER_TOKEN = re.compile(r"[!-~]+")
SOCKET_ID_MAX = 128
IDEMPOTENCY_KEY_MAX = 255
_MAX_PROBLEMS = 5

_TYPE_ERRORS = {
    "string_type": "string", "bool_type": "boolean", "bool_parsing": "boolean",
    "list_type": "array", "int_type": "integer", "int_parsing": "integer",
    "model_type": "object", "dict_type": "object", "model_attributes_type": "object",
}


def path_uuid(value: str, name: str) -> uuid.UUID:
    if not _UUID.fullmatch(value):
        raise errors.validation(Message("validation.path_uuid", {"field": name}))
    return uuid.UUID(value)


def header_token(headers: Mapping[str, str], name: str, max_length: int) -> str | None:
    """An optional header holding an opaque token (X-Socket-ID, Idempotency-Key)."""
    value = headers.get(name)
    if value is None:
        return None
    if len(value) > max_length or not _HEADER_TOKEN.fullmatch(value):
        raise errors.validation(Message("validation.header", {"field": name, "max": max_length}))
    return value


def check_content_type(content_type: str | None) -> None:
    """JSON bodies only; a missing Content-Type is taken as JSON, as curl users expect."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise errors.validation(Message("validation.content_type"), status=415)


def parse_json(body: bytes) -> Any:
    """Decode a body; orjson refuses invalid UTF-8 and lone surrogates, which no column holds."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.validation(Message("validation.malformed_json")) from None


def parse_body(body: bytes, model: type[M]) -> M:
    """An empty body is an empty object: its required fields are then reported missing."""
    data: Any = parse_json(body) if body.strip() else {}
    if not isinstance(data, dict):
        raise errors.validation(Message("validation.body_not_object"))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.validation(*problems(exc.errors())) from None


def parse_list_query(params: Sequence[tuple[str, str]]) -> ListQuery:
    """page and limit as integers in range, before as a cursor; other parameters are ignored."""
    values: dict[str, Any] = {}
    for name, raw in params:  # the last occurrence wins, as in PHP
        if name in ("page", "limit"):
            values[name] = _int_or_raw(raw)
        elif name == "before":
            values[name] = raw
    try:
        return ListQuery.model_validate(values)
    except ValidationError as exc:
        raise errors.validation(*problems(exc.errors())) from None


def _int_or_raw(raw: str) -> int | str:
    text = raw.strip()
    if text.isascii() and text.isdigit() and len(text) <= 12:
        return int(text)
    return raw


def problems(details: Sequence[ErrorDetails]) -> list[Message]:
    """pydantic's errors as messages in the API's words, at most a handful."""
    out: list[Message] = []
    for err in details:
        message = _problem(err)
        if message not in out:
            out.append(message)
        if len(out) == _MAX_PROBLEMS:
            break
    return out or [Message("validation.invalid", {"field": "body"})]


def _problem(err: ErrorDetails) -> Message:
    loc = err["loc"]
    field = _field_name(loc)
    kind = err["type"]
    top = str(loc[0]) if loc else ""
    if kind == "extra_forbidden":
        return Message("validation.unknown_field", {"field": field})
    if top == "content":
        if kind == "content_control":
            return Message("validation.content_control")
        return Message("validation.content")
    if kind == "missing":
        return Message("validation.required", {"field": field})
    if top in ("page", "limit"):
        high = PAGE_MAX if top == "page" else LIMIT_MAX
        return Message("validation.integer_range", {"field": field, "min": 1, "max": high})
    if top == "before":
        return Message("validation.cursor", {"field": field})
    if kind == "string_pattern_mismatch":
        return Message("validation.uuid", {"field": field})
    if kind == "too_long" and isinstance(err.get("ctx"), dict):
        return Message("validation.too_many", {"field": field,
                                               "max": err["ctx"].get("max_length")})
    if kind in _TYPE_ERRORS:
        return Message("validation.type", {"field": field, "type": _TYPE_ERRORS[kind]})
    return Message("validation.invalid", {"field": field})


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"

