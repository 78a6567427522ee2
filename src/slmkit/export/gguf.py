"""GGUF export: a Llama-architecture HF artifact → one GGUF file for llama.cpp and Ollama.

The file is written with the ``gguf`` package (hyper-parameters, tensors, the byte-level BPE
vocabulary with merges, special token ids and the chat template) at f32 or f16; other quant
types are made from the f32 file by llama.cpp's own quantizer (``llama_model_quantize``
through llama-cpp-python), so the quantized tensors are exactly what ``llama-quantize`` makes.

The exported artifact is a directory: ``model.gguf`` (self-contained; copy it anywhere), the
HF tokenizer files (the engine's text side uses them, so detokenizing and stop strings match
the PyTorch backend) and ``slm.json``.

A recommender (``slm recommend train``) has no tokenizer: its vocabulary is its item catalogue,
so the file gets one token per catalogue entry instead (:mod:`slmkit.export.gguf_items`), the export
carries ``catalogue.json``, and the check compares next-item scores, not text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from slmkit.errors import InvalidRequestError

GGUF_FILE = "model.gguf"
# Quant types as llama.cpp names them → llama_ftype values (llama.h).
QUANT_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q8_0": 7,
    "q4_0": 2,
    "q4_k_m": 15,
    "q5_k_m": 17,
    "q6_k": 18,
}
SUPPORTED_MODEL_TYPES = ("llama",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")


def check_quant(quant: str) -> int:
    """The llama_ftype for ``quant``; a clear error for a name llama.cpp does not know here."""
    if quant not in QUANT_TYPES:
        raise InvalidRequestError(
            f"Unknown GGUF quant type {quant!r}. Choose one of: {', '.join(QUANT_TYPES)}.", param="quant"
        )
    return QUANT_TYPES[quant]


def check_llama_config(config) -> None:
    """Refuse configurations llama.cpp's ``llama`` architecture cannot hold, before writing anything."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InvalidRequestError(
            f"GGUF export supports Llama-architecture models; this model is {model_type!r}. "
            "Export it with llama.cpp's convert_hf_to_gguf.py instead."
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise InvalidRequestError(f"GGUF export does not handle rope scaling {rope.get('rope_type')!r} yet.")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise InvalidRequestError("GGUF export does not handle Llama models with attention or MLP biases.")


def rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def tokenizer_pre(tokenizer_json: dict) -> str:
    """llama.cpp's name for the pre-tokenizer regex the HF tokenizer uses.

    Only the byte-level layouts slmkit models use are mapped; anything else is refused
    rather than exported with a regex that would split text differently.
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [(s.get("type"), s.get("individual_digits"), s.get("use_regex", True)) for s in steps]
    if kinds == [("ByteLevel", None, True)]:
        return "gpt-2"
    if kinds == [("Digits", True, True), ("ByteLevel", None, True)]:
        return "smollm"
    raise InvalidRequestError(
        f"GGUF export handles byte-level BPE tokenizers; this one pre-tokenizes with {kinds}. "
        "Export it with llama.cpp's convert_hf_to_gguf.py instead."
    )


def vocabulary(tokenizer_json: dict) -> tuple[list[str], list[int]]:
    """Token strings in id order and their GGUF token types (special added tokens are CONTROL)."""
    from gguf import TokenType

    model = tokenizer_json["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback") or (tokenizer_json.get("decoder") or {}).get(
            "type") != "ByteLevel":
        raise InvalidRequestError("GGUF export handles byte-level BPE tokenizers (GPT-2 style) only.")
    by_id = {index: text for text, index in model["vocab"].items()}
    kinds = {index: TokenType.NORMAL for index in by_id}
    for added in tokenizer_json.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
    size = max(by_id) + 1
    if sorted(by_id) != list(range(size)):
        raise InvalidRequestError("The tokenizer's ids have gaps; GGUF needs a dense vocabulary.")
    return [by_id[i] for i in range(size)], [int(kinds[i]) for i in range(size)]


def permute_for_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half layout to GGML's interleaved-pairs layout."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(source: Path, config, float16: bool):
    """Yield (gguf name, array) for every tensor of the safetensors in ``source``."""
    import gguf
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    files = sorted(Path(source).glob("*.safetensors"))
    if not files:
        raise InvalidRequestError(f"{source} has no .safetensors weights to export.")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for hf_name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise InvalidRequestError(f"GGUF export does not know where tensor {hf_name!r} goes.")
                data = handle.get_tensor(hf_name).float().numpy()
                if hf_name.endswith("q_proj.weight"):
                    data = permute_for_rope(data, config.num_attention_heads)
                elif hf_name.endswith("k_proj.weight"):
                    data = permute_for_rope(data, config.num_key_value_heads)
                # Norm vectors stay f32 in every llama.cpp file type.
                yield name, data.astype(np.float16 if float16 and data.ndim > 1 else np.float32)


def write_float_gguf(source: Path, out_file: Path, name: str, float16: bool) -> None:
    """Write the HF artifact in ``source`` as an f32 or f16 GGUF file ``out_file``."""
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    from slmkit.export import is_item_model

    logging.getLogger("gguf").setLevel(logging.WARNING)  # its INFO lines name temp files
    config = AutoConfig.from_pretrained(str(source))
    check_llama_config(config)
    items = is_item_model(source)
    if items:
        from slmkit.export.gguf_items import item_vocabulary

        tokens, token_types = item_vocabulary(source, config)
    else:
        tokenizer_json = json.loads((Path(source) / "tokenizer.json").read_text())
        pre = tokenizer_pre(tokenizer_json)
        tokens, token_types = vocabulary(tokenizer_json)
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        if not tokenizer.chat_template:
            raise InvalidRequestError(f"{source} has no chat template; GGUF users would get no chat format.")

    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim(config))
    # llama.cpp assumes hidden_size / heads per head unless told; width-pruned models differ.
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(QUANT_TYPES["f16" if float16 else "f32"])

    if items:
        from slmkit.export.gguf_items import add_item_vocabulary

        add_item_vocabulary(writer, tokens, token_types, config)
    else:
        add_text_vocabulary(writer, source, pre, tokens, token_types, tokenizer)

    for tensor_name, data in gguf_tensors(source, config, float16):
        writer.add_tensor(tensor_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def add_text_vocabulary(writer, source: Path, pre: str, tokens: list[str], token_types: list[int],
                        tokenizer) -> None:
    """Write a text model's byte-level BPE vocabulary, merges, special ids and chat template."""
    import gguf

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    special = gguf.SpecialVocab(source, load_merges=True, n_vocab=len(tokens))
    special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)
    writer.add_add_bos_token(False)
    for eot in end_of_turn_ids(source, tokenizer):
        if eot != tokenizer.eos_token_id:
            writer.add_eot_token_id(eot)
            break


