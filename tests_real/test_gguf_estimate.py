"""The GGUF memory estimate against what llama.cpp's real ``llama-server`` allocates, on CPU.

For the synthesized test models, the estimate from the file and the command's flags is
within 10 % of the model, KV and compute buffers ``llama-server`` reports.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from llamaswap.process.ggufest import estimate_cmd
from llamaswap.testing.ports import free_port_block

BUFFER = re.compile(r"(\w+(?:_\w+)?) (model|KV|compute|RS) buffer size =\s+([0-9.]+) MiB")
MIB = 1024 * 1024


def allocated(binary: str, model: Path, args: list[str]) -> tuple[str, int]:
    """Run llama-server until it listens; the command and the bytes of buffers it reports."""
    cmd = [binary, "--host", "127.0.0.1", "--port", str(free_port_block()), "-m", str(model),
           "-t", "1", "-lv", "4", *args]  # verbosity 4: the buffer sizes are logged
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:  # after the model and its buffers are allocated
                break
    finally:
        proc.kill()  # only its figures matter
        proc.wait(timeout=30)
    sizes = [float(m.group(3)) for m in map(BUFFER.search, lines) if m]
    assert sizes, "no buffer sizes in llama-server's output:\n" + "".join(lines[-40:])
    return " ".join(cmd), int(sum(sizes) * MIB)


@pytest.mark.parametrize(("size", "args"), [
    ("big", ["-c", "512"]),
    ("big", ["-c", "2048"]),
    ("big", []),
    ("tiny", ["-c", "512"]),
    ("tiny", []),
])
def test_real_gguf_estimate_within_10_percent(llama_server, gguf_models, size, args) -> None:  # type: ignore[no-untyped-def]
    """The estimate from the file and the flags is within 10 % of llama-server's buffers."""
    cmd, reported = allocated(llama_server, gguf_models[size], args)
    estimate = estimate_cmd(cmd)
    assert estimate is not None
    assert abs(estimate - reported) <= 0.10 * reported, (
        f"estimate {estimate / MIB:.1f} MiB, llama-server {reported / MIB:.1f} MiB for {cmd}")
