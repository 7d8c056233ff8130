"""HTTP proxy settings from the environment, decided like Go's ``http.ProxyFromEnvironment``.

llama-swap's transport uses ``golang.org/x/net/http/httpproxy``; upstream connections here
follow the same rules (SPEC 3.5):

* ``HTTP_PROXY`` applies to ``http://`` upstreams, ``HTTPS_PROXY`` to ``https://`` ones;
  each upper-case name is read first, the lower-case one when the upper-case one is unset
  or empty. ``ALL_PROXY`` is not read (Go does not read it either).
* A value without a scheme or host (``proxy:3128``) is read as ``http://proxy:3128``; the
  default port is 80 for ``http`` proxies and 443 for ``https`` ones; ``user:pass@`` in
  the URL becomes ``Proxy-Authorization: Basic ...``.
* ``NO_PROXY`` is a comma-separated list: ``*`` (never proxy), an IP (``10.0.0.5``,
  ``2001:db8::1``), a CIDR range (``10.0.0.0/8``), a domain (``example.com`` matches it and
  every subdomain; ``.example.com`` and ``*.example.com`` only subdomains), each optionally
  with ``:port`` (``[2001:db8::1]:8080`` for IPv6). Matching is case-insensitive.
* ``localhost`` and loopback addresses (127.0.0.0/8, ::1) are never proxied.

Why not ``urllib.request``: ``getproxies_environment`` reads ``os.environ`` only, prefers
the lower-case names, and ``proxy_bypass_environment`` knows no CIDR ranges and no
``*.domain`` form, so its answers differ from Go's. Deliberate differences from Go:

* with ``REQUEST_METHOD`` set (a CGI environment, where ``HTTP_PROXY`` may come from a
  client's ``Proxy:`` header), Go fails every ``http://`` request; here ``HTTP_PROXY`` is
  ignored (with a warning) and ``HTTPS_PROXY`` still applies;
* ``localhost`` is recognised in any case and with a trailing dot, and an IPv4-mapped
  loopback (``::ffff:127.0.0.1``) counts as loopback, since those all connect locally;
* a proxy URL that cannot be parsed is ignored with a warning (Go ignores it silently).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import attrs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SUPPORTED_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}


@attrs.frozen
class ProxyURL:
    """One proxy from the environment: where it is, its credentials, which variable named it."""

    scheme: str
    host: str
    port: int
    source: str
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    @property
    def display(self) -> str:
        """The proxy for messages and logs: ``http://host:port (HTTP_PROXY)``, no password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port} ({self.source})"

    @property
    def authorization(self) -> bytes | None:
        """The ``Proxy-Authorization`` value for the URL's credentials (None without any)."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return b"Basic " + base64.b64encode(pair)

    @property
    def supported(self) -> bool:
        """True for the proxy schemes llamaswap can talk to (http, https)."""
        return self.scheme in SUPPORTED_SCHEMES


def parse_proxy(value: str, source: str) -> ProxyURL:
    """Parse a proxy variable's value like Go's ``parseProxy`` (``ValueError`` if unusable)."""
    value = value.strip()
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc:
        parts = urlsplit("http://" + value)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not host:
        raise ValueError(f"{source}: no host in proxy URL")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme, 80)
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxyURL(scheme, host, port, source, username, password)


def split_host_port(text: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: ``host:port`` / ``[v6]:port``, or None when malformed."""
    colon = text.rfind(":")
    if colon < 0:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or end + 1 != colon:
            return None
        host, start, close_from = text[1:end], 1, end + 1
    else:
        host, start, close_from = text[:colon], 0, 0
        if ":" in host:
            return None
    if "[" in text[start:] or "]" in text[close_from:]:
        return None
    return host, text[colon + 1 :]


def parse_ip(text: str) -> IPAddress | None:
    """An IP address (IPv4-mapped IPv6 as IPv4, as Go compares them), or None."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_local_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: never proxied."""
    lowered = host.lower()
    if lowered in ("localhost", "localhost."):
        return True
    ip = parse_ip(host)
    return ip is not None and ip.is_loopback


def idna_host(host: str) -> str:
    """``host`` in ASCII: international labels in punycode, one by one (unchanged if it fails)."""
    if host.isascii():
        return host
    try:
        return ".".join(
            label if label.isascii() else label.encode("idna").decode("ascii")
            for label in host.split(".")
        )
    except UnicodeError:
        return host


@attrs.frozen
class _DomainMatch:
    suffix: str  # always starts with "."
    port: str
    match_host: bool  # "example.com" also matches "example.com" itself

    def match(self, host: str, port: str) -> bool:
        hit = host.endswith(self.suffix) or (self.match_host and host == self.suffix[1:])
        return hit and (not self.port or self.port == port)


