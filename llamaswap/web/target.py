"""Request targets in absolute form (RFC 9112 3.2.2): served as their path and query.

A client talking to llamaswap as if it were a proxy, or a strict one, may send
``GET http://host:port/health HTTP/1.1``. An origin server must accept that form and
route it by its path; the authority in the target replaces the ``Host`` header.
"""

from __future__ import annotations

import re

import attrs

_ABSOLUTE = re.compile(rb"\A[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)(.*)\Z", re.DOTALL)


@attrs.frozen
class OriginForm:
    """An absolute-form target split into the Host it names and its origin-form target."""

    host: bytes
    target: bytes


def origin_form(target: bytes) -> OriginForm | None:
    """The origin form of an absolute-form ``target``; None for any other form."""
    if target[:1] == b"/":
        return None
    match = _ABSOLUTE.match(target)
    if match is None:
        return None
    authority, rest = match.groups()
    host = authority.rpartition(b"@")[2]  # drop any userinfo
    rest = rest.split(b"#", 1)[0]
    if not rest.startswith(b"/"):
        rest = b"/" + rest  # "http://h" and "http://h?q" name the root
    return OriginForm(host=host, target=rest)


__all__ = ["OriginForm", "origin_form"]
