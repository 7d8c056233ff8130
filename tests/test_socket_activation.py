"""Socket activation: llamaswap serves on the socket systemd hands it (contrib/ units)."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from llamaswap.testing.ports import free_port_block

CONTRIB = Path(__file__).resolve().parents[1] / "contrib"
COMMAND = [sys.executable, "-c", "from llamaswap.tap import main; main()"]


def _unit(name: str) -> configparser.ConfigParser:
    """A systemd unit file of contrib/, read as INI."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CONTRIB / name)
    return parser


def _service_args(config: Path) -> list[str]:
    """The llamaswap arguments of contrib/llamaswap.service's ExecStart, with our config file."""
    argv = shlex.split(_unit("llamaswap.service")["Service"]["ExecStart"])
    assert argv[0].endswith("/llamaswap")
    args = argv[1:]
    args[args.index("-config") + 1] = str(config)
    return args


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _http_get(sock: socket.socket, path: str) -> tuple[int, bytes]:
    """One HTTP/1.0 GET on a connected socket: status and body."""
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_units_listen_on_loopback_and_pass_the_socket() -> None:
    """The shipped units: a loopback socket with a large backlog, handed over as systemd:..."""
    socket_unit = _unit("llamaswap.socket")
    assert socket_unit["Socket"]["ListenStream"] == "127.0.0.1:8080"
    assert int(socket_unit["Socket"]["Backlog"]) >= 1024
    service = _unit("llamaswap.service")
    assert service["Unit"]["Requires"] == "llamaswap.socket"
    assert "-listen systemd:domain=INET:index=0" in service["Service"]["ExecStart"]


def test_activated_by_an_inherited_socket(tmp_path: Path) -> None:
    """Under systemd-socket-activate the first connection, made before llamaswap runs, is served."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "needs systemd-socket-activate (Debian: systemd); .ci/run installs it"
    config = tmp_path / "config.yaml"
    config.write_text("models: {}\n")
    port = free_port_block(1)
    proc = subprocess.Popen(
        [activate, "--fdname=llamaswap", "-l", f"127.0.0.1:{port}", *COMMAND,
         *_service_args(config)],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith(f"Listening on 127.0.0.1:{port}"), line
        # Nothing has started llamaswap yet: this connection waits in the socket's queue,
        # makes systemd-socket-activate exec it, and is answered once it runs.
        with socket.create_connection(("127.0.0.1", port), timeout=60) as first:
            status, body = _http_get(first, "/v1/models")
        assert (status, json.loads(body)) == (200, {"object": "list", "data": []})
        with socket.create_connection(("127.0.0.1", port), timeout=60) as second:
            status, body = _http_get(second, "/api/version")
        assert status == 200 and "version" in json.loads(body)
    finally:
        proc.send_signal(signal.SIGTERM)  # the exec'd llamaswap has this pid
        out, err = proc.communicate(timeout=60)
    assert "llamaswap listening on systemd:domain=INET:index=0" in out, out + err
    assert "Traceback" not in out + err


def test_systemd_endpoint_without_a_socket_is_one_line(tmp_path: Path) -> None:
    """``-listen systemd:...`` outside socket activation: one line saying so, exit status 1."""
    config = tmp_path / "config.yaml"
    config.write_text("models: {}\n")
    proc = subprocess.run(
        [*COMMAND, "-config", str(config), "-listen", "systemd:domain=INET:index=0"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (
        "cannot listen on systemd:domain=INET:index=0: systemd passed no such listening socket "
        "to this process (start it from a .socket unit, or with systemd-socket-activate "
        "--fdname=NAME); not starting"
    ) in proc.stderr
