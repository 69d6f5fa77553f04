from __future__ import annotations

import json
import math
import warnings

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys.data.schema import EVENT_COLUMNS
from recsys.errors import DataError
from recsys.features.events import (
    Event,
    EventLog,
    TornRecordWarning,
    events_from_frame,
    events_to_frame,
    validate_event,
    validate_events,
)


def _events(n: int, user: str = "u1", start: float = 1000.0) -> list[dict]:
    return [
        {"user_id": user, "item_id": f"i{k}", "timestamp": start + k, "event_type": "click"}
        for k in range(n)
    ]


def test_valid_events_kept_invalid_rejected_with_reasons(tmp_path):
    log = EventLog(tmp_path)
    batch = [
        {"user_id": "u1", "item_id": "i1", "timestamp": 10.0},
        {"item_id": "i1", "timestamp": 10.0},
        {"user_id": "u1", "item_id": "i2", "timestamp": "yesterday"},
        {"user_id": "u1", "item_id": "i3", "timestamp": 11.0, "value": math.nan},
        {"user_id": "u1", "item_id": "i4", "timestamp": -5},
        {"user_id": "u1", "item_id": "", "timestamp": 12.0},
        {"user_id": "u1", "item_id": "i5", "timestamp": 12.0, "device": {"nested": 1}},
        "not an event",
        {"user_id": 7, "item_id": 8, "timestamp": 13, "device": "mobile"},
    ]
    result = log.append(batch)
    assert result.accepted == 2
    reasons = {r.index: r.reason for r in result.rejected}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert reasons[1].startswith("user_id:")
    assert reasons[2].startswith("timestamp:")
    assert reasons[3].startswith("value:")
    assert reasons[4].startswith("timestamp:")
    assert reasons[5].startswith("item_id:")
    assert reasons[6].startswith("context.device:")
    assert reasons[7].startswith("event:")
    stored = list(EventLog(tmp_path).read())
    assert [e.item_id for e in stored] == ["i1", "8"]
    assert stored[1].user_id == "7" and stored[1].context == {"device": "mobile"}


def test_validate_event_defaults_and_context():
    event = validate_event(
        {"user_id": "u", "item_id": "i", "timestamp": 5, "context": {"a": 1}, "b": "x"}
    )
    assert event == Event("u", "i", 5.0, "interaction", 1.0, "", {"a": 1, "b": "x"})
    valid, rejected = validate_events([event, {"user_id": "u"}])
    assert len(valid) == 1 and len(rejected) == 1


def test_acknowledged_batches_are_on_disk_before_append_returns(tmp_path):
    log = EventLog(tmp_path)
    log.append(_events(3))
    # a second, independent reader sees the batch without the writer closing anything
    text = (tmp_path / "events-000001.jsonl").read_text()
    assert len(text.splitlines()) == 3
    assert [e.item_id for e in EventLog(tmp_path).read()] == ["i0", "i1", "i2"]


def test_segments_roll_and_replay_orders_by_time(tmp_path):
    log = EventLog(tmp_path, segment_max_events=3)
    batch = [
        {"user_id": "u1", "item_id": "a", "timestamp": 30.0},
        {"user_id": "u1", "item_id": "b", "timestamp": 10.0},
        {"user_id": "u2", "item_id": "c", "timestamp": 20.0},
        {"user_id": "u2", "item_id": "d", "timestamp": 10.0},
        {"user_id": "u3", "item_id": "e", "timestamp": 5.0},
    ]
    log.append(batch[:2])
    log.append(batch[2:])
    log.append(_events(3, "u4", start=1.0))
    assert [p.name for p in log.segments()] == [
        "events-000001.jsonl",
        "events-000002.jsonl",
        "events-000003.jsonl",
    ]
    assert [e.item_id for e in log.read()] == ["a", "b", "c", "d", "e", "i0", "i1", "i2"]
    # time order, ties (b and d at 10.0) keep arrival order
    assert [e.item_id for e in log.replay()] == ["i0", "i1", "i2", "e", "b", "d", "c", "a"]
    assert [e.item_id for e in log.replay(start=10.0, end=30.0)] == ["b", "d", "c"]
    assert len(log) == 8


