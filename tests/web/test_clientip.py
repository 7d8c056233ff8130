"""Client addresses behind reverse proxies: headers believed only from trusted proxies."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from llamaswap.config import ConfigError, load_config_text
from llamaswap.service import LlamaSwapService
from llamaswap.testing.service import service_url
from llamaswap.web.clientip import client_ip

LOCAL = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


def test_untrusted_peer_headers_are_ignored() -> None:
    """Anyone not in trustedProxies is the client, whatever their headers say."""
    assert client_ip("203.0.113.9", [b"1.2.3.4"], b"5.6.7.8", LOCAL) == "203.0.113.9"
    assert client_ip("127.0.0.1", [b"1.2.3.4"], None, ()) == "127.0.0.1"


def test_trusted_peer_forwarded_for() -> None:
    """From a trusted proxy the rightmost untrusted X-Forwarded-For entry is the client."""
    assert client_ip("127.0.0.1", [b"198.51.100.4"], None, LOCAL) == "198.51.100.4"
    # a client that sends its own X-Forwarded-For cannot push its choice past the proxy's entry
    assert client_ip("127.0.0.1", [b"6.6.6.6, 198.51.100.4"], None, LOCAL) == "198.51.100.4"
    # several trusted hops (header lines are one list) are skipped
    assert client_ip("127.0.0.1", [b"198.51.100.4, 10.1.1.1", b"10.2.2.2"], None,
                     LOCAL) == "198.51.100.4"
    assert client_ip("127.0.0.1", [b"10.1.1.1"], None, LOCAL) == "10.1.1.1"


def test_trusted_peer_real_ip_and_odd_entries() -> None:
    """X-Real-IP when there is no X-Forwarded-For; ports, brackets and garbage are handled."""
    assert client_ip("127.0.0.1", [], b"198.51.100.4", LOCAL) == "198.51.100.4"
    assert client_ip("127.0.0.1", [], b"not an ip", LOCAL) == "127.0.0.1"
    assert client_ip("127.0.0.1", [b"[2001:db8::1]:443"], None, LOCAL) == "2001:db8::1"
    assert client_ip("127.0.0.1", [b"198.51.100.4:5555"], None, LOCAL) == "198.51.100.4"
    assert client_ip("127.0.0.1", [b"unknown, 10.1.1.1"], None, LOCAL) == "10.1.1.1"
    assert client_ip("::ffff:127.0.0.1", [b"198.51.100.4"], None, LOCAL) == "198.51.100.4"


def test_trusted_proxies_config() -> None:
    """trustedProxies takes addresses and CIDR networks; anything else names the entry."""
    config = load_config_text("trustedProxies: [127.0.0.1, 10.0.0.0/8, '::1']\n")
    assert config.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert load_config_text("models: {}\n").trusted_proxies == ()
    with pytest.raises(ConfigError) as info:
        load_config_text("trustedProxies: [localhost]\n")
    assert info.value.problems == (
        'trustedProxies[0]: "localhost" is not an IP address or CIDR network',)


async def _access_line(tmp_path: Path, config: str) -> str:
    """Start the service with ``config``, send a request with forwarding headers, read the log."""
    svc = LlamaSwapService(
        config_path=None, config=load_config_text(config),
        listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
    )
    svc.startService()
    try:
        base = service_url(svc)
        resp = await treq.get(base + "/v1/models", headers={
            "X-Forwarded-For": "198.51.100.4", "X-Real-IP": "192.0.2.1",
        })
        await resp.content()
        text = (await (await treq.get(base + "/logs")).content()).decode()
    finally:
        await svc.stopService()
    [line] = [line for line in text.splitlines() if '"GET /v1/models' in line]
    return line


@pytest_twisted.ensureDeferred
async def test_access_log_believes_a_trusted_proxy(tmp_path: Path) -> None:
    """With the peer in trustedProxies the access log names the forwarded client."""
    line = await _access_line(tmp_path, "trustedProxies: [127.0.0.1]\nmodels: {}\n")
    assert "Request 198.51.100.4 " in line


@pytest_twisted.ensureDeferred
async def test_access_log_ignores_headers_by_default(tmp_path: Path) -> None:
    """Without trustedProxies (the default) the headers are ignored: the socket peer is logged."""
    line = await _access_line(tmp_path, "models: {}\n")
    assert "Request 127.0.0.1 " in line
