"""Activity rows, captures and the /api/metrics + /api/captures endpoints over a real Site."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock

from llamaswap.observe.activity import ActivityStore, histogram
from llamaswap.observe.activity_api import CapturesResource, MetricsApiResource
from llamaswap.observe.captures import CaptureCache, make_capture
from llamaswap.observe.pipeline import RequestPipeline
from llamaswap.observe.recorder import ActivityRecorder
from llamaswap.observe.types import run_inline

from .http import Served, read_body
from .traffic import drive, sse_body


def make_obs(max_rows: int = 1000, capture_bytes: int = 1 << 20) -> Any:
    """Store, captures, recorder and pipeline wired as the Observability wires them."""
    store = ActivityStore(run_inline, None, max_rows)
    captures = CaptureCache(capture_bytes)
    recorder = ActivityRecorder(store, captures)
    pipeline = RequestPipeline([recorder], keep_body_bytes=capture_bytes)
    return SimpleNamespace(store=store, captures=captures, recorder=recorder, pipeline=pipeline)


def rows(obs: Any, **kw: Any) -> list[dict[str, Any]]:
    """All stored rows (synchronous runner)."""
    from llamaswap.observe.activity import ActivityQuery

    result: list[Any] = []
    obs.store.query(ActivityQuery(limit=999, **kw)).addCallback(result.append)
    return result[0][0]  # type: ignore[no-any-return]


def test_rows_hold_tokens_duration_and_error_text() -> None:
    """A streamed 200 stores its usage; a 502 stores the upstream's error message."""
    obs, clock = make_obs(), Clock()
    clock.advance(1_700_000_000)
    ids: list[int] = []
    obs.recorder.listeners.append(ids.append)
    usage = {"prompt_tokens": 5, "completion_tokens": 7}
    drive([obs.pipeline], clock, content_type="text/event-stream", chunks=sse_body(usage))
    drive([obs.pipeline], clock, status=502, chunks=[b'{"error":{"message":"upstream died"}}'])
    drive([obs.pipeline], clock, method="GET", path="/props")  # GET routes are not recorded
    assert ids == [1, 2]
    second, first = rows(obs)
    assert (first["input_tokens"], first["output_tokens"], first["duration_ms"]) == (5, 7, 2000)
    assert first["error_msg"] is None and first["resp_content_type"] == "text/event-stream"
    assert second["resp_status_code"] == 502 and second["error_msg"] == "upstream died"
    assert second["input_tokens"] == 0


def test_rows_hold_time_to_first_byte() -> None:
    """ttft_ms is arrival to the answer's first body byte; None when no answer was sent."""
    obs, clock = make_obs(), Clock()
    clock.advance(1_700_000_000)
    drive([obs.pipeline], clock, ttfb=0.25, duration=1.0, chunks=[b"data: x\n\n"])
    rec = drive([obs.pipeline], clock, finish=False)
    rec.first_byte_at, rec.status, rec.finished_at = None, None, clock.seconds()
    obs.pipeline.request_finished(rec)
    lost, first = rows(obs)
    assert first["ttft_ms"] == 250
    assert lost["ttft_ms"] is None
    assert [r["id"] for r in rows(obs, sort="ttft", order="desc")] == [first["id"], lost["id"]]


def test_a_file_from_before_ttft_gets_the_column(tmp_path: Any) -> None:
    """An activity file without ttft_ms is upgraded on open; its old rows read as None."""
    import sqlite3

    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE activity (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp REAL NOT NULL,"
        " model TEXT NOT NULL, req_path TEXT NOT NULL, resp_content_type TEXT NOT NULL,"
        " resp_status_code INTEGER NOT NULL, cache_tokens INTEGER NOT NULL,"
        " draft_tokens INTEGER NOT NULL, draft_acc_tokens INTEGER NOT NULL,"
        " input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,"
        " prompt_per_second REAL NOT NULL, tokens_per_second REAL NOT NULL,"
        " duration_ms INTEGER NOT NULL, error_msg TEXT, metadata TEXT)"
    )
    conn.execute("INSERT INTO activity VALUES (1, 1.0, 'm', '/v1/x', '', 200, 0, 0, 0, 1, 2,"
                 " 0, 0, 10, NULL, '{}')")
    conn.commit()
    conn.close()
    store = ActivityStore(run_inline, path)
    row = _row()
    row["ttft_ms"] = 42
    assert store.insert(row) == 2
    got = rows(SimpleNamespace(store=store))
    assert [(r["id"], r["ttft_ms"]) for r in got] == [(2, 42), (1, None)]
    store.close()