def end_of_turn_ids(source: Path, tokenizer) -> list[int]:
    """EOS ids from generation_config.json (what ends an assistant turn), then the tokenizer's."""
    ids: list[int] = []
    config_file = Path(source) / "generation_config.json"
    if config_file.exists():
        value = json.loads(config_file.read_text()).get("eos_token_id")
        ids.extend(value if isinstance(value, list) else [value] if value is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def quantize_gguf(float_file: Path, out_file: Path, quant: str, threads: int = 2) -> None:
    """Quantize ``float_file`` (f32 GGUF) to ``quant`` with llama.cpp's quantizer.

    For tensors whose rows are too short for a k-quant block (256 values), llama.cpp picks a
    fallback type itself (q4_k → q5_0, q6_k → q8_0); :func:`tensor_types` reports what was
    used. Rows must still be a multiple of 32 values for any quantized type.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = check_quant(quant)
    params.nthread = threads
    from llama_cpp._utils import suppress_stdout_stderr

    from slmkit.engine.llamacpp_backend import quiet_llama

    # The quantizer prints a line per tensor straight to the process's stdout/stderr.
    with quiet_llama(), suppress_stdout_stderr(disable=False):
        status = llama_cpp.llama_model_quantize(str(float_file).encode(), str(out_file).encode(), params)
    if status != 0 or not Path(out_file).exists():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out_file)
        raise InvalidRequestError(
            f"llama.cpp could not quantize this model to {quant} (status {status}); its tensor shapes may not "
            "fit that type's blocks. Try --quant q8_0 or f16."
        )


def check_quantizable(source: Path, quant: str) -> None:
    """Every 2-D tensor needs rows that are a multiple of 32 values to be quantized at all."""
    from transformers import AutoConfig

    if quant in ("f32", "f16"):
        return
    config = AutoConfig.from_pretrained(str(source))
    for width in (config.hidden_size, config.intermediate_size):
        if width % 32:
            raise InvalidRequestError(
                f"A row of {width} values does not fit {quant}'s 32-value blocks. Export with --quant f16."
            )


def tensor_types(gguf_file: Path) -> dict[str, int]:
    """How many tensors of each GGML type ``gguf_file`` holds, e.g. {"Q4_K": 120, "F32": 61}."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for tensor in GGUFReader(str(gguf_file)).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return dict(sorted(counts.items()))


def export_gguf(reference: str, quant: str = "q4_k_m", output: str | Path | None = None, threads: int = 2,
                check: bool = True, progress=None):
    """Export the model ``reference`` to a GGUF artifact; returns an :class:`ExportResult`.

    ``output`` is the artifact directory (default ``$SLM_HOME/models/NAME-QUANT``); the GGUF
    file inside is ``model.gguf``. With ``check`` the parity checks run and land in the card.
    """
    from slmkit.artifact import finalize_card, staged_directory
    from slmkit.export import (
        ExportResult,
        copy_text_side,
        export_card,
        is_item_model,
        no_progress,
        output_path,
        resolve_source,
    )

    progress = progress or no_progress
    check_quant(quant)
    source = resolve_source(reference)
    check_quantizable(source.path, quant)
    destination = output_path(source, quant, output)
    steps = 4 if check else 3
    with staged_directory(destination) as staging:
        progress("writing GGUF", 0, steps)
        final = staging / GGUF_FILE
        float_file = final if quant in ("f32", "f16") else staging / ".float.gguf"
        write_float_gguf(source.path, float_file, destination.name, float16=quant == "f16")
        if float_file != final:
            progress(f"quantizing to {quant} with llama.cpp", 1, steps)
            quantize_gguf(float_file, final, quant, threads)
            float_file.unlink()
        copy_text_side(source.path, staging)
        metrics = {"gguf_size_bytes": final.stat().st_size, "tensor_types": tensor_types(final)}
        if check:
            progress("checking parity with the PyTorch model", 2, steps)
            if is_item_model(source.path):  # a recommender: item scores, not text
                from slmkit.export.gguf_items import gguf_item_parity

                metrics["parity"] = gguf_item_parity(source.path, final, quant, threads)
            else:
                metrics["parity"] = gguf_parity(source.path, final, quant, threads)
        progress("writing card", steps - 1, steps)
        card = export_card(source, destination.name, staging, "gguf", quant,
                           {"quant": quant, "threads": threads, "check": check}, metrics)
        finalize_card(staging, card)
    progress("done", steps, steps)
    return ExportResult(destination, card)


def gguf_parity(source: Path, gguf_file: Path, quant: str, threads: int) -> dict:
    """Parity of the GGUF through llama.cpp against PyTorch, plus what the file itself carries."""
    from slmkit.engine.llamacpp_backend import LlamaCppEngine
    from slmkit.export.parity import check_parity, reference_engine

    reference = reference_engine(source, threads)
    engine = LlamaCppEngine(gguf_file, threads=threads)
    try:
        result = check_parity(reference, engine, quant, exact=quant in ("f32", "f16"),
                              native_tokenize=engine.native_tokenize)
        metadata = engine.metadata()
        eos = int(metadata.get("tokenizer.ggml.eos_token_id", -1))
        result["file_chat_template_match"] = metadata.get("tokenizer.chat_template") == reference.tokenizer.chat_template
        result["file_end_of_turn_match"] = eos in reference.eos_ids
        result["passed"] = result["passed"] and result["file_chat_template_match"] and result["file_end_of_turn_match"]
        return result
    finally:
        engine.close()
        reference.close()
