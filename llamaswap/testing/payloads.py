"""Response bodies of the test responder: OpenAI, llama-server and Anthropic shapes."""

from __future__ import annotations

import json
import time
from typing import Any


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event carrying ``data`` as JSON (or a raw string)."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def pieces(count: int) -> list[str]:
    """The generated text, one piece per stream chunk."""
    return [f"tok{i} " for i in range(max(0, count))]


def prompt_tokens(body: dict[str, Any]) -> int:
    """A deterministic prompt token count: whitespace words of the prompt/messages."""
    texts: list[str] = []
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else msg
        texts.append(content if isinstance(content, str) else json.dumps(content))
    for key in ("prompt", "input", "query"):
        value = body.get(key)
        if value is not None:
            texts.append(value if isinstance(value, str) else json.dumps(value))
    return max(1, sum(len(t.split()) for t in texts))


def usage(prompt: int, completion: int) -> dict[str, int]:
    """OpenAI usage block."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def timings(prompt: int, completion: int, elapsed: float) -> dict[str, float]:
    """llama-server ``timings`` block."""
    predicted_ms = max(elapsed * 1000.0, 0.001)
    return {
        "prompt_n": prompt, "prompt_ms": 1.5, "predicted_n": completion,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_second": round(completion / (predicted_ms / 1000.0), 3),
    }


def chat_chunk(model: str, rid: str, text: str | None, finish: str | None = None) -> dict[str, Any]:
    """One chat.completion.chunk."""
    delta: dict[str, Any] = {} if text is None else {"content": text}
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def text_chunk(model: str, rid: str, text: str, finish: str | None = None) -> dict[str, Any]:
    """One text_completion chunk."""
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}


def chat_completion(model: str, rid: str, text: str, prompt: int, n: int) -> dict[str, Any]:
    """A whole chat.completion."""
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": usage(prompt, n), "timings": timings(prompt, n, 0.001),
    }


def text_completion(model: str, rid: str, text: str, prompt: int, n: int) -> dict[str, Any]:
    """A whole text_completion."""
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": usage(prompt, n), "timings": timings(prompt, n, 0.001)}


def embeddings(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """Deterministic 8-dimensional embeddings, one per input."""
    inputs = body.get("input", "")
    items = inputs if isinstance(inputs, list) else [inputs]
    data = []
    for i, item in enumerate(items):
        seed = sum(str(item).encode()) or 1
        data.append({"object": "embedding", "index": i,
                     "embedding": [((seed * (k + 3)) % 101 + 1) / 102.0 for k in range(8)]})
    tokens = prompt_tokens(body)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def rerank(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """Documents scored by how many query words they share (best first)."""
    query = set(str(body.get("query", "")).lower().split())
    docs = body.get("documents") or []
    results = []
    for i, doc in enumerate(docs):
        text = doc if isinstance(doc, str) else json.dumps(doc)
        words = set(text.lower().split())
        results.append({"index": i, "relevance_score": len(query & words) / (len(query) or 1)})
    results.sort(key=lambda r: -float(r["relevance_score"]))
    top_n = body.get("top_n")
    if isinstance(top_n, int):
        results = results[:top_n]
    tokens = prompt_tokens(body)
    return {"model": model, "object": "list", "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def message(model: str, rid: str, text: str, prompt: int, n: int) -> dict[str, Any]:
    """A whole Anthropic message."""
    return {"id": rid, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": n}}


def message_events_head(model: str, rid: str, prompt: int) -> list[bytes]:
    """The Anthropic stream events before the first text delta."""
    start = message(model, rid, "", prompt, 0)
    start["content"] = []
    start["stop_reason"] = None
    return [
        sse({"type": "message_start", "message": start}, "message_start"),
        sse({"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}}, "content_block_start"),
    ]


def message_delta(text: str) -> bytes:
    """One Anthropic text delta event."""
    return sse({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}, "content_block_delta")


def message_events_tail(n: int) -> list[bytes]:
    """The Anthropic stream events after the last text delta."""
    return [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": n}}, "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]


def response(model: str, rid: str, text: str, prompt: int, n: int) -> dict[str, Any]:
    """A whole /v1/responses object."""
    return {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
        "model": model,
        "output": [{"type": "message", "id": "msg_" + rid, "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": prompt, "output_tokens": n, "total_tokens": prompt + n},
    }
