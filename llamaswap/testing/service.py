"""Where a started ``LlamaSwapService`` listens, for tests that start it on port 0."""

from __future__ import annotations

from typing import Any


def service_port(svc: Any) -> int:
    """The TCP port a started ``LlamaSwapService`` listens on.

    ``StreamServerEndpointService`` keeps the listening port only in a private attribute;
    this is the one place the tests read it.
    """
    assert svc.port_service is not None, "service not started"
    port = svc.port_service._waitingForPort.result
    return int(port.getHost().port)


def service_url(svc: Any) -> str:
    """``http://127.0.0.1:<port>`` of a started ``LlamaSwapService``."""
    return f"http://127.0.0.1:{service_port(svc)}"
