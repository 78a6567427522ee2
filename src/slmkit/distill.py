"""``slm distill``: train a small student to imitate a bigger teacher.

Two ways, both on slmkit's one training loop (:func:`slmkit.training.train`):

- **logit distillation** (``method="logits"``): the student matches the teacher's next-token
  distribution at every trained position. The teacher runs once: its top-k logits are cached
  on disk with their logsumexp (keyed by teacher, data, k and temperature) and every epoch,
  and every later run on the same data, reads the cache. Divergences compare the two full
  distributions on the teacher's top-k tokens plus one bucket for all other tokens: forward
  KL, reverse KL or generalized JSD, at a temperature, mixed with ordinary next-token
  cross-entropy. Teacher and student must share
  the tokenizer; embedding rows past the tokenizer (padding) are cropped.
- **sequence-level distillation** (``method="sequence"``): the teacher answers a set of
  prompts, the answers are saved as a chat dataset, and the student is fine-tuned on it.
  This works across tokenizers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from slmkit.artifact import Card, ParentRef, content_hash, read_card, write_text_atomic
from slmkit.errors import InvalidRequestError
from slmkit.training import TrainConfig

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


@dataclasses.dataclass
class DistillConfig(TrainConfig):
    method: str = "logits"  # logits | sequence
    divergence: str = "forward_kl"  # forward_kl | reverse_kl | jsd
    jsd_beta: float = 0.5  # weight of the teacher in the JSD mixture
    temperature: float = 1.0
    alpha: float = 0.9  # share of the distillation loss; the rest is next-token cross-entropy
    top_k: int = 32  # teacher logits kept per position in the cache
    seq_len: int = 256
    validation_fraction: float = 0.05
    packing: bool = True
    learning_rate: float = 5e-4
    max_new_tokens: int = 256  # sequence-level: length of the teacher's answers

    def check(self) -> None:
        self.validate()
        if self.method not in ("logits", "sequence"):
            raise InvalidRequestError(f"--method must be logits or sequence, got {self.method!r}.")
        if self.divergence not in DIVERGENCES:
            raise InvalidRequestError(f"--divergence must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}.")
        if not 0 < self.temperature <= 20 or not 0 <= self.alpha <= 1 or not 0 < self.jsd_beta < 1:
            raise InvalidRequestError("temperature must be in (0, 20], alpha in [0, 1] and jsd_beta in (0, 1).")
        if self.top_k < 1:
            raise InvalidRequestError(f"--top-k must be >= 1, got {self.top_k}.")


@dataclasses.dataclass
class DistillResult:
    name: str
    path: Path
    card: Card
    training: object
    teacher_cache: Path | None = None
    cache_reused: bool = False


# -- losses ----------------------------------------------------------------------------

def divergence(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logits: torch.Tensor,
               teacher_lse: torch.Tensor, kind: str, temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence between teacher and student, shape ``student_logits.shape[:-1]``.

    ``student_logits`` (..., vocab); ``teacher_ids``/``teacher_logits`` (..., k), the teacher's
    top-k; ``teacher_lse`` (...) the logsumexp of the teacher's full logits at ``temperature``.
    Both distributions (softmax at ``temperature`` over the whole vocabulary) are compared on
    k + 1 outcomes: each top-k token, and "any other token". The student is thus also pushed to
    put no more mass outside the teacher's top-k than the teacher does. (Renormalizing both on
    the top-k instead leaves the student's other logits free: measured on SmolLM2, the
    student's next-token loss then recovered more slowly than with no teacher at all.)
    """
    scaled = student_logits.float() if temperature == 1 else student_logits.float() / temperature
    log_q_top = torch.log_softmax(scaled, dim=-1).gather(-1, teacher_ids)
    # log(1 - top-k mass) instead of a logsumexp over the other tokens: no second pass over the
    # vocabulary (measured on 4 x 256 positions of a 49,152-token vocabulary: forward + backward
    # 705 -> 193 ms, as cheap as the cross-entropy itself; the same value within 1e-6).
    log_q_rest = torch.log1p(-log_q_top.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))
    log_q = torch.cat([log_q_top, log_q_rest], dim=-1)
    teacher = teacher_logits.float() / temperature
    log_p_top = (teacher - teacher_lse.float().unsqueeze(-1)).clamp_max(0.0)
    rest = (1.0 - log_p_top.exp().sum(-1, keepdim=True)).clamp_min(1e-8)
    log_p = torch.cat([log_p_top, rest.log()], dim=-1)
    p, q = log_p.exp(), log_q.exp()
    if kind == "forward_kl":
        return (p * (log_p - log_q)).sum(-1)
    if kind == "reverse_kl":
        return (q * (log_q - log_p)).sum(-1)
    log_m = torch.log(beta * p + (1 - beta) * q)
    return beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(-1)


