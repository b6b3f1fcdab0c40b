"""Every realtime connection of this process, indexed for revocation.

The bridge calls `on_control` synchronously for each control notification, on every node:

- ``token.revoked`` → that token's connections close at once (WS 4001, SSE ends).
- ``token.expires`` → their expiry moves; each connection closes itself when it passes.
- ``participant.removed`` / ``session.changed`` → the affected subscriptions are re-checked
  against the database and those no longer allowed are ended with an error saying why.
- ``bridge.resync`` (LISTEN reconnected: notifications may have been lost) → every token and
  every session subscription held here is re-checked.

Database re-checks run in the hub's own task, never in the bridge's. A subscription is
indexed *before* its own access check runs, so a removal that commits during that check is
still seen by the re-check that its notification triggers.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import anyio
import psycopg
from anyio.abc import TaskStatus
from psycopg_pool import AsyncConnectionPool

from api import realtime_auth
from api.realtime_auth import Principal
from api.realtime_limits import UserConnections
from api.realtime_protocol import ErrorCode
from bridge import Control

log = logging.getLogger("courtside.realtime")

# A token revoked (or a connection's ticket taken over) this recently is refused at
# registration: its notification may have arrived between a connection's authentication
# query and its registration here.
_MEMORY_SECONDS = 300.0
_MEMORY_SIZE = 10_000


K = TypeVar("K")


class _Recent(Generic[K]):
    """The keys added in the last `_MEMORY_SECONDS`, `_MEMORY_SIZE` at most (oldest go)."""

    def __init__(self) -> None:
        self._added: OrderedDict[K, float] = OrderedDict()

    def add(self, key: K) -> None:
        self._added[key] = time.monotonic()
        self._added.move_to_end(key)
        while len(self._added) > _MEMORY_SIZE:
            self._added.popitem(last=False)

    def __contains__(self, key: K) -> bool:
        stamp = self._added.get(key)
        return stamp is not None and time.monotonic() - stamp < _MEMORY_SECONDS


class RealtimeConnection(Protocol):
    """What the hub needs of a WebSocket or SSE connection. Methods must not block."""

    @property
    def transport(self) -> str:
        """One of "ws", "sse", "pusher": how /metrics counts the connection."""

    @property
    def conn_id(self) -> str: ...

    @property
    def principal(self) -> Principal: ...

    def close_soon(self, code: ErrorCode) -> None:
        """End the whole connection (token revoked or expired, shutdown)."""

    def set_expiry(self, expires_at: datetime | None) -> None:
        """The token's expiry changed; the connection closes itself when it passes."""

    def revoke_topic(self, topic: str, code: ErrorCode) -> None:
        """End one subscription, telling the client why."""


@dataclass(frozen=True)
class _Recheck:
    session_id: uuid.UUID
    user_id: uuid.UUID | None  # None: every subscriber of the session
    reason: ErrorCode
    deleted: bool = False


@dataclass(frozen=True)
class _Resync:
    pass


