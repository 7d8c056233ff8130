"""Upstream output stays out of the proxy log (it has its own log)."""

from __future__ import annotations

from twisted.logger import LogLevel

from llamaswap.observe.logsetup import UPSTREAM_NAMESPACE, ProxyLogObserver
from llamaswap.process.logs import LogBuffer


def _event(namespace: str, text: str) -> dict[str, object]:
    return {
        "log_namespace": namespace, "log_level": LogLevel.info, "log_format": text,
        "log_time": 0.0,
    }


def test_proxy_log_skips_upstream_output_events() -> None:
    """Events from the upstream line logger are not written as proxy log lines."""
    buffer = LogBuffer()
    observer = ProxyLogObserver(buffer)
    observer(_event(UPSTREAM_NAMESPACE, "model says hello"))
    observer(_event("llamaswap.router", "swap started"))
    assert buffer.history() == b"[INFO] swap started\n"
