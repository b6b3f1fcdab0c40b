"""The bridge's pure parts, without a database: decoding, sequencing, queue bounds, backoff."""

from __future__ import annotations

import random

import orjson
import pytest

from bridge.backoff import Backoff
from bridge.errors import NotifyDecodeError
from bridge.events import Control, Event, Reset
from bridge.notify import Durable, Ephemeral, decode
from bridge.sequencer import LogRead, TopicSequencer
from bridge.subqueue import BoundedQueue

T = "session:00000000-0000-0000-0000-000000000001"


def ev(seq: int | None, data: bytes = b'{"n":1}', topic: str = T) -> Event:
    return Event(topic, seq, "comment.created", None, data)


def seqs(items: list[Event | Reset]) -> list[object]:
    return [i.seq if isinstance(i, Event) else ("reset", i.seq) for i in items]


# --- decoding --------------------------------------------------------------------------------

def test_decode_full_durable_event_keeps_payload_bytes_and_order() -> None:
    # The text PostgreSQL sends: jsonb's output, with spaces, keys in jsonb order.
    raw = ('{"d": {"comment": {"id": "c1", "content": "hé"}}, "e": "comment.created", '
           '"k": "e", "o": "sock-1", "s": 7, "t": "' + T + '"}')
    notice = decode(raw)
    assert isinstance(notice, Durable)
    assert (notice.topic, notice.seq) == (T, 7)
    assert notice.event is not None
    assert notice.event.type == "comment.created"
    assert notice.event.origin == "sock-1"
    assert notice.event.data == '{"comment":{"id":"c1","content":"hé"}}'.encode()
    assert notice.event.payload == {"comment": {"id": "c1", "content": "hé"}}


def test_decode_stub_has_no_event() -> None:
    notice = decode('{"k": "e", "s": 12, "t": "user:u1"}')
    assert notice == Durable("user:u1", 12, None)


def test_decode_ephemeral_and_control() -> None:
    eph = decode('{"d": {"isTyping": true}, "e": "user.typing", "k": "x", "o": null, "t": "' + T
                 + '"}')
    assert isinstance(eph, Ephemeral)
    assert eph.event.seq is None
    assert eph.event.type == "user.typing"
    assert eph.event.data == b'{"isTyping":true}'
    ctl = decode('{"d": {"tokenId": 3, "userId": "u"}, "e": "token.revoked", "k": "c"}')
    assert ctl == Control("token.revoked", {"tokenId": 3, "userId": "u"})


@pytest.mark.parametrize("raw", [
    "not json", "[]", '{"k": "z"}', '{"k": "e", "t": "a"}', '{"k": "e", "t": "a", "s": 0}',
    '{"k": "e", "t": "a", "s": "3"}', '{"k": "e", "t": 5, "s": 3}', '{"k": "e", "t": "a",'
    ' "s": true}', '{"k": "x", "t": "a", "e": "user.typing"}', '{"k": "c", "e": "x", "d": 1}',
    '{"k": "e", "t": "a", "s": 2, "e": "x", "o": 5, "d": {}}',
])
def test_decode_rejects_malformed(raw: str) -> None:
    with pytest.raises(NotifyDecodeError):
        decode(raw)


def test_event_encodes_once_per_key() -> None:
    event = ev(1)
    calls: list[str] = []

    def frame(e: Event) -> bytes:
        calls.append("ws")
        return b'{"event":"' + e.type.encode() + b'","data":' + e.data + b"}"

    first = event.encoded("ws", frame)
    assert event.encoded("ws", frame) is first
    assert calls == ["ws"]
    assert orjson.loads(first) == {"event": "comment.created", "data": {"n": 1}}
    assert event.encoded("sse", lambda e: b"x") == b"x"


# --- sequencing ------------------------------------------------------------------------------

def ready(head: int, buffer_limit: int = 100) -> TopicSequencer:
    seq = TopicSequencer(T, buffer_limit)
    items, done = seq.on_log(LogRead([], head, False, seq.epoch))
    assert (items, done) == ([], True)
    return seq


