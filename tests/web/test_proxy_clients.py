"""The official openai client against the real Site (run in a thread; the reactor stays free)."""

from __future__ import annotations

import io
from collections.abc import Generator
from typing import Any

import openai
import pytest
import pytest_twisted
from proxy_fakes import SiteEnv
from twisted.internet.threads import deferToThread

from llamaswap.config.model import ModelConfig


@pytest.fixture
def env() -> Generator[SiteEnv, None, None]:
    """A keyed site with a chat model and a whisper model."""
    e = SiteEnv(
        {
            "chat": ModelConfig(id="chat", aliases=("gpt-4o",)),
            "whisper": ModelConfig(id="whisper", use_model_name="large-v3"),
        },
        api_keys=("k1",),
    )
    yield e
    pytest_twisted.blockon(e.close())


def client(env: SiteEnv) -> openai.OpenAI:
    """An OpenAI client pointed at the site."""
    return openai.OpenAI(base_url=env.url + "/v1", api_key="k1", max_retries=0, timeout=10)


@pytest_twisted.inlineCallbacks
def test_chat(env: SiteEnv) -> Generator[Any, Any, None]:
    """A non-streaming chat completion round-trips through the alias."""
    c = client(env)
    result = yield deferToThread(
        c.chat.completions.create, model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert result.choices[0].message.content == "hello"
    assert result.model == "gpt-4o"
    assert env.router.requested == ["chat"]


@pytest_twisted.inlineCallbacks
def test_streaming_chat(env: SiteEnv) -> Generator[Any, Any, None]:
    """A streaming chat yields every chunk the upstream sent, in order."""
    c = client(env)

    def run() -> list[str]:
        stream = c.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_body={"x_chunks": 4},
        )
        return [chunk.choices[0].delta.content or "" for chunk in stream]

    pieces = yield deferToThread(run)
    assert pieces == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]


@pytest_twisted.inlineCallbacks
def test_completions(env: SiteEnv) -> Generator[Any, Any, None]:
    """Legacy completions work."""
    c = client(env)
    result = yield deferToThread(c.completions.create, model="chat", prompt="say hi")
    assert result.choices[0].text == "hello"


@pytest_twisted.inlineCallbacks
def test_embeddings(env: SiteEnv) -> Generator[Any, Any, None]:
    """Embeddings work."""
    c = client(env)
    result = yield deferToThread(c.embeddings.create, model="chat", input="x")
    assert result.data[0].embedding == [0.1, 0.2]


@pytest_twisted.inlineCallbacks
def test_audio_transcription_upload(env: SiteEnv) -> Generator[Any, Any, None]:
    """A multipart upload is routed by its model field and rewritten by useModelName."""
    c = client(env)
    audio = io.BytesIO(b"RIFF" + b"\x00" * 2048)
    audio.name = "clip.wav"
    result = yield deferToThread(c.audio.transcriptions.create, model="whisper", file=audio)
    assert result.text.startswith("heard large-v3")
    assert env.router.requested == ["whisper"]


@pytest_twisted.inlineCallbacks
def test_wrong_key_is_authentication_error(env: SiteEnv) -> Generator[Any, Any, None]:
    """The client sees a 401 AuthenticationError for a wrong key."""
    c = openai.OpenAI(base_url=env.url + "/v1", api_key="bad", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        yield deferToThread(
            c.chat.completions.create, model="chat", messages=[{"role": "user", "content": "x"}]
        )


@pytest_twisted.inlineCallbacks
def test_unknown_model_is_not_found(env: SiteEnv) -> Generator[Any, Any, None]:
    """An unknown model is a NotFoundError whose message names it."""
    c = client(env)
    with pytest.raises(openai.NotFoundError, match="nope"):
        yield deferToThread(
            c.chat.completions.create, model="nope", messages=[{"role": "user", "content": "x"}]
        )


@pytest_twisted.inlineCallbacks
def test_anthropic_messages_forwarded_verbatim(env: SiteEnv) -> Generator[Any, Any, None]:
    """/v1/messages is dispatched by model and forwarded untranslated."""
    raw = b'{"model":"chat","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    resp = yield env.request(
        "POST",
        "/v1/messages",
        data=raw,
        headers={"Content-Type": "application/json", "x-api-key": "k1"},
    )
    assert resp.code == 200
    yield resp.content()
    up = env.stats.requests[-1]
    assert (up["path"], up["body"]) == ("/v1/messages", raw)
    assert up["headers"]["x-api-key"] == ["k1"]
