"""API key authentication (SPEC 6): which key a request presents, and whether it is valid.

One candidate key per request, by priority: the password of ``Authorization: Basic``,
the token of ``Authorization: Bearer``, then ``x-api-key``. A wrong Bearer token is
therefore not rescued by a correct ``x-api-key``. Keys are compared in constant time
and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from typing import Protocol

from twisted.web.server import Request

from llamaswap.errors import Unauthorized
from llamaswap.web.render import render_error


class HeaderSource(Protocol):
    """Anything with Twisted's ``getHeader`` (a Request, a DummyRequest)."""

    def getHeader(self, key: bytes) -> bytes | None:
        """The last value of header ``key``, or None."""


def _basic_password(credentials: bytes) -> bytes | None:
    """The password part of Basic credentials, or None when they do not decode."""
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        return None
    _user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return password


def extract_key(request: HeaderSource) -> bytes | None:
    """The one API key candidate ``request`` presents, or None when it presents none."""
    authorization = request.getHeader(b"authorization")
    if authorization:
        scheme, sep, rest = authorization.partition(b" ")
        scheme_lower = scheme.lower() if sep else b""
        if scheme_lower == b"basic":
            password = _basic_password(rest)
            if password is not None:
                return password
        elif scheme_lower == b"bearer":
            return rest
    api_key = request.getHeader(b"x-api-key")
    if api_key is not None:
        return api_key
    return None


def key_is_valid(candidate: bytes | None, api_keys: Sequence[str]) -> bool:
    """True when ``candidate`` equals one of ``api_keys`` (constant time; all keys checked)."""
    if candidate is None:
        return False
    valid = False
    for key in api_keys:
        # Compare against every key so timing does not reveal which one matched.
        if hmac.compare_digest(candidate, key.encode("utf-8")):
            valid = True
    return valid


def authorize(request: HeaderSource, api_keys: Sequence[str]) -> bool:
    """True when no keys are configured or ``request`` presents one of ``api_keys``."""
    if not api_keys:
        return True
    return key_is_valid(extract_key(request), api_keys)


def render_unauthorized(request: Request) -> bytes:
    """Set the 401 status and ``WWW-Authenticate`` header; return the error body."""
    return render_error(request, Unauthorized())
