"""courtside.looplag: a stalled event loop is measured, on /metrics, and logged (not too
often)."""

from __future__ import annotations

import logging
import re
import time

import anyio
import httpx
import pytest

from courtside.looplag import LoopLag
from courtside.serve import build_app
from tests.test_realtime_support import running


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "courtside.loop" and r.levelno == logging.WARNING]


@pytest.mark.anyio
async def test_a_blocked_loop_is_measured_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    lag = LoopLag(interval=0.02, warn_after=0.25)
    with caplog.at_level(logging.WARNING, logger="courtside.loop"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lag.run)
            await anyio.sleep(0.1)
            # A blocking call in the loop: the timer armed before it fires 0.28 s late or more.
            time.sleep(0.3)  # noqa: ASYNC251
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    buckets = dict(lag.lags.cumulative())
    assert buckets["+Inf"] >= 5  # measured all along, every 20 ms
    assert buckets["0.25"] < buckets["+Inf"]  # and the stall fell above 250 ms
    warnings = _warnings(caplog)
    assert len(warnings) == 1  # the first stall of the period is logged at once
    assert "for 250 ms or more" in warnings[0]
    longest = re.search(r"the longest (\d+) ms", warnings[0])
    assert longest is not None
    assert int(longest.group(1)) >= 280


def test_stalls_are_logged_at_most_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    lag = LoopLag(warn_after=0.5, warn_every=30.0)
    with caplog.at_level(logging.WARNING, logger="courtside.loop"):
        for lag_s, now in ((0.6, 100.0), (0.1, 101.0), (0.7, 110.0), (0.9, 120.0),
                           (0.55, 131.0)):
            lag.record(lag_s, now)
    assert _warnings(caplog) == [
        "the event loop stalled: 1 time(s) for 500 ms or more, the longest 600 ms"
        " (every connection of this process waited as long)",
        "the event loop stalled: 3 time(s) for 500 ms or more, the longest 900 ms"
        " (every connection of this process waited as long)",
    ]
    assert lag.lags.cumulative()[-1] == ("+Inf", 5)


def test_serve_reports_its_loop_lag(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    with running(build_app()) as base:
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"{base}/metrics", timeout=5).text
            found = re.search(r"^python_event_loop_lag_seconds_count (\S+)$", text,
                              re.MULTILINE)
            assert found is not None
            if float(found.group(1)) >= 2:  # measured, and still measuring
                break
            assert time.monotonic() < deadline, "the loop's lag is not measured"
            time.sleep(0.1)
        assert re.search(r'^python_event_loop_lag_seconds_bucket\{le="\+Inf"\} ', text,
                         re.MULTILINE)
