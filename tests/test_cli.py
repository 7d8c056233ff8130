"""The ``llamaswap`` command with llama-swap's command lines: what it listens on, what it prints."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from llamaswap.buildinfo import build_info
from llamaswap.listen import ListenError, plan_listen
from llamaswap.tap import normalize_args
from llamaswap.testing.ports import free_port_block
from llamaswap.testing.tlscert import self_signed

COMMAND = [sys.executable, "-c", "from llamaswap.tap import main; main()"]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models: {}\n")
    return cfg


@contextmanager
def running(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start the command; yield it once it logged its listening line, with the lines so far."""
    proc = subprocess.Popen(
        [*COMMAND, *args], cwd=tmp_path, env=_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        else:
            raise AssertionError("exited without listening: " + "".join(lines)
                                 + (proc.stderr.read() if proc.stderr else ""))
        yield proc, lines
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the command did not stop within 30 s of SIGTERM") from None
        finally:
            assert proc.stdout is not None and proc.stderr is not None
            # not communicate(): it skips what the iterator buffered
            lines.append(proc.stdout.read())
            proc.stderr.read()


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (ip, port) pairs process ``pid`` listens on."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


def _get_json(url: str, context: ssl.SSLContext | None = None) -> object:
    with urllib.request.urlopen(url, timeout=30, context=context) as reply:
        return json.loads(reply.read())


@pytest.mark.parametrize("dash", ["-", "--"])
def test_llama_swap_command_line_on_loopback(tmp_path: Path, dash: str) -> None:
    """``-config FILE -listen 127.0.0.1:PORT`` (either dash style) serves on that address only."""
    port = free_port_block(1)
    cfg = _config(tmp_path)
    with running(tmp_path, f"{dash}config", str(cfg), f"{dash}listen", f"127.0.0.1:{port}") as (
        proc, lines
    ):
        assert f"listening on http://127.0.0.1:{port}" in lines[-1]
        assert _listening_addresses(proc.pid) == {("127.0.0.1", port)}
        assert _get_json(f"http://127.0.0.1:{port}/v1/models") == {"object": "list", "data": []}
    assert not any("reachable by all hosts" in line for line in lines)


def test_empty_host_listens_on_every_interface_and_says_so(tmp_path: Path) -> None:
    """``-listen :PORT`` binds every interface, as llama-swap does, and logs that it is open."""
    port = free_port_block(1)
    cfg = _config(tmp_path)
    with running(tmp_path, "-config", str(cfg), "-listen", f":{port}") as (proc, _lines):
        assert _listening_addresses(proc.pid) == {("0.0.0.0", port)}
        assert _get_json(f"http://127.0.0.1:{port}/v1/models") == {"object": "list", "data": []}
    output = "".join(_lines)
    assert "llamaswap is reachable by all hosts on the network" in output


def test_all_interfaces_address_and_equals_form(tmp_path: Path) -> None:
    """``--listen=0.0.0.0:PORT`` and ``-config=FILE``: Go's ``=`` spelling works too."""
    port = free_port_block(1)
    cfg = _config(tmp_path)
    with running(tmp_path, f"-config={cfg}", f"--listen=0.0.0.0:{port}") as (proc, _lines):
        assert _listening_addresses(proc.pid) == {("0.0.0.0", port)}


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this host has no IPv6 loopback")
def test_ipv6_address(tmp_path: Path) -> None:
    """``-listen [::1]:PORT`` listens on the IPv6 loopback."""
    port = free_port_block(1)
    cfg = _config(tmp_path)
    with running(tmp_path, "-config", str(cfg), "-listen", f"[::1]:{port}") as (proc, lines):
        assert _listening_addresses(proc.pid) == {("::1", port)}
        assert f"http://[::1]:{port}" in lines[-1]
        assert _get_json(f"http://[::1]:{port}/v1/models") == {"object": "list", "data": []}


@pytest.mark.parametrize("with_file", [True, False])
def test_config_dir_merges_its_files_after_config(tmp_path: Path, with_file: bool) -> None:
    """``-config-dir DIR`` (with or without ``-config``) serves the models of every file."""
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "a.yaml").write_text("models:\n  two:\n    cmd: x ${PORT}\n")
    (conf / "b.yml").write_text("models:\n  three:\n    cmd: x ${PORT}\n")
    (tmp_path / "main.yaml").write_text("models:\n  one:\n    cmd: x ${PORT}\n")
    port = free_port_block(1)
    args = ["-config", "main.yaml"] if with_file else []
    with running(tmp_path, *args, "-config-dir", "conf.d", "-listen", f"127.0.0.1:{port}"):
        body = _get_json(f"http://127.0.0.1:{port}/v1/models")
    assert isinstance(body, dict)
    expected = ["one", "three", "two"] if with_file else ["three", "two"]
    assert sorted(m["id"] for m in body["data"]) == expected


