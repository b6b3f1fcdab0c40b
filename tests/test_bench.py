"""The benchmark harness: its pure parts without sockets, and one real `--quick` run that must
produce files and finite, positive numbers (never a judgement of the machine's speed)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from api.pusher_protocol import PusherConfig, verify_auth
from bench import perfprof, profiling, report, sockfloor, stats, writers
from bench.database import BenchDB, make_sessions
from bench.dialects import (
    PUSHER_KEY,
    PUSHER_SECRET,
    ConnSpec,
    Dialect,
    find_marker,
    make_dialect,
    marker_content,
)
from bench.harness import Run
from bench.profiles import QUICK, override
from bench.scenarios import fanout, writes
from bench.wsframes import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameParser,
    ProtocolError,
    accept_value,
    encode_frame,
    encode_server_frame,
    handshake_request,
    parse_handshake,
)

ROOT = Path(__file__).resolve().parent.parent

# -- the WebSocket codec -----------------------------------------------------------------------


def test_frames_of_every_length_form_split_anywhere() -> None:
    messages = [b"", b"x" * 125, b"y" * 126, b"z" * 70_000]
    wire = b"".join(encode_server_frame(OP_TEXT, m) for m in messages)
    for chunk in (1, 7, 4096, len(wire)):
        parser = FrameParser()
        got: list[tuple[int, bytes]] = []
        for i in range(0, len(wire), chunk):
            got.extend(parser.feed(wire[i:i + chunk]))
        assert got == [(OP_TEXT, m) for m in messages]


def test_fragments_are_joined_and_control_frames_pass_between_them() -> None:
    wire = (struct.pack("!BB", OP_TEXT, 3) + b"abc"          # FIN clear: first fragment
            + encode_server_frame(OP_PING, b"p")             # control frame in between
            + struct.pack("!BB", 0x80, 2) + b"de")           # final continuation
    assert FrameParser().feed(wire) == [(OP_PING, b"p"), (OP_TEXT, b"abcde")]


def test_masked_server_frame_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        FrameParser().feed(encode_frame(OP_TEXT, b"hi"))


def test_client_frames_are_masked_with_a_zero_key() -> None:
    frame = encode_frame(OP_CLOSE, b"\x03\xe8")
    assert frame[0] == 0x80 | OP_CLOSE
    assert frame[1] == 0x80 | 2
    assert frame[2:6] == b"\x00\x00\x00\x00"
    assert frame[6:] == b"\x03\xe8"


def test_handshake() -> None:
    request, key = handshake_request("127.0.0.1", 8000, "/ws", {"Authorization": "Bearer t"})
    assert request.startswith(b"GET /ws HTTP/1.1\r\n")
    assert b"Authorization: Bearer t\r\n" in request
    head = (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_value(key)}\r\n\r\n").encode()
    assert parse_handshake(head[:20], key) is None
    result = parse_handshake(head + b"\x81\x01x", key)
    assert result is not None
    assert result.rest == b"\x81\x01x"
    with pytest.raises(ProtocolError):
        parse_handshake(b"HTTP/1.1 403 Forbidden\r\n\r\n", key)
    with pytest.raises(ProtocolError):
        parse_handshake(head.replace(accept_value(key).encode(), b"wrong"), key)


# -- dialects ----------------------------------------------------------------------------------


def _ready(dialect: Dialect) -> bool:
    return dialect.ready  # a call: mypy does not carry a narrowing of it across on_text


def test_marker_round_trip_inside_any_frame() -> None:
    content = marker_content(42, 1_700_000_000_123_456_789)
    framed = b'{"type":"event","data":{"comment":{"content":"' + content.encode() + b'"}}}'
    assert find_marker(framed) == (42, 1_700_000_000_123_456_789)
    assert find_marker(b'{"type":"subscribed"}') is None


def test_courtside_dialect_subscribes_and_reads_its_seq() -> None:
    d = make_dialect("courtside", ConnSpec("session:abc", token="1|x", since=7))
    assert d.headers() == {"Authorization": "Bearer 1|x"}
    assert json.loads(d.opened()[0]) == {"type": "subscribe", "topic": "session:abc",
                                         "since": 7}
    d.on_text(b'{"type":"connected","socketId":"1.2"}')
    assert not _ready(d)
    d.on_text(b'{"type":"subscribed","topic":"session:abc","seq":12,"presence":[]}')
    assert _ready(d)
    assert d.seq == 12
    refused = make_dialect("courtside", ConnSpec("session:abc"))
    refused.on_text(b'{"type":"error","code":"NOT_PARTICIPANT","message":"..."}')
    assert refused.error == "NOT_PARTICIPANT"


def test_socketio_dialect_handshake_and_heartbeat() -> None:
    d = make_dialect("socketio", ConnSpec("session:abc"))
    assert d.path.startswith("/socket.io/?EIO=4&transport=websocket")
    assert d.on_text(b'0{"sid":"s","pingInterval":25000}') == [b"40"]
    assert d.on_text(b'40{"sid":"n"}') == [b'42["subscribe","session:abc"]']
    assert d.on_text(b"2") == [b"3"]
    assert not _ready(d)
    d.on_text(b'42["subscribed","session:abc"]')
    assert _ready(d)


def test_pusher_dialect_signs_its_subscription_as_broadcasting_auth_would() -> None:
    session = str(uuid.uuid4())
    d = make_dialect("pusher", ConnSpec(f"session:{session}", token="1|x"))
    assert d.path.startswith(f"/app/{PUSHER_KEY}?protocol=7")
    assert d.headers() == {"Authorization": "Bearer 1|x"}
    established = orjson.dumps({"event": "pusher:connection_established",
                                "data": orjson.dumps({"socket_id": "123.456"}).decode()})
    [subscribe] = d.on_text(established)
    message = orjson.loads(subscribe)
    channel = f"private-sport-session.{session}"
    assert message["event"] == "pusher:subscribe"
    assert message["data"]["channel"] == channel
    config = PusherConfig(key=PUSHER_KEY, secret=PUSHER_SECRET)
    assert verify_auth(config, message["data"]["auth"], "123.456", channel, None)
    assert d.on_text(b'{"event":"comment.created","channel":"x","data":"{}"}') == []
    assert not _ready(d)
    d.on_text(orjson.dumps({"event": "pusher_internal:subscription_succeeded",
                            "channel": channel, "data": "{}"}))
    assert _ready(d)
    assert d.on_text(b'{"event":"pusher:ping","data":{}}') == [
        b'{"event":"pusher:pong","data":{}}']
    refused = make_dialect("pusher", ConnSpec(f"session:{session}"))
    refused.on_text(b'{"event":"pusher:error","data":{"code":4009,"message":"no"}}')
    assert refused.error == "4009"


def test_floor_dialect() -> None:
    d = make_dialect("floor", ConnSpec("session:a b"))
    assert d.path == "/ws?topic=session%3Aa%20b"
    d.on_text(b"ready")
    assert _ready(d)


# -- numbers and reports -----------------------------------------------------------------------


def test_socket_floor_waits_for_each_round_to_be_read() -> None:
    got = sockfloor.measure(20, 3, timeout=30.0)
    # Closed loop: the drain had read everything sent before each measured round began.
    assert got["closed_loop_unread_bytes"] == 0
    rounds_sent = 1 + 2 * got["rounds"]  # warm-up, closed loop, back to back
    assert got["bytes_read"] == rounds_sent * got["sockets"] * got["frame_bytes"]
    assert _positive(got["cpu_per_send_us"])
    assert _positive(got["back_to_back_cpu_per_send_us"])


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 100) == 100
    assert math.isnan(stats.percentile([], 50))
    summary = stats.latency_summary([2_000_000, 1_000_000, 3_000_000])
    assert summary["p50_ms"] == 2.0
    assert summary["max_ms"] == 3.0


def test_profile_summary_drops_shared_frames(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text("main (a.py:1);loop (a.py:2);send (b.py:3) 6\n"
                   "main (a.py:1);loop (a.py:2);wake (c.py:4) 4\n")
    summary = profiling.summarize(raw)
    assert summary["samples"] == 10
    assert summary["self"][0] == ["send (b.py)", 60.0]
    assert [name for name, _ in summary["inclusive"]] == ["send (b.py)", "wake (c.py)"]


_PERF_SCRIPT = """
\t ffffffff81af866a tcp_sendmsg ([kernel.kallsyms])
\t ffffffff81af0000 __sys_sendto ([kernel.kallsyms])
\t           fdd6b __send (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    7f0e61856240 [unknown] ([unknown])
\t          1aac40 main (/usr/bin/python3.11)

\t           51183 UVStream_write (/venv/site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so)
\t          1aac40 main (/usr/bin/python3.11)

\t           fb699 _PyEval_EvalFrameDefault (/lib/libpython3.11.so.1.0)
\t          1aac40 main (/usr/bin/python3.11)

\t ffffffff81af866a tcp_sendmsg ([kernel.kallsyms])
\t          1aac40 main (/usr/bin/python3.11)
"""


def test_perf_summary_gives_each_sample_to_its_top_frames_binary() -> None:
    samples = perfprof.parse_script(_PERF_SCRIPT)
    assert [len(s) for s in samples] == [5, 2, 2, 2]
    assert samples[1][0] == ("UVStream_write",
                             "/venv/site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so")
    summary = perfprof.summarize_stacks(samples)
    assert summary["samples"] == 4
    assert summary["areas"] == [["kernel", 50.0], ["uvloop/loop", 25.0],
                                ["interpreter", 25.0]]
    assert summary["self"][0] == ["tcp_sendmsg", 50.0]
    # `main` is in every sample and says nothing; `[unknown]` frames are no function.
    inclusive = {name: pct for name, pct in summary["inclusive"]}
    assert "main" not in inclusive
    assert "[unknown]" not in inclusive
    assert inclusive["tcp_sendmsg"] == 50.0
    assert inclusive["__send"] == 25.0
    text = report.markdown({"meta": {"profiled": True, "profiler": "perf"},
                            "profiles": {"fanout-courtside-n10": summary}})
    assert "perf sampled the servers" in text
    assert "### fanout-courtside-n10 — perf, 4 samples" in text
    assert "| 25.00 | uvloop/loop |" in text


_SENDER = """
import socket, threading, time
server = socket.create_server(("127.0.0.1", 0))
a = socket.create_connection(server.getsockname())
b, _ = server.accept()
def drain():
    while b.recv(65536):
        pass
threading.Thread(target=drain, daemon=True).start()
frame = b"x" * 300
end = time.monotonic() + 20
while time.monotonic() < end:
    a.send(frame)
"""


@pytest.mark.skipif(perfprof.perf() is None, reason="no perf binary")
def test_perf_profile_of_a_sending_process_finds_the_kernels_send_path(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SENDER])
    try:
        with perfprof.record(proc.pid, tmp_path / "send.perf", freq=499) as attached:
            if not attached:
                pytest.skip("perf could not attach (perf_event_paranoid?)")
            time.sleep(1.5)
    finally:
        proc.kill()
        proc.wait(10)
    summary = perfprof.summarize(tmp_path / "send.perf")
    assert summary["samples"] > 50
    areas = {name: pct for name, pct in summary["areas"]}
    assert areas.get("kernel", 0.0) > 30.0
    assert "tcp_sendmsg" in {name for name, _ in summary["inclusive"]}


def test_fanout_blocks_split_every_event_once() -> None:
    assert fanout._blocks(30, 3) == [10, 10, 10]
    assert fanout._blocks(8, 3) == [3, 3, 2]
    assert fanout._blocks(2, 3) == [1, 1]  # never an empty block
    assert fanout._blocks(5, 0) == [5]


def test_fanout_ratio_is_the_median_of_the_blocks_else_the_mean() -> None:
    leg = {"server_cpu_per_delivery_us": 30.0, "socket_floor_cpu_per_send_us": 10.0,
           "ratio_to_floor": 2.5, "ratio_to_floor_range": [2.0, 4.0],
           "blocks": [{}, {}, {}]}
    assert report._leg_ratio({}, "n=10", leg) == 2.5
    assert "median of 3 blocks" in report._leg_ratio_note(leg)
    older = {"server_cpu_per_delivery_us": 30.0, "socket_floor_cpu_per_send_us": 10.0}
    assert report._leg_ratio({}, "n=10", older) == 3.0


def test_profile_overrides() -> None:
    p = override(QUICK, ["fanout_sizes=10,20", "connections=7", "latency_duration=0.5"])
    assert (p.fanout_sizes, p.connections, p.latency_duration) == ((10, 20), 7, 0.5)
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        override(QUICK, ["nope=1"])


def test_closed_loop_inserts_share_one_warmed_connection(db: str, tmp_path: Path) -> None:
    bench_db = BenchDB(db, db, "", None, None)
    run = Run(QUICK, [], bench_db, tmp_path, 60.0, {})
    session = make_sessions(bench_db, 1, 1)[0]
    targets = [[session.id, session.users[0]]]
    try:
        first, stamps = run.insert(targets, 2)
        second, more = run.insert(targets, 1)
        with psycopg.connect(db, autocommit=True) as conn:
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
            warm_ups = conn.execute("SELECT count(*) FROM sport_session_comments"
                                    " WHERE content = %s", (writers.WARM_UP_CONTENT,)).fetchone()
            marked = conn.execute("SELECT count(*) FROM sport_session_comments"
                                  " WHERE sport_session_id = %s AND content LIKE 'bench:%%'",
                                  (session.id,)).fetchone()
    finally:
        run.stop_agents()
    assert (first, second) == (1, 3)
    assert set(stamps) | set(more) == {1, 2, 3}
    assert others == (1,)  # one connection for every insert
    assert warm_ups == (writers.WARM_UP_COMMITS,)  # warmed up once, outside the session
    assert marked == (3,)


def test_sql_writer_lanes_warm_up_before_the_clock_starts(db: str) -> None:
    bench_db = BenchDB(db, db, "", None, None)
    target, quiet = make_sessions(bench_db, 2, 1)
    plan = {"mode": "sql", "rate": 200, "count": 10, "start_n": 1, "lanes": 2,
            "targets": [[target.id, target.users[0], ""]], "dsn": db,
            "warm_target": [quiet.id, quiet.users[0]]}
    result = asyncio.run(writers.write(plan))
    assert result["sent"] == 10
    assert result["errors"] == 0
    assert result["elapsed"] >= 9 / 200  # paced: event i is due i / rate after the start
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute("SELECT sport_session_id, count(*) FROM sport_session_comments"
                            " GROUP BY 1").fetchall()
        last_warm_up = conn.execute(
            "SELECT max(created_at) FROM sport_session_comments WHERE sport_session_id = %s",
            (quiet.id,)).fetchone()
    assert dict(rows) == {uuid.UUID(quiet.id): 2 * writers.WARM_UP_COMMITS,
                          uuid.UUID(target.id): 10}
    # Every lane's warm-up committed before the first measured event was stamped.
    assert last_warm_up is not None
    assert last_warm_up[0].timestamp() * 1e9 < min(stamp for _, stamp in result["stamps"])


def test_each_write_mode_does_what_its_ratio_stands_for(db: str) -> None:
    """The writes scenario's modes, on a real database: courtside's triggers log and notify
    the rendered comment; `none` does neither; `minimum` takes the same counter, appends a
    log row and notifies; `naive` only notifies. And the scenario leaves courtside's on."""
    bench_db = BenchDB(db, db, "", None, None)
    session = make_sessions(bench_db, 1, 1)[0]
    topic = f"session:{session.id}"
    channels = ("courtside", "bench_minimum", "bench_naive")
    seen: dict[str, tuple[list[int], dict[str, int]]] = {}
    with psycopg.connect(db, autocommit=True) as listener, \
            psycopg.connect(db, autocommit=True) as writer:
        for channel in (*channels, "bench_test_sentinel"):
            listener.execute(f"LISTEN {channel}")
        for mode in ("triggers", "none", "minimum", "naive", "triggers"):
            writes.set_mode(bench_db, mode)
            before = writer.execute("SELECT count(*) FROM realtime.events WHERE topic = %s",
                                    (topic,)).fetchone()
            for i in range(2):
                writer.execute("INSERT INTO sport_session_comments"
                               " (sport_session_id, user_id, content) VALUES (%s, %s, %s)",
                               (session.id, session.users[0], f"{mode} {i}"))
            logged = writer.execute(
                "SELECT seq, payload -> 'comment' ->> 'content' FROM realtime.events"
                " WHERE topic = %s ORDER BY seq OFFSET %s", (topic, before[0] if before else 0)
            ).fetchall()
            assert [content for _, content in logged] in ([], [f"{mode} 0", f"{mode} 1"])
            # PostgreSQL delivers notifications in commit order: once this one arrives, all
            # the inserts sent have.
            writer.execute("NOTIFY bench_test_sentinel")
            heard = {c: 0 for c in channels}
            for note in listener.notifies(timeout=10.0):
                if note.channel == "bench_test_sentinel":
                    break
                heard[note.channel] += 1
            else:
                raise AssertionError("the sentinel notification did not arrive in 10 s")
            seen[f"{mode}#{len(seen)}"] = ([seq for seq, _ in logged], heard)
        state = writer.execute("SELECT last_seq FROM realtime.streams WHERE topic = %s",
                               (topic,)).fetchone()
        baselines = writer.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'bench_baseline'"
                                   ).fetchone()
    quiet = {c: 0 for c in channels}
    assert seen == {
        "triggers#0": ([1, 2], {**quiet, "courtside": 2}),
        "none#1": ([], quiet),
        "minimum#2": ([3, 4], {**quiet, "bench_minimum": 2}),  # the same counter, gapless
        "naive#3": ([], {**quiet, "bench_naive": 2}),
        "triggers#4": ([5, 6], {**quiet, "courtside": 2}),
    }
    assert state == (6,)
    assert baselines == (0,)


