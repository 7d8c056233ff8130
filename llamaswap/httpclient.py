"""HTTP connection pools that do not log every connection they open."""

from __future__ import annotations

from typing import Any

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory


class _QuietClientFactory(_HTTP11ClientFactory):
    """The pool's per-connection factory, without "Starting factory" log lines."""

    noisy = False


class QuietHTTPConnectionPool(HTTPConnectionPool):
    """An HTTPConnectionPool whose connections open and close silently.

    Health probes and proxied requests open many connections; the stock pool logs
    two info lines for each, which buries what operators need to see.
    """

    _factory: Any = _QuietClientFactory
