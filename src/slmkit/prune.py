"""``slm prune``: make a Llama-architecture model smaller, measured on calibration text.

Structured pruning removes whole parts and writes a genuinely smaller config and tensors
that every other command (export included) accepts:
- layers (``layers``): the blocks that change their input least on calibration text, scored
  by 1 - cosine(input, output) of the residual stream (ShortGPT's "block influence");
- KV groups (``kv_groups``): per layer, the key/value groups — with the query heads that share
  them — whose attention outputs have the smallest mean norm;
- MLP channels (``mlp_ratio``): per layer, the intermediate channels with the smallest mean
  activation magnitude (the input of ``down_proj``);
- embedding channels (``hidden_size``): the width of the residual stream, shared by every
  layer and by the (tied) embedding, ranked by the mean magnitude of the RMSNorm outputs
  across all layers (Minitron's width pruning). It is the only way to shrink the embedding,
  which is a fifth of SmolLM2-135M. Each RMSNorm then averages over fewer channels, so its
  weight is rescaled by the measured energy kept, to keep its output scale.

Unstructured pruning (``sparsity``) zeroes individual weights of every linear layer in the
blocks, by magnitude or by Wanda's |weight| × input-norm score, per output row or in the 2:4
pattern. Zeros keep the tensors' shapes: on CPU with dense kernels they save neither time nor
memory (safetensors and GGUF store them as ordinary values); they are a step towards sparse
kernels or a better-compressing quantization, not a speed-up by themselves.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import torch

from slmkit.artifact import Card, ParentRef, content_hash, read_card
from slmkit.errors import InvalidRequestError

# Tensors whose input columns, or output rows, are the residual stream's channels.
READS_RESIDUAL = ("embed_tokens.weight", "lm_head.weight", "q_proj.weight", "k_proj.weight", "v_proj.weight",
                  "gate_proj.weight", "up_proj.weight")
WRITES_RESIDUAL = ("o_proj.weight", "down_proj.weight", "o_proj.bias", "down_proj.bias")
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass
class PruneConfig:
    layers: int = 0  # blocks to remove
    kv_groups: int = 0  # key/value groups to remove in every layer (their query heads go too)
    mlp_ratio: float = 1.0  # fraction of MLP channels to keep
    hidden_size: int = 0  # embedding channels to keep; 0 keeps them all
    sparsity: float = 0.0  # fraction of weights to zero in the blocks' linear layers
    method: str = "wanda"  # magnitude | wanda (for sparsity)
    pattern: str = "unstructured"  # unstructured | 2:4 (for sparsity)
    calibration_tokens: int = 4096  # calibration text used to score what to remove
    evaluation_tokens: int = 4096  # held-out text for perplexity before and after

    def validate(self) -> None:
        if self.layers < 0 or self.kv_groups < 0 or self.hidden_size < 0:
            raise InvalidRequestError("--layers, --kv-groups and --hidden-size must be >= 0.")
        if not 0.0 < self.mlp_ratio <= 1.0:
            raise InvalidRequestError(f"--mlp-ratio is the fraction of MLP channels kept: (0, 1], got {self.mlp_ratio}.")
        if not 0.0 <= self.sparsity < 1.0:
            raise InvalidRequestError(f"--sparsity must be in [0, 1), got {self.sparsity}.")
        if self.method not in ("magnitude", "wanda"):
            raise InvalidRequestError(f"--method must be magnitude or wanda, got {self.method!r}.")
        if self.pattern not in ("unstructured", "2:4"):
            raise InvalidRequestError(f"--pattern must be unstructured or 2:4, got {self.pattern!r}.")
        if self.pattern == "2:4" and self.sparsity not in (0.0, 0.5):
            raise InvalidRequestError("The 2:4 pattern zeroes exactly half the weights: use --sparsity 0.5.")
        if not (self.layers or self.kv_groups or self.mlp_ratio < 1.0 or self.hidden_size or self.sparsity):
            raise InvalidRequestError(
                "Nothing to prune: give --layers, --kv-groups, --mlp-ratio, --hidden-size or --sparsity.")

    @property
    def structured(self) -> bool:
        return bool(self.layers or self.kv_groups or self.mlp_ratio < 1.0 or self.hidden_size)


@dataclasses.dataclass
class PruneResult:
    name: str
    path: Path
    card: Card


def default_texts() -> tuple[str, str]:
    """Calibration and held-out evaluation text from Python's own documentation."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    calibration = "\n\n".join(topics[n] for n in names[0::2])
    evaluation = "\n\n".join(topics[n] for n in names[1::2])
    return calibration, evaluation