def test_reopened_log_appends_to_last_segment(tmp_path):
    EventLog(tmp_path, segment_max_events=10).append(_events(4))
    log = EventLog(tmp_path, segment_max_events=10)
    log.append(_events(2, start=2000.0))
    assert len(log.segments()) == 1
    assert len(log) == 6


@pytest.mark.parametrize("newline_after_garbage", [False, True])
def test_torn_last_record_is_skipped_at_every_cut_point(tmp_path, newline_after_garbage):
    base = tmp_path / "base"
    log = EventLog(base)
    log.append(_events(5))
    log.close()
    data = (base / "events-000001.jsonl").read_bytes()
    last_start = data[:-1].rfind(b"\n") + 1
    # a crash can stop the last record's write after any byte
    for cut in range(last_start + 1, len(data) - 1):
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        torn = data[:cut] + (b"\n" if newline_after_garbage else b"")
        (folder / "events-000001.jsonl").write_bytes(torn)
        with pytest.warns(TornRecordWarning, match="torn record"):
            events = list(EventLog(folder).read())
        assert [e.item_id for e in events] == ["i0", "i1", "i2", "i3"], cut


def test_writer_after_a_crash_never_appends_to_the_torn_segment(tmp_path):
    log = EventLog(tmp_path)
    log.append(_events(3))
    log.close()
    with open(tmp_path / "events-000001.jsonl", "ab") as handle:
        handle.write(b'{"user_id":"u1","item_id":"i9","timest')
    recovered = EventLog(tmp_path)
    result = recovered.append(_events(2, "u2", start=5000.0))
    assert result.accepted == 2
    assert [p.name for p in recovered.segments()] == ["events-000001.jsonl", "events-000002.jsonl"]
    with pytest.warns(TornRecordWarning):
        items = [e.item_id for e in recovered.read()]
    assert items == ["i0", "i1", "i2", "i0", "i1"]


def test_corruption_inside_a_segment_is_an_error_naming_the_line(tmp_path):
    log = EventLog(tmp_path)
    log.append(_events(3))
    path = tmp_path / "events-000001.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"#garbage#"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match="line 2 is corrupt"):
        list(EventLog(tmp_path).read())


def test_forget_rewrites_segments_without_the_user(tmp_path):
    log = EventLog(tmp_path, segment_max_events=4)
    batch = []
    for k in range(10):
        batch.append({"user_id": "alice", "item_id": f"a{k}", "timestamp": float(k)})
        batch.append({"user_id": "bob", "item_id": f"b{k}", "timestamp": float(k)})
    log.append(batch)
    assert log.forget("alice") == 10
    assert all(b"alice" not in p.read_bytes() for p in tmp_path.iterdir())
    assert not list(tmp_path.glob("*.tmp"))
    remaining = list(EventLog(tmp_path).read())
    assert [e.item_id for e in remaining] == [f"b{k}" for k in range(10)]
    # the log keeps working after the rewrite
    log.append([{"user_id": "carol", "item_id": "c", "timestamp": 99.0}])
    assert len(log) == 11
    assert log.forget("nobody") == 0


def test_frame_round_trip_keeps_schema_and_context():
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i2"],
            "timestamp": [1.0, 2.0],
            "event_type": ["click", "view"],
            "value": [1.0, 3.5],
            "session_id": ["s1", ""],
            "device": ["mobile", "desktop"],
        }
    )
    events = events_from_frame(frame)
    assert events[1] == Event("u2", "i2", 2.0, "view", 3.5, "", {"device": "desktop"})
    back = events_to_frame(events)
    pd.testing.assert_frame_equal(back[frame.columns], frame)
    assert json.loads(events[0].to_json())["context"] == {"device": "mobile"}


