"""The life of a realtime WebSocket connection, shared by the two protocols (``/ws`` in
api/ws.py, Pusher in api/pusher_ws.py), which differ in what they say, not in how they live.

`run` attaches the connection to the hub, greets the client and reads its frames until the
client or the server ends it (`_finish`: the close code is kept, the task group cancelled).
Then, whatever ended it: the connection leaves the hub, its timers stop, every subscription
is released — presence leaves included, within api/live_subs.RELEASE_TIMEOUT — and the
goodbye says why. Token expiry and typing indicators are event-loop timers: a parked task
per timer costs several KB per connection, a TimerHandle ~100 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar, Generic, Protocol, TypeVar

import anyio
import anyio.abc
from starlette.websockets import WebSocket

from api.frame_sender import FrameSender, Gone
from api.live_subs import Live, LiveSubscriptions
from api.realtime_auth import Principal
from api.realtime_protocol import ErrorCode
from api.realtime_state import Realtime

CodeT = TypeVar("CodeT", bound=int)
LiveT = TypeVar("LiveT", bound=Live)
ActionT = TypeVar("ActionT")
ActionT_co = TypeVar("ActionT_co", covariant=True)

# How long the goodbye (close frame) may take once the connection is over.
GOODBYE_TIMEOUT = 2.0


class TypingClock(Protocol[ActionT_co]):
    """The part of a protocol core (api/ws_core.py, api/pusher_protocol.py) that times the
    connection's typing indicators; its clock is anyio.current_time(), which on asyncio is
    the loop's own time."""

    def next_typing_deadline(self) -> float | None: ...

    def typing_due(self, now: float) -> Sequence[ActionT_co]: ...


class RealtimeSocket(FrameSender, Generic[CodeT, LiveT, ActionT]):
    """A `RealtimeConnection` of the hub (api/realtime_hub.py) over a WebSocket."""

    transport: ClassVar[str]
    __slots__ = ("_close", "_expiry_timer", "_principal", "_subs", "_tg", "_typing_timer", "rt",
                 "socket_id")

    def __init__(self, rt: Realtime, websocket: WebSocket, principal: Principal,
                 socket_id: str, subs: LiveSubscriptions[LiveT]) -> None:
        super().__init__(websocket, rt.config.send_timeout)
        self.rt = rt
        self.socket_id = socket_id
        self._principal = principal
        self._subs = subs
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._typing_timer: asyncio.TimerHandle | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._close: tuple[CodeT, str] | None = None

    # -- what each protocol says -------------------------------------------------------------

    @property
    def typing_clock(self) -> TypingClock[ActionT]:
        raise NotImplementedError

    def close_soon(self, code: ErrorCode) -> None:
        raise NotImplementedError

    def set_expiry(self, expires_at: datetime | None) -> None:
        raise NotImplementedError

    def revoke_topic(self, topic: str, code: ErrorCode) -> None:
        raise NotImplementedError

    def _hello(self) -> bytes:
        """The first frame, once attached to the hub."""
        raise NotImplementedError

    async def _read(self) -> None:
        """Read and act on the client's frames until it goes or `_finish` is called."""
        raise NotImplementedError

    async def _goodbye(self) -> None:
        """Tell a client that is still there why the connection ends (`_close`)."""
        raise NotImplementedError

    async def _carry_out(self, actions: list[ActionT]) -> None:
        """What a timer or a revocation leaves to do that awaits (replies, typing stops)."""
        raise NotImplementedError

    def _detached(self) -> None:
        """Called once the connection has left the hub."""

    # -- the life ----------------------------------------------------------------------------

    @property
    def conn_id(self) -> str:
        return self.socket_id

    @property
    def principal(self) -> Principal:
        return self._principal

    def _finish(self, code: CodeT, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def run(self) -> None:
        hub = self.rt.hub
        hub.attach(self)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = self._subs.tg = tg
                if self._close is not None:  # revoked between authentication and attach
                    tg.cancel_scope.cancel()
                self._arm_expiry()
                # A client gone between the handshake and this first frame (its reset seen
                # by the loop before uvicorn's connection_lost: rare, but it happened 3 times
                # in 300 reset handshakes) is a normal end, not an error. Caught here, not
                # around the task group, which would wrap it in an exception group.
                with contextlib.suppress(Gone):
                    await self.send(self._hello())
                    await self._read()
                tg.cancel_scope.cancel()
        finally:
            self._tg = self._subs.tg = None
            hub.detach(self)
            self._detached()
            for timer in (self._expiry_timer, self._typing_timer):
                if timer is not None:
                    timer.cancel()
            self._expiry_timer = self._typing_timer = None
            await self._subs.release_all()
            if self._close is not None:  # else there is nothing to say (a scope costs)
                with anyio.CancelScope(shield=True), anyio.move_on_after(GOODBYE_TIMEOUT):
                    await self._goodbye()

    # -- timers ------------------------------------------------------------------------------

    def _arm_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        expires_at = self._principal.expires_at
        if expires_at is None or self._tg is None:
            return
        delay = (expires_at - datetime.now(UTC)).total_seconds()
        self._expiry_timer = asyncio.get_running_loop().call_later(
            max(0.0, delay), self.close_soon, ErrorCode.TOKEN_EXPIRED)

    def _arm_typing(self) -> None:
        if self._typing_timer is not None:
            self._typing_timer.cancel()
            self._typing_timer = None
        deadline = self.typing_clock.next_typing_deadline()
        if deadline is None or self._tg is None:
            return
        self._typing_timer = asyncio.get_running_loop().call_at(deadline, self._typing_due)

    def _typing_due(self) -> None:
        self._typing_timer = None
        due = list(self.typing_clock.typing_due(anyio.current_time()))
        if due and self._tg is not None:
            self._tg.start_soon(self._carry_out, due)
        self._arm_typing()  # a refreshed indicator moved its deadline: wait for that one
