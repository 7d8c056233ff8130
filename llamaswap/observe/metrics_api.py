"""``GET /metrics`` (Prometheus text) and ``GET /api/performance`` (sample history as JSON)."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.server import Request

from llamaswap.observe.metrics import CONTENT_TYPE
from llamaswap.observe.performance import PerformanceMonitor
from llamaswap.observe.recorder import rfc3339
from llamaswap.observe.webutil import ObserveResource, parse_rfc3339, query
from llamaswap.web.render import render_error, write_json


class MetricsResource(ObserveResource):
    """Request metrics always; system/GPU series only while sampling is enabled."""

    def render_GET(self, request: Request) -> bytes:
        """The exposition of this App's registry."""
        obs = self._get_app().extras.get("observability")
        if obs is None:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"# metrics not available\n"
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return obs.metrics.exposition()


def performance_json(monitor: PerformanceMonitor, after: float | None) -> dict[str, Any]:
    """The ``/api/performance`` body: samples strictly after ``after``."""
    sys_stats = []
    for s in monitor.sys_stats:
        if after is None or s.timestamp > after:
            item = attrs.asdict(s)
            item["timestamp"] = rfc3339(s.timestamp, "milliseconds")
            sys_stats.append(item)
    gpu_stats = []
    for gpus in monitor.gpu_stats:
        for g in gpus:
            if after is None or g.timestamp > after:
                item = attrs.asdict(g)
                item["timestamp"] = rfc3339(g.timestamp, "milliseconds")
                gpu_stats.append(item)
    empty: list[Any] | None = None if after is None else []
    return {
        "enabled": True,
        "sys_stats": sys_stats or empty,
        "gpu_stats": gpu_stats or empty,
    }


class PerformanceResource(ObserveResource):
    """``GET /api/performance[?after=<RFC3339>]``."""

    def render_GET(self, request: Request) -> bytes:
        """History since ``after``; 503 ``{"enabled":false}`` when sampling is disabled."""
        obs = self._get_app().extras.get("observability")
        monitor = obs.performance if obs is not None else None
        if monitor is None:
            return write_json(request, {"enabled": False}, 503)
        after = None
        raw = query(request).get("after", [""])[0]
        if raw:
            after = parse_rfc3339(raw)
            if after is None:
                return render_error(request, 400, "invalid 'after' timestamp, use RFC3339 format")
        return write_json(request, performance_json(monitor, after))