def test_new_topic_is_repairing_until_the_first_read_and_holds_live_notices() -> None:
    seq = TopicSequencer(T)
    assert seq.repairing
    assert not seq.initialized
    assert seq.on_notice(5, ev(5)) == (None, False)  # held
    assert seq.on_notice(6, ev(6)) == (None, False)
    # The read's snapshot had counter 5: 5 is old news, 6 is live.
    items, done = seq.on_log(LogRead([], 5, False, seq.epoch))
    assert seqs(items) == [6]
    assert done
    assert seq.head == 6
    assert not seq.repairing


def test_in_order_live_events_pass_and_duplicates_drop() -> None:
    seq = ready(3)
    assert seq.on_notice(4, ev(4))[0] == ev(4)
    assert seq.on_notice(4, ev(4)) == (None, False)
    assert seq.on_notice(2, ev(2)) == (None, False)
    assert seq.head == 4


def test_gap_triggers_repair_and_log_fills_the_hole_without_duplicates() -> None:
    seq = ready(3)
    assert seq.on_notice(6, ev(6)) == (None, True)  # 4 and 5 missing
    assert seq.repairing
    assert seq.on_notice(7, ev(7)) == (None, False)  # held during the repair
    assert seq.on_notice(5, ev(5)) == (None, False)  # a late duplicate is held, then dropped
    items, done = seq.on_log(LogRead([ev(4), ev(5), ev(6)], 6, False, seq.epoch))
    assert seqs(items) == [4, 5, 6, 7]
    assert done
    assert seq.head == 7


def test_stub_is_fetched_from_the_log() -> None:
    seq = ready(1)
    assert seq.on_notice(2, None) == (None, True)
    items, done = seq.on_log(LogRead([ev(2, b'{"big":true}')], 2, False, seq.epoch))
    assert seqs(items) == [2]
    assert done
    assert items[0] == ev(2, b'{"big":true}')


def test_stub_held_during_repair_forces_another_read() -> None:
    seq = ready(1)
    seq.on_notice(3, ev(3))
    seq.on_notice(4, None)  # a stub arrives while the hole is being read
    items, done = seq.on_log(LogRead([ev(2), ev(3)], 3, False, seq.epoch))
    assert seqs(items) == [2, 3]
    assert not done
    assert seq.repairing
    items, done = seq.on_log(LogRead([ev(4)], 4, False, seq.epoch))
    assert seqs(items) == [4]
    assert done


def test_full_page_means_read_again() -> None:
    seq = ready(0)
    seq.on_notice(5, ev(5))
    items, done = seq.on_log(LogRead([ev(1), ev(2)], 5, True, seq.epoch))
    assert seqs(items) == [1, 2]
    assert not done
    items, done = seq.on_log(LogRead([ev(3), ev(4), ev(5)], 5, False, seq.epoch))
    assert seqs(items) == [3, 4, 5]
    assert done


def test_pruned_hole_gives_reset_never_a_silent_gap() -> None:
    seq = ready(3)
    seq.on_notice(9, ev(9))
    items, done = seq.on_log(LogRead([ev(7), ev(8), ev(9)], 9, False, seq.epoch))
    assert items == [Reset(T, 9)]
    assert done
    assert seq.head == 9
    seq2 = ready(3)
    seq2.request_repair()
    items, done = seq2.on_log(LogRead([], 9, False, seq2.epoch))
    assert items == [Reset(T, 9)]
    assert done


def test_counter_going_backwards_resets() -> None:
    seq = ready(10)
    seq.request_repair()
    items, done = seq.on_log(LogRead([], 2, False, seq.epoch))
    assert items == [Reset(T, 2)]
    assert done
    assert seq.head == 2


def test_reconnect_during_a_read_in_flight_forces_another_read() -> None:
    seq = ready(2)
    assert seq.on_notice(4, ev(4)) == (None, True)
    stale_epoch = seq.epoch
    assert seq.request_repair() is False  # already repairing: the caller has it scheduled
    items, done = seq.on_log(LogRead([ev(3), ev(4)], 4, False, stale_epoch))
    assert seqs(items) == [3, 4]
    assert not done
    assert seq.repairing
    items, done = seq.on_log(LogRead([], 4, False, seq.epoch))
    assert items == []
    assert done
    assert seq.completed_epoch == seq.epoch


