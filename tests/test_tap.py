"""The twistd plugin: discovery, options, and bad-config handling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from llamaswap.tap import DEFAULT_LISTEN, CriticalOnly, Options


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_plugin_found_from_installed_package(tmp_path: Path) -> None:
    """getPlugins(IServiceMaker) finds ``llamaswap`` in the installed package, not the checkout."""
    code = (
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "import llamaswap, twisted.plugins.llamaswap_plugin as p\n"
        "print(sorted(m.tapname for m in getPlugins(IServiceMaker)))\n"
        "print(p.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(),
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert "'llamaswap'" in out[0]
    if os.environ.get("TOX_ENV_NAME"):
        assert "site-packages" in out[1], "tests must run against the installed wheel"


def test_options_require_config() -> None:
    """Without --config or --config-dir the options are refused with a usage error."""
    with pytest.raises(usage.UsageError, match="at least one of --config or --config-dir"):
        Options().parseOptions([])


def test_options_default_listen(tmp_path: Path) -> None:
    """--listen defaults to loopback port 8080 and the config is loaded."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models: {}\n")
    options = Options()
    options.parseOptions(["--config", str(cfg)])
    assert options["listen_plan"].endpoint == DEFAULT_LISTEN
    assert options["loaded_config"].models == {}


def test_make_service_opts_into_the_gc_policy(tmp_path: Path) -> None:
    """The service twistd and the console script run applies llamaswap.gcpolicy."""
    from llamaswap.tap import makeService

    cfg = tmp_path / "c.yaml"
    cfg.write_text("models: {}\n")
    options = Options()
    options.parseOptions(["--config", str(cfg)])
    assert makeService(options)._tune_gc is True


def test_twistd_bad_config_exits_with_one_line_per_problem(tmp_path: Path) -> None:
    """twistd refuses a bad config before listening: non-zero exit, key path, no traceback."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("models:\n  llama:\n    cmd: x --port ${PORT}\n    ttl: -2\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "llamaswap", "--config", str(cfg), "--listen", "tcp:0"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "models.llama.ttl" in output
    assert "Traceback" not in output
    assert "listening" not in output


def test_twistd_missing_config_file(tmp_path: Path) -> None:
    """A missing config file is one clear line naming the file, and a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "llamaswap", "--config", str(tmp_path / "nope.yaml")],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nope.yaml" in output
    assert "Traceback" not in output


def test_twistd_help_documents_every_option(tmp_path: Path) -> None:
    """``twistd llamaswap --help`` documents --config, --listen and --watch-config."""
    proc = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "llamaswap", "--help"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )
    for option in ("--config", "--listen", "--watch-config"):
        assert option in proc.stdout


def test_console_observer_passes_only_critical_events() -> None:
    """The console shows critical events only; every other level goes to the proxy log."""
    from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher
    from zope.interface.verify import verifyObject

    seen: list[LogLevel] = []
    observer = CriticalOnly(lambda event: seen.append(event["log_level"]))
    verifyObject(ILogObserver, observer)
    publisher = LogPublisher(observer)
    log = Logger(namespace="llamaswap.test", observer=publisher)
    log.debug("d")
    log.info("i")
    log.warn("w")
    log.error("e")
    log.critical("c")
    publisher({"log_format": "an event with no level"})
    assert seen == [LogLevel.critical]


def test_console_leaves_running_out_of_descriptors_to_the_proxy_log() -> None:
    """The port's spare-descriptor failure is logged as critical with a traceback; the
    console skips it (the proxy log counts such events, one line per interval)."""
    from twisted.logger import Logger, LogPublisher

    seen: list[str] = []
    publisher = LogPublisher(CriticalOnly(lambda event: seen.append(event["log_format"])))
    spare = Logger(namespace="twisted.internet.tcp._FileDescriptorReservation",
                   observer=publisher)
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        spare.failure("Could not reserve EMFILE recovery file descriptor.")
    Logger(namespace="llamaswap", observer=publisher).critical("a real problem")
    assert seen == ["a real problem"]


def _run_llamaswap(tmp_path: Path, config: str, listen: str) -> subprocess.CompletedProcess[str]:
    """Run the ``llamaswap`` command with ``config`` as its file, listening on ``listen``."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config)
    return subprocess.run(
        [sys.executable, "-c", "from llamaswap.tap import main; main()",
         "--config", str(cfg), "--listen", listen],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _refused_with(proc: subprocess.CompletedProcess[str], line: str) -> None:
    """The command exited 1 with ``line`` on stderr and no traceback anywhere."""
    assert proc.returncode == 1
    assert line in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_llamaswap_command_says_why_it_cannot_listen(tmp_path: Path) -> None:
    """A port already taken: one line on stderr naming the endpoint and the reason, exit 1."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        proc = _run_llamaswap(tmp_path, "models: {}\n", listen)
    _refused_with(proc, f"cannot listen on {listen}: Address already in use; not starting")


def test_llamaswap_command_names_the_listen_endpoint_it_cannot_use(tmp_path: Path) -> None:
    """An endpoint Twisted cannot parse: one line naming it and the parser's reason, exit 1."""
    proc = _run_llamaswap(tmp_path, "models: {}\n", "bogus:1:x=y")
    _refused_with(
        proc, "cannot listen on bogus:1:x=y: Unknown endpoint type: 'bogus'; not starting"
    )


def test_llamaswap_command_refuses_a_store_file_that_is_not_a_database(tmp_path: Path) -> None:
    """store.path naming a file SQLite cannot open stops the start with the key and reason."""
    store = tmp_path / "activity.db"
    store.write_bytes(b"not a database, " * 100)
    config = f"store:\n  path: {store}\nmodels: {{}}\n"
    proc = _run_llamaswap(tmp_path, config, "tcp:0:interface=127.0.0.1")
    cfg = tmp_path / "c.yaml"
    _refused_with(proc, f"{cfg}: store.path: {store} cannot be opened: file is not a database")
    assert "not starting" in proc.stderr
