"""Errors that reach clients: each knows its HTTP status and its OpenAI error body."""

from __future__ import annotations

import json
from typing import Any, ClassVar

_TYPE_AND_CODE: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authentication_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    431: ("invalid_request_error", "headers_too_large"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


def error_type_and_code(status: int) -> tuple[str, str]:
    """The OpenAI error ``type`` and ``code`` llama-swap uses for an HTTP status."""
    if status in _TYPE_AND_CODE:
        return _TYPE_AND_CODE[status]
    if 400 <= status < 500:
        return ("invalid_request_error", "invalid_request")
    return ("server_error", "internal_error")


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The JSON error envelope of SPEC 5.1 for a status and message."""
    err_type, default_code = error_type_and_code(status)
    return {
        "src": "llamaswap",
        "error": {
            "message": message,
            "type": err_type,
            "param": None,
            "code": code or default_code,
        },
    }


class LlamaSwapError(Exception):
    """Base of every error that ends a client request; carries status and code."""

    status: ClassVar[int] = 500
    code: ClassVar[str | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs (e.g. Retry-After)."""
        return {}

    def body(self) -> dict[str, Any]:
        """The OpenAI-style JSON error envelope for this error."""
        return error_body(self.status, self.message, self.code)

    def body_bytes(self) -> bytes:
        """The JSON envelope, encoded."""
        return json.dumps(self.body()).encode() + b"\n"


class BadRequest(LlamaSwapError):
    """The request is malformed (bad JSON, bad encoding, missing field)."""

    status = 400


class Unauthorized(LlamaSwapError):
    """No valid API key was presented."""

    status = 401

    def __init__(self, message: str = "unauthorized: invalid or missing API key") -> None:
        super().__init__(message)

    @property
    def headers(self) -> dict[str, str]:
        """Ask browsers for Basic credentials so the UI can log in."""
        return {"WWW-Authenticate": 'Basic realm="llamaswap"'}


class ModelNotFound(LlamaSwapError):
    """The requested model is neither configured nor an alias, peer or selector."""

    status = 404


class Conflict(LlamaSwapError):
    """The request cannot proceed in the model's current state."""

    status = 409


class PayloadTooLarge(LlamaSwapError):
    """The request body is larger than the configured limit."""

    status = 413


class UnsupportedMediaType(LlamaSwapError):
    """The request's content type cannot carry a model name."""

    status = 415


class ConcurrencyLimitExceeded(LlamaSwapError):
    """The model already has as many requests admitted as it allows."""

    status = 429
    code = "concurrency_limit"

    def __init__(self, message: str = "Too many requests") -> None:
        super().__init__(message)

    @property
    def headers(self) -> dict[str, str]:
        """Tell the client when to retry."""
        return {"Retry-After": "1"}


class UpstreamError(LlamaSwapError):
    """The upstream server could not be reached, or failed to start."""

    status = 502


class UpstreamStartFailed(UpstreamError):
    """The upstream process exited, or never became healthy, while starting."""


class ModelUnloaded(LlamaSwapError):
    """The model was unloaded while the request waited for it."""

    status = 503


class ProcessNotReady(ModelUnloaded):
    """The granted process left ``ready`` before the request reached it (SPEC 3.5 race)."""

    def __init__(self, model_id: str) -> None:
        super().__init__(f"[{model_id}] process is not ready")
        self.model_id = model_id


class ShuttingDown(LlamaSwapError):
    """llamaswap (or the router for an old config) is shutting down."""

    status = 503


class InsufficientMemory(LlamaSwapError):
    """The model needs more GPU memory than its device has: it can never be loaded there."""

    status = 507
    code = "insufficient_memory"


class UpstreamTimeout(LlamaSwapError):
    """The upstream did not answer in time."""

    status = 504


class NotStarted(Exception):
    """The service could not start; why has already been logged as critical lines."""