def test_request_repair_on_a_quiet_topic_schedules_a_read() -> None:
    seq = ready(2)
    assert seq.request_repair() is True
    assert seq.on_notice(3, ev(3)) == (None, False)  # held, not delivered ahead of the read
    items, done = seq.on_log(LogRead([], 2, False, seq.epoch))
    assert seqs(items) == [3]
    assert done


def test_buffer_overflow_remembers_the_highest_seq_and_reads_again() -> None:
    seq = ready(0, buffer_limit=2)
    seq.on_notice(2, ev(2))  # gap: repair
    for n in range(3, 8):
        seq.on_notice(n, ev(n))  # only 2 and 3 are held
    assert seq.held == 2
    items, done = seq.on_log(LogRead([ev(1), ev(2)], 2, False, seq.epoch))
    assert seqs(items) == [1, 2, 3]
    assert not done
    items, done = seq.on_log(LogRead([ev(n) for n in range(4, 8)], 7, False, seq.epoch))
    assert seqs(items) == [4, 5, 6, 7]
    assert done


def test_random_interleavings_deliver_every_seq_once_in_order() -> None:
    # Notifications lost, duplicated, stubbed, reordered; reads at random moments: the
    # output is always 1..N exactly once.
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 40)
        committed = [ev(i) for i in range(1, n + 1)]
        seq = ready(0, buffer_limit=rng.randint(0, 5))
        out: list[Event | Reset] = []
        pending_read = False
        notices = [i for i in range(1, n + 1) if rng.random() > 0.2]
        notices += rng.sample(range(1, n + 1), k=min(n, 3))  # duplicates
        visible = 0
        for i in notices:
            visible = max(visible, i)
            event = None if rng.random() < 0.1 else ev(i)
            deliver, repair = seq.on_notice(i, event)
            if deliver is not None:
                out.append(deliver)
            pending_read = pending_read or repair
            if pending_read and rng.random() < 0.5:
                page = rng.randint(1, 5)
                rows = [e for e in committed if e.seq is not None and seq.head is not None
                        and seq.head < e.seq <= visible][:page]
                items, done = seq.on_log(LogRead(rows, visible, len(rows) == page, seq.epoch))
                out.extend(items)
                pending_read = not done
        while seq.repairing or seq.head != n:
            seq.request_repair()
            rows = [e for e in committed if e.seq is not None and seq.head is not None
                    and e.seq > seq.head][:3]
            items, _ = seq.on_log(LogRead(rows, n, len(rows) == 3, seq.epoch))
            out.extend(items)
        assert seqs(out) == list(range(1, n + 1))


# --- queue bounds ----------------------------------------------------------------------------

def test_queue_bounded_by_items() -> None:
    q = BoundedQueue(max_items=3, max_bytes=10_000)
    assert all(q.push(ev(i)) for i in range(1, 4))
    assert q.push(ev(4)) is False
    assert len(q) == 3
    assert q.pop() == ev(1)
    assert q.push(ev(4)) is True
    assert [q.pop(), q.pop(), q.pop(), q.pop()] == [ev(2), ev(3), ev(4), None]


def test_queue_bounded_by_bytes_but_takes_one_oversized_item_when_empty() -> None:
    q = BoundedQueue(max_items=100, max_bytes=10)
    big = ev(1, b"x" * 50)
    assert q.push(big) is True  # alone it is allowed: a big event is still deliverable
    assert q.push(ev(2, b"12")) is False
    assert q.pop() is big
    assert q.nbytes == 0
    assert q.push(ev(2, b"12345"))
    assert q.push(ev(3, b"12345"))
    assert q.push(ev(4, b"1")) is False
    assert q.nbytes == 10
    q.clear()
    assert len(q) == 0
    assert q.nbytes == 0


def test_queue_rejects_silly_bounds() -> None:
    with pytest.raises(ValueError, match="positive"):
        BoundedQueue(0, 1)


# --- backoff ---------------------------------------------------------------------------------

def test_backoff_doubles_caps_and_jitters() -> None:
    b = Backoff(0.1, 1.0, rng=random.Random(1))
    delays = [b.next() for _ in range(8)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for d, base in zip(delays, bases, strict=True):
        assert base / 2 <= d <= base
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert 0.05 <= b.next() <= 0.1