def test_watch_config_reloads_when_a_file_is_added(tmp_path: Path) -> None:
    """``-watch-config`` with ``-config-dir``: a file dropped into the directory is served."""
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (tmp_path / "main.yaml").write_text("models:\n  one:\n    cmd: x ${PORT}\n")
    port = free_port_block(1)
    with running(tmp_path, "-config", "main.yaml", "-config-dir", "conf.d", "-watch-config",
                 "-listen", f"127.0.0.1:{port}") as (proc, lines):
        (conf / "two.yaml").write_text("models:\n  two:\n    cmd: x ${PORT}\n")
        assert proc.stdout is not None
        for line in proc.stdout:  # two polls, 2 s apart: the change, then a quiet one
            lines.append(line)
            if "configuration reloaded" in line:
                break
        body = _get_json(f"http://127.0.0.1:{port}/v1/models")
    assert isinstance(body, dict)
    assert sorted(m["id"] for m in body["data"]) == ["one", "two"]
    output = "".join(lines)
    assert "watching configuration for changes" in output
    assert output.count("reloading configuration") == 1


def test_config_dir_conflict_names_both_files(tmp_path: Path) -> None:
    """A model defined in two files of the directory: one line naming both, exit status 1."""
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "a.yaml").write_text("models:\n  dup:\n    cmd: x ${PORT}\n")
    (conf / "b.yaml").write_text("models:\n  dup:\n    cmd: y ${PORT}\n")
    proc = subprocess.run(
        [*COMMAND, "-config-dir", str(conf)], cwd=tmp_path, env=_env(), capture_output=True,
        text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert (f'duplicate models "dup" found in {conf / "b.yaml"} (already defined in '
            f'{conf / "a.yaml"})') in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_twisted_endpoint_string_still_works(tmp_path: Path) -> None:
    """A Twisted endpoint string for ``--listen`` is used as it is."""
    port = free_port_block(1)
    cfg = _config(tmp_path)
    with running(tmp_path, "--config", str(cfg), "-l", f"tcp:{port}:interface=127.0.0.1") as (
        proc, _lines
    ):
        assert _listening_addresses(proc.pid) == {("127.0.0.1", port)}


@pytest.mark.parametrize("dash", ["-", "--"])
def test_tls_flags_serve_https(tmp_path: Path, dash: str) -> None:
    """``-tls-cert-file``/``-tls-key-file`` serve HTTPS on the address given."""
    cert = self_signed(["localhost"], ["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem)
    port = free_port_block(1)
    cfg = _config(tmp_path)
    with running(
        tmp_path, f"{dash}config", str(cfg), f"{dash}listen", f"127.0.0.1:{port}",
        f"{dash}tls-cert-file", "cert.pem", f"{dash}tls-key-file", "key.pem",
    ) as (_proc, lines):
        assert f"listening on https://127.0.0.1:{port}" in lines[-1]
        context = ssl.create_default_context(cadata=cert.cert_pem.decode())
        body = _get_json(f"https://127.0.0.1:{port}/v1/models", context)
        assert body == {"object": "list", "data": []}


def test_tls_default_port_is_8443_on_loopback(tmp_path: Path) -> None:
    """With TLS and no ``--listen`` llamaswap listens on 127.0.0.1:8443 (llama-swap: :8443)."""
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    plan = plan_listen(None, str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert plan.endpoint.startswith("ssl:8443:interface=127.0.0.1:")
    assert plan.tls and not plan.all_hosts
    assert plan_listen(None).endpoint == "tcp:8080:interface=127.0.0.1:backlog=1024"


def test_listen_forms_map_to_endpoints() -> None:
    """Each llama-swap address form becomes the matching endpoint; endpoint strings pass."""
    assert plan_listen(":8080").endpoint == "tcp:8080:interface=0.0.0.0:backlog=1024"
    assert plan_listen(":8080").all_hosts
    assert plan_listen("0.0.0.0:80").all_hosts
    assert plan_listen("[::]:80").all_hosts
    assert plan_listen("[::1]:8080").endpoint == r"tcp:8080:interface=\:\:1:backlog=1024"
    assert plan_listen("localhost:9").endpoint == "tcp:9:interface=127.0.0.1:backlog=1024"
    assert plan_listen("tcp:8080").endpoint == "tcp:8080"
    assert plan_listen("unix:/tmp/x.sock").endpoint == "unix:/tmp/x.sock"
    with pytest.raises(ListenError, match="host must be an IP address"):
        plan_listen("bogus:1")


def test_normalize_args_spellings() -> None:
    """Single-dash long flags gain a dash; Go's boolean values are understood."""
    assert normalize_args(["-config", "a", "-config-dir=d", "-watch-config=false", "-c", "x"]) == [
        "--config", "a", "--config-dir=d", "-c", "x",
    ]
    assert normalize_args(["-watch-config=true", "-w"]) == ["--watch-config", "-w"]


def _refused(tmp_path: Path, *args: str) -> str:
    """Run the command with ``args``; it must exit 2 with one line on stderr. Returns the line."""
    proc = subprocess.run(
        [*COMMAND, *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("llamaswap: ")
    return lines[0]


def test_bad_combinations_are_one_line_and_status_2(tmp_path: Path) -> None:
    """Combinations that cannot work: one line on stderr naming the problem, exit status 2."""
    cfg = str(_config(tmp_path))
    (tmp_path / "cert.pem").write_text("x")
    assert "both --tls-cert-file and --tls-key-file" in _refused(
        tmp_path, "-config", cfg, "-tls-cert-file", "cert.pem")
    assert "--tls-key-file nope.pem: no such file" in _refused(
        tmp_path, "-config", cfg, "-tls-cert-file", "cert.pem", "-tls-key-file", "nope.pem")
    assert "not a unix: endpoint" in _refused(
        tmp_path, "-config", cfg, "-listen", "unix:/tmp/llamaswap-test.sock",
        "-tls-cert-file", "cert.pem", "-tls-key-file", "cert.pem")
    assert "at least one of --config or --config-dir" in _refused(tmp_path, "-listen", ":8080")
    assert "flag provided but not defined: -bogus" in _refused(tmp_path, "-config", cfg, "-bogus")
    assert "--nope not recognized" in _refused(tmp_path, "-config", cfg, "--nope")
    assert "host must be an IP address" in _refused(tmp_path, "-config", cfg, "-listen", "bogus:1")
    assert "Wrong number of arguments" in _refused(tmp_path, "-config", cfg, "extra")
    assert "invalid boolean value" in _refused(tmp_path, "-config", cfg, "-watch-config=maybe")


@pytest.mark.parametrize("flag", ["-version", "--version"])
def test_version_flag(tmp_path: Path, flag: str) -> None:
    """``-version`` prints the package version, commit, Python and Twisted, and exits 0."""
    proc = subprocess.run(
        [*COMMAND, flag], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0
    info = build_info()
    assert proc.stdout.strip() == (
        f"version: {info.version} ({info.commit}), built at {info.build_date}; "
        f"Python {info.python}, Twisted {info.twisted}"
    )


@pytest.mark.parametrize("flag", ["-help", "--help", "-h"])
def test_help_names_every_flag_and_listen_form(tmp_path: Path, flag: str) -> None:
    """``-help`` lists every option and the address forms ``--listen`` accepts; exit 0."""
    proc = subprocess.run(
        [*COMMAND, flag], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0
    for text in ("--config", "--config-dir", "--listen", "--tls-cert-file", "--tls-key-file",
                 "--watch-config", "--version", ":8080", "[::1]:8080", "tcp:8080", "unix:",
                 "systemd:"):
        assert text in proc.stdout, text


def test_twistd_takes_the_same_options(tmp_path: Path) -> None:
    """``twistd -n llamaswap --listen HOST:PORT`` works with the options in Twisted spelling."""
    port = free_port_block(1)
    cfg = _config(tmp_path)
    proc = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "llamaswap", "--config", str(cfg),
         "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                assert f"http://127.0.0.1:{port}" in line
                break
        assert _get_json(f"http://127.0.0.1:{port}/v1/models") == {"object": "list", "data": []}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