@attrs.frozen
class _IPMatch:
    ip: IPAddress
    port: str

    def match(self, ip: IPAddress, port: str) -> bool:
        return ip == self.ip and (not self.port or self.port == port)


@attrs.frozen
class NoProxy:
    """The parsed ``NO_PROXY`` list (Go's ``httpproxy.config.init`` matchers)."""

    everything: bool = False
    networks: tuple[IPNetwork, ...] = ()
    ips: tuple[_IPMatch, ...] = ()
    domains: tuple[_DomainMatch, ...] = ()

    @classmethod
    def parse(cls, value: str) -> NoProxy:
        """Parse a ``NO_PROXY`` value; malformed entries are skipped, as Go does."""
        networks: list[IPNetwork] = []
        ips: list[_IPMatch] = []
        domains: list[_DomainMatch] = []
        for raw in value.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                return cls(everything=True)
            if "/" in entry:
                try:
                    net = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    pass
                else:
                    networks.append(net)
                    continue
            split = split_host_port(entry)
            if split is not None:
                host, port = split
                if not host:
                    continue
            else:
                host, port = entry, ""
            ip = parse_ip(host)
            if ip is not None:
                ips.append(_IPMatch(ip, port))
                continue
            if host.startswith("*."):
                host = host[1:]
            match_host = not host.startswith(".")
            if match_host:
                host = "." + host
            domains.append(_DomainMatch(idna_host(host), port, match_host))
        return cls(False, tuple(networks), tuple(ips), tuple(domains))

    def excludes(self, host: str, port: int) -> bool:
        """True when ``host``:``port`` must be reached directly (Go's ``!useProxy``)."""
        if self.everything:
            return True
        name = idna_host(host).strip().lower()
        port_text = str(port)
        ip = parse_ip(name)
        if ip is not None:
            for net in self.networks:
                if ip.version == net.version and ip in net:
                    return True
            for match in self.ips:
                if match.match(ip, port_text):
                    return True
        return any(d.match(name, port_text) for d in self.domains)


def _first_set(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first non-empty variable among ``names`` as (name, value), like Go's getEnvAny."""
    for name in names:
        value = environ.get(name)
        if value:
            return name, value
    return None


@attrs.frozen
class ProxySettings:
    """Which proxy, if any, each upstream connection goes through."""

    http: ProxyURL | None = None
    https: ProxyURL | None = None
    no_proxy: NoProxy = NoProxy()
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxySettings:
        """Read HTTP_PROXY, HTTPS_PROXY, NO_PROXY (upper-case first) and REQUEST_METHOD."""
        warnings: list[str] = []
        found: dict[str, ProxyURL | None] = {}
        for key, names in (("http", ("HTTP_PROXY", "http_proxy")),
                           ("https", ("HTTPS_PROXY", "https_proxy"))):
            found[key] = None
            named = _first_set(environ, *names)
            if named is None:
                continue
            try:
                proxy = parse_proxy(named[1], named[0])
            except ValueError as e:
                warnings.append(f"ignoring invalid proxy URL in {e}")
                continue
            if not proxy.supported:
                warnings.append(
                    f"{named[0]}: unsupported proxy scheme '{proxy.scheme}' (llamaswap speaks "
                    f"http and https to proxies); upstream requests that need it will fail"
                )
            found[key] = proxy
        if found["http"] is not None and environ.get("REQUEST_METHOD"):
            warnings.append(
                f"ignoring {found['http'].source}: REQUEST_METHOD is set (CGI environment, "
                "see golang.org/s/cgihttpproxy)"
            )
            found["http"] = None
        no_proxy = _first_set(environ, "NO_PROXY", "no_proxy")
        return cls(
            http=found["http"],
            https=found["https"],
            no_proxy=NoProxy.parse(no_proxy[1] if no_proxy else ""),
            warnings=tuple(warnings),
        )

    @property
    def active(self) -> bool:
        """True when some upstream connection could go through a proxy."""
        return (self.http is not None or self.https is not None) and not self.no_proxy.everything

    def proxy_for(self, scheme: str, host: str, port: int) -> ProxyURL | None:
        """The proxy for a connection to ``scheme://host:port``, or None to connect directly."""
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if proxy is None or is_local_host(host) or self.no_proxy.excludes(host, port):
            return None
        return proxy

    def describe(self) -> str:
        """One line for the startup log (credentials left out)."""
        parts = [p.display for p in (self.http, self.https) if p is not None]
        text = ", ".join(parts) if parts else "none"
        if self.no_proxy.everything:
            text += "; NO_PROXY=* (never used)"
        return text


DIRECT = ProxySettings()
"""No proxy for anything (the default wherever settings are not passed in)."""
