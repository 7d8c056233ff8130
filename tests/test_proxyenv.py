"""Proxy settings from the environment follow Go's ProxyFromEnvironment rules."""

from __future__ import annotations

import pytest

from llamaswap.proxyenv import NoProxy, ProxySettings, parse_proxy, split_host_port


def settings(**env: str) -> ProxySettings:
    """Settings read from exactly ``env``."""
    return ProxySettings.from_environ(env)


def chosen(s: ProxySettings, url_scheme: str, host: str, port: int) -> str | None:
    """The proxy (scheme://host:port) chosen for a target, or None for direct."""
    proxy = s.proxy_for(url_scheme, host, port)
    return None if proxy is None else f"{proxy.scheme}://{proxy.host}:{proxy.port}"


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("cache.corp.example.com:1234", "http://cache.corp.example.com:1234"),
        ("cache.corp.example.com", "http://cache.corp.example.com:80"),
        ("https://cache.corp.example.com", "https://cache.corp.example.com:443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://127.0.0.1:8080", "https://127.0.0.1:8080"),
        ("socks5://127.0.0.1", "socks5://127.0.0.1:1080"),
        ("http://[2001:db8::1]:3128", "http://2001:db8::1:3128"),
    ],
)
def test_proxy_values_parse_like_go(value: str, want: str) -> None:
    """Scheme-less values get http://; default ports follow the proxy scheme (Go's table)."""
    assert chosen(settings(HTTP_PROXY=value), "http", "example.com", 80) == want


def test_http_and_https_use_their_own_variable() -> None:
    """HTTP_PROXY serves http:// targets, HTTPS_PROXY https:// ones."""
    s = settings(HTTP_PROXY="http.proxy.tld", HTTPS_PROXY="secure.proxy.tld")
    assert chosen(s, "http", "insecure.tld", 80) == "http://http.proxy.tld:80"
    assert chosen(s, "https", "secure.tld", 443) == "http://secure.proxy.tld:80"


def test_https_target_without_https_proxy_is_direct() -> None:
    """HTTP_PROXY alone does not apply to https:// targets."""
    assert chosen(settings(HTTP_PROXY="proxy:3128"), "https", "example.com", 443) is None


def test_upper_case_wins_and_lower_case_is_the_fallback() -> None:
    """HTTP_PROXY beats http_proxy; an empty upper-case value falls back to lower-case."""
    both = settings(HTTP_PROXY="upper:1", http_proxy="lower:2")
    assert chosen(both, "http", "example.com", 80) == "http://upper:1"
    empty_upper = settings(HTTP_PROXY="", http_proxy="lower:2", https_proxy="low:3")
    assert chosen(empty_upper, "http", "example.com", 80) == "http://lower:2"
    assert chosen(empty_upper, "https", "example.com", 443) == "http://low:3"


def test_lower_case_no_proxy_is_read() -> None:
    """no_proxy is used when NO_PROXY is unset; NO_PROXY wins when both are."""
    assert chosen(settings(HTTP_PROXY="p:1", no_proxy="example.com"),
                  "http", "example.com", 80) is None
    both = settings(HTTP_PROXY="p:1", NO_PROXY="other.com", no_proxy="example.com")
    assert chosen(both, "http", "example.com", 80) == "http://p:1"


def test_cgi_environment_ignores_http_proxy_only() -> None:
    """With REQUEST_METHOD set, HTTP_PROXY is ignored (with a warning); HTTPS_PROXY is kept."""
    s = settings(HTTP_PROXY="http://10.1.2.3:8080", HTTPS_PROXY="sp:1", REQUEST_METHOD="POST")
    assert chosen(s, "http", "example.com", 80) is None
    assert chosen(s, "https", "example.com", 443) == "http://sp:1"
    assert any("REQUEST_METHOD" in w for w in s.warnings)


def test_no_variables_means_direct() -> None:
    """An empty environment proxies nothing and is not active."""
    s = settings()
    assert not s.active
    assert chosen(s, "http", "example.com", 80) is None


@pytest.mark.parametrize(
    "host",
    ["localhost", "LocalHost", "localhost.", "127.0.0.1", "127.0.0.2", "::1",
     "::ffff:127.0.0.1"],
)
def test_loopback_is_never_proxied(host: str) -> None:
    """localhost and loopback addresses go direct whatever the variables say."""
    s = settings(HTTP_PROXY="p:1", HTTPS_PROXY="p:2")
    assert chosen(s, "http", host, 8080) is None
    assert chosen(s, "https", host, 8443) is None


def test_non_loopback_addresses_are_proxied() -> None:
    """::2, 0.0.0.0 and private addresses are not loopback: they use the proxy."""
    s = settings(HTTP_PROXY="p:1")
    for host in ("::2", "0.0.0.0", "10.0.0.5", "192.168.1.1"):
        assert chosen(s, "http", host, 80) == "http://p:1", host


GO_NO_PROXY = (
    "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, 192.168.1.3:80, "
    "10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:3]:80, [2001:db8::52:0:4]:443, "
    "2002:db8:a::45/64"
)


