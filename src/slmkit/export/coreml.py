"""CoreML export: a Llama-architecture HF artifact → a stateful ``.mlpackage`` for Core ML.

Conversion runs anywhere coremltools installs (Linux included); **running the package needs
macOS 15 / iOS 18 or newer**, so on Linux nothing here executes the converted model.

The model is traced with ``torch.jit.trace`` (the path Apple's own LLM examples use for
stateful models) inside a wrapper whose KV cache is two registered buffers, ``keyCache`` and
``valueCache`` of shape (layers, 1, kv_heads, context, head_dim). coremltools turns those
buffers into Core ML *states* (``ct.StateType``): the cache lives inside the model between
predictions instead of being copied in and out. Each call writes its new keys/values into
the slice ``[end - query, end)`` and attends over ``[0, end)``, where ``end`` is the width of
the mask, so one function serves prefill (query = prompt length) and decode (query = 1).

Package interface (the names of Hugging Face's swift-transformers stateful examples):

- input ``inputIds`` int32 (1, query), query in 1..context;
- input ``causalMask`` float16 (1, 1, query, end), end in 1..context: 0 where a position may
  be attended, -inf where not (:func:`causal_mask` builds it); ``end - query`` tokens must
  already be in the state;
- output ``logits`` float16 (1, query, vocab);
- states ``keyCache`` / ``valueCache`` float16 (layers, 1, kv_heads, context, head_dim).

Weights and compute are float16 (Core ML's default for ML programs, what the Neural Engine
runs). What is checked here, on Linux: the traced graph — the exact TorchScript coremltools
converts — reproduces the plain PyTorch model's logits through a chunked prefill and decode
steps, and the package's spec declares the interface above.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from slmkit.errors import InvalidRequestError

MLPACKAGE = "model.mlpackage"
SUPPORTED_MODEL_TYPES = ("llama",)
DEFAULT_CONTEXT = 2048
INPUT_IDS, CAUSAL_MASK, LOGITS = "inputIds", "causalMask", "logits"
STATES = ("keyCache", "valueCache")
DEPLOYMENT_TARGET = "iOS18"  # stateful models need iOS 18 / macOS 15
TRACE_TOLERANCE = 1e-3  # max |logit difference| between the traced graph and PyTorch (fp32)


def causal_mask(query: int, end: int):
    """The additive mask for ``query`` new tokens after ``end - query`` cached ones: (1, 1, query, end)."""
    import torch

    mask = torch.full((1, 1, query, end), float("-inf"))
    return torch.triu(mask, diagonal=end - query + 1)


class _SliceCache:
    """The transformers cache interface the attention layers call, writing into fixed buffers."""

    def __init__(self, decoder):
        self.decoder = decoder

    def update(self, keys, values, layer_idx: int, kwargs=None):
        # keys: (1, kv_heads, query, head_dim); the slice bounds come from tensor shapes, so
        # the trace keeps them symbolic and Core ML gets a dynamic slice_update.
        end = self.decoder.end
        begin = end - keys.shape[-2]
        self.decoder.keyCache[layer_idx, :, :, begin:end, :] = keys
        self.decoder.valueCache[layer_idx, :, :, begin:end, :] = values
        return self.decoder.keyCache[layer_idx, :, :, :end, :], self.decoder.valueCache[layer_idx, :, :, :end, :]


def stateful_decoder(model, context: int):
    """Wrap an HF Llama (eager attention) so its KV cache is two buffers of ``context`` positions."""
    import torch

    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache_shape = (config.num_hidden_layers, 1, config.num_key_value_heads, context, head_dim)

    class StatefulDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.cache_shape = cache_shape
            self.register_buffer(STATES[0], torch.zeros(cache_shape))
            self.register_buffer(STATES[1], torch.zeros(cache_shape))

        def forward(self, input_ids, mask):
            query = input_ids.shape[-1]
            self.end = mask.shape[-1]
            position_ids = (torch.arange(query) + (self.end - query)).unsqueeze(0)
            # A 4D mask is used as given by transformers' mask code (no causal mask built).
            return self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                              cache=_SliceCache(self), use_cache=True).logits

    return StatefulDecoder().eval()


def load_llama(source: Path):
    """The HF model in ``source``, fp32 with eager attention (shape-generic, unlike SDPA's GQA paths)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(source))
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise InvalidRequestError(
            f"CoreML export supports Llama-architecture models; this model is {config.model_type!r}."
        )
    return AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, attn_implementation="eager",
                                                use_safetensors=True).eval()


def check_context(context: int, max_positions: int) -> None:
    if not 1 <= context <= max_positions:
        raise InvalidRequestError(
            f"--context {context} is outside 1..{max_positions} (the model's max_position_embeddings). "
            f"Pick a value in that range, e.g. --context {min(DEFAULT_CONTEXT, max_positions)}."
        )


def trace_decoder(model, context: int):
    """TorchScript of :func:`stateful_decoder`; traced on a 2-token step after 3 cached ones."""
    import torch

    decoder = stateful_decoder(model, context)
    example = (torch.zeros(1, 2, dtype=torch.int32), causal_mask(2, 5))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes: the slices stay symbolic
        traced = torch.jit.trace(decoder, example)
    return traced, decoder.cache_shape