def test_in_memory_store_keeps_newest_rows() -> None:
    """metricsMaxInMemory caps the in-memory table to the newest rows."""
    obs, clock = make_obs(max_rows=3), Clock()
    for _ in range(5):
        drive([obs.pipeline], clock)
    assert [r["id"] for r in rows(obs)] == [5, 4, 3]


def _count(path: str) -> int:
    """Rows in the activity table of the file ``path``, read on a connection of its own."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM activity").fetchone()[0])
    finally:
        conn.close()


def test_ids_at_once_rows_with_their_batch(tmp_path: Any) -> None:
    """insert() gives each id at once; the rows reach the database together after the delay."""
    clock = Clock()
    path = str(tmp_path / "activity.db")
    store = ActivityStore(run_inline, path, 1000, clock=clock, batch_delay=0.05)
    assert [store.insert(_row()) for _ in range(3)] == [1, 2, 3]
    assert _count(path) == 0 and clock.getDelayedCalls()
    clock.advance(0.05)
    assert _count(path) == 3 and not clock.getDelayedCalls()


def test_query_sees_rows_still_waiting() -> None:
    """A query inserts the waiting rows first, so nothing inserted before it is missing."""
    clock = Clock()
    store = ActivityStore(run_inline, None, 1000, clock=clock, batch_delay=10)
    store.insert(_row())
    store.insert(_row())
    assert [r["id"] for r in rows(SimpleNamespace(store=store))] == [2, 1]
    assert not clock.getDelayedCalls()  # the batch timer went with the rows


def test_full_batch_goes_at_once_and_close_flushes(tmp_path: Any) -> None:
    """MAX_BATCH waiting rows go without waiting for the timer; close() keeps the rest."""
    from llamaswap.observe.activity import MAX_BATCH

    clock = Clock()
    path = str(tmp_path / "activity.db")
    store = ActivityStore(run_inline, path, 1, clock=clock, batch_delay=10)
    for _ in range(MAX_BATCH):
        store.insert(_row())
    assert _count(path) == MAX_BATCH
    assert store.insert(_row()) == MAX_BATCH + 1
    store.close()
    assert _count(path) == MAX_BATCH + 1


def test_file_store_ids_go_on_after_reopen(tmp_path: Any) -> None:
    """A reopened file store counts on from the highest id it holds, never reusing one."""
    path = str(tmp_path / "activity.db")
    store = ActivityStore(run_inline, path, 1)
    assert [store.insert(_row()) for _ in range(3)] == [1, 2, 3]
    store.close()
    again = ActivityStore(run_inline, path, 1)
    assert again.insert(_row()) == 4
    assert [r["id"] for r in rows(SimpleNamespace(store=again))] == [4, 3, 2, 1]


def test_unreadable_file_fails_when_the_store_is_built(tmp_path: Any) -> None:
    """A file that is not an SQLite database is refused at once, not at the first insert."""
    import sqlite3

    path = tmp_path / "activity.db"
    path.write_bytes(b"not a database, " * 100)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        ActivityStore(run_inline, str(path), 1)


def test_a_batch_that_fails_is_logged_and_the_store_goes_on() -> None:
    """A batch SQLite refuses is reported with its row count; later rows are stored."""
    from twisted.logger import capturedLogs, formatEvent

    store = ActivityStore(run_inline, None, 1000)
    broken = _row()
    broken["model"] = None  # NOT NULL
    with capturedLogs() as events:
        store.insert(broken)
        store.insert(_row())
    lost = [formatEvent(e) for e in events if e.get("log_level") is not None]
    assert len(lost) == 1 and lost[0].startswith("activity store: 1 row(s) lost: ")
    assert "NOT NULL" in lost[0]
    assert [r["id"] for r in rows(SimpleNamespace(store=store))] == [2]


def test_a_query_that_fails_after_lost_rows_reports_both(tmp_path: Any) -> None:
    """The rows a failing query inserted first are logged as lost; the query fails to its caller."""
    import sqlite3

    from twisted.logger import capturedLogs, formatEvent

    from llamaswap.observe.activity import ActivityQuery

    path = str(tmp_path / "activity.db")
    store = ActivityStore(run_inline, path, 1, clock=Clock(), batch_delay=10)
    other = sqlite3.connect(path)
    other.execute("DROP TABLE activity")
    other.close()
    store.insert(_row())
    failures: list[Any] = []
    with capturedLogs() as events:
        store.query(ActivityQuery()).addErrback(failures.append)
    assert [formatEvent(e) for e in events] == [
        "activity store: 1 row(s) lost: no such table: activity"
    ]
    assert failures and failures[0].check(sqlite3.OperationalError)


def test_a_file_written_by_two_stores_says_so(tmp_path: Any) -> None:
    """Ids taken by another process's rows: the lost batch names the file and the likely cause."""
    from twisted.logger import capturedLogs, formatEvent

    path = str(tmp_path / "activity.db")
    first, second = ActivityStore(run_inline, path, 1), ActivityStore(run_inline, path, 1)
    first.insert(_row())
    with capturedLogs() as events:
        second.insert(_row())
    assert [formatEvent(e) for e in events] == [
        f"activity store: 1 row(s) lost: their ids are taken in {path}; "
        "does another llamaswap use it?"
    ]