@pytest.mark.parametrize(
    ("host", "direct"),
    [
        ("192.168.1.1", True),  # exact IPv4
        ("192.168.1.2", False),  # listed with another port
        ("192.168.1.3", True),  # exact IPv4:port
        ("192.168.1.4", False),
        ("10.0.0.2", True),  # in 10.0.0.0/30
        ("10.0.0.4", False),  # just outside it
        ("2001:db8::52:0:1", True),  # exact IPv6
        ("2001:db8::52:0:2", False),
        ("2001:db8::52:0:3", True),  # exact [IPv6]:port
        ("2001:db8::52:0:4", False),  # listed with another port
        ("2002:db8:a::123", True),  # in the IPv6 CIDR
        ("fe80::424b:c8be:1643:a1b6", False),
        ("barbaz.net", False),  # .barbaz.net matches subdomains only
        ("www.barbaz.net", True),
        ("foobar.com", True),  # foobar.com matches itself...
        ("www.foobar.com", True),  # ...and its subdomains
        ("FooBar.COM", True),  # case-insensitive
        ("foofoobar.com", False),  # not a subdomain
        ("baz.com", False),
        ("localhost.net", False),
        ("barbarbaz.net", False),
        ("wildcard.io", False),  # *.wildcard.io matches subdomains only
        ("nested.wildcard.io", True),
        ("awildcard.io", False),
    ],
)
def test_no_proxy_matching_follows_go(host: str, direct: bool) -> None:
    """Go's httpproxy TestUseProxy table (requests to port 80)."""
    assert NoProxy.parse(GO_NO_PROXY).excludes(host, 80) is direct


def test_no_proxy_star_disables_every_proxy() -> None:
    """NO_PROXY=* sends everything direct; the settings are then inactive."""
    s = settings(HTTP_PROXY="p:1", NO_PROXY="foo.com, *")
    assert chosen(s, "http", "example.com", 80) is None
    assert not s.active


def test_no_proxy_domain_with_port() -> None:
    """A domain entry with a port only matches that port."""
    no_proxy = NoProxy.parse("example.com:8080")
    assert no_proxy.excludes("api.example.com", 8080)
    assert not no_proxy.excludes("api.example.com", 80)


def test_no_proxy_ipv4_mapped_address_matches_ipv4_entries() -> None:
    """An IPv4-mapped IPv6 host matches IPv4 entries and ranges, as Go compares them."""
    no_proxy = NoProxy.parse("10.0.0.0/8, 192.168.1.1")
    assert no_proxy.excludes("::ffff:10.1.2.3", 80)
    assert no_proxy.excludes("::ffff:192.168.1.1", 80)


def test_no_proxy_idna_names() -> None:
    """Unicode names match their punycode form in either place."""
    no_proxy = NoProxy.parse("bücher.example")
    assert no_proxy.excludes("xn--bcher-kva.example", 80)
    assert NoProxy.parse("xn--bcher-kva.example").excludes("bücher.example", 80)


@pytest.mark.parametrize("entry", [":1", "[::1", ":", " , ,", "a:b:c", "[x]y:1"])
def test_malformed_no_proxy_entries_are_skipped(entry: str) -> None:
    """Entries Go cannot parse are ignored without error; the rest still apply."""
    no_proxy = NoProxy.parse(entry + ",example.com")
    assert no_proxy.excludes("example.com", 80)
    assert not no_proxy.excludes("other.org", 80)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("host:80", ("host", "80")),
        ("[::1]:443", ("::1", "443")),
        ("host:", ("host", "")),
        ("host", None),
        ("a:b:c", None),
        ("[::1]", None),
        ("[::1]x:1", None),
        ("ho]st:1", None),
    ],
)
def test_split_host_port_like_go(text: str, want: tuple[str, str] | None) -> None:
    """net.SplitHostPort's accept/reject decisions."""
    assert split_host_port(text) == want


def test_credentials_become_basic_proxy_authorization() -> None:
    """user:pass in the URL (percent-decoded) gives a Basic header; display hides them."""
    proxy = parse_proxy("http://al%40ce:p%3Ass@proxy:3128", "HTTP_PROXY")
    assert proxy.username == "al@ce" and proxy.password == "p:ss"
    assert proxy.authorization == b"Basic YWxAY2U6cDpzcw=="
    assert proxy.display == "http://proxy:3128 (HTTP_PROXY)"
    assert "p:ss" not in repr(proxy)
    assert parse_proxy("proxy:3128", "HTTP_PROXY").authorization is None


def test_unsupported_and_invalid_proxies_warn() -> None:
    """socks5 is kept (requests fail, naming it) with a warning; an unparsable URL is dropped."""
    s = settings(HTTP_PROXY="socks5://s:1080", HTTPS_PROXY="http://p:notaport")
    assert s.http is not None and not s.http.supported
    assert s.https is None
    assert any("socks5" in w for w in s.warnings)
    assert any("HTTPS_PROXY" in w for w in s.warnings)


def test_describe_leaves_out_credentials() -> None:
    """The startup log line names the proxies without passwords."""
    s = settings(HTTP_PROXY="http://u:secret@p:1", HTTPS_PROXY="https://q")
    assert s.describe() == "http://p:1 (HTTP_PROXY), https://q:443 (HTTPS_PROXY)"
    assert settings().describe() == "none"
