"""GGUF memory estimates from a llama-server command, on GGUF files synthesized here."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaswap.process.ggufest import CmdArgs, estimate_cmd, estimate_file, parse_cmd

gguf = pytest.importorskip("gguf", reason="the optional gguf package (llamaswap[gguf])")
np = pytest.importorskip("numpy")

N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_VOCAB, N_FF, CTX = 64, 3, 4, 2, 100, 96, 1024


def write_model(path: Path) -> int:
    """A small llama-shaped GGUF (f32); returns the bytes of its tensors."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_feed_forward_length(N_FF)
    tensors = {"token_embd.weight": np.zeros((N_VOCAB, N_EMBD), np.float32)}
    for i in range(N_LAYER):
        tensors[f"blk.{i}.attn_q.weight"] = np.zeros((N_EMBD, N_EMBD), np.float32)
        tensors[f"blk.{i}.attn_k.weight"] = np.zeros((N_EMBD // 2, N_EMBD), np.float32)
    for name, data in tensors.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sum(t.nbytes for t in tensors.values())


def kv_bytes(ctx: int, per_value: float = 2.0) -> int:
    """Layers x context x (K + V widths) x bytes per value."""
    head = N_EMBD // N_HEAD
    return int(N_LAYER * ctx * N_HEAD_KV * 2 * head * per_value)


def compute_bytes(ctx: int) -> int:
    """The compute buffer term: the larger of logits and FFN activations, plus the mask."""
    ubatch = min(512, ctx)
    return 4 * ubatch * max(N_VOCAB, 4 * N_FF) + 2 * ubatch * ctx


def test_parse_cmd_reads_llama_server_flags() -> None:
    """-m/--model, -c/--ctx-size (also --flag=value), -ngl, cache types; multi-line commands."""
    args = parse_cmd("llama-server --port 9 -m /m/x.gguf\n --ctx-size=8192 -ngl 20 -ctk q8_0")
    assert args == CmdArgs(model="/m/x.gguf", ctx=8192, gpu_layers=20, cache_k="q8_0")
    assert parse_cmd("python -m llamaswap.testing.responder --port 1").model == \
        "llamaswap.testing.responder"


def test_estimate_is_weights_kv_and_compute(tmp_path: Path) -> None:
    """Weights from the tensors; KV from the metadata and -c (0: the model's own context)."""
    path = tmp_path / "m.gguf"
    weights = write_model(path)
    assert estimate_file(str(path)) == weights + kv_bytes(CTX) + compute_bytes(CTX)
    assert estimate_file(str(path), CmdArgs(ctx=4096)) == \
        weights + kv_bytes(4096) + compute_bytes(4096)
    q8 = CmdArgs(ctx=256, cache_k="q8_0", cache_v="q8_0")
    assert estimate_file(str(path), q8) == \
        int(weights + kv_bytes(256, 34 / 32) + compute_bytes(256))


def test_estimate_with_partial_offload(tmp_path: Path) -> None:
    """-ngl N below the layer count puts only that share of weights and KV on the GPU."""
    path = tmp_path / "m.gguf"
    weights = write_model(path)
    share = 1 / (N_LAYER + 1)
    assert estimate_file(str(path), CmdArgs(gpu_layers=1)) == \
        int((weights + kv_bytes(CTX)) * share + compute_bytes(CTX))


def test_estimate_cmd_only_for_an_existing_gguf(tmp_path: Path) -> None:
    """No -m, a missing file or another format: no estimate."""
    path = tmp_path / "m.gguf"
    weights = write_model(path)
    assert estimate_cmd(f"llama-server -m {path} -c 512") == \
        weights + kv_bytes(512) + compute_bytes(512)
    assert estimate_cmd("llama-server -m /nowhere/x.gguf") is None
    assert estimate_cmd("whisper-server -m /models/ggml-base.bin") is None
    assert estimate_cmd("vllm serve meta-llama/Llama-3.1-8B") is None