def distillation_loss(cache: TeacherCache, config: DistillConfig, vocab_size: int):
    """The loss_fn for :func:`slmkit.training.train`: KD on cached teacher logits mixed with CE."""

    def loss_fn(model, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab_size]
        targets = batch["targets"]
        trained = targets != -100
        cross_entropy = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                                          ignore_index=-100, reduction="sum")
        teacher_ids, teacher_logits, teacher_lse = cache.batch(batch["input_ids"], batch["attention_mask"])
        kd = divergence(logits, teacher_ids, teacher_logits, teacher_lse, config.divergence, config.temperature,
                        config.jsd_beta)
        kd = (kd * trained).sum() * config.temperature**2
        return (config.alpha * kd + (1 - config.alpha) * cross_entropy) / batch["normalizer"]

    return loss_fn


# -- teacher cache ---------------------------------------------------------------------

class TeacherCache:
    """Top-k teacher logits, and the logsumexp of all of them, for every position of every
    example, looked up by token ids."""

    FORMAT = 2  # part of the cache key: 2 added the logsumexp

    def __init__(self, index: dict[str, tuple[int, int]], ids: torch.Tensor, logits: torch.Tensor, lse: torch.Tensor):
        self.index, self.ids, self.logits, self.lse = index, ids, logits, lse

    @staticmethod
    def key(token_ids: Sequence[int]) -> str:
        return hashlib.sha1(json.dumps(list(token_ids)).encode()).hexdigest()

    def batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, width = input_ids.shape
        k = self.ids.shape[1]
        out_ids = torch.zeros(rows, width, k, dtype=torch.long)
        out_logits = torch.zeros(rows, width, k)
        out_lse = torch.zeros(rows, width)
        for row in range(rows):
            length = int(attention_mask[row].sum())
            start, stored = self.index[self.key(input_ids[row, :length].tolist())]
            out_ids[row, :stored] = self.ids[start : start + stored].long()
            out_logits[row, :stored] = self.logits[start : start + stored].float()
            out_lse[row, :stored] = self.lse[start : start + stored]
        return out_ids, out_logits, out_lse

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".partial")
        save_file({"ids": self.ids.contiguous(), "logits": self.logits.contiguous(), "lse": self.lse.contiguous()},
                  str(temporary),
                  metadata={"index": json.dumps(self.index)})
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> TeacherCache:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            index = {k: tuple(v) for k, v in json.loads(handle.metadata()["index"]).items()}
            return cls(index, handle.get_tensor("ids"), handle.get_tensor("logits"), handle.get_tensor("lse"))


@torch.no_grad()
def build_teacher_cache(teacher, examples, top_k: int, vocab_size: int, temperature: float = 1.0,
                        progress: Callable[[int, int], None] | None = None) -> TeacherCache:
    """The teacher's top-k logits and their logsumexp at ``temperature`` (rows past the
    shared vocabulary cropped)."""
    index, ids, logits, lse, offset = {}, [], [], [], 0
    for number, example in enumerate(examples):
        key = TeacherCache.key(example.input_ids)
        if key in index:
            continue
        output = teacher(input_ids=torch.tensor([example.input_ids]), use_cache=False).logits[0, :, :vocab_size]
        values, positions = output.float().topk(top_k, dim=-1)
        index[key] = (offset, len(example.input_ids))
        ids.append(positions.int())
        logits.append(values.half())
        lse.append(torch.logsumexp(output.float() / temperature, dim=-1))
        offset += len(example.input_ids)
        if progress:
            progress(number + 1, len(examples))
    return TeacherCache(index, torch.cat(ids), torch.cat(logits), torch.cat(lse))


