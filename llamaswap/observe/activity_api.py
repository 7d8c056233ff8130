"""``GET /api/metrics/activity``, ``/api/metrics/stats`` and ``/api/captures/<id>`` (SPEC §7)."""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.web.server import Request

from llamaswap.observe.activity import SORT_COLUMNS, ActivityQuery
from llamaswap.observe.recorder import row_json
from llamaswap.observe.webutil import (
    ObserveResource,
    answer_later,
    parse_rfc3339,
    query,
    request_path,
)
from llamaswap.web.render import render_error, write_json


class QueryError(ValueError):
    """A bad query parameter; the message is the API's 400 text."""


def _int(args: dict[str, list[str]], name: str) -> int | None:
    if name not in args:
        return None
    try:
        return int(args[name][0])
    except ValueError:
        raise QueryError(f"invalid {name}") from None


def parse_activity_query(args: dict[str, list[str]]) -> ActivityQuery:
    """Validate the parameters in SPEC §7.2 order; raises QueryError with its message."""
    limit = _int(args, "limit")
    if limit is not None and not 1 <= limit <= 999:
        raise QueryError("limit must be between 1 and 999")
    page = _int(args, "page")
    if page is not None and page < 1:
        raise QueryError("page must be >= 1")
    sort = args.get("sort", ["id"])[0] or "id"
    if sort not in SORT_COLUMNS:
        raise QueryError("invalid sort column")
    order = (args.get("order", ["desc"])[0] or "desc").lower()
    if order not in ("asc", "desc"):
        raise QueryError("order must be asc or desc")
    times: dict[str, float | None] = {}
    for name in ("start", "end"):
        times[name] = None
        if args.get(name, [""])[0]:
            times[name] = parse_rfc3339(args[name][0])
            if times[name] is None:
                raise QueryError(f"invalid '{name}' timestamp, use RFC3339 format")
    start, end = times["start"], times["end"]
    if start is not None and end is not None and start > end:
        raise QueryError("start must be before end")
    ids = {}
    for name in ("min_id", "max_id"):
        ids[name] = _int(args, name)
        if ids[name] is not None and ids[name] < 1:  # type: ignore[operator]
            raise QueryError(f"{name} must be >= 1")
    min_id, max_id = ids["min_id"], ids["max_id"]
    if min_id is not None and max_id is not None and min_id > max_id:
        raise QueryError("min_id must be <= max_id")
    return ActivityQuery(
        models=tuple(m for m in args.get("model", []) if m),
        start=start,
        end=end,
        min_id=min_id,
        max_id=max_id,
        limit=limit or 25,
        page=page or 1,
        sort=sort,
        order=order,
    )


def _observability(app: Any) -> Any:
    return app.extras.get("observability")


class MetricsApiResource(ObserveResource):
    """``/api/metrics/activity`` and ``/api/metrics/stats``."""

    def render_GET(self, request: Request) -> bytes | int:
        """Dispatch on the sub-path."""
        obs = _observability(self._get_app())
        path = request_path(request).rstrip("/")
        if obs is None:
            return render_error(request, 503, "activity store not available")
        args = query(request)
        if path == "/api/metrics/activity":
            try:
                q = parse_activity_query(args)
            except QueryError as exc:
                return render_error(request, 400, str(exc))
            captures = obs.captures

            def page(result: tuple[list[dict[str, Any]], int]) -> dict[str, Any]:
                rows, total = result
                return {
                    "data": [row_json(r, captures) for r in rows],
                    "page": q.page,
                    "limit": q.limit,
                    "total": total,
                    "total_pages": math.ceil(total / q.limit),
                }

            return answer_later(request, obs.store.query(q), page)
        if path == "/api/metrics/stats":
            model = args.get("model", [""])[0] or None
            return answer_later(request, obs.store.stats(model), lambda s: s)
        return render_error(request, 404, "404 page not found")


class CapturesResource(ObserveResource):
    """``/api/captures/<id>``."""

    def render_GET(self, request: Request) -> bytes | int:
        """The capture as JSON (no trailing newline), 400/404 otherwise."""
        obs = _observability(self._get_app())
        raw = request_path(request).removeprefix("/api/captures").strip("/")
        try:
            capture_id = int(raw)
        except ValueError:
            return render_error(request, 400, "invalid capture ID")
        capture = obs.captures.get(capture_id) if obs is not None else None
        if capture is None:
            return render_error(request, 404, "capture not found")
        write_json(request, None)
        return json.dumps(capture.to_json()).encode()
