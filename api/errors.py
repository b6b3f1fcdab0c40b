"""The API's one exception type and the seed's error envelope.

``{"success": false, "error": {"code": "...", "message": "..."}}``: the code is stable and
machine-readable, the message is rendered in the request's language.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import orjson
from starlette.responses import Response

from api.i18n import Lang, Message


class ErrorCode(StrEnum):
    # The seed's codes
    COMMENT_NOT_FOUND = "COMMENT_NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    NOT_PARTICIPANT = "NOT_PARTICIPANT"
    # Beyond the seed
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RATE_LIMITED = "RATE_LIMITED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class ApiError(Exception):
    """An error the client caused or must be told about; becomes the error envelope.

    ``details``, when given, are rendered and joined in place of ``message_key`` (validation
    errors that list every problem).
    """

    def __init__(
        self,
        code: ErrorCode,
        status: int,
        message_key: str,
        params: Mapping[str, object] | None = None,
        *,
        details: Sequence[Message] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} ({status}): {message_key}")
        self.code = code
        self.status = status
        self.message = Message(message_key, dict(params or {}))
        self.details = tuple(details)
        self.headers = dict(headers or {})

    def render_message(self, lang: Lang) -> str:
        if self.details:
            return " ; ".join(d.render(lang) for d in self.details)
        return self.message.render(lang)

    def response(self, lang: Lang) -> Response:
        return error_response(self.code, self.status, self.render_message(lang), self.headers)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}}


def error_response(code: str, status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(error_body(code, message)), status_code=status,
                    headers=dict(headers or {}), media_type="application/json")


# The errors every part raises, built in one place so code, status and message agree.

def unauthenticated(message_key: str = "error.unauthenticated") -> ApiError:
    return ApiError(ErrorCode.UNAUTHENTICATED, 401, message_key,
                    headers={"WWW-Authenticate": "Bearer"})


def session_not_found() -> ApiError:
    return ApiError(ErrorCode.SESSION_NOT_FOUND, 404, "error.session_not_found")


def not_participant() -> ApiError:
    return ApiError(ErrorCode.NOT_PARTICIPANT, 403, "error.not_participant")


def comment_not_found() -> ApiError:
    return ApiError(ErrorCode.COMMENT_NOT_FOUND, 404, "error.comment_not_found")


def forbidden(message_key: str) -> ApiError:
    return ApiError(ErrorCode.FORBIDDEN, 403, message_key)


def validation(*problems: Message, status: int = 422) -> ApiError:
    return ApiError(ErrorCode.VALIDATION_ERROR, status, problems[0].key, problems[0].params,
                    details=problems if len(problems) > 1 else ())


def rate_limited(retry_after_seconds: float, message_key: str = "error.rate_limited"
                 ) -> ApiError:
    retry_after = max(1, math.ceil(retry_after_seconds))
    return ApiError(ErrorCode.RATE_LIMITED, 429, message_key,
                    {"retry_after": retry_after}, headers={"Retry-After": str(retry_after)})


def unavailable() -> ApiError:
    return ApiError(ErrorCode.SERVICE_UNAVAILABLE, 503, "error.unavailable",
                    headers={"Retry-After": "1"})
