"""Turn a GGUF file into a float Hugging Face artifact that the PyTorch backend can run.

transformers dequantizes GGUF tensors on load (``gguf_file=``) but then refuses to
``save_pretrained`` a model that came from GGUF, so the model is rebuilt from its config
and state dict before saving.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slmkit.artifact import Card, file_sha256
from slmkit.formats.gguf_check import check_gguf_file
from slmkit.loading import MODEL_BUILD_LOCK

ProgressCallback = Callable[[str, int, int], None]  # (step description, done, total)


def _no_progress(step: str, done: int, total: int) -> None:
    pass


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path, progress: ProgressCallback = _no_progress) -> Card:
    """Write the HF form of ``gguf_path`` into the (empty, staged) directory ``out_dir``.

    Returns a card (stage ``import``) without its content hash; the caller finalizes it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path = Path(gguf_path)
    steps = 5
    progress("checking GGUF header", 0, steps)
    header = check_gguf_file(gguf_path)
    progress("hashing source file", 1, steps)
    source_sha = file_sha256(gguf_path)
    progress("loading and dequantizing tensors", 2, steps)
    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    with MODEL_BUILD_LOCK:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    progress("rebuilding as a plain model", 3, steps)
    config = loaded.config
    # The dequantized weights are plain floats now: drop the GGUF loading hints.
    for stale in ("quantization_config", "_name_or_path"):
        if hasattr(config, stale):
            delattr(config, stale)
    with MODEL_BUILD_LOCK:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    eos_ids = _end_of_turn_ids(tokenizer)
    config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    progress("writing safetensors", 4, steps)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    progress("done", steps, steps)
    return Card(
        name=gguf_path.stem,
        stage="import",
        architecture=config.architectures[0] if config.architectures else config.model_type,
        parameters=sum(p.numel() for p in model.parameters()),
        dtype="float32",
        source={
            "file": gguf_path.name,
            "format": "gguf",
            "sha256": source_sha,
            "gguf_version": header["version"],
        },
    )


def _end_of_turn_ids(tokenizer) -> list[int]:
    """The ids that end an assistant turn: the tokenizer's EOS plus ChatML's ``<|im_end|>``."""
    ids = []
    for token in (tokenizer.eos_token, "<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids
