"""Long prompts prefilled by PyTorch, their KV handed to llama.cpp.

On CPUs with AMX, PyTorch runs a bf16 forward pass over a 1,700-token prompt in about 1 s where
llama.cpp's f16 kernels take 4.5 s and PyTorch in float32 3.3 s (SmolLM2-135M, 2 threads,
docs/llamacpp.md#prefill-in-pytorch). Decoding stays on llama.cpp, which is faster there. So a
cold long prompt is run through the float model once, and its keys and values are written
into llama.cpp's KV cache in the layout ``llama_state_seq_set_data`` reads back:

    header | n_stream | per stream: cell_count, and when it is not 0: per cell (pos,
    n_seq_id = 1, seq_id) | v_trans | n_layer | per layer (type, row bytes, one row of keys per
    cell) | the same for values

Each sequence has a KV stream of its own, so a sequence's state holds one stream with cells
and ``n_stream - 1`` empty ones; llama.cpp reads the cells into the stream of the sequence it
restores, whichever stream they were written from (here: the first).

The header (a magic and a format version) and the layout are learned from a state llama.cpp
itself writes at load (one token), and checked: a llama.cpp whose layout differs (transposed
values, another format) turns this off and prompts prefill on llama.cpp as before.

Keys differ in one way: llama.cpp's Llama rotates interleaved pairs of each head's dimensions
where Hugging Face rotates the two halves, so GGUF files store q/k projections with the
dimensions permuted; the keys PyTorch computes are permuted the same way here.
"""

from __future__ import annotations

import ctypes
import logging
import struct
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

GGML_TYPE_F16 = 1
# Prompts whose uncached part is at least this long are prefilled by PyTorch (one-page
# extractions, a few hundred tokens, stay on llama.cpp).
PREFILL_MIN_TOKENS = 1024
CELL = np.dtype([("pos", "<i4"), ("n_seq_id", "<u4"), ("seq_id", "<i4")])


class TorchPrefill:
    """The float model of a GGUF (same weights), run to prefill long prompts for llama.cpp. The
    model is loaded at the first long prompt (a CLI call that never sees one never pays for it)."""

    def __init__(self, twin: Path, dtype: torch.dtype, header: bytes, n_stream: int, n_layer: int, head_dim: int,
                 threads: int):
        self.twin, self.dtype, self.header, self.threads = twin, dtype, header, threads
        self.n_stream, self.n_layer = n_stream, n_layer
        half = head_dim // 2
        self.key_order = torch.tensor([j for i in range(half) for j in (i, i + half)])
        self.model = None

    def load(self):
        from slmkit.engine.torch_backend import load_causal_lm

        if self.model is None:
            self.model = load_causal_lm(self.twin).to(self.dtype)
        return self.model

    def __call__(self, token_ids: list[int]) -> tuple[np.ndarray, bytes]:
        """(the last position's logits, float32 (vocab,); the sequence state to restore)."""
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        model = self.load()
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([token_ids]), use_cache=True, logits_to_keep=1)
        logits = out.logits[0, -1].float().numpy()
        cache = out.past_key_values
        keys, values = [], []
        for layer in range(self.n_layer):
            k, v = (cache.layers[layer].keys, cache.layers[layer].values) if hasattr(cache, "layers") else cache[layer]
            # (1, heads, T, head_dim) -> (T, heads * head_dim), llama.cpp's row per cell
            keys.append(k[0][:, :, self.key_order].transpose(0, 1).reshape(len(token_ids), -1))
            values.append(v[0].transpose(0, 1).reshape(len(token_ids), -1))
        return logits, self.state(len(token_ids), keys, values)

    def state(self, count: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> bytes:
        cells = np.zeros(count, dtype=CELL)
        cells["pos"], cells["n_seq_id"] = np.arange(count), 1
        parts = [self.header, struct.pack("<II", self.n_stream, count), cells.tobytes(),
                 struct.pack("<II", 0, self.n_layer)]
        for rows in (keys, values):
            for tensor in rows:
                data = tensor.to(torch.float16).contiguous().numpy()
                parts += [struct.pack("<iQ", GGML_TYPE_F16, data.shape[1] * 2), data.tobytes()]
        parts.append(bytes(4 * (self.n_stream - 1)))  # the other streams: no cells
        return b"".join(parts)


def learn_layout(ctx, decode_one, seq_id: int, n_stream: int, n_layer: int, row_values: int) -> bytes | None:
    """The header llama.cpp writes before a sequence's KV, learned from a one-token state it
    writes itself (``decode_one(seq_id)`` puts one token at position 0 of sequence ``seq_id``,
    whose KV stream is stream ``seq_id`` of ``n_stream``); None when its layout is not the one
    :class:`TorchPrefill` writes."""
    import llama_cpp

    decode_one(seq_id)
    size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq_id)
    data = bytes(buffer[:written])
    stream = seq_id if n_stream > 1 else 0
    body = (struct.pack("<I", n_stream) + bytes(4 * stream) + struct.pack("<IiIi", 1, 0, 1, seq_id)
            + struct.pack("<II", 0, n_layer))
    at = data.find(body)
    expected = len(body) + 2 * n_layer * (12 + 2 * row_values) + 4 * (n_stream - stream - 1)
    if at < 0 or len(data) - at != expected or struct.unpack_from("<iQ", data, at + len(body)) != (
            GGML_TYPE_F16, 2 * row_values) or any(data[at + expected - 4 * (n_stream - stream - 1):]):
        log.info("llama.cpp's sequence state layout is not the one expected; long prompts prefill on llama.cpp")
        return None
    return data[:at]


def float_twin(text_side: Path) -> Path | None:
    """The HF directory with the float weights a GGUF was made from, when it is at hand: the
    built-in model's import (its tokenizer side) or the parent on an export's card."""
    from slmkit.artifact import content_hash, read_card

    if (text_side / "config.json").is_file() and any(text_side.glob("*.safetensors")):
        return text_side
    card = read_card(text_side)
    if card is None or card.stage != "export" or not card.parents or not card.parents[0].path:
        return None
    parent = Path(card.parents[0].path)
    if not (parent / "config.json").is_file() or not any(parent.glob("*.safetensors")):
        return None
    parent_card = read_card(parent)
    current = parent_card.content_sha256 if parent_card and parent_card.content_sha256 else content_hash(parent)
    return parent if current == card.parents[0].content_sha256 else None  # else retrained since the export


def fast_bf16() -> bool:
    """AMX: PyTorch's bf16 matrix kernels are the fast prefill here; without it they are not."""
    from slmkit.engine.llamacpp_backend import has_amx

    return has_amx()
