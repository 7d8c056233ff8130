"""Token extraction rules of SPEC §7.1, fed chunk by chunk."""

from __future__ import annotations

import gzip
import json
from typing import Any

from llamaswap.observe.tokens import TokenStats, UsageExtractor, error_message


def run(body: bytes, content_type: str = "application/json", step: int = 7, **kw: Any) -> Any:
    """Feed ``body`` in ``step``-byte chunks and return the extractor."""
    ex = UsageExtractor(content_type, **kw)
    for i in range(0, len(body), step):
        ex.feed(body[i : i + step])
    return ex


def sse(*events: Any) -> bytes:
    """An event stream of the given data objects (strings sent as-is)."""
    out = b""
    for e in events:
        out += b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n"
    return out


def test_openai_json_usage_with_cached_details() -> None:
    """usage prompt/completion tokens and prompt_tokens_details.cached_tokens; rates unknown."""
    body = json.dumps(
        {
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 4},
            }
        }
    ).encode()
    stats = run(body).stats()
    assert (stats.input_tokens, stats.output_tokens, stats.cache_tokens) == (10, 20, 4)
    assert (stats.prompt_per_second, stats.tokens_per_second, stats.draft_tokens) == (-1, -1, -1)


def test_llama_server_timings_override_usage() -> None:
    """timings win over usage and bring rates, cache and draft counts."""
    body = json.dumps(
        {
            "usage": {"prompt_tokens": 1, "completion_tokens": 2},
            "timings": {
                "prompt_n": 30,
                "predicted_n": 40,
                "cache_n": 5,
                "prompt_per_second": 100.0,
                "predicted_per_second": 25.0,
                "draft_n": 8,
                "draft_n_accepted": 6,
                "prompt_ms": 300,
                "predicted_ms": 1600,
            },
        }
    ).encode()
    stats = run(body).stats()
    assert stats == TokenStats(30, 40, 5, 8, 6, 100.0, 25.0, 1900.0)


def test_sse_last_nonzero_usage_wins_and_anthropic_message_usage() -> None:
    """In a stream, message_start input and the final non-zero output are combined."""
    body = sse(
        {
            "type": "message_start",
            "message": {
                "usage": {"input_tokens": 17, "output_tokens": 1, "cache_read_input_tokens": 3}
            },
        },
        {"type": "content_block_delta", "delta": {"text": "usage is a word"}},
        {"type": "message_delta", "usage": {"output_tokens": 55}},
        "[DONE]",
    )
    stats = run(body, "text/event-stream; charset=utf-8", step=5).stats()
    assert (stats.input_tokens, stats.output_tokens, stats.cache_tokens) == (17, 55, 3)


def test_sse_responses_api_usage_and_invalid_lines_skipped() -> None:
    """response.usage of the Responses API is read; broken JSON lines are ignored."""
    body = sse(
        '{"usage": broken',
        {
            "type": "response.completed",
            "response": {"usage": {"input_tokens": 8, "output_tokens": 9}},
        },
    )
    stats = run(body, "text/event-stream").stats()
    assert (stats.input_tokens, stats.output_tokens) == (8, 9)


def test_sse_keeps_only_the_unfinished_line() -> None:
    """Streaming a long answer keeps the buffer at most one partial line long."""
    ex = UsageExtractor("text/event-stream")
    for _ in range(1000):
        ex.feed(b'data: {"choices":[{"delta":{"content":"xxxxxxxx"}}]}\n\ndata: {"cho')
        ex.feed(b'ices":[]}\n\n')
    assert len(ex._buf) == 0
    assert ex.stats() == TokenStats()


def test_vllm_metrics_give_rates_and_drafts() -> None:
    """vLLM metrics: draft counts, prompt rate from TTFT minus cache, rate from mean ITL."""
    body = json.dumps(
        {
            "usage": {
                "prompt_tokens": 110,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 10},
            },
            "metrics": {
                "time_to_first_token_ms": 500,
                "mean_itl_ms": 20,
                "speculative_decoding": {"num_draft_tokens": 7, "num_accepted_draft_tokens": 3},
            },
        }
    )
    stats = run(body.encode()).stats()
    assert (stats.prompt_per_second, stats.tokens_per_second) == (200.0, 50.0)
    assert (stats.draft_tokens, stats.draft_acc_tokens) == (7, 3)


def test_infill_array_takes_timings_of_last_element() -> None:
    """/infill answers are arrays; timings come from the last element."""
    body = json.dumps(
        [{"timings": {"prompt_n": 1}}, {"timings": {"prompt_n": 9, "predicted_n": 2}}]
    ).encode()
    stats = run(body, path="/infill").stats()
    assert (stats.input_tokens, stats.output_tokens) == (9, 2)


def test_gzip_body_is_decompressed_incrementally() -> None:
    """A gzip response is inflated chunk by chunk before parsing."""
    body = gzip.compress(json.dumps({"usage": {"input_tokens": 4, "output_tokens": 6}}).encode())
    stats = run(body, content_encoding="gzip", step=3).stats()
    assert (stats.input_tokens, stats.output_tokens) == (4, 6)


def test_corrupt_gzip_sets_error_and_zero_tokens() -> None:
    """Bad compressed data gives the decompression error and zero tokens."""
    ex = run(b"not gzip at all", content_encoding="gzip")
    assert ex.error is not None and ex.error.startswith("response decompression failed:")
    assert ex.stats() == TokenStats()


def test_empty_non_json_and_oversized_bodies_give_zeros() -> None:
    """Empty, binary and over-cap bodies parse to all-zero tokens."""
    assert run(b"").stats() == TokenStats()
    assert run(b"\x89PNG....", "image/png").stats() == TokenStats()
    big = json.dumps({"usage": {"prompt_tokens": 1}, "pad": "x" * 200}).encode()
    assert run(big, cap=100).stats() == TokenStats()


def test_error_message_rules() -> None:
    """error.message, error, message, detail in that order; else the status line; 500-byte cap."""
    assert error_message(400, "Bad Request", b'{"error":{"message":"bad model"}}') == "bad model"
    assert error_message(500, "x", b'{"error":"boom"}') == "boom"
    assert error_message(422, "x", b'{"error":" ","detail":"missing"}') == "missing"
    assert error_message(502, "Bad Gateway", b"<html>") == "502 Bad Gateway"
    long = error_message(400, "x", json.dumps({"message": "y" * 600}).encode())
    assert long == "y" * 500 + "..."


def test_include_usage_stream_with_null_usage_chunks() -> None:
    """Chunks with "usage": null are skipped; the final usage chunk counts."""
    body = sse(
        {"choices": [{"delta": {"content": "a"}}], "usage": None},
        {"choices": [{"delta": {"content": "b"}}], "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 6, "completion_tokens": 2}},
    )
    stats = run(body, "text/event-stream").stats()
    assert (stats.input_tokens, stats.output_tokens) == (6, 2)


def test_deeply_nested_upstream_json_counts_nothing() -> None:
    """An upstream answer too deep for the parser yields no figures, not an exception."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert run(b'{"usage":' + deep + b"}", step=1 << 20).stats() == TokenStats()
    streamed = run(b'data: {"usage":' + deep + b"}\n\n", "text/event-stream", step=1 << 20)
    assert streamed.stats() == TokenStats()
    assert error_message(500, "Internal Server Error", deep) == "500 Internal Server Error"