def shared_vocab_size(teacher_tokenizer, student_tokenizer, teacher_model, student_model) -> int:
    """The vocabulary both models predict over; refuses tokenizers that differ."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise InvalidRequestError(
            "Teacher and student use different tokenizers, so their logits cannot be compared token by token. "
            "Use sequence-level distillation instead: slm distill --method sequence (it works across tokenizers)."
        )
    size = len(teacher_tokenizer)
    for model in (teacher_model, student_model):
        if model.config.vocab_size < size:
            raise InvalidRequestError(f"A model has {model.config.vocab_size} output rows for {size} tokens.")
    return size  # rows past the tokenizer are padding, cropped away


# -- the stage -------------------------------------------------------------------------

def build_student(student: str, teacher_path: Path, tokenizer, name: str, prune_config=None):
    """(model, parent reference) for a student given as an artifact, a preset or pruned from the teacher."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from slmkit.engine.torch_backend import load_causal_lm
    from slmkit.pretrain import PRESETS
    from slmkit.references import resolve_hf

    if prune_config is not None:
        from slmkit.prune import prune

        pruned = prune(str(teacher_path), prune_config, name=f"{name}-pruned")
        return load_causal_lm(pruned.path), ParentRef(pruned.name, pruned.card.content_sha256 or "", str(pruned.path))
    if student in PRESETS:
        shape = dict(PRESETS[student])
        teacher_config = json.loads((teacher_path / "config.json").read_text())
        shape.update(vocab_size=len(tokenizer), max_position_embeddings=teacher_config["max_position_embeddings"],
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(**shape)), None
    resolved = resolve_hf(student)
    card = read_card(resolved.path)
    sha = card.content_sha256 if card and card.content_sha256 else content_hash(resolved.path)
    return load_causal_lm(resolved.path), ParentRef(resolved.name, sha, str(resolved.path))


def distill(teacher: str, student: str | None, data: Sequence[str | Path], config: DistillConfig | None = None,
            name: str | None = None, prune_config=None, checkpoint_dir: Path | None = None, resume: bool = False,
            progress: Callable[[dict], None] | None = None) -> DistillResult:
    """Distill ``teacher`` into ``student`` (artifact, preset or ``prune_config``) on ``data``."""
    from slmkit.data import data_sha256, expand_paths, load_examples, prepare
    from slmkit.engine.torch_backend import load_causal_lm, load_tokenizer
    from slmkit.finetune import training_metrics
    from slmkit.models import check_name, slm_home, store_path
    from slmkit.references import resolve_hf
    from slmkit.training import stage, train
    from slmkit.training.loop import causal_lm_loss

    config = config or DistillConfig()
    config.check()
    if student is None and prune_config is None:
        raise InvalidRequestError("Give a student: an artifact, a preset (tiny, mini, small) or --from-pruned.")
    teacher_ref = resolve_hf(teacher)
    name = check_name(name or f"{teacher_ref.name}-distilled")
    destination = store_path(name)
    stage.check_destination(destination)
    files = expand_paths(data)
    examples = load_examples(files)
    tokenizer = load_tokenizer(teacher_ref.path)
    if config.method == "sequence":
        return _sequence_level(teacher, student, examples, config, name, progress)
    teacher_model = load_causal_lm(teacher_ref.path)
    student_model, student_parent = build_student(student or "", teacher_ref.path, tokenizer, name, prune_config)
    vocab_size = shared_vocab_size(tokenizer, tokenizer if student_parent is None else
                                   load_tokenizer(Path(student_parent.path)), teacher_model, student_model)
    prepared = prepare(tokenizer, examples, config.seq_len, config.validation_fraction, config.seed, config.packing)
    teacher_card = read_card(teacher_ref.path)
    teacher_sha = teacher_card.content_sha256 if teacher_card and teacher_card.content_sha256 \
        else content_hash(teacher_ref.path)
    data_hash = data_sha256(files)
    cache_key = hashlib.sha256(json.dumps([TeacherCache.FORMAT, teacher_sha, data_hash, config.seq_len, config.packing,
                                           config.seed, config.validation_fraction, config.top_k,
                                           config.temperature]).encode()).hexdigest()[:32]
    cache_path = slm_home() / "cache" / "teacher" / f"{cache_key}.safetensors"
    reused = cache_path.exists()
    if stage.is_main_process() and not reused:
        # Validation is scored with plain next-token loss, so only training positions need the teacher.
        build_teacher_cache(teacher_model, prepared.train, config.top_k, vocab_size, config.temperature,
                            progress=(lambda done, total: progress(
            {"phase": "teacher logits", "step": done, "total_steps": total})) if progress else None).save(cache_path)
    stage.wait_for_everyone()
    cache = TeacherCache.load(cache_path)
    del teacher_model
    run_dir = stage.run_directory(name, checkpoint_dir, resume)
    fingerprint = stage.fingerprint(config, teacher=teacher_sha, data=data_hash, teacher_cache=cache_key,
                                    student=student_parent.content_sha256 if student_parent else student)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    student_model.train()
    result = train(student_model, prepared.train, distillation_loss(cache, config, vocab_size), config, run_dir,
                   validation_set=prepared.validation, pad_id=pad_id, resume=resume, fingerprint=fingerprint,
                   validation_loss_fn=causal_lm_loss, progress=progress)
    parents = [ParentRef(teacher_ref.name, teacher_sha, str(teacher_ref.path))]
    if student_parent:
        parents.append(student_parent)
    card = Card(name=name, stage="distill", architecture=type(student_model).__name__,
                parameters=stage.parameter_count(student_model), dtype="float32", parents=parents,
                args={**dataclasses.asdict(config), "student": student, "data": [str(f) for f in files],
                      "data_sha256": data_hash, "teacher_cache": str(cache_path),
                      "pruned_with": dataclasses.asdict(prune_config) if prune_config else None},
                metrics=training_metrics(result))
    stage.write_artifact(destination, student_model.eval(), tokenizer, card)
    stage.remove_run_directory(run_dir)
    return DistillResult(name, destination, card, result, cache_path, reused)


