"""In-flight request tracking (SPEC §7.5) and ``POST /api/inflight/<id>/cancel``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.server import Request

from llamaswap.observe.captures import redact
from llamaswap.observe.hooks import RequestRecord
from llamaswap.observe.recorder import rfc3339
from llamaswap.observe.webutil import ObserveResource, request_path
from llamaswap.web.render import render_error, write_json

BYTES_UPDATE_INTERVAL = 0.25
Listener = Callable[[dict[str, Any]], None]


class InflightTracker:
    """A RequestObserver keeping the live table; tells listeners upserts and removes."""

    def __init__(self, clock: IReactorTime, watched: Callable[[], bool] = lambda: True) -> None:
        """Time elapsed and throttling come from ``clock``.

        ``watched()`` says whether anyone listens now; while nobody does, upserts are not
        built (the table itself is always kept, for the snapshot a new listener gets).
        """
        self._clock = clock
        self._watched = watched
        self._live: dict[int, RequestRecord] = {}
        self._last_sent: dict[int, float] = {}
        self._pending: dict[int, IDelayedCall] = {}
        self.listeners: list[Listener] = []

    def entry(self, rec: RequestRecord) -> dict[str, Any]:
        """The JSON entry of one in-flight request."""
        out: dict[str, Any] = {
            "id": str(rec.id),
            "timestamp": rfc3339(rec.started, "milliseconds"),
            "model": rec.model_id,
            "req_path": rec.path,
            "method": rec.method,
            "req_headers": redact(rec.req_headers),
            "remote_ip": rec.remote_ip,
            "resp_headers": redact(rec.resp_headers),
            "resp_bytes": rec.bytes_out,
            "elapsed_ms": int((self._clock.seconds() - rec.started) * 1000),
        }
        if rec.metadata:
            out["metadata"] = dict(rec.metadata)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Every in-flight request, oldest first."""
        recs = sorted(self._live.values(), key=lambda r: r.id)
        return {"operation": "snapshot", "requests": [self.entry(r) for r in recs]}

    def cancel(self, request_id: int) -> bool:
        """Abort the request (client connection and upstream); False when unknown."""
        rec = self._live.get(request_id)
        if rec is None:
            return False
        if rec.cancel is not None:
            rec.cancel()
        return True

    def _emit(self, payload: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(payload)

    def _upsert(self, rec: RequestRecord) -> None:
        self._pending.pop(rec.id, None)
        if rec.id in self._live and self._watched():
            self._last_sent[rec.id] = self._clock.seconds()
            self._emit({"operation": "upsert", "request": self.entry(rec)})

    def request_started(self, rec: RequestRecord) -> None:
        """Add the request to the table."""
        self._live[rec.id] = rec
        self._upsert(rec)

    def response_started(self, rec: RequestRecord) -> None:
        """Response headers known: upsert."""
        self._upsert(rec)

    def response_chunk(self, rec: RequestRecord, data: bytes) -> None:
        """Byte count changed: upsert at most once per 250 ms per request."""
        if rec.id not in self._live or rec.id in self._pending:
            return
        wait = self._last_sent.get(rec.id, 0.0) + BYTES_UPDATE_INTERVAL - self._clock.seconds()
        if wait <= 0:
            self._upsert(rec)
        else:
            self._pending[rec.id] = self._clock.callLater(wait, self._upsert, rec)

    def request_finished(self, rec: RequestRecord) -> None:
        """Remove the request from the table."""
        pending = self._pending.pop(rec.id, None)
        if pending is not None and pending.active():
            pending.cancel()
        self._last_sent.pop(rec.id, None)
        if self._live.pop(rec.id, None) is not None and self._watched():
            self._emit({"operation": "remove", "id": str(rec.id)})


class InflightResource(ObserveResource):
    """``POST /api/inflight/<id>/cancel``."""

    def render_POST(self, request: Request) -> bytes:
        """Cancel; 404 when the id is not in flight."""
        obs = self._get_app().extras.get("observability")
        parts = request_path(request).strip("/").split("/")
        if len(parts) != 4 or parts[3] != "cancel":
            return render_error(request, 404, "404 page not found")
        try:
            request_id = int(parts[2])
        except ValueError:
            request_id = -1
        if obs is None or not obs.inflight.cancel(request_id):
            return render_error(request, 404, "inflight request not found")
        return write_json(request, {"msg": "ok"})
