"""`courtside serve`'s app tunes the cyclic collector once it has started, and puts it back
as it was when it stops (courtside/serve.py, GC_THRESHOLDS)."""

from __future__ import annotations

import gc

import httpx
import pytest

from courtside.serve import GC_THRESHOLDS, build_app
from tests.test_realtime_support import running


def test_serve_freezes_startup_heap_and_raises_thresholds(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    gc.unfreeze()
    with running(build_app()) as base:
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert gc.get_threshold() == GC_THRESHOLDS
        # The app, its pools and the bridge were built before: they are frozen.
        assert gc.get_freeze_count() > 1000
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