def generate_dataset(teacher: str, prompts: Sequence, out: Path, max_new_tokens: int = 256,
                     progress: Callable[[int, int], None] | None = None) -> Path:
    """Sequence-level distillation data: the teacher's greedy answers to ``prompts`` (chat
    examples or prompt/completion examples), written as chat JSONL to ``out``."""
    from concurrent.futures import ThreadPoolExecutor

    from slmkit.engine import GenerationRequest, load_engine
    from slmkit.generate import collect

    engine = load_engine(teacher)
    conversations = []
    for example in prompts:
        if example.messages is not None:
            turns = [m for m in example.messages if m["role"] != "assistant"]
            conversations.append(turns[: max(i for i, m in enumerate(turns) if m["role"] == "user") + 1])
        elif example.prompt is not None:
            conversations.append([{"role": "user", "content": example.prompt}])
    if not conversations:
        raise InvalidRequestError("Sequence-level distillation needs prompts: chat or prompt/completion JSONL.")

    def answer(messages):
        return collect(engine.stream(GenerationRequest(messages=messages, max_new_tokens=max_new_tokens))).text

    lines = []
    with ThreadPoolExecutor(8) as pool:  # the engine batches concurrent requests
        for number, (messages, text) in enumerate(zip(conversations, pool.map(answer, conversations), strict=True)):
            lines.append(json.dumps({"messages": [*messages, {"role": "assistant", "content": text}]},
                                    ensure_ascii=False))
            if progress:
                progress(number + 1, len(conversations))
    engine.close()
    write_text_atomic(out, "\n".join(lines) + "\n")
    return out


def _sequence_level(teacher, student, examples, config: DistillConfig, name: str, progress) -> DistillResult:
    from slmkit.finetune import FinetuneConfig, finetune
    from slmkit.models import slm_home

    if student is None:
        raise InvalidRequestError("Sequence-level distillation needs a student artifact to fine-tune.")
    dataset = slm_home() / "datasets" / f"{name}-teacher-answers.jsonl"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    generate_dataset(teacher, examples, dataset, config.max_new_tokens)
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "learning_rate"}
    tuned = finetune(student, [dataset], FinetuneConfig(**shared, method="full", seq_len=config.seq_len,
                                                        validation_fraction=config.validation_fraction,
                                                        learning_rate=config.learning_rate), name=name,
                     progress=progress)
    card = tuned.card
    card.stage = "distill"
    card.args.update(method="sequence", teacher=teacher, teacher_answers=str(dataset))
    from slmkit.artifact import finalize_card

    finalize_card(tuned.path, card)
    return DistillResult(tuned.name, tuned.path, card, tuned.training)
