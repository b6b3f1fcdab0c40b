"""The REST operations, declared once: the router and /openapi.json are both built from here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api import comments, models, presence

Handler = Callable[[Request], Awaitable[Response]]

COMMENTS = "/api/sessions/{sessionId}/comments"
COMMENT = "/api/sessions/{sessionId}/comments/{commentId}"
PRESENCE = "/api/sessions/{sessionId}/presence"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    status: int
    response: type[BaseModel] | None  # None: a body of `media_type`, not JSON
    body: type[BaseModel] | None = None
    # How the body may be sent; the first is what clients send most (pusher-js: a form).
    body_media_types: tuple[str, ...] = ("application/json",)
    query: type[BaseModel] | None = None
    headers: tuple[str, ...] = ()
    errors: tuple[int, ...] = (401, 403, 404, 422, 503)
    media_type: str = "application/json"
    error_response: type[BaseModel] = models.ErrorResponse
    # What an error status means here, where it differs from the comments' (api/openapi.py).
    error_notes: tuple[tuple[int, str], ...] = ()
    ticket_auth: bool = False  # `?ticket=` (api/tickets.py) as well as the bearer token

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", COMMENTS, comments.create_comment, "createComment",
              "Create a comment, with optional mentions", "comments", 201,
              models.CommentResponse, body=models.CommentCreate,
              headers=("Idempotency-Key", "X-Socket-ID"),
              errors=(401, 403, 404, 413, 415, 422, 429, 503)),
    Operation("GET", COMMENTS, comments.list_comments, "listComments",
              "List a session's comments, newest first", "comments", 200,
              models.CommentListResponse, query=models.ListQuery),
    Operation("PUT", COMMENT, comments.update_comment, "updateComment",
              "Edit one's own comment", "comments", 200, models.CommentResponse,
              body=models.CommentUpdate, headers=("X-Socket-ID",),
              errors=(401, 403, 404, 413, 415, 422, 503)),
    Operation("DELETE", COMMENT, comments.delete_comment, "deleteComment",
              "Soft-delete one's own comment", "comments", 200, models.MessageResponse,
              headers=("X-Socket-ID",)),
    Operation("POST", f"{PRESENCE}/join", presence.join, "joinPresence",
              "Be online in the session (renew within the TTL to stay online)", "presence",
              200, models.PresenceJoinResponse),
    Operation("POST", f"{PRESENCE}/leave", presence.leave, "leavePresence",
              "Go offline in the session", "presence", 200, models.PresenceLeaveResponse),
    Operation("POST", f"{PRESENCE}/typing", presence.typing, "setTyping",
              "Say whether one is typing (expires by itself after a few seconds)", "presence",
              200, models.TypingResponse, body=models.TypingUpdate, headers=("X-Socket-ID",),
              errors=(401, 403, 404, 413, 415, 422, 429, 503)),
    Operation("GET", f"{PRESENCE}/users", presence.users, "listPresence",
              "The users online in the session", "presence", 200,
              models.PresenceUsersResponse),
)


def _dispatch(handlers: dict[str, Handler]) -> Handler:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


def starlette_routes(operations: tuple[Operation, ...] = OPERATIONS) -> list[BaseRoute]:
    """One route per path, so a wrong method gets 405 with every allowed method in Allow."""
    by_path: dict[str, dict[str, Handler]] = {}
    for op in operations:
        by_path.setdefault(op.path, {})[op.method] = op.handler
    return [Route(path, _dispatch(handlers), methods=list(handlers))
            for path, handlers in by_path.items()]