class RealtimeHub:
    def __init__(self, pool: AsyncConnectionPool[Any], connections_per_user: int,
                 expiration_minutes: int | None = None) -> None:
        self.pool = pool
        self.expiration_minutes = expiration_minutes
        self._slots = UserConnections(connections_per_user)
        self._conns: set[RealtimeConnection] = set()
        self._by_token: dict[int, set[RealtimeConnection]] = {}
        self._by_topic: dict[str, set[RealtimeConnection]] = {}
        self._revoked = _Recent[int]()  # token ids
        self._replaced = _Recent[str]()  # conn ids whose ticket was taken over
        self._jobs_in, self._jobs_out = anyio.create_memory_object_stream[_Recheck | _Resync](
            max_buffer_size=10_000)
        self._shutting_down = False

    # -- registration ------------------------------------------------------------------------

    def admit(self, principal: Principal) -> ErrorCode | None:
        """Take one of the user's connection slots, or say why not. Pair with `release`."""
        if self._shutting_down:
            return ErrorCode.SERVICE_RESTART
        if principal.token_id in self._revoked:
            return ErrorCode.TOKEN_REVOKED
        if not self._slots.acquire(str(principal.user_id)):
            return ErrorCode.TOO_MANY_CONNECTIONS
        return None

    def release(self, principal: Principal) -> None:
        self._slots.release(str(principal.user_id))

    def attach(self, conn: RealtimeConnection) -> None:
        self._conns.add(conn)
        self._by_token.setdefault(conn.principal.token_id, set()).add(conn)
        if conn.principal.token_id in self._revoked:
            conn.close_soon(ErrorCode.TOKEN_REVOKED)
        elif conn.conn_id in self._replaced:
            self._close_replaced(conn)
        elif self._shutting_down:
            conn.close_soon(ErrorCode.SERVICE_RESTART)

    def detach(self, conn: RealtimeConnection) -> None:
        self._conns.discard(conn)
        _discard(self._by_token, conn.principal.token_id, conn)

    def watch_topic(self, conn: RealtimeConnection, topic: str) -> None:
        self._by_topic.setdefault(topic, set()).add(conn)

    def unwatch_topic(self, conn: RealtimeConnection, topic: str) -> None:
        _discard(self._by_topic, topic, conn)

    def connection_count(self) -> int:
        return len(self._conns)

    def connections_by_transport(self) -> Counter[str]:
        return Counter(conn.transport for conn in self._conns)

    def subscriber_count(self, topic: str) -> int:
        return len(self._by_topic.get(topic, ()))

    # -- control notifications (called by the bridge; must not block) ------------------------

    def on_control(self, control: Control) -> None:
        data = control.data
        try:
            if control.type == "token.revoked":
                self._token_revoked(int(data["tokenId"]))
            elif control.type == "token.expires":
                self._token_expires(int(data["tokenId"]), _parse_ts(str(data["expiresAt"])))
            elif control.type == "participant.removed":
                self._enqueue(_Recheck(uuid.UUID(str(data["sessionId"])),
                                       uuid.UUID(str(data["userId"])),
                                       ErrorCode.PARTICIPANT_REMOVED))
            elif control.type == "session.changed":
                deleted = bool(data.get("deleted"))
                self._enqueue(_Recheck(uuid.UUID(str(data["sessionId"])), None,
                                       ErrorCode.SESSION_CLOSED if deleted
                                       else ErrorCode.NOT_PARTICIPANT, deleted))
            elif control.type == "ticket.moved":
                self._ticket_moved(int(data["tokenId"]), str(data["connId"]))
            elif control.type == "bridge.resync":
                self._enqueue(_Resync())
        except (KeyError, TypeError, ValueError):
            log.warning("malformed control notification %r", control)

    def _token_revoked(self, token_id: int) -> None:
        self._revoked.add(token_id)
        for conn in list(self._by_token.get(token_id, ())):
            conn.close_soon(ErrorCode.TOKEN_REVOKED)

    def _token_expires(self, token_id: int, expires_at: datetime) -> None:
        for conn in list(self._by_token.get(token_id, ())):
            conn.set_expiry(expires_at)

    def _ticket_moved(self, token_id: int, conn_id: str) -> None:
        self._replaced.add(conn_id)
        for conn in list(self._by_token.get(token_id, ())):
            if conn.conn_id == conn_id:
                self._close_replaced(conn)

    @staticmethod
    def _close_replaced(conn: RealtimeConnection) -> None:
        log.info("%s closed: a newer connection took its ticket over", conn.conn_id)
        conn.close_soon(ErrorCode.STREAM_REPLACED)

    def _enqueue(self, job: _Recheck | _Resync) -> None:
        try:
            self._jobs_in.send_nowait(job)
        except anyio.WouldBlock:
            # Far behind: one full re-check covers everything that was dropped.
            log.warning("realtime control queue full; re-checking every connection")
            with contextlib.suppress(anyio.WouldBlock):
                self._jobs_in.send_nowait(_Resync())

    # -- shutdown ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Tell every connection to go (WS close 1012, SSE streams end); admit no more."""
        self._shutting_down = True
        for conn in list(self._conns):
            conn.close_soon(ErrorCode.SERVICE_RESTART)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    # -- the re-check worker -----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._jobs_in, self._jobs_out:
            async for job in self._jobs_out:
                if isinstance(job, _Resync):
                    await self._resync()
                else:
                    await self._recheck(job)

    def _subscribers(self, topic: str, user_id: uuid.UUID | None) -> list[RealtimeConnection]:
        return [c for c in self._by_topic.get(topic, ())
                if user_id is None or c.principal.user_id == user_id]

    async def _recheck(self, job: _Recheck) -> None:
        topic = f"session:{job.session_id}"
        if not self._subscribers(topic, job.user_id):
            return
        allowed: set[uuid.UUID] = set()
        if not job.deleted:
            users = {c.principal.user_id for c in self._subscribers(topic, job.user_id)}
            try:
                allowed = await realtime_auth.session_readers(self.pool, job.session_id, users)
            except (psycopg.Error, OSError) as exc:
                # Something was taken away and we cannot tell whom it concerns: fail closed.
                # The clients may subscribe again; that re-checks access from scratch.
                log.warning("re-check of %s failed (%s); ending its subscriptions", topic, exc)
        # Subscribers that arrived during the query ran their own check after the change.
        for conn in self._subscribers(topic, job.user_id):
            if conn.principal.user_id not in allowed:
                conn.revoke_topic(topic, job.reason)

    async def _resync(self) -> None:
        while True:
            try:
                await self._resync_once()
                return
            except (psycopg.Error, OSError) as exc:
                log.warning("realtime re-check after LISTEN reconnect failed (%s); retrying", exc)
                await anyio.sleep(1.0)

    async def _resync_once(self) -> None:
        tokens = set(self._by_token)
        live = await realtime_auth.live_tokens(self.pool, tokens, self.expiration_minutes)
        for token_id in tokens - set(live):
            self._token_revoked(token_id)
        for token_id, expires_at in live.items():
            for conn in list(self._by_token.get(token_id, ())):
                conn.set_expiry(expires_at)
        for topic in [t for t in self._by_topic if t.startswith("session:")]:
            session_id = uuid.UUID(topic.partition(":")[2])
            users = {c.principal.user_id for c in self._subscribers(topic, None)}
            allowed = await realtime_auth.session_readers(self.pool, session_id, users)
            for conn in self._subscribers(topic, None):
                if conn.principal.user_id not in allowed:
                    conn.revoke_topic(topic, ErrorCode.NOT_PARTICIPANT)


def _discard(index: dict[Any, set[RealtimeConnection]], key: Any,
             conn: RealtimeConnection) -> None:
    conns = index.get(key)
    if conns is not None:
        conns.discard(conn)
        if not conns:
            del index[key]


def _parse_ts(value: str) -> datetime:
    """``2025-01-20T10:30:00.000000Z`` (realtime.ts_v1) → an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))