def check_trace(model, traced, context: int, steps=(7, 1, 1, 4)) -> dict:
    """Run the traced graph in chunks (a prefill, then decode steps) from an empty cache and
    compare every position's logits with one plain forward pass of the PyTorch model.

    The chunk sizes differ from the traced example's, so a shape baked into the trace shows
    up here as a mismatch."""
    import torch

    total = min(sum(steps), context)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, total), generator=generator)
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        for name in STATES:
            getattr(traced, name).zero_()
        pieces, end = [], 0
        for size in steps:
            size = min(size, total - end)
            if size <= 0:
                break
            pieces.append(traced(ids[:, end:end + size].to(torch.int32), causal_mask(size, end + size)))
            end += size
        for name in STATES:
            getattr(traced, name).zero_()
    got = torch.cat(pieces, dim=1)
    difference = float((got - reference).abs().max())
    return {"chunks": [p.shape[1] for p in pieces], "tokens": total, "max_abs_logit_diff": difference,
            "tolerance": TRACE_TOLERANCE, "passed": difference <= TRACE_TOLERANCE}


def _coremltools():
    """Import coremltools with its Linux-only noise (no Core ML runtime to load) silenced."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools

    _register_int_cast()
    return coremltools


def _register_int_cast() -> None:
    """coremltools 9.0 folds ``int(size // 2)`` (transformers' ``rotate_half``) with
    ``int(array([n]))``, which the numpy installed here (2.4) refuses. The same conversion,
    reading the single element explicitly, registered through coremltools' documented
    op-override hook (``register_torch_op(override=True)``)."""
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import register_torch_op

    def cast_to_int(context, node):
        value = context[node.inputs[0]]
        if not all(size == 1 for size in value.shape):
            raise ValueError(f"int() of a tensor of shape {value.shape} in the traced graph")
        if value.can_be_folded_to_const():
            result = mb.const(val=int(np.asarray(value.val).reshape(-1)[0]), name=node.name)
        else:
            if len(value.shape) > 0:
                value = mb.reshape(x=value, shape=[], name=node.name + "_item")
            result = mb.cast(x=value, dtype="int32", name=node.name)
        context.add(result, node.name)

    cast_to_int.__name__ = "int"
    register_torch_op(cast_to_int, override=True)


def convert(traced, cache_shape: tuple, context: int, config, source_name: str):
    """Convert the traced decoder to an ML program with the two cache states (float16)."""
    import numpy as np

    ct = _coremltools()
    query = ct.RangeDim(lower_bound=1, upper_bound=context, default=1)
    end = ct.RangeDim(lower_bound=1, upper_bound=context, default=1)
    state = ct.TensorType(shape=cache_shape, dtype=np.float16)
    # coremltools draws tqdm bars on stderr for each pass; the CLI shows its own progress.
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        package = ct.convert(
            traced,
            inputs=[ct.TensorType(name=INPUT_IDS, shape=(1, query), dtype=np.int32),
                    ct.TensorType(name=CAUSAL_MASK, shape=(1, 1, query, end), dtype=np.float16)],
            outputs=[ct.TensorType(name=LOGITS, dtype=np.float16)],
            states=[ct.StateType(wrapped_type=state, name=name) for name in STATES],
            minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
            convert_to="mlprogram",
            skip_model_load=True,  # loading needs the Core ML runtime (macOS)
        )
    package.short_description = f"{source_name}: Llama decoder with a stateful KV cache of {context} positions"
    package.input_description[INPUT_IDS] = "token ids of the new tokens (1, query)"
    package.input_description[CAUSAL_MASK] = ("additive mask (1, 1, query, end): 0 = attend, -inf = not; "
                                              "end - query tokens are already in the state")
    package.output_description[LOGITS] = "next-token logits for every new position (1, query, vocab)"
    package.user_defined_metadata.update({
        "slmkit.context_length": str(context),
        "slmkit.vocab_size": str(config.vocab_size),
        "slmkit.source": source_name,
    })
    return package


def export_coreml(reference: str, output: str | Path | None = None, context: int = DEFAULT_CONTEXT,
                  check: bool = True, progress=None):
    """Export the model ``reference`` to a CoreML artifact directory; returns an ExportResult.

    The directory holds ``model.mlpackage``, the tokenizer files and ``slm.json``. ``output``
    defaults to ``$SLM_HOME/models/NAME-coreml``; ``context`` is the KV-cache length (the
    longest prompt + answer the package can hold).
    """
    from slmkit.artifact import directory_size, finalize_card, staged_directory
    from slmkit.export import ExportResult, copy_text_side, export_card, no_progress, output_path, resolve_source

    progress = progress or no_progress
    source = resolve_source(reference)
    destination = output_path(source, "coreml", output)
    steps = 4 if check else 3
    with staged_directory(destination) as staging:  # refuses an existing output before any work
        model = load_llama(source.path)
        check_context(context, model.config.max_position_embeddings)
        progress("tracing the decoder with a stateful KV cache", 0, steps)
        traced, cache_shape = trace_decoder(model, context)
        metrics = {}
        if check:
            progress("checking the traced graph against PyTorch", 1, steps)
            metrics["trace_check"] = check_trace(model, traced, context)
        progress("converting to a Core ML ML program (float16)", steps - 2, steps)
        package = convert(traced, cache_shape, context, model.config, source.name)
        package.save(str(staging / MLPACKAGE))
        copy_text_side(source.path, staging)
        progress("writing card", steps - 1, steps)
        metrics.update({
            "mlpackage_size_bytes": directory_size(staging / MLPACKAGE),
            "minimum_deployment_target": "macOS 15 / iOS 18",
            "cache_shape": list(cache_shape),
            "runs_here": False,  # Core ML needs macOS; nothing executed the package on this machine
        })
        card = export_card(source, destination.name, staging, "coreml", "float16",
                           {"context": context, "check": check}, metrics)
        finalize_card(staging, card)
    progress("done", steps, steps)
    return ExportResult(destination, card)