def calibration_batch(tokenizer, text: str, tokens: int, window: int = 256) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    rows = len(ids) // window
    if rows == 0:
        raise InvalidRequestError(f"The calibration text is too short: it needs at least {window} tokens.")
    return torch.tensor(ids[: rows * window]).view(rows, window)


@torch.no_grad()
def measure(model, batch: torch.Tensor) -> dict:
    """One pass over calibration text, recording what every pruning criterion needs."""
    layers = model.model.layers
    stats = {"mlp": [torch.zeros(layer.mlp.down_proj.in_features) for layer in layers],
             "heads": [torch.zeros(layer.self_attn.o_proj.in_features) for layer in layers],
             "inputs": {}, "influence": torch.zeros(len(layers)),
             "hidden": torch.zeros(model.config.hidden_size), "norm_energy": {}}
    hooks = []
    for name, module in model.named_modules():
        if type(module).__name__.endswith("RMSNorm") and getattr(module, "weight", None) is not None \
                and module.weight.shape == (model.config.hidden_size,):
            def record_norm(module, args, output, name=name):
                stats["hidden"] += output.abs().sum(dim=(0, 1))
                energy = args[0].pow(2).sum(dim=(0, 1))
                stats["norm_energy"][name] = stats["norm_energy"].get(name, 0) + energy

            hooks.append(module.register_forward_hook(record_norm))
    for index, layer in enumerate(layers):
        def record_mlp(module, args, index=index):
            stats["mlp"][index] += args[0].abs().sum(dim=(0, 1))

        def record_heads(module, args, index=index):
            stats["heads"][index] += args[0].pow(2).sum(dim=(0, 1))

        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(record_mlp))
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(record_heads))
        for name in LINEAR_NAMES:
            module = _linear(layer, name)

            def record_input(module, args, key=(index, name)):
                norms = args[0].pow(2).sum(dim=(0, 1))
                stats["inputs"][key] = stats["inputs"].get(key, 0) + norms

            hooks.append(module.register_forward_pre_hook(record_input))
    try:
        for row in batch:
            hidden = model(input_ids=row.unsqueeze(0), output_hidden_states=True, use_cache=False).hidden_states
            for index in range(len(layers)):
                before, after = hidden[index][0], hidden[index + 1][0]
                stats["influence"][index] += (1 - torch.cosine_similarity(before, after, dim=-1)).mean()
    finally:
        for hook in hooks:
            hook.remove()
    return stats


def _linear(layer, name: str):
    return getattr(layer.self_attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else layer.mlp, name)


