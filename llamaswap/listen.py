"""``--listen``: a llama-swap ``HOST:PORT`` address or a Twisted endpoint string."""

from __future__ import annotations

import os
import re

import attrs
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import getPlugins

BACKLOG = 1024
DEFAULT_ADDRESS = "127.0.0.1:8080"
DEFAULT_TLS_ADDRESS = "127.0.0.1:8443"
# Twisted's own endpoint types; plugins (systemd, tcp6, ...) add theirs.
_BUILTIN_TYPES = frozenset({"tcp", "unix", "ssl"})
_ADDRESS = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<port>\d{1,5})$")
_ALL_HOSTS = frozenset({"", "0.0.0.0", "::"})


class ListenError(ValueError):
    """A ``--listen``/TLS combination that cannot work; the message is one line for a person."""


@attrs.frozen
class Listen:
    """Where to listen: the Twisted endpoint string, and how to describe it."""

    endpoint: str
    url: str  # what the "listening on" line shows
    all_hosts: bool = False  # reachable from every host on the network
    tls: bool = False


def endpoint_types() -> frozenset[str]:
    """The endpoint type names Twisted can parse here (built-in and plugins)."""
    names = set(_BUILTIN_TYPES)
    for parser in getPlugins(IStreamServerEndpointStringParser):
        prefix = getattr(parser, "prefix", None)
        if isinstance(prefix, str):
            names.add(prefix)
    return frozenset(names)


def is_address(value: str) -> bool:
    """True for llama-swap's ``HOST:PORT`` form (``:8080``, ``[::1]:8080``), not an endpoint."""
    match = _ADDRESS.match(value)
    if match is None:
        return False
    return match["host"].lower() not in endpoint_types()


def plan_listen(value: str | None, cert_file: str | None = None,
                key_file: str | None = None) -> Listen:
    """Turn ``--listen`` and the TLS file options into one Listen, or raise ListenError."""
    if bool(cert_file) != bool(key_file):
        raise ListenError("both --tls-cert-file and --tls-key-file must be given for TLS")
    tls = bool(cert_file)
    if tls:
        for flag, path in (("--tls-cert-file", cert_file), ("--tls-key-file", key_file)):
            assert path is not None
            if not os.path.isfile(path):
                raise ListenError(f"{flag} {path}: no such file")
            if not os.access(path, os.R_OK):
                raise ListenError(f"{flag} {path}: permission denied")
    if value is None:
        value = DEFAULT_TLS_ADDRESS if tls else DEFAULT_ADDRESS
    if is_address(value):
        return _from_address(value, cert_file, key_file)
    if tls:
        kind = value.split(":", 1)[0]
        raise ListenError(
            f"--tls-cert-file/--tls-key-file need a HOST:PORT --listen address, not a {kind}: "
            "endpoint (for TLS on an endpoint string use ssl:PORT:privateKey=KEY:certKey=CERT)"
        )
    return Listen(endpoint=value, url=value)


def _from_address(value: str, cert_file: str | None, key_file: str | None) -> Listen:
    match = _ADDRESS.match(value)
    assert match is not None
    host, port = match["host"], int(match["port"])
    if port > 65535:
        raise ListenError(f"--listen {value}: port must be 0-65535")
    if host.startswith("["):
        host = host[1:-1]
        if not isIPv6Address(host):
            raise ListenError(f"--listen {value}: {host!r} is not an IPv6 address")
    elif host.lower() in ("localhost", "localhost."):
        host = "127.0.0.1"
    elif host and not isIPAddress(host):
        raise ListenError(
            f"--listen {value}: the host must be an IP address, localhost or empty "
            f"(and {host!r} is not an endpoint type installed here either)"
        )
    all_hosts = host in _ALL_HOSTS
    interface = host or "0.0.0.0"
    parts = [f"{port}", f"interface={quoteStringArgument(interface)}"]
    if cert_file and key_file:
        parts += [f"privateKey={quoteStringArgument(key_file)}",
                  f"certKey={quoteStringArgument(cert_file)}"]
    parts.append(f"backlog={BACKLOG}")
    kind = "ssl" if cert_file else "tcp"
    shown = f"[{interface}]" if ":" in interface else interface
    scheme = "https" if cert_file else "http"
    return Listen(
        endpoint=":".join([kind, *parts]),
        url=f"{scheme}://{shown}:{port}",
        all_hosts=all_hosts,
        tls=bool(cert_file),
    )
