"""`courtside serve`'s app tunes the cyclic collector once it has started (courtside/gctune.py),
reports its pauses on /metrics, and puts it back as it was when it stops."""

from __future__ import annotations

import gc
import re

import httpx
import pytest

from courtside import gctune
from courtside.serve import build_app
from tests.test_realtime_support import running


def _sample(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


@pytest.mark.skipif(not gctune._GENERATIONAL, reason="CPython 3.14+ collects incrementally")
def test_serve_tunes_the_collector_and_reports_its_pauses(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    before = gc.get_threshold()
    assert before != gctune.THRESHOLDS
    callbacks = list(gc.callbacks)
    gc.unfreeze()
    with running(build_app()) as base:
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert gc.get_threshold() == gctune.THRESHOLDS
        # The app, its pools and the bridge were built before: they are frozen.
        assert gc.get_freeze_count() > 1000
        text = httpx.get(f"{base}/metrics", timeout=5).text
        young = _sample(text, 'python_gc_pause_seconds_count{generation="0"}')
        middle = _sample(text, 'python_gc_pause_seconds_count{generation="1"}')
        gc.collect(0)
        gc.collect(1)
        text = httpx.get(f"{base}/metrics", timeout=5).text
        assert _sample(text, 'python_gc_pause_seconds_count{generation="0"}') >= young + 1
        assert _sample(text, 'python_gc_pause_seconds_count{generation="1"}') >= middle + 1
        assert _sample(text, 'python_gc_pause_seconds_bucket{generation="1",le="+Inf"}') \
            >= middle + 1
        assert _sample(text, "python_gc_frozen_objects") > 1000
        assert _sample(text, "python_gc_compactions_total") == 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert gc.callbacks == callbacks
