"""``slm finetune``: supervised fine-tuning of a causal LM, full weights or LoRA.

Reads a model and chat / prompt-completion / text data (:mod:`slmkit.data`), trains with
the one loop (:func:`slmkit.training.train`) and writes a new artifact to the store whose card
names the parent, the data hash, the resolved settings and the final losses. LoRA (``peft``)
is merged into a standalone model by default; ``keep_adapter`` also saves the adapter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from slmkit.artifact import Card, ParentRef, content_hash, read_card
from slmkit.errors import InvalidRequestError
from slmkit.training.loop import TrainConfig, TrainResult

METHODS = ("full", "lora")
DEFAULT_LEARNING_RATE = {"full": 2e-5, "lora": 2e-4}


@dataclasses.dataclass
class FinetuneConfig(TrainConfig):
    """Fine-tuning settings; the training fields come from TrainConfig. Defaults fit
    SmolLM2-135M on a 2-core CPU."""

    method: str = "lora"  # "full" trains every weight; "lora" trains low-rank adapters
    learning_rate: float = 0.0  # 0 = the method's default (full 2e-5, lora 2e-4)
    seq_len: int = 512  # longer chat examples are truncated
    validation_fraction: float = 0.1  # held out for validation loss
    packing: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"  # peft's name, or comma-separated module names
    keep_adapter: bool = False  # also save the LoRA adapter (adapter/) beside the merged model

    def resolved(self) -> FinetuneConfig:
        if self.method not in METHODS:
            raise InvalidRequestError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if self.keep_adapter and self.method != "lora":
            raise InvalidRequestError("keep_adapter only applies to --method lora.")
        rate = self.learning_rate or DEFAULT_LEARNING_RATE[self.method]
        return dataclasses.replace(self, learning_rate=rate)


@dataclasses.dataclass
class FinetuneResult:
    name: str
    path: Path
    card: Card
    training: TrainResult
    train_examples: int
    validation_examples: int


def finetune(model: str, data: Sequence[str | Path], config: FinetuneConfig | None = None, name: str | None = None,
             checkpoint_dir: Path | None = None, resume: bool = False, keep_checkpoints: bool = False,
             progress: Callable[[dict], None] | None = None) -> FinetuneResult:
    """Fine-tune ``model`` (any reference) on ``data`` files; writes store artifact ``name``
    (default ``<model>-<method>``). ``resume`` continues from the newest checkpoint."""
    import torch

    from slmkit.data import data_sha256, expand_paths, load_examples, prepare
    from slmkit.engine.torch_backend import load_causal_lm, load_tokenizer
    from slmkit.models import check_name, store_path
    from slmkit.references import resolve_hf
    from slmkit.training import causal_lm_loss, stage, train

    config = (config or FinetuneConfig()).resolved()
    files = expand_paths(data)
    examples = load_examples(files)
    parent = resolve_hf(model)
    name = check_name(name or f"{parent.name}-{config.method}")
    destination = store_path(name)
    stage.check_destination(destination)
    run_dir = stage.run_directory(name, checkpoint_dir, resume)
    tokenizer = load_tokenizer(parent.path)
    prepared = prepare(tokenizer, examples, config.seq_len, config.validation_fraction, config.seed, config.packing)
    parent_card = read_card(parent.path)
    parent_sha = (parent_card.content_sha256 if parent_card and parent_card.content_sha256
                  else content_hash(parent.path))
    data_hash = data_sha256(files)

    network = load_causal_lm(parent.path).train()
    torch.manual_seed(config.seed)  # LoRA's initial weights
    if config.method == "lora":
        network = _with_lora(network, config)
    fingerprint = stage.fingerprint(config, parent=parent_sha, data=data_hash)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = train(network, prepared.train, causal_lm_loss, config, run_dir, validation_set=prepared.validation,
                   pad_id=pad_id, resume=resume, fingerprint=fingerprint, progress=progress)

    extra = None
    if config.method == "lora":
        adapter_model = network
        if config.keep_adapter:
            def extra(staging: Path) -> None:
                adapter_model.save_pretrained(staging / "adapter")
        network = network.merge_and_unload()
    card = Card(
        name=name, stage="finetune", architecture=type(network).__name__,
        parameters=stage.parameter_count(network), dtype="float32",
        parents=[ParentRef(parent.name, parent_sha, str(parent.path))],
        args={**dataclasses.asdict(config), "data": [str(f) for f in files], "data_sha256": data_hash,
              "train_examples": len(prepared.train), "validation_examples": len(prepared.validation),
              "truncated_examples": prepared.truncated, "dropped_examples": prepared.dropped},
        metrics=training_metrics(result),
    )
    stage.write_artifact(destination, network, tokenizer, card, extra)
    if not keep_checkpoints:
        stage.remove_run_directory(run_dir)
    return FinetuneResult(name, destination, card, result, len(prepared.train), len(prepared.validation))


def _with_lora(network, config: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules
    modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=modules, task_type="CAUSAL_LM")
    return get_peft_model(network, lora)


def training_metrics(result: TrainResult) -> dict:
    """The card's record of a training run."""
    return {"train_loss": result.final_loss, "validation_loss": result.final_validation_loss,
            "steps": result.steps, "train_tokens": result.tokens, "train_seconds": round(result.seconds, 2),
            "train_tokens_per_s": round(result.tokens_per_s, 1), "stopped_early": result.stopped_early,
            "resumed_from_step": result.resumed_from, "skipped_steps": result.skipped_steps,
            "loss_spikes": result.loss_spikes}