# -- a real quick run --------------------------------------------------------------------------


def _positive(value: Any) -> bool:
    return stats.finite(value) and value > 0


def _run_module(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` from the checkout, on the tests' server when one is given."""
    command = [sys.executable, "-m", *args]
    server = os.environ.get("COURTSIDE_TEST_DATABASE_URL")
    if server:
        command += ["--dsn", server]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


@pytest.mark.timeout(300)
def test_quick_run_produces_sane_numbers(tmp_path: Path) -> None:
    # The quick profile budgets 115 s and skips legs that would not fit; on a loaded machine
    # that would skip legs this test must see, so it gets a budget of its own.
    _run_module(["bench", "--quick", "--time-limit", "250", "--out", str(tmp_path)], 280)
    assert (tmp_path / "quick.md").read_text().startswith("# courtside bench")
    assert (tmp_path / "quick-latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "quick.json").read_text())
    unavailable = results["meta"]["unavailable"]
    systems = [s for s in ("courtside", "pusher", "floor", "naive", "socketio")
               if s not in unavailable]
    scen = results["scenarios"]
    assert set(scen) == {"writes", "latency", "fanout", "connections", "resume"}

    for system in systems:
        leg = scen["latency"]["systems"][system]["sql@100"]
        assert leg["lost"] == 0, (system, leg)
        assert leg["received"] == leg["expected"] > 0
        for key in ("p50_ms", "p99_ms", "max_ms", "deliveries_per_s", "server_cpu_s"):
            assert _positive(leg[key]), (system, key, leg[key])
        assert leg["p50_ms"] <= leg["p99_ms"] <= leg["max_ms"]
    rest = scen["latency"]["systems"]["courtside"]["rest@100"]
    assert rest["lost"] == 0
    assert _positive(rest["p99_ms"])

    for key, floor in scen["fanout"]["socket_floor"].items():
        assert _positive(floor["cpu_per_send_us"]), key
        assert _positive(floor["back_to_back_cpu_per_send_us"]), key
    for system in systems:
        for size in QUICK.fanout_sizes:
            leg = scen["fanout"]["systems"][system][f"n={size}"]
            assert leg["lost"] == 0, (system, size, leg)
            assert _positive(leg["server_cpu_per_delivery_us"]), (system, size)
            if system not in QUICK.fanout_own_floor:
                continue
            # Its events in blocks, a floor before the first and after each; its ratio is
            # the median of the blocks'.
            blocks = leg["blocks"]
            assert len(blocks) == QUICK.fanout_blocks
            assert sum(b["events"] for b in blocks) == QUICK.fanout_events
            assert sum(b["deliveries"] for b in blocks) == leg["received"]
            assert len(leg["socket_floor_runs_us"]) == QUICK.fanout_blocks + 1
            assert all(_positive(us) for us in leg["socket_floor_runs_us"])
            assert _positive(leg["socket_floor_cpu_per_send_us"])
            ratios = sorted(b["ratio"] for b in blocks)
            assert all(_positive(x) for x in ratios)
            assert leg["ratio_to_floor_range"] == [ratios[0], ratios[-1]]
            assert ratios[0] <= leg["ratio_to_floor"] <= ratios[-1]
            assert _positive(leg["commit_to_last_ms"]["p50"]), (system, size)

    for system in systems:
        leg = scen["connections"]["systems"][system]
        assert leg["lost"] == 0, (system, leg)
        assert leg["open_at_end"] == QUICK.connections + 10
        if system == "courtside":  # /ws joins presence; every row goes when its client does
            assert leg["presence_rows_open"] == QUICK.connections + 10
            assert leg["presence_rows_left"] == 0
            assert _positive(leg["presence_gone_s"])
        for key in ("accept_all_s", "rss_per_connection_kb"):
            assert _positive(leg[key]), (system, key, leg[key])

    for clients in map(str, QUICK.write_clients):
        for mode in QUICK.write_modes:
            assert _positive(scen["writes"]["results"][clients][mode]["tps"]), (clients, mode)
        assert _positive(scen["writes"]["results"][clients]["triggers"]["ratio_to_none"])

    resume = scen["resume"]["systems"]["courtside"]
    assert resume["events_replayed"] == resume["expected"] > 0
    assert resume["min_events_per_client"] == QUICK.resume_behind
    assert resume["max_events_per_client"] == QUICK.resume_behind
    assert _positive(resume["caught_up_all_s"])

    measured = {t["target"]: t["measured"] for t in results["targets"]
                if "socketio" not in unavailable or "Socket.IO" not in t["target"]}
    assert all(_positive(v) for v in measured.values()), measured
    assert report.markdown(results).count("| courtside") >= 4


@pytest.mark.timeout(240)
def test_rest_ab_runs_both_checkouts_and_reports_every_kind(tmp_path: Path) -> None:
    """bench.rest_ab with this checkout on both sides: it serves both, alternates blocks
    and reports each kind's latency and CPU for each."""
    out = tmp_path / "ab.json"
    done = _run_module(["bench.rest_ab", "--old", str(ROOT), "--new", str(ROOT), "--block", "3",
                        "--blocks", "2", "--out", str(out)], 220)
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"create", "create, 2 mentions", "edit, 2 mentions", "list (20)",
                            "typing", "users online"}
    for kind, by_version in results.items():
        assert set(by_version) == {"old", "new"}, kind
        for r in by_version.values():
            assert _positive(r["p50_ms"]), (kind, r)
            assert _positive(r["cpu_us"]), (kind, r)
            assert r["p50_ms"] <= r["p90_ms"], (kind, r)
    assert "| list (20) |" in done.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["drop", "stop"])
def test_stream_ends_releases_every_ticket_and_reports_it(tmp_path: Path, case: str) -> None:
    """bench.stream_ends on this checkout: 60 ticket streams of 3 users end at once; every
    ticket comes back released, and the report says how long it took."""
    out = tmp_path / "ends.json"
    _run_module(["bench.stream_ends", "--streams", "60", "--case", case, "--out", str(out)],
                100)
    [result] = json.loads(out.read_text())
    assert (result["side"], result["streams"], result["case"]) == ("new", 60, case)
    assert result["left_held"] == 0, result
    # A stall of the loop may be logged on a busy machine; nothing else may.
    assert set(result["warnings"]) <= {"courtside.loop"}, result
    assert _positive(result["released_s" if case == "drop" else "stopped_s"]), result
    assert result["commits"] > 0, result


@pytest.mark.timeout(120)
def test_sse_fanout_counts_every_delivery_on_both_transports(tmp_path: Path) -> None:
    """bench.sse_fanout on this checkout: 40 subscribers over WebSocket, then over SSE, 5
    events each; every delivery is counted, and the CPU per delivery reported."""
    out = tmp_path / "sse.json"
    _run_module(["bench.sse_fanout", "--streams", "40", "--events", "5", "--out", str(out)],
                100)
    [result] = json.loads(out.read_text())
    assert (result["side"], result["streams"], result["events"]) == ("new", 40, 5)
    for transport in ("ws", "sse"):
        leg = result[transport]
        assert leg["deliveries"] == leg["received"] == 200, result
        assert _positive(leg["cpu_per_delivery_us"]), result
    assert _positive(result["sse_to_ws"]), result
    # 40 streams may fit in memory the server's allocator already holds: a number, not > 0.
    assert stats.finite(result["sse_idle_rss_kb"]), result