def structured_state(model, stats: dict, config: PruneConfig) -> tuple[dict, dict]:
    """The state dict and config changes of the structurally pruned model."""
    cfg = model.config
    n_layers, n_heads, n_kv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    if config.layers >= n_layers:
        raise InvalidRequestError(f"The model has {n_layers} layers; --layers must be below that.")
    if config.kv_groups >= n_kv:
        raise InvalidRequestError(f"The model has {n_kv} key/value groups per layer; --kv-groups must be below that.")
    drop = set(torch.argsort(stats["influence"])[: config.layers].tolist())  # least influence first
    keep_layers = [i for i in range(n_layers) if i not in drop]
    keep_channels = max(1, round(cfg.intermediate_size * config.mlp_ratio))
    keep_groups = n_kv - config.kv_groups
    per_group = n_heads // n_kv
    state = model.state_dict()
    new_state = {k: v for k, v in state.items() if not k.startswith("model.layers.")}
    for new_index, old_index in enumerate(keep_layers):
        prefix, new_prefix = f"model.layers.{old_index}.", f"model.layers.{new_index}."
        layer = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        channels = torch.argsort(stats["mlp"][old_index], descending=True)[:keep_channels].sort().values
        layer["mlp.gate_proj.weight"] = layer["mlp.gate_proj.weight"][channels]
        layer["mlp.up_proj.weight"] = layer["mlp.up_proj.weight"][channels]
        layer["mlp.down_proj.weight"] = layer["mlp.down_proj.weight"][:, channels]
        if config.kv_groups:
            head_norms = stats["heads"][old_index].view(n_heads, head_dim).sum(dim=1)
            group_scores = head_norms.view(n_kv, per_group).sum(dim=1)
            groups = torch.argsort(group_scores, descending=True)[:keep_groups].sort().values
            kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups.tolist()])
            q_rows = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim)
                                for g in groups.tolist() for h in range(g * per_group, (g + 1) * per_group)])
            for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
                for kind in ("weight", "bias"):
                    key = f"self_attn.{name}.{kind}"
                    if key in layer:
                        layer[key] = layer[key][rows]
            layer["self_attn.o_proj.weight"] = layer["self_attn.o_proj.weight"][:, q_rows]
        new_state.update({new_prefix + k: v.clone() for k, v in layer.items()})
    changes = {"removed_layers": sorted(drop), "num_hidden_layers": len(keep_layers), "intermediate_size": keep_channels,
               "num_attention_heads": keep_groups * per_group, "num_key_value_heads": keep_groups,
               "head_dim": head_dim}
    if config.hidden_size and config.hidden_size != cfg.hidden_size:
        _prune_hidden(new_state, stats, config.hidden_size, cfg.hidden_size, keep_layers, keep_groups * per_group)
        changes["hidden_size"] = config.hidden_size
    return new_state, changes


def _prune_hidden(state: dict, stats: dict, keep: int, width: int, keep_layers: list[int], heads: int) -> None:
    """Keep the ``keep`` most active embedding channels in every tensor that reads or writes the
    residual stream (in place on ``state``, already renumbered to the kept layers)."""
    if keep > width:
        raise InvalidRequestError(f"--hidden-size {keep} is larger than the model's hidden size {width}.")
    if keep % heads:
        raise InvalidRequestError(
            f"--hidden-size must be a multiple of the {heads} attention heads left (transformers requires it); "
            f"try {max(heads, keep // heads * heads)}.")
    channels = torch.argsort(stats["hidden"], descending=True)[:keep].sort().values
    for key in list(state):
        tensor = state[key]
        if key.endswith("norm.weight") and tensor.shape == (width,):
            module = re.sub(r"^model\.layers\.(\d+)\.", lambda m: f"model.layers.{keep_layers[int(m[1])]}.",
                            key[: -len(".weight")])
            energy = stats["norm_energy"].get(module)
            # RMSNorm divides by the root-mean-square over the channels left; rescale its weight
            # by how that changes on calibration text so the kept channels keep their scale.
            scale = (energy[channels].sum() / keep / (energy.sum() / width)).sqrt() if energy is not None else 1.0
            state[key] = tensor[channels] * scale
        elif key.endswith(READS_RESIDUAL):
            state[key] = tensor[:, channels].contiguous()
        elif key.endswith(WRITES_RESIDUAL):
            state[key] = tensor[channels].contiguous()


@torch.no_grad()
def sparsify(model, stats: dict, config: PruneConfig) -> float:
    """Zero weights in place; returns the fraction of block weights that are zero."""
    zeros = total = 0
    for index, layer in enumerate(model.model.layers):
        for name in LINEAR_NAMES:
            weight = _linear(layer, name).weight
            score = weight.abs()
            if config.method == "wanda":
                score = score * stats["inputs"][(index, name)].sqrt().unsqueeze(0)
            if config.pattern == "2:4":
                groups = score.view(weight.shape[0], -1, 4)
                smallest = groups.argsort(dim=-1)[..., :2]
                mask = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, smallest, False).view_as(weight)
            else:
                cut = int(weight.shape[1] * config.sparsity)
                smallest = score.argsort(dim=1)[:, :cut]
                mask = torch.ones_like(weight, dtype=torch.bool).scatter_(1, smallest, False)
            weight.mul_(mask)
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / total