def test_capture_and_event_do_not_wait_for_the_database() -> None:
    """The recorder files the capture and announces the row before its batch is stored."""
    from twisted.internet.defer import Deferred

    jobs: list[Any] = []

    def later(work: Any) -> Deferred[Any]:
        jobs.append(work)
        return Deferred()

    store = ActivityStore(later, None, 1000)
    captures = CaptureCache(1 << 20)
    recorder = ActivityRecorder(store, captures)
    announced: list[int] = []
    recorder.listeners.append(announced.append)
    drive([RequestPipeline([recorder], keep_body_bytes=1 << 20)], Clock())
    assert announced == [1] and 1 in captures
    assert len(jobs) == 1  # the row itself is still on its way to the thread


def _row() -> dict[str, Any]:
    """A minimal activity row."""
    from llamaswap.observe.activity import COLUMNS

    row: dict[str, Any] = dict.fromkeys(COLUMNS, 0)
    row.update(model="m", req_path="/v1/chat/completions", resp_content_type="", error_msg=None)
    row["metadata"] = {}
    return row


def test_file_store_survives_reopen(tmp_path: Any) -> None:
    """store.path keeps rows across store instances."""
    path = str(tmp_path / "activity.db")
    store = ActivityStore(run_inline, path, 1)
    pipeline = RequestPipeline([ActivityRecorder(store, CaptureCache(0))])
    for _ in range(3):
        drive([pipeline], Clock())
    store.close()
    again = SimpleNamespace(store=ActivityStore(run_inline, path, 1))
    assert len(rows(again)) == 3


def test_captures_redact_and_follow_path_rules() -> None:
    """Secrets are redacted, Content-Encoding dropped; image generation keeps no response body."""
    cap = make_capture(
        1, "/v1/images/generations", 200,
        {"authorization": "Bearer sk", "x-api-key": "k", "content-type": "application/json"},
        b"{}", {"content-encoding": "gzip", "set-cookie": "a=b"}, b"PNG",
    )  # fmt: skip
    assert cap.req_headers == {
        "Authorization": "[REDACTED]",
        "X-Api-Key": "[REDACTED]",
        "Content-Type": "application/json",
    }
    assert cap.resp_headers == {"Set-Cookie": "[REDACTED]"} and cap.resp_body is None
    failed = make_capture(2, "/v1/chat/completions", 500, {}, b"q", {}, b"err")
    assert failed.resp_body is None and failed.req_body == b"q"


def test_capture_headers_come_back_as_given() -> None:
    """Packed headers unpack to the same names and values: empty, colons, Latin-1, none."""
    headers = {"X-Empty": "", "X-Colons": "a: b:c", "X-Latin": "caf\xe9", "Accept": "*/*"}
    cap = make_capture(3, "/v1/chat/completions", 200, headers, b"{}", {}, b"ok")
    assert cap.req_headers == headers
    assert cap.resp_headers == {}


def test_capture_cache_evicts_oldest_and_refuses_oversize() -> None:
    """The cache stays within its size, evicting oldest first; an item bigger than it is refused."""
    cache = CaptureCache(100)
    for i in range(1, 4):
        assert cache.add(make_capture(i, "/v1/completions", 200, {}, b"x" * 40, {}, None))
    assert 1 not in cache and 2 in cache and 3 in cache
    assert not cache.add(make_capture(9, "/v1/completions", 200, {}, b"x" * 101, {}, None))


def test_histogram_rules() -> None:
    """Bin count clamp(ceil(log2 n)+1, 5, 20), one bin for one value, linear percentiles."""
    assert histogram([]) is None
    one = histogram([3.0, 3.0])
    assert one is not None and one["bins"] == [2] and one["binSize"] == 0
    h = histogram([float(v) for v in range(1, 101)])
    assert h is not None
    assert len(h["bins"]) == 8 and sum(h["bins"]) == 100 and h["bins"][-1] > 0
    assert h["p50"] == 50.5 and abs(h["p99"] - 99.01) < 1e-9


