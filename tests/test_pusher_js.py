"""The Expo app's client stack, unchanged: real `laravel-echo` + `pusher-js` under Node,
against a real courtside server (tests/js/echo_client.mjs prints what Echo sees)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx
import orjson
import pytest

from tests import factories
from tests.test_pusher_support import PUSHER, authorized, build_pusher_app, pusher_client
from tests.test_realtime_support import sql_comment

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="session")
def echo_js() -> Path:
    """tests/js with its pinned node_modules (`npm ci` once, when they are missing)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the laravel-echo tests")
    if not (JS / "node_modules" / "laravel-echo").is_dir() or not (
            JS / "node_modules" / "pusher-js").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       timeout=300, capture_output=True)
    return JS / "echo_client.mjs"


SERVER_APP = build_pusher_app  # the `server` fixture (conftest.py) runs this app


class Echo:
    """One echo_client.mjs process: its JSON lines, and commands for it."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""

    async def expect(self, pred: Callable[[dict[str, Any]], bool],
                     wait: float = 10.0) -> dict[str, Any]:
        for seen in self.lines:
            if pred(seen):
                self.lines.remove(seen)
                return seen
        assert self.process.stdout is not None
        with anyio.fail_after(wait):
            while True:
                while b"\n" not in self._buffer:
                    self._buffer += await self.process.stdout.receive()
                raw, _, self._buffer = self._buffer.partition(b"\n")
                line: dict[str, Any] = orjson.loads(raw)
                if pred(line):
                    return line
                self.lines.append(line)

    async def command(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(text.encode() + b"\n")


@contextlib.asynccontextmanager
async def echo_client(script: Path, base: str, token: str, session_id: object,
                      user_id: object, stderr: Path) -> AsyncIterator[Echo]:
    url = urlsplit(base)
    config = {"host": url.hostname, "port": url.port, "key": PUSHER.key, "token": token,
              "sessionId": str(session_id), "userId": str(user_id)}
    env = dict(os.environ, ECHO_CONFIG=orjson.dumps(config).decode())
    with stderr.open("wb") as err:
        process = await anyio.open_process(["node", str(script)], cwd=script.parent, env=env,
                                           stderr=err)
        async with process:
            echo = Echo(process)
            try:
                yield echo
            finally:
                with contextlib.suppress(Exception):
                    await echo.command("quit")
                with anyio.move_on_after(3):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


def kind(name: str, channel: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line["kind"] == name and (channel is None
                                                  or line.get("channel") == channel)


@pytest.mark.anyio
async def test_laravel_echo_private_presence_and_user_channels(
        db: str, server: str, echo_js: Path, tmp_path: Path) -> None:
    world = factories.world(db, participants=3, outsiders=1)
    owner, member, other = world.participants
    token = factories.token(db, member)
    other_token = factories.token(db, other)
    outsider_token = factories.token(db, world.outsiders[0])
    session = f"sport-session.{world.session_id}"
    private, presence = f"private-{session}", f"presence-{session}"
    async with echo_client(echo_js, server, token, world.session_id, member,
                           tmp_path / "member.log") as echo, \
            echo_client(echo_js, server, outsider_token, world.session_id,
                        world.outsiders[0], tmp_path / "outsider.log") as outsider:
        for channel in (private, presence, f"private-user.{member}"):
            await echo.expect(kind("subscribed", channel))
        here = await echo.expect(kind("here"))
        assert [u["id"] for u in here["users"]] == [str(member)]
        assert here["users"][0]["firstname"] == "Player0"

        # A comment inserted by plain SQL reaches Echo's `.listen('.comment.created')`.
        comment_id = sql_comment(db, world.session_id, owner, "vu par Echo")
        line = await echo.expect(kind("event", private))
        assert line["event"] == "comment.created"
        assert line["data"]["comment"]["id"] == comment_id
        assert line["data"]["comment"]["content"] == "vu par Echo"

        # Another participant joins and leaves the presence channel; whispers reach them.
        async with pusher_client(server) as peer:
            ok = await authorized(server, other_token, peer, presence)
            assert ok["event"] == "pusher_internal:subscription_succeeded", ok
            joining = await echo.expect(kind("joining"))
            assert joining["user"] == {"id": str(other), "firstname": "Player1",
                                       "lastname": "Participant"}
            await echo.command("whisper")
            typing = await peer.event(presence, "user.typing")
            data = orjson.loads(typing["data"])
            assert (data["userId"], data["isTyping"]) == (str(member), True)
            await peer.send("client-typing", {"isTyping": True}, presence)
            line = await echo.expect(kind("event", presence))
            assert (line["data"]["userId"], line["data"]["isTyping"]) == (str(other), True)
            # ... and to Echo's listenForWhisper('typing'), as a whisper would.
            whisper = await echo.expect(kind("whisper"))
            assert (whisper["data"]["userId"], whisper["data"]["isTyping"]) == (str(other), True)
            echoed = [ln for ln in echo.lines
                      if ln["kind"] == "whisper" and ln["data"]["userId"] == str(member)]
            assert not echoed, "a whisper came back to its sender"
        leaving = await echo.expect(kind("leaving"))
        assert leaving["user"]["id"] == str(other)

        # A mention arrives on the user's private channel.
        async with httpx.AsyncClient(base_url=server, timeout=10) as http:
            r = await http.post(f"/api/sessions/{world.session_id}/comments",
                                json={"content": "@you", "mentions": [str(member)]},
                                headers={"Authorization": f"Bearer {factories.token(db, owner)}"})
            assert r.status_code == 201, r.text
        line = await echo.expect(kind("event", f"private-user.{member}"))
        assert line["event"] == "mention.created"
        assert line["data"]["sessionId"] == str(world.session_id)

        # The outsider's Echo is refused by /broadcasting/auth for the session's channels
        # (403, reported by Echo's `.error()`), and may use its own user channel.
        for channel in (private, presence):
            refused = await outsider.expect(kind("subscription_error", channel))
            assert refused["status"] == 403
        await outsider.expect(kind("subscribed", f"private-user.{world.outsiders[0]}"))
        assert not [line for line in outsider.lines if line["kind"] == "event"]
