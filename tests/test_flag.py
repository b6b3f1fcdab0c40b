"""bridge/flag.py: the event the idle connections park on."""

from __future__ import annotations

import anyio
import pytest

from bridge.flag import Flag

pytestmark = pytest.mark.anyio


async def test_wait_returns_at_once_when_set_and_blocks_after_clear() -> None:
    flag = Flag()
    flag.set()
    assert flag.is_set()
    with anyio.fail_after(1):
        assert await flag.wait() is True
    flag.clear()
    assert not flag.is_set()
    with anyio.move_on_after(0.05) as scope:
        await flag.wait()
    assert scope.cancelled_caught


async def test_set_wakes_every_waiter_and_a_cancelled_waiter_is_forgotten() -> None:
    flag = Flag()
    woken: list[int] = []

    async def waiter(k: int) -> None:
        await flag.wait()
        woken.append(k)

    async with anyio.create_task_group() as tg:
        for k in range(3):
            tg.start_soon(waiter, k)
        with anyio.move_on_after(0.05):
            await flag.wait()  # this one is cancelled while it waits
        await anyio.sleep(0.01)
        assert woken == []
        assert flag._waiters is not None
        assert len(flag._waiters) == 3
        flag.set()
    assert sorted(woken) == [0, 1, 2]
    assert flag._waiters is None
