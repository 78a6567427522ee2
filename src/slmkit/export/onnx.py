"""ONNX export: a Llama-architecture HF artifact → an ONNX decoder with KV-cache inputs and outputs.

Why our own ``torch.onnx`` export instead of optimum-onnx: optimum-onnx 0.1.0 needs
``transformers<4.58``, and slmkit runs on transformers 5 everywhere else (pip would downgrade
it, and tokenizers saved by transformers 5 do not load in 4.57 by class name). The decoder
needs little: the HF model is traced (TorchScript exporter, eager attention) inside a wrapper
that turns flat ``past_key_values.N.key/value`` tensors into a ``DynamicCache`` and returns the
grown cache as ``present.N.key/value``. One graph serves prefill (past length 0) and decode.

Graph: inputs ``input_ids`` (1, seq) int64 and the past (1, kv_heads, past, head_dim) per layer;
outputs ``logits`` (1, seq, vocab) and the presents (1, kv_heads, past + seq, head_dim).
``--int8`` quantizes the MatMul weights to int8 blocks with ONNX Runtime's quantizer
(:func:`quantize_int8`). The tokenizer, chat template and generation config travel alongside.
"""

from __future__ import annotations

from pathlib import Path

from slmkit.errors import InvalidRequestError
from slmkit.formats.onnx_check import ONNX_FILE, check_onnx_file, past_names, present_names  # noqa: F401 (re-exported)

OPSET = 18
SUPPORTED_MODEL_TYPES = ("llama",)


def _decoder_wrapper(model, layers: int):
    import torch
    from transformers import DynamicCache

    class DecoderWithCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, *past):
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)])
            logits = self.model(input_ids=input_ids, cache=cache, use_cache=True).logits
            presents = []
            for layer in cache.layers:
                presents += [layer.keys, layer.values]
            return (logits, *presents)

    return DecoderWithCache()


def export_decoder(source: Path, out_file: Path) -> None:
    """Trace the HF model in ``source`` into an fp32 ONNX decoder at ``out_file``."""
    import warnings

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(source))
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise InvalidRequestError(
            f"ONNX export supports Llama-architecture models; this model is {config.model_type!r}."
        )
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, attn_implementation="eager",
                                                 use_safetensors=True).eval()
    layers = config.num_hidden_layers
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    # A non-empty example past, so the tracer keeps the "cache has content" path; the
    # graph still accepts a past of length 0 for the prefill.
    past = [torch.zeros(1, config.num_key_value_heads, 3, head) for _ in range(2 * layers)]
    input_ids = torch.tensor([[1, 2, 3, 4]], dtype=torch.long)
    dynamic_axes = {"input_ids": {1: "sequence"}, "logits": {1: "sequence"}}
    dynamic_axes.update({name: {2: "past_sequence"} for name in past_names(layers)})
    dynamic_axes.update({name: {2: "total_sequence"} for name in present_names(layers)})
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _decoder_wrapper(model, layers), (input_ids, *past), str(out_file),
            input_names=["input_ids", *past_names(layers)], output_names=["logits", *present_names(layers)],
            dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
        )


def quantize_int8(fp32_file: Path, out_file: Path) -> None:
    """Int8 weights in blocks of 32 (one scale per block, like llama.cpp's q8_0) with ONNX
    Runtime's ``MatMulNBitsQuantizer``; activations are quantized per block at run time
    (``accuracy_level=4``: int8 dot products).

    Not ``quantize_dynamic``: its per-tensor activation scales cost SmolLM2-135M +73%
    perplexity, against +1% here (measured, docs/export.md). The embedding table stays fp32
    (ORT's Gather quantizer only does 4 bits).
    """
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs every node it visits
    try:
        quantizer = MatMulNBitsQuantizer(str(fp32_file), bits=8, block_size=32, is_symmetric=True,
                                         accuracy_level=4, op_types_to_quantize=("MatMul",))
        quantizer.process()
        quantizer.model.save_model_to_file(str(out_file), use_external_data_format=False)
    finally:
        root.setLevel(level)


def export_onnx(reference: str, int8: bool = False, output: str | Path | None = None, threads: int = 2,
                check: bool = True, progress=None):
    """Export the model ``reference`` to an ONNX artifact directory; returns an ExportResult.

    ``output`` defaults to ``$SLM_HOME/models/NAME-onnx`` (``NAME-onnx-int8`` with ``int8``).
    """
    import shutil

    from slmkit.artifact import finalize_card, staged_directory
    from slmkit.export import (
        ExportResult,
        copy_text_side,
        export_card,
        is_item_model,
        item_score_parity,
        no_progress,
        output_path,
        resolve_source,
    )

    progress = progress or no_progress
    source = resolve_source(reference)
    kind = "onnx-int8" if int8 else "onnx-fp32"
    destination = output_path(source, "onnx-int8" if int8 else "onnx", output)
    steps = 4 if check else 3
    with staged_directory(destination) as staging:
        progress("tracing the decoder to ONNX", 0, steps)
        final = staging / ONNX_FILE
        fp32_file = staging / ".fp32.onnx" if int8 else final
        export_decoder(source.path, fp32_file)
        if int8:
            progress("quantizing to int8 with ONNX Runtime", 1, steps)
            quantize_int8(fp32_file, final)
            fp32_file.unlink()
        copy_text_side(source.path, staging)
        shutil.copy2(source.path / "config.json", staging / "config.json")
        metrics = {"onnx_size_bytes": final.stat().st_size, "opset": OPSET}
        if check:
            progress("checking parity with the PyTorch model", 2, steps)
            if is_item_model(source.path):  # a recommender: item scores, not text
                metrics["parity"] = item_score_parity(source.path, final, int8, threads)
            else:
                metrics["parity"] = onnx_parity(source.path, staging, kind, threads)
        progress("writing card", steps - 1, steps)
        card = export_card(source, destination.name, staging, "onnx", "int8" if int8 else "float32",
                           {"int8": int8, "threads": threads, "check": check}, metrics)
        finalize_card(staging, card)
    progress("done", steps, steps)
    return ExportResult(destination, card)


def onnx_parity(source: Path, folder: Path, kind: str, threads: int) -> dict:
    from slmkit.engine.onnx_backend import OnnxEngine
    from slmkit.export.parity import check_parity, reference_engine

    reference = reference_engine(source, threads)
    engine = OnnxEngine(folder, threads=threads)
    try:
        return check_parity(reference, engine, kind, exact=kind == "onnx-fp32")
    finally:
        engine.close()
        reference.close()
