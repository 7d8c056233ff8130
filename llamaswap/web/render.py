"""Write llamaswap's own responses: JSON bodies and errors in the client's preferred format."""

from __future__ import annotations

import html
import json
from typing import Any

from twisted.web.server import Request

from llamaswap.errors import LlamaSwapError, error_body


def write_json(request: Request, body: Any, status: int = 200) -> bytes:
    """Set status and JSON headers on ``request``; return the encoded body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode() + b"\n"


def render_error(request: Request, error: LlamaSwapError | int, message: str = "") -> bytes:
    """Set status/headers for an error and return its body (JSON, text or HTML per Accept)."""
    if isinstance(error, LlamaSwapError):
        status, message, headers = error.status, error.message, error.headers
        payload = error.body()
    else:
        status, headers = error, {}
        payload = error_body(status, message)
    request.setResponseCode(status)
    for name, value in headers.items():
        request.setHeader(name.encode(), value.encode())
    accept = (request.getHeader(b"accept") or b"").decode("latin-1").lower()
    always_json = isinstance(error, LlamaSwapError) and error.status == 429
    if not always_json and "text/plain" in accept:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"llamaswap: {message}\n".encode()
    if not always_json and "text/html" in accept:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        escaped = html.escape(message)
        return f"<html><body><h1>llamaswap</h1><p>{escaped}</p></body></html>".encode()
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode() + b"\n"
