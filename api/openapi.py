"""/openapi.json (OpenAPI 3.1), generated from the operations table and the pydantic models.

OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic emits: the model schemas
go under components/schemas unchanged, and operations refer to them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api import models
from api.routes import OPERATIONS, Operation
from api.validation import IDEMPOTENCY_KEY_MAX, SOCKET_ID_MAX

_REF = "#/components/schemas/{model}"

_HEADERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": "Sending the same key again (same user) returns the first response"
                       " instead of creating another comment. Kept 24 hours.",
        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX,
                   "pattern": f"^[!-~]{{1,{IDEMPOTENCY_KEY_MAX}}}$"},
    },
    "Last-Event-ID": {
        "description": "The last event id (seq) seen, sent by an EventSource when it"
                       " reconnects: the stream starts after it. Wins over `since`.",
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    },
    "X-Socket-ID": {
        "description": "The caller's realtime socket id (Laravel Echo's toOthers()): the"
                       " events this request causes are not sent back to that socket.",
        "schema": {"type": "string", "minLength": 1, "maxLength": SOCKET_ID_MAX,
                   "pattern": f"^[!-~]{{1,{SOCKET_ID_MAX}}}$"},
    },
}

_ERRORS: dict[int, str] = {
    401: "Missing, invalid or expired token (UNAUTHENTICATED)",
    403: "Not a participant of the session (NOT_PARTICIPANT), or not the author (FORBIDDEN)",
    404: "Unknown session (SESSION_NOT_FOUND) or comment (COMMENT_NOT_FOUND)",
    413: "Body too large (VALIDATION_ERROR)",
    415: "Body not sent as JSON (VALIDATION_ERROR)",
    422: "Invalid input (VALIDATION_ERROR); the message says what is wrong",
    429: "Too many comments (RATE_LIMITED); retry after Retry-After seconds",
    503: "Database unavailable for now (SERVICE_UNAVAILABLE); retry",
}

_DESCRIPTION = """\
Realtime comments for sport sessions. Every response is JSON: `{"success": true, ...}` or
`{"success": false, "error": {"code", "message"}}`. Messages are in French unless the request
sends `Accept-Language: en`. Timestamps look like `2025-01-20T10:30:00.000000Z`.
Authenticate with a Laravel Sanctum personal access token: `Authorization: Bearer <id>|<token>`.
"""


def _schemas(operations: tuple[Operation, ...]) -> tuple[dict[type[BaseModel], Any],
                                                          dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (models.ErrorResponse, "serialization")]
    for op in operations:
        wanted.append((op.error_response, "serialization"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
        if op.body is not None:
            wanted.append((op.body, "validation"))
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template=_REF)
    return {model: refs[(model, mode)] for model, mode in unique}, top.get("$defs", {})


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        # An absent parameter is the null of the model; a query string cannot say null.
        if "anyOf" in prop:
            branches = [b for b in prop.pop("anyOf") if b.get("type") != "null"]
            prop = {**branches[0], **prop}
            prop.pop("default", None)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": False,
                                 "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def _operation(op: Operation, refs: dict[type[BaseModel], Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"}} for name in op.path_params]
    parameters += [{"name": h, "in": "header", "required": False, **_HEADERS[h]}
                   for h in op.headers]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    content = (_json(refs[op.response]) if op.response is not None
               else {op.media_type: {"schema": {"type": "string"}}})
    responses: dict[str, Any] = {str(op.status): {"description": "Success", "content": content}}
    notes = dict(op.error_notes)
    for status in op.errors:
        response: dict[str, Any] = {"description": notes.get(status, _ERRORS[status]),
                                    "content": _json(refs[op.error_response])}
        if status == 429:
            response["headers"] = {"Retry-After": {
                "required": True, "description": "Seconds to wait",
                "schema": {"type": "integer", "minimum": 1}}}
        responses[str(status)] = response
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "responses": responses,
    }
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {
            media_type: {"schema": refs[op.body]} for media_type in op.body_media_types}}
    if op.ticket_auth:
        out["security"] = [{"bearerAuth": []}, {"ticket": []}]
    return out


def _security_schemes(operations: tuple[Operation, ...]) -> dict[str, Any]:
    schemes: dict[str, Any] = {"bearerAuth": {
        "type": "http", "scheme": "bearer",
        "description": "Laravel Sanctum personal access token, `<id>|<plaintext>`"}}
    if any(op.ticket_auth for op in operations):
        schemes["ticket"] = {
            "type": "apiKey", "in": "query", "name": "ticket",
            "description": "A ticket from `POST /api/realtime/tickets`, for browsers, whose"
                           " EventSource and WebSocket cannot send a header (api/tickets.py)"}
    return schemes


def build(operations: tuple[Operation, ...] = OPERATIONS, *, title: str = "courtside",
          version: str = "1.0.0") -> dict[str, Any]:
    refs, schemas = _schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": _security_schemes(operations),
        },
        "security": [{"bearerAuth": []}],
    }
