"""The memory router on a real NVIDIA GPU with llama.cpp's ``llama-server`` (CUDA build).

Two models that fit stay co-resident, a third that does not evicts the least recently used,
and the memory llamaswap measured matches ``nvidia-smi``'s within 5 %. Skipped, saying why,
without a GPU, NVML, ``nvidia-smi`` or a CUDA ``llama-server`` (``LLAMA_SERVER_CUDA=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from typing import Any

import openai
import pytest

from llamaswap.testing.ports import free_port_block

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def gpu() -> tuple[int, int]:
    """The first NVIDIA GPU's (total, free) bytes, or skip saying why there is none.

    Session-scoped and named first, so a machine without a GPU skips before llama-server
    is built.
    """
    try:
        import pynvml
    except ImportError as error:
        pytest.skip(f"no GPU check: pynvml is not importable ({error})")
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError: no driver or no library
        pytest.skip(f"no NVIDIA GPU: NVML could not be initialised ({error})")
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            pytest.skip("no NVIDIA GPU: NVML found none")
        info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
    finally:
        pynvml.nvmlShutdown()
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no nvidia-smi to compare with")
    if os.environ.get("LLAMA_SERVER_CUDA") != "1":
        pytest.skip("llama-server is built for CPU here (LLAMA_SERVER_CUDA=1 builds a CUDA one)")
    return int(info.total), int(info.free)


def smi_used(pid: int) -> int:
    """The GPU memory nvidia-smi says ``pid`` uses, in bytes (0 when not listed)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        found_pid, used = (p.strip() for p in line.split(","))
        if int(found_pid) == pid:
            return int(used) * MIB
    return 0


def running(base: str) -> dict[str, Any]:
    """The /running body."""
    with urllib.request.urlopen(base + "/running", timeout=10) as resp:
        return dict(json.load(resp))


GPU_CONFIG = """
healthCheckTimeout: 120
startPort: {start}
logLevel: debug
logToStdout: both
models:
  one:
    cmd: {bin} --host 127.0.0.1 --port ${{PORT}} -m {big} -t 1 -c 512 -ngl 99
    memory: {{gpu: {need}, devices: [0]}}
  two:
    cmd: {bin} --host 127.0.0.1 --port ${{PORT}} -m {big} -t 1 -c 512 -ngl 99
    memory: {{gpu: {need}, devices: [0]}}
  three:
    cmd: {bin} --host 127.0.0.1 --port ${{PORT}} -m {big} -t 1 -c 512 -ngl 99
    memory: {{gpu: {need}, devices: [0]}}
routing:
  router: {{use: memory, settings: {{margin: 5%}}}}
  scheduler: {{use: fifo}}
"""


def test_real_gpu_co_residence_lru_and_measured_figures(gpu, start_service, llama_server,  # type: ignore[no-untyped-def]
                                                        gguf_models) -> None:
    """Two models that fit stay together, the third evicts the LRU; figures match nvidia-smi."""
    total, free = gpu
    # Each declares a need so that two fit in what is free now and three do not.
    need = int((free - 0.05 * total) / 2.5)
    service = start_service(GPU_CONFIG.format(
        bin=llama_server, big=gguf_models["big"], start=free_port_block(), need=need))
    client = openai.OpenAI(base_url=service.base + "/v1", api_key="none", timeout=300,
                           max_retries=0)

    def chat(model: str) -> None:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=2)

    for model in ("one", "two", "one"):
        chat(model)
    body = running(service.base)
    assert [r["model"] for r in body["running"]] == ["one", "two"]
    chat("three")  # two was used longest ago
    service.wait_for_log(r"memory router: three needs .* evicting two \(last used")
    body = running(service.base)
    assert [r["model"] for r in body["running"]] == ["one", "three"]
    servers = {p.cmdline()[p.cmdline().index("--port") + 1]: p.pid
               for p in service.llama_servers()}
    for entry in body["running"]:
        measured = sum(entry["memory"]["used"].values())
        smi = smi_used(servers[entry["proxy"].rsplit(":", 1)[1]])
        assert smi > 0 and abs(measured - smi) <= 0.05 * smi, (entry["model"], measured, smi)
