"""api/realtime_state.PresenceLists: subscribers asking for a topic's presence list at the
same time share queries, and each gets a list from a query that started after it asked."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from api.realtime_state import PresenceLists
from bridge import BridgeUnavailable

pytestmark = pytest.mark.anyio


class Source:
    """A presence table whose reads are held until released, counting them."""

    def __init__(self) -> None:
        self.members: list[str] = []
        self.started: list[list[str]] = []  # what each read saw when it began
        self.release = anyio.Event()
        self.fail = False

    async def fetch(self, topic: str) -> list[dict[str, Any]]:
        seen = list(self.members)
        self.started.append(seen)
        await self.release.wait()
        if self.fail:
            raise OSError("database gone")
        return [{"id": m, "topic": topic} for m in seen]


async def test_concurrent_callers_share_one_query_and_see_themselves() -> None:
    src = Source()
    lists = PresenceLists(src.fetch)
    got: dict[str, list[str]] = {}

    async def subscriber(name: str) -> None:
        src.members.append(name)  # the join precedes the list
        got[name] = [m["id"] for m in await lists.get("t")]

    async with anyio.create_task_group() as tg:
        tg.start_soon(subscriber, "a")
        await anyio.wait_all_tasks_blocked()  # a's query is running
        for name in "bcde":
            tg.start_soon(subscriber, name)
        await anyio.wait_all_tasks_blocked()
        assert len(src.started) == 1  # b..e wait for the next round, not a's
        src.release.set()
    assert src.started == [["a"], ["a", "b", "c", "d", "e"]]
    assert got["a"] == ["a"]
    for name in "bcde":
        assert got[name] == ["a", "b", "c", "d", "e"]
    assert not lists._topics  # nothing kept for a topic once every caller is answered


async def test_a_failed_query_fails_each_of_its_callers_and_not_the_next() -> None:
    src = Source()
    src.fail = True
    src.release.set()
    lists = PresenceLists(src.fetch)
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await lists.get("t")
        except (OSError, BridgeUnavailable) as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(caller)
    assert len(errors) == 3
    src.fail = False
    src.members.append("z")
    assert [m["id"] for m in await lists.get("t")] == ["z"]


async def test_a_cancelled_leader_does_not_strand_the_others() -> None:
    src = Source()
    lists = PresenceLists(src.fetch)
    got: list[list[dict[str, Any]]] = []

    async def follower() -> None:
        got.append(await lists.get("t"))

    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as leader_scope:
            async with anyio.create_task_group() as inner:
                inner.start_soon(lists.get, "t")
                await anyio.wait_all_tasks_blocked()  # the leader's query is running
                src.members.append("f")
                tg.start_soon(follower)
                await anyio.wait_all_tasks_blocked()
                leader_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        src.release.set()
    assert src.started == [[], ["f"]]  # the follower's own round, after the cancel
    assert got == [[{"id": "f", "topic": "t"}]]