@pytest.fixture
def api() -> Any:
    """The metrics and captures resources on a real port with 30 recorded requests."""
    obs, clock = make_obs(), Clock()
    clock.advance(1_700_000_000)
    for i in range(30):
        body = json.dumps(
            {
                "usage": {"prompt_tokens": i + 1, "completion_tokens": 2},
                "timings": {"predicted_per_second": float(i + 1)},
            }
        ).encode()
        drive([obs.pipeline], clock, model="a" if i % 2 else "b", chunks=[body],
              req_headers={"Authorization": "Bearer secret"})  # fmt: skip
    app = SimpleNamespace(extras={"observability": obs})
    server = Served(
        {b"api": _api_root(MetricsApiResource(lambda: app), CapturesResource(lambda: app))}
    )
    yield server
    server.stop()


def _api_root(metrics: Any, captures: Any) -> Any:
    from twisted.web.resource import Resource

    root = Resource()
    root.putChild(b"metrics", metrics)
    root.putChild(b"captures", captures)
    return root


def get_json(api: Any, path: str) -> Any:
    """GET ``path``; fires with (status, decoded JSON body)."""

    @inlineCallbacks
    def go() -> Any:
        response = yield api.get(path)
        body = yield read_body(response).done
        return response.code, json.loads(body)

    return go()


@pytest_twisted.inlineCallbacks
def test_activity_paging_filter_and_sort(api: Any) -> Any:
    """model filter, limit/page, sort and order shape the page; totals count all matches."""
    code, body = yield get_json(
        api, "/api/metrics/activity?model=a&limit=4&page=2&sort=prompt&order=asc"
    )
    assert code == 200 and body["total"] == 15 and body["total_pages"] == 4
    assert [r["tokens"]["input_tokens"] for r in body["data"]] == [10, 12, 14, 16]
    row = body["data"][0]
    assert row["model"] == "a" and row["has_capture"] is True and "error_msg" not in row
    assert row["timestamp"].count("T") == 1
    code, body = yield get_json(api, "/api/metrics/activity?min_id=3&max_id=5")
    assert [r["id"] for r in body["data"]] == [5, 4, 3]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=x", "invalid limit"),
        ("limit=1000", "limit must be between 1 and 999"),
        ("page=0", "page must be >= 1"),
        ("sort=nope", "invalid sort column"),
        ("order=up", "order must be asc or desc"),
        ("start=yesterday", "invalid 'start' timestamp, use RFC3339 format"),
        ("end=2024-01-01", "invalid 'end' timestamp, use RFC3339 format"),
        ("start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z", "start must be before end"),
        ("min_id=0", "min_id must be >= 1"),
        ("max_id=-1", "max_id must be >= 1"),
        ("min_id=5&max_id=2", "min_id must be <= max_id"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_activity_parameter_errors(api: Any, query: str, message: str) -> Any:
    """Each bad parameter is a 400 with the SPEC §7.2 message."""
    code, body = yield get_json(api, f"/api/metrics/activity?{query}")
    assert code == 400 and body["error"]["message"] == message


@pytest_twisted.inlineCallbacks
def test_stats_and_captures(api: Any) -> Any:
    """Stats total tokens per model; a capture returns base64 bodies with redacted headers."""
    code, stats = yield get_json(api, "/api/metrics/stats?model=b")
    assert stats["total_requests"] == 15 and stats["total_output_tokens"] == 30
    assert stats["gen_histogram"]["min"] == 1.0 and stats["prompt_histogram"] is None
    code, cap = yield get_json(api, "/api/captures/1")
    assert code == 200 and cap["req_headers"]["Authorization"] == "[REDACTED]"
    assert json.loads(base64.b64decode(cap["resp_body"]))["usage"]["prompt_tokens"] == 1
    code, body = yield get_json(api, "/api/captures/abc")
    assert code == 400 and body["error"]["message"] == "invalid capture ID"
    code, body = yield get_json(api, "/api/captures/999")
    assert code == 404 and body["error"]["message"] == "capture not found"


def test_store_remembers_gpu_memory_across_reopen(tmp_path: Any) -> None:
    """Measured GPU memory per model survives closing and reopening a file store."""
    path = str(tmp_path / "activity.db")
    store = ActivityStore(run_inline, path, 1)
    store.save_memory("a", {0: 4096, 1: 1024}, 100.0)
    store.save_memory("a", {0: 5000}, 200.0)
    store.save_memory("b", {1: 7}, 200.0)
    store.close()
    loaded: list[Any] = []
    ActivityStore(run_inline, path, 1).load_memory().addCallback(loaded.append)
    assert loaded == [{"a": {0: 5000}, "b": {1: 7}}]
