"""The one training loop. Pretraining, full fine-tuning, LoRA and distillation differ only in
the model they pass, the data, and ``loss_fn(model, batch) -> loss``.

It runs on ``accelerate.Accelerator``, so the same command runs data-parallel (DDP) under
``accelerate launch`` or ``torchrun``: every process builds the same global batch, takes its
share (``batch[rank::world]``), and the loss is normalized by the *global* count of trained
tokens, so N processes compute the same update as one process with the same global batch.

Data order is a pure function of (seed, epoch), so the data position is just the step
number; with the model, optimizer, scheduler and RNG states in the checkpoint, a run killed
at any point and resumed repeats the uninterrupted run's per-step losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from slmkit.data import IGNORE_INDEX, TokenizedExample, collate
from slmkit.errors import InvalidRequestError, SlmError
from slmkit.training import checkpoint as ckpt

logger = logging.getLogger(__name__)
LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


class NonFiniteLossError(SlmError):
    code = "non_finite_loss"


@dataclasses.dataclass
class TrainConfig:
    """Optimization settings shared by every training verb."""

    learning_rate: float = 2e-4
    batch_size: int = 8  # examples per optimizer step, across all processes
    micro_batch_size: int = 4  # examples per forward pass on one process; the rest is accumulated
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    warmup_steps: int = 0
    lr_schedule: str = "cosine"  # cosine | linear | constant (transformers' schedulers)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 turns clipping off
    seed: int = 0
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only the last step
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between validation losses; 0 = only at the end
    early_stopping_patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    max_bad_steps: int = 3  # non-finite steps in a row before the run stops; isolated ones are skipped

    def validate(self) -> None:
        checks = [
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.micro_batch_size >= 1, f"micro_batch_size must be >= 1, got {self.micro_batch_size}"),
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.lr_schedule in ("cosine", "linear", "constant"),
             f"lr_schedule must be cosine, linear or constant, got {self.lr_schedule!r}"),
            (self.checkpoint_every >= 0 and self.eval_every >= 0, "checkpoint_every and eval_every must be >= 0"),
            (self.max_bad_steps >= 1, f"max_bad_steps must be >= 1, got {self.max_bad_steps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message + ".")


@dataclasses.dataclass
class TrainResult:
    steps: int
    losses: list[float]  # training loss of every applied step (mean over the step's trained tokens)
    validation: list[tuple[int, float]]  # (step, validation loss)
    tokens: int  # input tokens seen (every process together)
    seconds: float  # wall time of this process's share (excludes steps done before a resume)
    tokens_per_s: float
    cpu_seconds: float  # CPU time of this process (all its threads) over the same steps
    resumed_from: int | None  # the step a resumed run started at
    stopped_early: bool
    skipped_steps: list[int] = dataclasses.field(default_factory=list)  # non-finite steps, not applied
    loss_spikes: list[int] = dataclasses.field(default_factory=list)  # steps whose loss jumped x100

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else float("nan")

    @property
    def final_validation_loss(self) -> float | None:
        return self.validation[-1][1] if self.validation else None


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Next-token cross-entropy summed over trained tokens, divided by ``batch["normalizer"]``
    (the global count of trained tokens in the optimizer step)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
    return loss / batch["normalizer"]


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    order = list(range(count))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def train(model: torch.nn.Module, train_set: Sequence[TokenizedExample], loss_fn: LossFn, config: TrainConfig,
          checkpoint_dir: Path | None = None, *, validation_set: Sequence[TokenizedExample] = (),
          pad_id: int = 0, resume: bool = False, fingerprint: str = "",
          validation_loss_fn: LossFn | None = None,
          progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train the parameters of ``model`` that require grad; returns the loss history.

    ``fingerprint`` identifies the run's settings and data; resuming from a checkpoint made
    with another fingerprint is refused. ``progress`` gets one event dict per step (main
    process only). ``validation_loss_fn`` (default ``loss_fn``) scores the validation set, e.g.
    plain next-token loss for a distillation run, so that runs of different verbs compare.
    A step whose loss or gradient is not finite is skipped (no update) and counted in
    ``skipped_steps``; ``config.max_bad_steps`` of them in a row raise NonFiniteLossError. A loss
    over 100x the recent median is logged and listed in ``loss_spikes``.
    """
    from accelerate import Accelerator
    from transformers import get_scheduler

    config.validate()
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise InvalidRequestError(f"The training split has {len(train_set)} examples, fewer than one batch "
                                  f"({config.batch_size}). Add data or lower --batch-size.")
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    # cpu=True is what makes accelerate use gloo DDP when torchrun starts CPU-only processes.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if config.batch_size < accelerator.num_processes:
        raise InvalidRequestError(f"batch_size {config.batch_size} is smaller than the {accelerator.num_processes} "
                                  "processes; each process needs at least one example per step.")
    torch.manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_schedule if config.lr_schedule != "constant" else "constant_with_warmup",
                              optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    run = _RunState()
    if resume and checkpoint_dir and (latest := ckpt.latest_checkpoint(checkpoint_dir)):
        run = _restore(latest, unwrapped, optimizer, scheduler, fingerprint)
    started, cpu_started, start_step, seen_tokens = time.perf_counter(), time.process_time(), run.step, 0
    model.train()
    while run.step < total_steps:
        epoch, index = divmod(run.step, steps_per_epoch)
        order = epoch_order(len(train_set), config.seed, epoch)
        batch = [train_set[i] for i in order[index * config.batch_size:(index + 1) * config.batch_size]]
        loss, grad_norm = _train_step(accelerator, model, params, batch, loss_fn, config, pad_id)
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            if _is_spike(loss, run.losses):
                run.loss_spikes.append(run.step + 1)
                logger.warning("Loss spike at step %d: %.4g, over 100 times the recent median.", run.step + 1, loss)
            optimizer.step()
            run.losses.append(loss)
            run.bad_in_a_row = 0
        else:
            # Skip the update (weights and optimizer moments stay as they were) and count it;
            # only a run of them means the training itself has diverged.
            run.skipped_steps.append(run.step + 1)
            run.bad_in_a_row += 1
            logger.warning("Step %d skipped: loss %s, gradient norm %s.", run.step + 1, loss, grad_norm)
            if run.bad_in_a_row >= config.max_bad_steps:
                optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(_non_finite_message(run.step + 1, loss, grad_norm, checkpoint_dir, config,
                                                             run.bad_in_a_row))
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        run.step += 1
        step_tokens = sum(len(e.input_ids) for e in batch)
        run.tokens += step_tokens
        seen_tokens += step_tokens
        last = run.step == total_steps
        if validation_set and ((config.eval_every and run.step % config.eval_every == 0) or last):
            value = validation_loss(accelerator, unwrapped, validation_set, validation_loss_fn or loss_fn, config, pad_id)
            run.record_validation(run.step, value)
            last = last or (config.early_stopping_patience and run.bad_evals >= config.early_stopping_patience)
            run.stopped_early = bool(last and run.step < total_steps)
        if checkpoint_dir and ((config.checkpoint_every and run.step % config.checkpoint_every == 0) or last):
            _save(accelerator, checkpoint_dir, unwrapped, optimizer, scheduler, run, fingerprint, config)
        if progress and accelerator.is_main_process:
            elapsed = time.perf_counter() - started
            progress({"step": run.step, "total_steps": total_steps, "loss": loss, "skipped_steps": len(run.skipped_steps),
                      "learning_rate": scheduler.get_last_lr()[0], "tokens_per_s": seen_tokens / max(elapsed, 1e-9),
                      "validation_loss": run.validation[-1][1] if run.validation else None})
        if last:
            break
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - started
    return TrainResult(run.step, run.losses, run.validation, run.tokens, seconds, seen_tokens / max(seconds, 1e-9),
                       time.process_time() - cpu_started, start_step if start_step else None, run.stopped_early,
                       run.skipped_steps, run.loss_spikes)


