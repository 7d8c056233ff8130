"""The activity store: one SQLite row per finished inference request (SPEC §7.1).

The database is opened when the store is built (start-up, or a reload that names another
``store.path``), where SQLite's own errors can stop it; every later call runs through the
injected thread runner, so serving requests never waits on SQLite. One connection is shared,
serialised by a lock. In-memory stores keep only the newest ``max_in_memory`` rows; file
stores (WAL) keep everything.

A row's id is given out by ``insert`` at once, counting on from the highest id the database
holds, so the caller can file the request's capture and announce the row without waiting
for the thread. Rows are inserted in batches: a row waits up to ``batch_delay`` seconds (or
until ``MAX_BATCH`` rows wait) and goes to the thread with the others in one
``executemany``, so a busy proxy pays one thread hand-off per batch and nothing per row when
the batch is done. Every other call inserts the waiting rows first, in the same thread job,
so a query always sees every row given an id before it. A database file belongs to one
llamaswap process at a time.

The same database remembers each model's measured GPU memory (table ``model_memory``), so the
memory router knows what a model needs after a restart.
"""

from __future__ import annotations

import json
import math
import operator
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from llamaswap.config import ConfigError
from llamaswap.observe.types import RunInThread

_log = Logger()

COLUMNS = (
    "timestamp", "model", "req_path", "resp_content_type", "resp_status_code",
    "cache_tokens", "draft_tokens", "draft_acc_tokens", "input_tokens", "output_tokens",
    "prompt_per_second", "tokens_per_second", "duration_ms", "ttft_ms", "error_msg", "metadata",
)  # fmt: skip
SORT_COLUMNS = {
    "id": "id", "time": "timestamp", "model": "model", "req_path": "req_path",
    "resp_status_code": "resp_status_code", "resp_content_type": "resp_content_type",
    "cached": "cache_tokens", "prompt": "input_tokens", "generated": "output_tokens",
    "drafted": "draft_tokens", "prompt_speed": "prompt_per_second",
    "gen_speed": "tokens_per_second", "duration": "duration_ms", "ttft": "ttft_ms",
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
    error_msg TEXT, metadata TEXT, ttft_ms INTEGER
);
CREATE INDEX IF NOT EXISTS activity_model ON activity (model);
CREATE INDEX IF NOT EXISTS activity_timestamp ON activity (timestamp);
CREATE TABLE IF NOT EXISTS model_memory (
    model TEXT PRIMARY KEY, figures TEXT NOT NULL, measured_at REAL NOT NULL
);
"""
MAX_BATCH = 256
_INSERT = (
    f"INSERT INTO activity (id, {', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)
_ROW_VALUES = operator.itemgetter(*COLUMNS[:-1])


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


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a file written by an older llamaswap up to date (``ttft_ms`` came later)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(activity)")}
    if "ttft_ms" not in present:
        conn.execute("ALTER TABLE activity ADD COLUMN ttft_ms INTEGER")


class ActivityStore:
    """SQLite-backed rows; ids given out at once, everything else answered by a Deferred."""

    def __init__(
        self,
        run_in_thread: RunInThread,
        path: str | None = None,
        max_in_memory: int = 1000,
        clock: IReactorTime | None = None,
        batch_delay: float = 0.05,
    ) -> None:
        """Open the file ``path`` (WAL) or an in-memory database capped at ``max_in_memory``.

        Raises ``sqlite3.Error`` when the file cannot be opened as an activity database.
        Without a ``clock`` every insert goes to the thread at once (no batching).
        """
        self._run = run_in_thread
        self._path = path
        self._cap = max_in_memory if max_in_memory > 0 else 1000
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._clock = clock
        self._batch_delay = batch_delay
        self._pending: list[tuple[Any, ...]] = []
        self._flush_call: IDelayedCall | None = None
        self._next_id = _highest_id(self._db()) + 1

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path or ":memory:", timeout=5, check_same_thread=False,
                isolation_level=None,
            )  # fmt: skip
            try:
                if self._path:
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
                _add_missing_columns(conn)
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        """Run ``fn`` in the thread, after inserting the rows waiting to be inserted."""
        batch, self._pending = self._pending, []
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None

        def locked() -> tuple[Exception | None, Any]:
            with self._lock:
                db = self._db()
                lost = None
                if batch:
                    try:
                        self._insert_rows(db, batch)
                    except Exception as error:  # reported on the reactor, below
                        lost = error
                try:
                    return lost, fn(db)
                except Exception:
                    return lost, Failure()  # the caller's, after the lost rows are told

        def inserted(result: tuple[Exception | None, Any]) -> Any:
            lost, value = result
            if lost is not None:
                why = str(lost)
                if why.startswith("UNIQUE constraint failed: activity.id"):
                    why = f"their ids are taken in {self._path}; does another llamaswap use it?"
                _log.error("activity store: {count} row(s) lost: {why}", count=len(batch), why=why)
            return value

        return self._run(locked).addCallback(inserted)

    def _insert_rows(self, db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        # One transaction and one executemany per batch: SQLite's loop, not Python's, so
        # the thread holds the GIL for little more than binding each row; one WAL commit
        # per batch on disk.
        db.execute("BEGIN")
        try:
            db.executemany(_INSERT, rows)
            if not self._path:
                db.execute("DELETE FROM activity WHERE id <= ?", (rows[-1][0] - self._cap,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def insert(self, row: dict[str, Any]) -> int:
        """Store ``row`` (keys of COLUMNS) with the next batch; return its id at once."""
        row_id = self._next_id
        self._next_id = row_id + 1
        metadata = row.get("metadata")
        self._pending.append(
            (row_id, *_ROW_VALUES(row), json.dumps(metadata) if metadata else "{}")
        )
        if self._clock is None or len(self._pending) >= MAX_BATCH:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(self._batch_delay, self.flush)
        return row_id

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

    def save_memory(self, model: str, figures: dict[int, int], at: float) -> Deferred[None]:
        """Remember the GPU memory ``model`` was measured to hold (bytes per GPU)."""
        text = json.dumps({str(d): b for d, b in figures.items()})

        def op(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO model_memory VALUES (?, ?, ?)", (model, text, at))

        return self._call(op)

    def load_memory(self) -> Deferred[dict[str, dict[int, int]]]:
        """Every model's remembered GPU memory (bytes per GPU)."""

        def op(db: sqlite3.Connection) -> dict[str, dict[int, int]]:
            out: dict[str, dict[int, int]] = {}
            for model, text in db.execute("SELECT model, figures FROM model_memory"):
                try:
                    out[model] = {int(d): int(b) for d, b in json.loads(text).items()}
                except (ValueError, TypeError, AttributeError):
                    continue  # a row this version cannot read is skipped
            return out

        return self._call(op)

    def close(self) -> Deferred[None]:
        """Insert the waiting rows, then close the connection (in the thread runner)."""

        def op(db: sqlite3.Connection) -> None:
            db.close()
            self._conn = None

        if self._conn is None and not self._pending:
            return self._run(lambda: None)
        return self._call(op)


def open_store(
    run_in_thread: RunInThread,
    path: str | None,
    max_in_memory: int,
    clock: IReactorTime | None = None,
) -> ActivityStore:
    """The configured store; a file SQLite cannot open is a ``store.path`` ConfigError."""
    try:
        return ActivityStore(run_in_thread, path, max_in_memory, clock=clock)
    except sqlite3.Error as error:
        raise ConfigError(f"store.path: {path} cannot be opened: {error}") from None


def _highest_id(db: sqlite3.Connection) -> int:
    """The highest row id in the table, 0 when it is empty (the newest row is never deleted)."""
    return int(db.execute("SELECT MAX(id) FROM activity").fetchone()[0] or 0)


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
