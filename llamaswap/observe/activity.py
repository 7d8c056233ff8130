"""The activity store: one SQLite row per finished inference request (SPEC §7.1).

Every database call runs through the injected thread runner, so the reactor never waits on
SQLite. One connection is shared, serialised by a lock. In-memory stores keep only the newest
``max_in_memory`` rows; file stores (WAL) keep everything.

Inserts are batched: a row waits up to ``batch_delay`` seconds (or until ``MAX_BATCH`` rows
wait) and goes to the thread with the others, so a busy proxy pays one thread hand-off per
batch instead of one per request. Every other call inserts the waiting rows first, in the
same thread job, so a query always sees every row inserted before it.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from llamaswap.observe.types import RunInThread

COLUMNS = (
    "timestamp", "model", "req_path", "resp_content_type", "resp_status_code",
    "cache_tokens", "draft_tokens", "draft_acc_tokens", "input_tokens", "output_tokens",
    "prompt_per_second", "tokens_per_second", "duration_ms", "error_msg", "metadata",
)  # fmt: skip
SORT_COLUMNS = {
    "id": "id", "time": "timestamp", "model": "model", "req_path": "req_path",
    "resp_status_code": "resp_status_code", "resp_content_type": "resp_content_type",
    "cached": "cache_tokens", "prompt": "input_tokens", "generated": "output_tokens",
    "drafted": "draft_tokens", "prompt_speed": "prompt_per_second",
    "gen_speed": "tokens_per_second", "duration": "duration_ms",
}  # fmt: skip
SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp REAL NOT NULL, model TEXT NOT NULL, req_path TEXT NOT NULL,
    resp_content_type TEXT NOT NULL, resp_status_code INTEGER NOT NULL,
    cache_tokens INTEGER NOT NULL, draft_tokens INTEGER NOT NULL,
    draft_acc_tokens INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, prompt_per_second REAL NOT NULL,
    tokens_per_second REAL NOT NULL, duration_ms INTEGER NOT NULL,
    error_msg TEXT, metadata TEXT
);
CREATE INDEX IF NOT EXISTS activity_model ON activity (model);
CREATE INDEX IF NOT EXISTS activity_timestamp ON activity (timestamp);
"""
MAX_BATCH = 256
_INSERT = (
    f"INSERT INTO activity ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)


@attrs.frozen
class ActivityQuery:
    """Validated parameters of ``GET /api/metrics/activity``."""

    models: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    min_id: int | None = None
    max_id: int | None = None
    limit: int = 25
    page: int = 1
    sort: str = "id"
    order: str = "desc"


class ActivityStore:
    """SQLite-backed rows; every public method returns a Deferred and never blocks."""

    def __init__(
        self,
        run_in_thread: RunInThread,
        path: str | None = None,
        max_in_memory: int = 1000,
        clock: IReactorTime | None = None,
        batch_delay: float = 0.05,
    ) -> None:
        """Use the file ``path`` (WAL) or an in-memory database capped at ``max_in_memory``.

        Without a ``clock`` every insert goes to the thread at once (no batching).
        """
        self._run = run_in_thread
        self._path = path
        self._cap = max_in_memory if max_in_memory > 0 else 1000
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._clock = clock
        self._batch_delay = batch_delay
        self._pending: list[tuple[dict[str, Any], Deferred[int]]] = []
        self._flush_call: IDelayedCall | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path or ":memory:", timeout=5, check_same_thread=False,
                isolation_level=None,
            )  # fmt: skip
            if self._path:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        """Run ``fn`` in the thread, after inserting the rows waiting to be inserted."""
        batch, self._pending = self._pending, []
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        rows = [row for row, _ in batch]

        def locked() -> tuple[list[int], Any]:
            with self._lock:
                db = self._db()
                ids = self._insert_rows(db, rows) if rows else []
                return ids, fn(db)

        def stored(result: tuple[list[int], Any]) -> Any:
            ids, value = result
            for (_, waiter), new_id in zip(batch, ids, strict=True):
                waiter.callback(new_id)
            return value

        def failed(failure: Failure) -> Failure:
            for _, waiter in batch:
                waiter.errback(failure)
            return failure

        return self._run(locked).addCallbacks(stored, failed)

    def _insert_rows(self, db: sqlite3.Connection, rows: list[dict[str, Any]]) -> list[int]:
        # One transaction per batch: half the CPU of a commit per row in memory, and one
        # WAL commit instead of one per row on disk.
        ids = []
        db.execute("BEGIN")
        try:
            for row in rows:
                values = [row[c] for c in COLUMNS[:-1]]
                values.append(json.dumps(row.get("metadata") or {}))
                ids.append(int(db.execute(_INSERT, values).lastrowid or 0))
            if not self._path:
                db.execute("DELETE FROM activity WHERE id <= ?", (ids[-1] - self._cap,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return ids

    def insert(self, row: dict[str, Any]) -> Deferred[int]:
        """Store ``row`` (keys of COLUMNS) with the next batch; fires with its id."""
        stored: Deferred[int] = Deferred()
        self._pending.append((row, stored))
        if self._clock is None or len(self._pending) >= MAX_BATCH:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(self._batch_delay, self.flush)
        return stored

    def flush(self) -> Deferred[None]:
        """Insert the waiting rows now."""
        return self._call(lambda db: None)

    def query(self, q: ActivityQuery) -> Deferred[tuple[list[dict[str, Any]], int]]:
        """Rows of one page and the total count matching ``q``."""
        where, args = _where(q.models, q)
        column = SORT_COLUMNS[q.sort]
        direction = "ASC" if q.order == "asc" else "DESC"

        def op(db: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            total = db.execute(f"SELECT COUNT(*) FROM activity{where}", args).fetchone()[0]
            cur = db.execute(
                f"SELECT id, {', '.join(COLUMNS)} FROM activity{where} "
                f"ORDER BY {column} {direction}, id {direction} LIMIT ? OFFSET ?",
                [*args, q.limit, (q.page - 1) * q.limit],
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()], int(total)

        return self._call(op)

    def stats(self, model: str | None = None) -> Deferred[dict[str, Any]]:
        """Totals and speed histograms (SPEC §7.3)."""
        where, args = _where((model,) if model else (), ActivityQuery())

        def op(db: sqlite3.Connection) -> dict[str, Any]:
            rows = db.execute(
                "SELECT input_tokens, output_tokens, cache_tokens, prompt_per_second, "
                f"tokens_per_second FROM activity{where}",
                args,
            ).fetchall()
            return {
                "total_requests": len(rows),
                "total_input_tokens": sum(r[0] for r in rows),
                "total_output_tokens": sum(r[1] for r in rows),
                "total_cache_tokens": sum(r[2] for r in rows if r[2] > 0),
                "prompt_histogram": histogram([r[3] for r in rows if r[3] > 0]),
                "gen_histogram": histogram([r[4] for r in rows if r[4] > 0]),
            }

        return self._call(op)

    def close(self) -> Deferred[None]:
        """Insert the waiting rows, then close the connection (in the thread runner)."""

        def op(db: sqlite3.Connection) -> None:
            db.close()
            self._conn = None

        if self._conn is None and not self._pending:
            return self._run(lambda: None)
        return self._call(op)


def _where(models: Sequence[str], q: ActivityQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if models:
        clauses.append(f"model IN ({', '.join('?' * len(models))})")
        args += list(models)
    if q.start is not None:
        clauses.append("CAST(timestamp AS INTEGER) >= ?")
        args.append(int(q.start))
    if q.end is not None:
        clauses.append("CAST(timestamp AS INTEGER) <= ?")
        args.append(int(q.end))
    if q.min_id is not None:
        clauses.append("id >= ?")
        args.append(q.min_id)
    if q.max_id is not None:
        clauses.append("id <= ?")
        args.append(q.max_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks of sorted ``values``."""
    rank = p * (len(values) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (rank - lo)


def histogram(values: list[float]) -> dict[str, Any] | None:
    """Equal-width histogram with clamp(ceil(log2 n)+1, 5, 20) bins and p50/p95/p99."""
    if not values:
        return None
    values = sorted(values)
    lo, hi = values[0], values[-1]
    pct = {f"p{p}": percentile(values, p / 100) for p in (50, 95, 99)}
    if lo == hi:
        return {"bins": [len(values)], "min": lo, "max": hi, "binSize": 0, **pct}
    count = min(20, max(5, math.ceil(math.log2(len(values))) + 1))
    size = (hi - lo) / count
    bins = [0] * count
    for v in values:
        bins[min(count - 1, int((v - lo) / size))] += 1
    return {"bins": bins, "min": lo, "max": hi, "binSize": size, **pct}
