"""The client address of a request: the socket peer, or what a trusted reverse proxy says."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import Any

from llamaswap.proxyenv import IPAddress, parse_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> IPAddress | None:
    """An address from a header entry or a peer: ``1.2.3.4``, ``::1``, ``[::1]``, ``1.2.3.4:5``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return parse_ip(text)


def _trusted(address: IPAddress | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in net for net in networks)


def client_ip(peer: str, forwarded_for: Sequence[bytes], real_ip: bytes | None,
              trusted: Sequence[Network]) -> str:
    """Who sent the request, as the access log and activity show it.

    ``peer`` is the socket's address. Only when it is one of the ``trusted`` proxies are
    ``X-Forwarded-For`` (read right to left, skipping the trusted proxies in it: the first
    address that is not one is the client) and then ``X-Real-IP`` believed; anyone else
    could write whatever they like in those headers.
    """
    if not trusted or not _trusted(_parse(peer), trusted):
        return peer
    hops = [
        entry.strip()
        for value in forwarded_for
        for entry in value.decode("latin-1").split(",")
        if entry.strip()
    ]
    if hops:
        closest = peer
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                return closest  # garbage: the last hop we can name
            closest = str(address)
            if not _trusted(address, trusted):
                return closest
        return closest
    if real_ip:
        address = _parse(real_ip.decode("latin-1"))
        if address is not None:
            return str(address)
    return peer


def request_client_ip(request: Any, trusted: Sequence[Network], missing: str = "-") -> str:
    """``client_ip`` for a twisted.web request; ``missing`` when the peer has no IP (Unix)."""
    peer = getattr(request.getClientAddress(), "host", None) or missing
    if not trusted:
        return peer
    headers = request.requestHeaders
    return client_ip(
        peer,
        headers.getRawHeaders(b"x-forwarded-for") or (),
        (headers.getRawHeaders(b"x-real-ip") or [None])[0],
        trusted,
    )
