"""Estimating a llama.cpp model's memory from the GGUF file its ``cmd`` names (blocking reads).

The estimate is what llama-server allocates: the weights (the file's tensors), the KV cache
(layers x context x the key and value widths from the file's metadata, f16 unless
``--cache-type-k/-v`` say otherwise) and a compute buffer (the larger of the logits and the
feed-forward activations of a 512-token batch, plus the attention mask; fitted to the
buffers llama-server reports). Context comes from ``-c``/``--ctx-size`` (0 or absent: the
model's own, as llama-server does); ``-np``/``--parallel`` slots share it; with
``-ngl``/``--n-gpu-layers`` below the layer count only that share is on the GPU.

Reading needs the optional ``gguf`` package (``pip install 'llamaswap[gguf]'``): it pulls
in numpy, which a proxy does not otherwise need. Without it there is no estimate.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

import attrs

__all__ = ["CmdArgs", "estimate_cmd", "estimate_file", "parse_cmd"]

N_UBATCH = 512
_CACHE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32,
                "q4_1": 20 / 32, "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}


@attrs.frozen
class CmdArgs:
    """What the estimate reads from a llama-server command line."""

    model: str | None = None
    ctx: int = 0
    gpu_layers: int | None = None
    cache_k: str = "f16"
    cache_v: str = "f16"


_FLAGS = {
    "-m": "model", "--model": "model",
    "-c": "ctx", "--ctx-size": "ctx",
    "-ngl": "gpu_layers", "--n-gpu-layers": "gpu_layers", "--gpu-layers": "gpu_layers",
    "-ctk": "cache_k", "--cache-type-k": "cache_k",
    "-ctv": "cache_v", "--cache-type-v": "cache_v",
}  # fmt: skip


def parse_cmd(cmd: str) -> CmdArgs:
    """The model path, context, GPU layers and KV cache types of a llama-server command."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    found: dict[str, str] = {}
    for i, word in enumerate(words):
        flag, eq, inline = word.partition("=")
        field = _FLAGS.get(flag)
        if field is None:
            continue
        value = inline if eq else (words[i + 1] if i + 1 < len(words) else "")
        found[field] = value
    return CmdArgs(
        model=found.get("model") or None,
        ctx=_int(found.get("ctx"), 0),
        gpu_layers=_int(found.get("gpu_layers"), None),
        cache_k=found.get("cache_k", "f16").lower(),
        cache_v=found.get("cache_v", "f16").lower(),
    )


def _int(text: str | None, default: Any) -> Any:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def estimate_cmd(cmd: str) -> int | None:
    """Bytes the command's model is expected to take on the GPU, or None (no GGUF, no gguf)."""
    args = parse_cmd(cmd)
    if args.model is None or not args.model.endswith(".gguf") or not os.path.isfile(args.model):
        return None
    try:
        return estimate_file(args.model, args)
    except ImportError:
        return None


def estimate_file(path: str, args: CmdArgs = CmdArgs()) -> int:
    """Bytes for weights, KV cache and compute buffer of the GGUF at ``path``."""
    import gguf  # optional: llamaswap[gguf]

    reader = gguf.GGUFReader(path)
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    vocab = next((int(t.shape[-1]) for t in reader.tensors if t.name == "token_embd.weight"), 0)
    arch = _field(reader, "general.architecture") or "llama"
    n_layer = int(_field(reader, f"{arch}.block_count") or 0)
    n_embd = int(_field(reader, f"{arch}.embedding_length") or 0)
    n_head = int(_field(reader, f"{arch}.attention.head_count") or 1)
    n_head_kv = int(_field(reader, f"{arch}.attention.head_count_kv") or n_head)
    head_k = int(_field(reader, f"{arch}.attention.key_length") or n_embd // max(n_head, 1))
    head_v = int(_field(reader, f"{arch}.attention.value_length") or n_embd // max(n_head, 1))
    n_ctx = args.ctx if args.ctx > 0 else int(_field(reader, f"{arch}.context_length") or 4096)
    kv = n_layer * n_ctx * n_head_kv * (head_k * _CACHE_BYTES.get(args.cache_k, 2.0)
                                        + head_v * _CACHE_BYTES.get(args.cache_v, 2.0))
    n_ff = int(_field(reader, f"{arch}.feed_forward_length") or 4 * n_embd)
    # The graph allocator reuses memory: the peak is the logits or the feed-forward
    # activations of one batch (f32), whichever is larger, plus the f16 attention mask.
    ubatch = min(N_UBATCH, n_ctx)
    compute = 4 * ubatch * max(vocab, 4 * n_ff) + 2 * ubatch * n_ctx
    share = 1.0
    if args.gpu_layers is not None and n_layer > 0 and 0 <= args.gpu_layers <= n_layer:
        share = args.gpu_layers / (n_layer + 1)
    return int((weights + kv) * share + compute)


def _field(reader: Any, key: str) -> Any:
    """A scalar or string metadata value of the GGUF, or None."""
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    part = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(part).decode("utf-8", "replace")
    return part[0].item() if hasattr(part[0], "item") else part[0]
