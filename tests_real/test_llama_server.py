"""llamaswap in front of llama.cpp's real ``llama-server``, driven by the official clients."""

from __future__ import annotations

import json
import time
import urllib.request

import anthropic
import openai
import pytest

from llamaswap.testing.ports import free_port_block

CONFIG = """
healthCheckTimeout: 60
startPort: {start}
logLevel: debug
logToStdout: both
models:
  chat-a:
    cmd: |
      {bin} --host 127.0.0.1 --port ${{PORT}}
      -m {tiny} -a chat-a -t 1 -c 512
  chat-b:
    cmd: {bin} --host 127.0.0.1 --port ${{PORT}} -m {tiny} -a chat-b -t 1 -c 512
  embed:
    cmd: {bin} --host 127.0.0.1 --port ${{PORT}} -m {tiny} -a embed -t 1 -c 512 --embeddings
  slow:
    cmd: {bin} --host 127.0.0.1 --port ${{PORT}} -m {big} -a slow -t 1 -c 512
  side:
    cmd: {bin} --host 127.0.0.1 --port ${{PORT}} -m {tiny} -a side -t 1 -c 512
    ttl: 2
  broken:
    cmd: {bin} --host 127.0.0.1 --port ${{PORT}} -m {tiny} --no-such-flag
routing:
  scheduler:
    use: fifo
  router:
    use: group
    settings:
      groups:
        main:
          swap: true
          exclusive: false
          members: [chat-a, chat-b, embed, slow, broken]
        sidecar:
          swap: false
          exclusive: false
          members: [side]
"""


HI = [{"role": "user", "content": "hi"}]


def running(base: str) -> dict[str, str]:
    """Model id -> state from GET /running."""
    with urllib.request.urlopen(base + "/running", timeout=10) as resp:
        body = json.load(resp)
    return {entry["model"]: entry["state"] for entry in body["running"]}


@pytest.fixture
def service(start_service, llama_server, gguf_models):  # type: ignore[no-untyped-def]
    """llamaswap serving the real-model config."""
    text = CONFIG.format(
        bin=llama_server, tiny=gguf_models["tiny"], big=gguf_models["big"], start=free_port_block()
    )
    return start_service(text)


def client(service) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    """An official OpenAI client pointed at llamaswap."""
    return openai.OpenAI(base_url=service.base + "/v1", api_key="none", timeout=120, max_retries=0)


def test_real_models_listed(service) -> None:  # type: ignore[no-untyped-def]
    """/v1/models lists every configured real model."""
    ids = {m.id for m in client(service).models.list().data}
    assert {"chat-a", "chat-b", "embed", "slow", "side", "broken"} <= ids


def test_real_chat_stream_completion_embeddings_messages(service) -> None:  # type: ignore[no-untyped-def]
    """Chat, streaming chat, completions, embeddings and Anthropic messages all go through."""
    c = client(service)
    chat = c.chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.completion_tokens == 8
    chunks = list(
        c.chat.completions.create(
            model="chat-a", messages=[{"role": "user", "content": "hello"}], max_tokens=8,
            temperature=0, stream=True,
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == chat.choices[0].message.content  # greedy decoding is deterministic
    completion = c.completions.create(model="chat-a", prompt="Hello", max_tokens=6, temperature=0)
    assert completion.choices[0].text
    emb = c.embeddings.create(model="embed", input=["hello world", "llama swap"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 64
    assert set(running(service.base)) == {"embed"}, "embed swaps chat-a out (same swap group)"
    msg = anthropic.Anthropic(base_url=service.base, api_key="none", max_retries=0).messages.create(
        model="chat-b", max_tokens=6, messages=[{"role": "user", "content": "hello"}]
    )
    assert msg.content and msg.content[0].type == "text"


def test_real_swaps_leave_only_the_right_processes(service, llama_server) -> None:  # type: ignore[no-untyped-def]
    """Swapping back and forth keeps one main-group server, plus the swap:false sidecar."""
    c = client(service)
    for model in ("chat-a", "chat-b", "chat-a", "side", "chat-b"):
        c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        states = running(service.base)
        expected = {model} if model != "side" else {"chat-a", "side"}
        if model == "chat-b" and "side" in states:
            expected = {"chat-b", "side"}
        assert set(states) == expected, (model, states)
        assert len(service.llama_servers()) == len(expected)


def test_real_client_disconnect_cancels_generation(service) -> None:  # type: ignore[no-untyped-def]
    """A client that leaves mid-stream makes llama-server cancel the task."""
    c = client(service)
    stream = c.chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "hi"}], max_tokens=400, stream=True
    )
    for n, _chunk in enumerate(stream):
        if n == 3:
            break
    stream.close()
    service.wait_for_log(r"cancel task|cancelled|task.*cancel", timeout=30)
    # the next request is served normally
    again = c.chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert again.choices[0].message.content is not None


def test_real_broken_flags_give_clear_error(service) -> None:  # type: ignore[no-untyped-def]
    """A server that exits at once: the client's error names the exit; the next request works."""
    c = client(service)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    message = str(info.value)
    assert "exit" in message.lower()
    assert "no-such-flag" in message or "invalid argument" in message
    ok = c.chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert ok.choices


def test_real_ttl_unloads_idle_model(service) -> None:  # type: ignore[no-untyped-def]
    """A model with ttl: 2 is unloaded about two seconds after its last request."""
    c = client(service)
    c.chat.completions.create(model="side", messages=HI, max_tokens=2)
    assert "side" in running(service.base)
    started = time.monotonic()
    service.wait_for_log(r"side.*(TTL|ttl|idle)", timeout=30)
    assert time.monotonic() - started < 10
    service.wait_for_log(r"side.*stopped|stopped.*side", timeout=30)
    assert "side" not in running(service.base)


def test_real_nothing_left_after_stop(  # type: ignore[no-untyped-def]
    start_service, llama_server, gguf_models, live_servers
) -> None:
    """After llamaswap stops (SIGTERM), no llama-server it started is left running."""
    text = CONFIG.format(
        bin=llama_server, tiny=gguf_models["tiny"], big=gguf_models["big"], start=free_port_block()
    )
    service = start_service(text)
    c = client(service)
    for model in ("chat-a", "side"):
        c.chat.completions.create(model=model, messages=HI, max_tokens=2)
    assert len(service.llama_servers()) == 2
    # twistd re-raises the signal after a clean shutdown, so SIGTERM shows as -15
    assert service.stop() in (0, -15)
    assert "Server Shut Down" in "".join(service.output)
    assert live_servers(llama_server) == []