def test_segment_size_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="segment_max_events"):
        EventLog(tmp_path, segment_max_events=0)


def test_reading_an_intact_log_does_not_warn(tmp_path):
    log = EventLog(tmp_path)
    log.append(_events(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(log.read())) == 3


_WRITER = """
import sys
from recsys.features.events import EventLog

log = EventLog(sys.argv[1], segment_max_events=5000)
batch = 0
while True:
    events = [
        {"user_id": f"u{batch}", "item_id": f"i{k}", "timestamp": float(batch * 1000 + k),
         "context": {"pad": "x" * 200}}
        for k in range(200)
    ]
    log.append(events)
    print(batch, flush=True)  # the acknowledgement
    batch += 1
"""


def test_a_writer_killed_mid_stream_loses_no_acknowledged_batch(tmp_path):
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    acknowledged = []
    try:
        while len(acknowledged) < 15:
            line = child.stdout.readline()
            assert line, "writer died early"
            acknowledged.append(int(line))
    finally:
        child.kill()  # SIGKILL: no cleanup, possibly mid-write
        child.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornRecordWarning)  # a tear is allowed, not required
        events = list(EventLog(tmp_path).read())
    users = {e.user_id for e in events}
    assert {f"u{b}" for b in acknowledged} <= users
    # every acknowledged batch is complete, and only the unacknowledged tail may be partial
    for b in acknowledged:
        assert sum(e.user_id == f"u{b}" for e in events) == 200
    # and the log accepts writes again after the crash
    assert EventLog(tmp_path).append([{"user_id": "z", "item_id": "i", "timestamp": 1.0}]).accepted


@given(
    user=st.text(min_size=1).filter(lambda s: not s.isspace()),
    item=st.text(min_size=1).filter(lambda s: not s.isspace()),
    timestamp=st.floats(min_value=0, max_value=1e12, allow_nan=False),
    value=st.floats(allow_nan=False, allow_infinity=False),
    context=st.dictionaries(
        st.text(max_size=5).filter(lambda k: k not in EVENT_COLUMNS and k != "context"),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
        max_size=3,
    ),
)
def test_the_hand_written_json_line_equals_the_generic_encoder(
    user, item, timestamp, value, context
):
    raw = {"user_id": user, "item_id": item, "timestamp": timestamp, "value": value, **context}
    event = validate_event(raw)
    line = event.to_json()
    assert line == json.dumps(event.to_record(), separators=(",", ":"), ensure_ascii=False)
    assert Event.from_record(json.loads(line)) == event


def _append_batches(directory: str, writer: int, batches: int) -> None:
    from recsys.features.events import Event, EventLog

    log = EventLog(directory, segment_max_events=37)
    for b in range(batches):
        log.write([Event(f"w{writer}", f"i{b}-{j}", float(b)) for j in range(5)])
    log.close()


def _forget_repeatedly(directory: str, times: int) -> None:
    from recsys.features.events import Event, EventLog

    log = EventLog(directory, segment_max_events=37)
    for _ in range(times):
        log.write([Event("x", "y", 0.0)])
        log.forget("x")  # rewrites the segment the other writers append to
    log.close()


def test_several_processes_share_one_log_without_losing_events(tmp_path):
    """Server workers append to one log (and one erases) concurrently: every event lands."""
    import multiprocessing

    from recsys.features.events import EventLog

    ctx = multiprocessing.get_context("spawn")
    directory = str(tmp_path / "shared")
    procs = [ctx.Process(target=_append_batches, args=(directory, w, 60)) for w in range(2)]
    procs.append(ctx.Process(target=_forget_repeatedly, args=(directory, 20)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    events = list(EventLog(directory).read())
    by_writer = {w: sorted(e.item_id for e in events if e.user_id == f"w{w}") for w in range(2)}
    expected = sorted(f"i{b}-{j}" for b in range(60) for j in range(5))
    assert by_writer == {0: expected, 1: expected}
    assert not [e for e in events if e.user_id == "x"]  # the erasures held too
