"""The example plugin installs with pip, is found by getPlugins and keeps the contract."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from llamaswap.testing.plugin_install import install_plugin, plugin_env
from llamaswap.testing.ports import free_port_block

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins" / "batching"

ROUTER_CHECK = """
from twisted.internet.task import Clock
from llamaswap.config.model import Config, ModelConfig, RoutingConfig, SchedulerConfig
from llamaswap.router.base import Router
from tests.router.fakes import FakeUpstream

models = {m: ModelConfig(id=m) for m in "ab"}
ups = {m: FakeUpstream(cfg) for m, cfg in models.items()}
config = Config(models=models, routing=RoutingConfig(scheduler=SchedulerConfig(
    use="batching", settings={"batching": {"max_skips": 1}})))
router = Router.from_config(config, ups, Clock())
assert type(router.scheduler).__name__ == "BatchingScheduler", router.scheduler
served = []
grants = []
def keep(g):
    served.append(g.model_id)
    grants.append(g)
router.request("a").addCallback(keep)
router.request("b").addCallback(keep)
router.request("a").addCallback(keep)
router.request("a").addCallback(keep)
assert served == ["a", "a"], served
for g in list(grants):
    g.done()
assert served == ["a", "a", "b"], served
print("router ok", router.snapshot()["scheduler"]["max_skips"])
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed (no deps) into a fresh target directory."""
    return install_plugin(EXAMPLE, tmp_path_factory.mktemp("plugin") / "site")


def run_with(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run python with the installed plugin and this checkout on sys.path."""
    return subprocess.run([sys.executable, *args], env=plugin_env(target, ROOT), cwd=str(target),
                          capture_output=True, text=True, timeout=300)


def test_example_plugin_layout_installed(installed: Path) -> None:
    """pip installs the drop-in into twisted/plugins without an __init__.py."""
    assert (installed / "twisted" / "plugins" / "llamaswap_batching_plugin.py").is_file()
    assert not (installed / "twisted" / "__init__.py").exists()
    assert not (installed / "twisted" / "plugins" / "__init__.py").exists()
    assert (installed / "llamaswap_batching" / "scheduler.py").is_file()


def test_example_plugin_found_and_listed(installed: Path) -> None:
    """llamaswap.plugins finds 'batching' next to the built-ins once installed."""
    code = ("from llamaswap.plugins import find_scheduler_factory, scheduler_factories;"
            "print(sorted(scheduler_factories()));"
            "print(find_scheduler_factory('batching').description)")
    proc = run_with(installed, "-c", code)
    assert proc.returncode == 0, proc.stderr
    names, description = proc.stdout.splitlines()
    assert {"batching", "fifo", "serial"} <= set(ast.literal_eval(names))
    assert "max_skips" in description


def test_example_plugin_own_tests_pass(installed: Path) -> None:
    """The plugin's own tests (incl. llamaswap's contract checks) pass against the install."""
    tests = EXAMPLE / "tests"
    proc = run_with(installed, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed" in proc.stdout


def test_example_plugin_selected_in_config_serves_through_router(installed: Path) -> None:
    """A config naming 'batching' builds a Router that batches and bounds overtaking."""
    proc = run_with(installed, "-c", ROUTER_CHECK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "router ok 1"


def test_example_plugin_depends_only_on_public_contract() -> None:
    """The example imports only the public contract modules of llamaswap."""
    allowed = {"llamaswap.interfaces", "llamaswap.router.events", "llamaswap.errors"}
    for path in (EXAMPLE / "llamaswap_batching").glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) > 1 and words[0] in ("from", "import") and \
                    words[1].startswith("llamaswap."):
                assert words[1] in allowed, f"{path.name}: {line}"


SERVICE_CONFIG = """
startPort: {port}
routing:
  scheduler:
    use: batching
    settings:
      batching: {{max_skips: 2}}
models:
  a:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model a
  b:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model b
"""


def test_example_plugin_serves_requests_through_twistd(installed: Path, tmp_path: Path) -> None:
    """twistd llamaswap with ``routing.scheduler.use: batching`` serves real requests through it."""
    import json
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(SERVICE_CONFIG.format(port=free_port_block(), py=sys.executable))
    env = plugin_env(installed)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "llamaswap", "--config", str(config), "--listen", f"tcp:{port}"],
        env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                break
        else:
            raise AssertionError("llamaswap did not start")
        answers = []
        for model in ("a", "b", "a"):
            body = json.dumps({"model": model, "prompt": "hi"}).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions", data=body,
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                answers.append(json.load(resp)["model"])
        assert answers == ["a", "b", "a"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/running", timeout=10) as resp:
            running = [r["model"] for r in json.load(resp)["running"]]
        assert running == ["a"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
