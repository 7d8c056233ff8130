"""The service reads the proxy variables it is given and sends health checks and traffic through."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor

from llamaswap.config import load_config_text
from llamaswap.service import LlamaSwapService
from llamaswap.testing.forwardproxy import ForwardProxy
from llamaswap.testing.ports import free_port_block
from llamaswap.testing.service import service_url

# 0.0.0.0 is not loopback by Go's rules (so it is proxied), yet connects locally on Linux.
CONFIG = """
healthCheckTimeout: 15
startPort: {start_port}
models:
  alpha:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model alpha
    proxy: http://0.0.0.0:${{PORT}}
"""


@pytest_twisted.ensureDeferred
async def test_service_uses_the_proxy_from_its_environment(tmp_path: Path) -> None:
    """With HTTP_PROXY injected, health probes and the chat go through it; the log names it."""
    proxy = ForwardProxy(reactor, credentials=("ops", "pw"))
    listening = reactor.listenTCP(0, proxy.factory(), interface="127.0.0.1")
    proxy_port = listening.getHost().port
    config = load_config_text(CONFIG.format(start_port=free_port_block(), py=sys.executable))
    svc = LlamaSwapService(
        config_path=str(tmp_path / "unused.yaml"), config=config,
        listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
        environ={"HTTP_PROXY": f"http://ops:pw@127.0.0.1:{proxy_port}", "NO_PROXY": "x.test"},
    )
    svc.startService()
    try:
        resp = await treq.post(service_url(svc) + "/v1/chat/completions",
                               json={"model": "alpha"}, timeout=30)
        assert resp.code == 200
        assert json.loads(await resp.content())["model"] == "alpha"
        targets = [(s.method, s.target.split("/", 3)[-1]) for s in proxy.seen]
        assert ("GET", "health") in targets
        assert targets[-1] == ("POST", "v1/chat/completions")
        assert all(s.target.startswith("http://0.0.0.0:") for s in proxy.seen)
        assert all(s.headers["proxy-authorization"] == "Basic b3BzOnB3" for s in proxy.seen)
        log = svc.proxy_log.history()
        assert f"http://127.0.0.1:{proxy_port} (HTTP_PROXY)".encode() in log
        assert b"ops:pw" not in log
    finally:
        await svc.stopService()
        await proxy.close()
        await listening.stopListening()