def prune(model_ref: str, config: PruneConfig, name: str | None = None, calibration_text: str | None = None,
          evaluation_text: str | None = None, progress: Callable[[str], None] | None = None) -> PruneResult:
    """Prune ``model_ref`` into a new stored artifact ``name``; the input is never modified."""
    from transformers import AutoModelForCausalLM

    from slmkit.engine.torch_backend import load_causal_lm, load_tokenizer
    from slmkit.models import store_path
    from slmkit.references import resolve_hf
    from slmkit.training.stage import check_destination, parameter_count, write_artifact

    config.validate()
    report = progress or (lambda step: None)
    source = resolve_hf(model_ref)
    name = name or f"{source.name}-pruned"
    destination = store_path(name)
    check_destination(destination)
    tokenizer = load_tokenizer(source.path)
    model = load_causal_lm(source.path)
    if model.config.model_type != "llama":
        raise InvalidRequestError(f"slm prune handles Llama-architecture models; {model_ref} is {model.config.model_type}.")
    default_calibration, default_evaluation = default_texts()
    calibration = calibration_batch(tokenizer, calibration_text or default_calibration, config.calibration_tokens)
    evaluation = evaluation_text or default_evaluation
    report("measuring perplexity before")
    perplexity_before = _perplexity(model, tokenizer, evaluation, config.evaluation_tokens)
    report("scoring layers, heads and channels on calibration text")
    stats = measure(model, calibration)
    parameters_before = parameter_count(model)
    removed_layers: list[int] = []
    if config.structured:
        report("removing layers, heads and channels")
        state, changes = structured_state(model, stats, config)
        removed_layers = changes.pop("removed_layers")
        new_config = model.config.__class__.from_dict({**model.config.to_dict(), **changes})
        model = AutoModelForCausalLM.from_config(new_config, dtype=torch.float32)
        model.load_state_dict(state, strict=True)
        model.eval()
        if config.sparsity:
            stats = measure(model, calibration)  # the input norms changed with the structure
    sparsity = sparsify(model, stats, config) if config.sparsity else 0.0
    report("measuring perplexity after")
    perplexity_after = _perplexity(model, tokenizer, evaluation, config.evaluation_tokens)
    parent = read_card(source.path)
    card = Card(name=name, stage="prune", architecture=model.config.architectures[0] if model.config.architectures
                else "LlamaForCausalLM", parameters=parameter_count(model), dtype="float32",
                parents=[ParentRef(source.name, parent.content_sha256 if parent and parent.content_sha256
                                   else content_hash(source.path), str(source.path))],
                args=dataclasses.asdict(config),
                metrics={"perplexity_before": perplexity_before, "perplexity_after": perplexity_after,
                         "parameters_before": parameters_before, "parameters_after": parameter_count(model),
                         "block_weight_sparsity": sparsity, "removed_layers": removed_layers})
    report("writing the artifact")
    write_artifact(destination, model, tokenizer, card)
    return PruneResult(name, destination, card)


@torch.no_grad()
def _perplexity(model, tokenizer, text: str, tokens: int, window: int = 256) -> float:
    """Perplexity of ``text`` under an in-memory model: the same windows and arithmetic as
    :func:`slmkit.perplexity.perplexity`, without saving the model first."""
    from slmkit.perplexity import perplexity

    return perplexity(_InMemoryScorer(model, tokenizer), text, window=window, max_tokens=tokens).perplexity


class _InMemoryScorer:
    """Just enough of the Engine interface for :func:`slmkit.perplexity.perplexity`."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.context_length = int(model.config.max_position_embeddings)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_logprobs(self, token_ids: list[int]) -> list[float]:
        from slmkit.engine.torch_backend import teacher_forced_logprobs

        return teacher_forced_logprobs(self.model, token_ids)
