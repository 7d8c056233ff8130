"""Shared request plumbing: the site context, body reading, URL joining, internal errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
from twisted.web.server import Request

from llamaswap.errors import LlamaSwapError, PayloadTooLarge
from llamaswap.web.chores import Chores
from llamaswap.web.pools import UpstreamPools

if TYPE_CHECKING:
    from llamaswap.web.app import App


class InternalError(LlamaSwapError):
    """Something broke inside llamaswap (the message says what, never a traceback)."""

    status = 500


@attrs.define
class SiteContext:
    """What every request handler needs: the current App, the reactor, the pools, the chores."""

    get_app: Callable[[], App]
    reactor: Any
    pools: UpstreamPools
    chores: Chores = attrs.field()

    @chores.default
    def _chores(self) -> Chores:
        return Chores(self.reactor)


def strip_route_prefix(path: bytes) -> bytes:
    """``/v/x`` → ``/x`` and ``/audioapi/x`` → ``/x`` (SPEC 5.2)."""
    if path.startswith(b"/v/"):
        return path[2:]
    if path.startswith(b"/audioapi/"):
        return path[9:]
    return path


def join_url(base: str, path: bytes, query: bytes) -> bytes:
    """The upstream URL: base path joined with the request path, queries merged."""
    root, base_query = _split_base(base)
    queries = [q for q in (base_query, query) if q]
    url = root + path
    if queries:
        url += b"?" + b"&".join(queries)
    return url


@functools.lru_cache(maxsize=256)
def _split_base(base: str) -> tuple[bytes, bytes]:
    """``scheme://netloc/prefix`` and the query of an upstream base URL (a few per config)."""
    parts = urlsplit(base)
    root = f"{parts.scheme}://{parts.netloc}".encode() + parts.path.rstrip("/").encode()
    return root, parts.query.encode()


def max_body_bytes(app: App) -> int:
    """The request body limit in bytes."""
    return int(app.config.max_request_body_mb) * 1024 * 1024


def read_body(request: Request, app: App) -> bytes:
    """The whole request body (already buffered by twisted.web), within the size limit."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    body = content.read()
    if len(body) > max_body_bytes(app):
        raise PayloadTooLarge(
            f"request body is larger than maxRequestBodyMB ({app.config.max_request_body_mb} MB)"
        )
    return body


def split_uri(request: Request) -> tuple[bytes, bytes]:
    """The raw (percent-encoded) path and query of the request."""
    path, _, query = request.uri.partition(b"?")
    return path, query
