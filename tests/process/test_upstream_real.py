"""Upstream with real processes on the real reactor: start, stop, failures, no orphans."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

from llamaswap.config.model import ModelConfig
from llamaswap.errors import UpstreamStartFailed
from llamaswap.process.state import ProcessState as S
from llamaswap.process.upstream import Upstream
from llamaswap.testing.ports import free_port_block

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free TCP port below the ephemeral range (no client socket can take it meanwhile)."""
    return free_port_block(1)


def responder_model(mid: str = "r1", flags: str = "", **kw: Any) -> ModelConfig:
    """A model running the test responder on a free port."""
    port = free_port()
    return ModelConfig(
        id=mid, cmd=f"{PY} -m llamaswap.testing.responder --port {port} --model {mid} {flags}",
        proxy=f"http://127.0.0.1:{port}", health_check_timeout=kw.pop("health_check_timeout", 15),
        **kw,
    )


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


async def eventually(check: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> None:
    """Poll ``check`` on the reactor until it holds; fail after ``timeout`` seconds."""
    waited = 0.0
    while not check():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await deferLater(reactor, step, lambda: None)
        waited += step


@pytest.fixture(autouse=True)
def _pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned ``python -m llamaswap...`` must import this checkout."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest_twisted.ensureDeferred
async def test_responder_start_ready_and_stop() -> None:
    """The responder becomes ready via /health, serves, and is fully gone after stop."""
    up = Upstream(responder_model(flags="--start-delay 0.2"), reactor=reactor)
    seen: list[S] = []
    up.add_state_listener(lambda mid, old, new: seen.append(new))
    try:
        await up.start()
        assert up.state is S.READY and up.pid is not None
        pids = tree(up.pid)
        assert len(pids) == 2  # launcher + responder
        resp = await treq.get(up.proxy_url + "/health")
        assert resp.code == 200
        await resp.content()
        assert b"listening on http://127.0.0.1" in up.logs.history()
    finally:
        await up.stop(5)
    assert seen == [S.STARTING, S.READY, S.STOPPING, S.STOPPED]
    assert not any(alive(p) for p in pids)


@pytest_twisted.ensureDeferred
async def test_process_ignoring_sigterm_is_killed_after_timeout() -> None:
    """A process that ignores SIGTERM is SIGKILLed after the timeout, and reaped."""
    up = Upstream(responder_model(flags="--ignore-sigterm"), reactor=reactor)
    await up.start()
    assert up.pid is not None
    pids = tree(up.pid)
    started = reactor.seconds()
    await up.stop(0.5)
    assert reactor.seconds() - started >= 0.5
    assert up.state is S.STOPPED and not any(alive(p) for p in pids)
    assert b"ignoring SIGTERM" in up.logs.history()


@pytest_twisted.ensureDeferred
async def test_exit_at_once_fails_fast_with_code_and_output() -> None:
    """An upstream that exits at once fails the start quickly, quoting its exit code and output."""
    up = Upstream(responder_model(flags="--fail-start"), reactor=reactor)
    started = reactor.seconds()
    with pytest.raises(UpstreamStartFailed) as info:
        await up.start()
    assert reactor.seconds() - started < 3
    assert "exit code 1" in info.value.message
    assert "failed to load model r1" in info.value.message
    assert up.state is S.STOPPED


@pytest_twisted.ensureDeferred
async def test_never_healthy_times_out_and_is_stopped() -> None:
    """A process that never answers 200 fails with the health-check timeout and is stopped."""
    up = Upstream(responder_model(flags="--start-delay 1000", health_check_timeout=1),
                  reactor=reactor)
    states: list[S] = []
    up.add_state_listener(lambda mid, old, new: states.append(new))
    with pytest.raises(UpstreamStartFailed, match="health check timed out after 1s"):
        await up.start()
    await eventually(lambda: up.state is S.STOPPED)
    assert states == [S.STARTING, S.STOPPING, S.STOPPED]


@pytest_twisted.ensureDeferred
async def test_forking_shell_wrapper_is_fully_gone_after_stop() -> None:
    """Every process of a forking sh -c wrapper (even ones ignoring TERM) dies on stop."""
    cmd = "sh -c 'sleep 1000 & (trap \"\" TERM; sleep 1001) & wait'"
    up = Upstream(ModelConfig(id="sh", cmd=cmd, check_endpoint="none"), reactor=reactor)
    await up.start()
    assert up.pid is not None
    leader = up.pid
    await eventually(lambda: len(tree(leader)) >= 4)
    pids = tree(leader)
    await up.stop(0.5)
    assert not any(alive(p) for p in pids), [p for p in pids if alive(p)]


@pytest_twisted.ensureDeferred
async def test_cmd_stop_runs_with_pid(tmp_path: Path) -> None:
    """cmdStop runs with ${PID} replaced and its effect stops the process before the timeout."""
    marker = tmp_path / "stopped-pid"
    model = responder_model(cmd_stop=f"sh -c 'echo $0 > {marker}; kill -TERM $0' ${{PID}}")
    up = Upstream(model, reactor=reactor)
    await up.start()
    pid = up.pid
    assert pid is not None
    pids = tree(pid)
    started = reactor.seconds()
    await up.stop(10)
    assert reactor.seconds() - started < 5
    assert marker.read_text().strip() == str(pid)
    assert not any(alive(p) for p in pids)


@pytest_twisted.ensureDeferred
async def test_environment_is_inherited_plus_model_env() -> None:
    """The upstream sees llamaswap's environment plus the model's env entries."""
    os.environ["LLAMASWAP_TEST_INHERITED"] = "yes"
    cmd = "sh -c 'echo \"FOO=$FOO INH=$LLAMASWAP_TEST_INHERITED\"; exec sleep 1000'"
    up = Upstream(ModelConfig(id="env", cmd=cmd, check_endpoint="none", env=("FOO=bar",)),
                  reactor=reactor)
    try:
        await up.start()
        await eventually(lambda: b"\n" in up.logs.history())
        assert up.logs.history() == b"FOO=bar INH=yes\n"
    finally:
        await up.stop(2)
        del os.environ["LLAMASWAP_TEST_INHERITED"]


@pytest_twisted.ensureDeferred
async def test_start_while_stopping_restarts_real_process() -> None:
    """A start issued during a stop waits for it and brings up a fresh process."""
    up = Upstream(responder_model(), reactor=reactor)
    await up.start()
    first = up.pid
    stopping = up.stop(5)
    assert up.state is S.STOPPING
    await up.start()
    assert stopping.called and up.state is S.READY and up.pid != first
    await up.stop(5)


PARENT_SCRIPT = """
import json, sys
from twisted.internet import reactor
from llamaswap.config.model import ModelConfig
from llamaswap.process.upstream import Upstream
models = [ModelConfig(id="a", cmd=sys.argv[1], proxy=sys.argv[2]),
          ModelConfig(id="b", cmd="sh -c 'sleep 1000 & sleep 1001 & wait'", check_endpoint="none")]
ups = [Upstream(m, reactor=reactor) for m in models]
def ready(_):
    print(json.dumps([u.pid for u in ups]), flush=True)
from twisted.internet.defer import gatherResults
reactor.callWhenRunning(lambda: gatherResults([u.start() for u in ups]).addCallback(ready))
reactor.addSystemEventTrigger(
    "before", "shutdown", lambda: gatherResults([u.shutdown(5) for u in ups]))
reactor.run()
print("states", [u.state.value for u in ups], flush=True)
"""


class _Lines(ProcessProtocol):
    """Collects a child's stdout; fires ``first_line`` with its first line."""

    def __init__(self) -> None:
        self.out = b""
        self.first_line: Deferred[bytes] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Collect output."""
        self.out += data
        if b"\n" in self.out and not self.first_line.called:
            self.first_line.callback(self.out.split(b"\n", 1)[0])

    def processEnded(self, reason: Any) -> None:
        """Note the end."""
        if not self.first_line.called:
            self.first_line.errback(reason)
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_sigkill_of_llamaswap_leaves_no_upstream() -> None:
    """When the process holding upstreams is SIGKILLed, every upstream process dies within 1 s."""
    model = responder_model()
    proto = _Lines()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    transport = reactor.spawnProcess(
        proto, PY, [PY, "-c", PARENT_SCRIPT, model.cmd, model.proxy], env=env,
    )
    try:
        leaders = json.loads(await proto.first_line)
        pids = [p for leader in leaders for p in tree(leader)]
        assert len(pids) >= 5  # 2 launchers, responder, sh, 2 sleeps
        assert all(alive(p) for p in pids)
        os.kill(transport.pid, signal.SIGKILL)
        await proto.ended
        killed_at = reactor.seconds()
        await eventually(lambda: not any(alive(p) for p in pids), timeout=1.0, step=0.01)
        assert reactor.seconds() - killed_at < 1.0
    finally:
        if transport.pid is not None:
            transport.signalProcess("KILL")


@pytest_twisted.ensureDeferred
async def test_sigterm_of_llamaswap_shuts_every_upstream_down_before_exit() -> None:
    """On SIGTERM the holder shuts every upstream down and has reaped them all when it exits."""
    model = responder_model()
    proto = _Lines()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    transport = reactor.spawnProcess(
        proto, PY, [PY, "-c", PARENT_SCRIPT, model.cmd, model.proxy], env=env,
    )
    try:
        leaders = json.loads(await proto.first_line)
        pids = [p for leader in leaders for p in tree(leader)]
        assert len(pids) >= 5
        os.kill(transport.pid, signal.SIGTERM)
        await proto.ended
        assert b"states ['shutdown', 'shutdown']" in proto.out
        assert not any(alive(p) for p in pids), [p for p in pids if alive(p)]
    finally:
        if transport.pid is not None:
            transport.signalProcess("KILL")