@dataclasses.dataclass
class _RunState:
    step: int = 0
    losses: list[float] = dataclasses.field(default_factory=list)
    validation: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    tokens: int = 0
    best_validation: float = math.inf
    bad_evals: int = 0
    stopped_early: bool = False
    skipped_steps: list[int] = dataclasses.field(default_factory=list)
    loss_spikes: list[int] = dataclasses.field(default_factory=list)
    bad_in_a_row: int = 0

    def record_validation(self, step: int, value: float) -> None:
        self.validation.append((step, value))
        if value < self.best_validation:
            self.best_validation, self.bad_evals = value, 0
        else:
            self.bad_evals += 1


def _is_spike(loss: float, history: list[float], window: int = 20) -> bool:
    recent = sorted(history[-window:])
    return len(recent) >= 5 and loss > 100 * recent[len(recent) // 2]


def _shares(accelerator, examples: Sequence[TokenizedExample], micro_batch_size: int) -> list[list]:
    mine = list(examples[accelerator.process_index::accelerator.num_processes])
    return [mine[i:i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]


def _on_device(accelerator, tensors: dict, normalizer: float) -> dict:
    return {**{k: v.to(accelerator.device) for k, v in tensors.items()}, "normalizer": normalizer}


def _train_step(accelerator, model, params, batch, loss_fn, config, pad_id) -> tuple[float, float]:
    """Forward/backward this process's share of ``batch``; returns (global loss, grad norm)."""
    normalizer = float(sum(e.target_count for e in batch))
    micro_batches = _shares(accelerator, batch, config.micro_batch_size)
    total = torch.zeros(())
    for number, chunk in enumerate(micro_batches):
        tensors = _on_device(accelerator, collate(chunk, pad_id), normalizer)
        # Gradients are exchanged once per step, on the last micro-batch.
        sync = number == len(micro_batches) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            loss = loss_fn(model, tensors)
            # DDP averages gradients over processes; the loss is already a share of the global mean.
            accelerator.backward(loss * accelerator.num_processes)
        total += loss.detach().cpu()
    total = accelerator.reduce(total.to(accelerator.device), reduction="sum")
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(total), float(grad_norm)


def validation_loss(accelerator, model, examples, loss_fn, config, pad_id) -> float:
    """Mean loss per trained token over ``examples``, split across processes like training."""
    model.eval()
    weighted, targets = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(examples), config.batch_size):
            batch = examples[start:start + config.batch_size]
            normalizer = float(sum(e.target_count for e in batch))
            total = torch.zeros(())
            for chunk in _shares(accelerator, batch, config.micro_batch_size):
                total += loss_fn(model, _on_device(accelerator, collate(chunk, pad_id), normalizer)).cpu()
            weighted += float(accelerator.reduce(total.to(accelerator.device), reduction="sum")) * normalizer
            targets += normalizer
    model.train()
    return weighted / max(targets, 1.0)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _save(accelerator, directory, model, optimizer, scheduler, run, fingerprint, config) -> None:
    if accelerator.is_main_process:
        broken = [name for name, p in _trainable(model).items() if not torch.isfinite(p).all()]
        if broken:  # never write a checkpoint that could not be resumed from
            raise NonFiniteLossError(f"Not saving step {run.step}: non-finite weights in {', '.join(broken[:3])}. "
                                     "Resume from the last good checkpoint with a lower learning rate.")
        state = {"step": run.step, "fingerprint": fingerprint, "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": ckpt.rng_state(),
                 "run": {k: v for k, v in dataclasses.asdict(run).items()}}
        ckpt.save_checkpoint(directory, run.step, _trainable(model), state, keep=config.keep_checkpoints)
    accelerator.wait_for_everyone()


def _restore(path: Path, model, optimizer, scheduler, fingerprint: str) -> _RunState:
    weights, state = ckpt.load_checkpoint(path)
    if state["fingerprint"] != fingerprint:
        raise InvalidRequestError(
            f"The checkpoint {path} was made with other settings or data than this run. "
            "Resume with the same command, or delete the checkpoint directory to start over."
        )
    trainable = _trainable(model)
    if set(weights) != set(trainable):
        raise InvalidRequestError(f"The checkpoint {path} holds other parameters than this model trains.")
    with torch.no_grad():
        for name, tensor in weights.items():
            trainable[name].copy_(tensor)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"])
    run = _RunState(**state["run"])
    run.validation = [tuple(v) for v in run.validation]
    return run


def _non_finite_message(step, loss, grad_norm, checkpoint_dir, config, in_a_row) -> str:
    latest = ckpt.latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
    what = f"the loss became {loss}" if not math.isfinite(loss) else f"the gradient norm became {grad_norm}"
    what += f" ({in_a_row} non-finite steps in a row; isolated ones are skipped)"
    kept = (f"The last good checkpoint is {latest}; after fixing the cause, continue from it with --resume."
            if latest else "No checkpoint had been written yet.")
    return (f"Training stopped at step {step}: {what}. {kept} "
            f"Try a lower learning rate (now {config.learning_rate:g}) or check the data for broken examples.")
