"""schemathesis against /openapi.json of a real server with a valid token: no 5xx, and every
response conforms to the document (status, content type, headers, body schema)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode

from api import openapi
from api.app import ApiConfig, create_app
from api.pusher import PusherConfig, pusher_operations, pusher_routes
from api.realtime import REALTIME_OPERATIONS, realtime_lifespan, realtime_routes
from api.routes import OPERATIONS
from tests import factories
from tests.servers import serve
from tests.test_realtime_support import FAST_BRIDGE


@dataclass
class Target:
    base_url: str
    token: str
    session_id: uuid.UUID
    user_id: uuid.UUID
    comment_ids: list[str]


@pytest.fixture
def target(db: str) -> Iterator[Target]:
    w = factories.world(db, participants=3, outsiders=1)
    token = factories.token(db, w.owner)
    config = ApiConfig(database_url=db, comments_per_minute=100_000, typing_ttl=1.0)
    app = create_app(config, extra_routes=realtime_routes() + pusher_routes(PUSHER),
                     extra_lifespan=realtime_lifespan(db, None, bridge_config=FAST_BRIDGE),
                     extra_operations=REALTIME_OPERATIONS + pusher_operations(PUSHER))
    with serve(app) as base:
        comment_ids = []
        for i in range(5):
            r = httpx.post(f"{base}/api/sessions/{w.session_id}/comments",
                           headers={"Authorization": f"Bearer {token}"},
                           json={"content": f"seed {i}", "mentions": [str(w.participants[1])]})
            assert r.status_code == 201
            comment_ids.append(r.json()["data"]["id"])
        yield Target(base, token, w.session_id, w.owner, comment_ids)


# The document the server serves (test_served_document_is_the_generated_one); loaded from
# the generator rather than over HTTP because schemathesis' lazy fixture loader does not
# run under pytest 9.
PUSHER = PusherConfig(key="schema-key", secret="schema-secret")
DOCUMENT = openapi.build((*OPERATIONS, *REALTIME_OPERATIONS, *pusher_operations(PUSHER)))
# The SSE stream is left out: a stream that is let in never ends (tests/test_sse_wire.py and
# the realtime tests read it).
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(
    path="/api/sessions/{sessionId}/events")
# Every other check runs. This one expects any schema-valid request to succeed, but some
# are refused by rules a schema cannot state, with the documented 422: mentioning someone
# who is not a participant, reusing an Idempotency-Key for a different request (422 as
# draft-ietf-httpapi-idempotency-key-header says).
positive_data_acceptance = schemathesis.checks.positive_data_acceptance
_turn = itertools.count()


# The server runs in a thread of this process (tests/servers.py), and psycopg_pool draws from
# the global `random` whenever it opens a connection (its lifetime jitter). Hypothesis takes
# any change of the global random state during a draw for a strategy using `random`, and
# cannot tell threads apart: with warnings as errors that fails a case at random and then
# reports it as flaky, since the replay does not meet the pool opening a connection. Nothing
# in these strategies uses `random`.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning")
@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_openapi_document(case: Any, target: Target) -> None:
    meta = case.meta
    negative = {str(location.value) for location, info in meta.components.items()
                if info.mode == GenerationMode.NEGATIVE} if meta is not None else set()
    # Random UUIDs only ever meet SESSION_NOT_FOUND: most cases aim at the real session and
    # its comments so that the success paths run too. A path made invalid on purpose stays.
    turn = next(_turn)
    params = case.path_parameters
    if "path" not in negative and params and "sessionId" in params and turn % 4:
        params["sessionId"] = str(target.session_id)
        if "commentId" in params:
            params["commentId"] = target.comment_ids[turn % len(target.comment_ids)]
    # Likewise the channel /broadcasting/auth is asked to sign: the session's, or the user's.
    body = case.body
    if "body" not in negative and isinstance(body, dict) and turn % 4 and isinstance(
            body.get("channel_name"), str):
        prefix = body["channel_name"][:-36]
        own = target.user_id if prefix == "private-user." else target.session_id
        body["channel_name"] = f"{prefix}{own}"
    # The valid token, unless the headers are the part made invalid (then 401 is fine too).
    headers = {} if "header" in negative else {"Authorization": f"Bearer {target.token}"}
    case.call_and_validate(base_url=target.base_url, headers=headers,
                           excluded_checks=[positive_data_acceptance])


def test_served_document_is_the_generated_one(target: Target) -> None:
    served = httpx.get(f"{target.base_url}/openapi.json")
    assert served.json() == DOCUMENT
    assert "/api/realtime/tickets" not in openapi.build()["paths"]  # the REST API's alone
    assert "/broadcasting/auth" in served.json()["paths"]
