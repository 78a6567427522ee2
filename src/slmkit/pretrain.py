"""``slm pretrain``: train a small Llama-architecture model from scratch on your own text.

A byte-level BPE tokenizer is trained on the data with ``tokenizers`` (or an existing
model's tokenizer is reused), a Llama config comes from a preset or a JSON file of Hugging
Face config keys, and the one training loop trains it. The result is an ordinary artifact
with a ChatML chat template, so every other command (generate, finetune, eval...) takes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from slmkit.artifact import Card
from slmkit.errors import InvalidRequestError
from slmkit.training.loop import TrainConfig, TrainResult

# Llama shapes in Hugging Face's names; vocab_size is the tokenizer's target size.
PRESETS: dict[str, dict] = {
    "tiny": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 4096},  # ~1.3M parameters
    "mini": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 6, "num_attention_heads": 8,
             "num_key_value_heads": 4, "vocab_size": 8192},  # ~6.8M
    "small": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 4, "vocab_size": 16384},  # ~33M
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclasses.dataclass
class PretrainConfig(TrainConfig):
    """Pretraining settings; the training fields come from TrainConfig."""

    preset: str = "tiny"  # tiny | mini | small, or a path to a JSON file of LlamaConfig keys
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    batch_size: int = 16
    micro_batch_size: int = 8
    epochs: float = 1.0
    seq_len: int = 256  # training block length (text is packed into blocks)
    context_length: int = 1024  # the model's max_position_embeddings
    vocab_size: int = 0  # 0 = the preset's
    tokenizer: str | None = None  # reuse this model's tokenizer instead of training one
    validation_fraction: float = 0.05
    packing: bool = True
    weight_decay: float = 0.1


@dataclasses.dataclass
class PretrainResult:
    name: str
    path: Path
    card: Card
    training: TrainResult


def model_config(config: PretrainConfig, tokenizer) -> dict:
    """The LlamaConfig keys of the model to train."""
    if config.preset in PRESETS:
        shape = dict(PRESETS[config.preset])
    else:
        path = Path(config.preset)
        if not path.is_file():
            raise InvalidRequestError(f"Unknown preset {config.preset!r}: use {', '.join(PRESETS)} or a JSON file.")
        try:
            shape = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno}).") from exc
        if not isinstance(shape, dict):
            raise InvalidRequestError(f"{path}: expected an object of LlamaConfig keys.")
    shape.update(vocab_size=len(tokenizer), max_position_embeddings=config.context_length,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id)
    shape.setdefault("tie_word_embeddings", True)
    return shape


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts``, with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _example_texts(examples) -> list[str]:
    texts = []
    for example in examples:
        if example.text is not None:
            texts.append(example.text)
        elif example.messages is not None:
            texts.extend(m["content"] for m in example.messages)
        else:
            texts.extend([example.prompt, example.completion])
    return texts


def pretrain(data: Sequence[str | Path], config: PretrainConfig | None = None, name: str = "pretrained",
             checkpoint_dir: Path | None = None, resume: bool = False, keep_checkpoints: bool = False,
             progress: Callable[[dict], None] | None = None) -> PretrainResult:
    """Train a new model on ``data`` and store it as ``name``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from slmkit.data import data_sha256, expand_paths, load_examples, prepare
    from slmkit.finetune import training_metrics
    from slmkit.models import check_name, store_path
    from slmkit.training import causal_lm_loss, stage, train

    config = config or PretrainConfig()
    files = expand_paths(data)
    examples = load_examples(files)
    destination = store_path(check_name(name))
    stage.check_destination(destination)
    run_dir = stage.run_directory(name, checkpoint_dir, resume)
    if config.tokenizer:
        from slmkit.engine.torch_backend import load_tokenizer
        from slmkit.references import resolve_hf

        tokenizer = load_tokenizer(resolve_hf(config.tokenizer).path)
    else:
        target = config.vocab_size or PRESETS.get(config.preset, {}).get("vocab_size", 8192)
        tokenizer = train_tokenizer(_example_texts(examples), target)
    shape = model_config(config, tokenizer)
    prepared = prepare(tokenizer, examples, config.seq_len, config.validation_fraction, config.seed, config.packing)
    torch.manual_seed(config.seed)
    network = LlamaForCausalLM(LlamaConfig(**shape))
    eos_ids = sorted({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")} - {None})
    network.generation_config = GenerationConfig(eos_token_id=eos_ids, bos_token_id=tokenizer.bos_token_id,
                                                 pad_token_id=tokenizer.pad_token_id)
    data_hash = data_sha256(files)
    vocabulary = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
    fingerprint = stage.fingerprint(config, data=data_hash, shape=shape, tokenizer=vocabulary)
    result = train(network, prepared.train, causal_lm_loss, config, run_dir, validation_set=prepared.validation,
                   pad_id=tokenizer.pad_token_id, resume=resume, fingerprint=fingerprint, progress=progress)
    card = Card(name=name, stage="pretrain", architecture="LlamaForCausalLM",
                parameters=stage.parameter_count(network), dtype="float32",
                args={**dataclasses.asdict(config), "model_config": shape, "data": [str(f) for f in files],
                      "data_sha256": data_hash, "train_blocks": len(prepared.train),
                      "validation_blocks": len(prepared.validation)},
                metrics=training_metrics(result))
    stage.write_artifact(destination, network, tokenizer, card)
    if not keep_checkpoints:
        stage.remove_run_directory(run_dir)
    return PretrainResult(name, destination, card, result)
