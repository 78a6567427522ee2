"""``slm recommend train``: a recommender from behaviour logs, trained with the one loop.

Each user's items (in time order) become a sequence; the last two items of every user are
held out (validation, test) unless ``holdout`` is off. A small Llama over the catalogue learns
next-item prediction with full-catalogue cross-entropy through :func:`slmkit.training.train`,
so checkpoints, exact resume and DDP come with it. Every ``validate_every`` steps the
validation HR@10/NDCG@10 is measured (full ranking, seen items masked); the weights with the
best validation NDCG@10 are the ones kept. The artifact is an HF directory plus
``catalogue.json`` (items, titles, popularity), ``histories.json`` (each user's items, for
``slm recommend for USER``) and the card.

With ``resume`` and an existing artifact of that name, the run is an **update**: the stored
model is the starting point, new items join the catalogue (old ids keep their rows) and it
trains on the whole, longer log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from slmkit.artifact import Card, ParentRef, finalize_card, read_card, staged_directory, write_text_atomic
from slmkit.errors import InvalidRequestError
from slmkit.loading import MODEL_BUILD_LOCK
from slmkit.recommend.evaluate import Split, evaluate_scorer, leave_one_out
from slmkit.recommend.model import (
    CATALOGUE_FILE,
    FIRST_ITEM,
    HISTORIES_FILE,
    START_ID,
    Catalogue,
    natural_key,
)
from slmkit.training.loop import TrainConfig, TrainResult

SELECTION_FILE = "selection.json"
BEST_WEIGHTS = "best.safetensors"


@dataclasses.dataclass
class RecommendConfig(TrainConfig):
    """Recommender settings; the optimization fields come from TrainConfig."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 256
    max_length: int = 50  # the most recent items the model reads per user
    dropout: float = 0.2  # on the item embeddings while training
    attention_dropout: float = 0.2
    logits_chunk_rows: int = 0  # positions per logits chunk; 0 = automatic (model.LOGITS_BUDGET floats)
    holdout: bool = True  # keep each user's last two items out of training (validation and test targets)
    validate_every: int = 0  # steps between validation HR@10/NDCG@10; 0 = only at the end
    select_best: bool = True  # keep the weights with the best validation NDCG@10, not the last ones
    time_budget_s: float = 0.0  # stop once training (validation excluded) has run this long; 0 = no limit
    cpu_budget_s: float = 0.0  # stop once training has used this many CPU-seconds (all threads); 0 = no limit
    window_stride: int = 0  # items between the ends of consecutive training windows; 0 = max_length (no overlap)
    learning_rate: float = 1e-3
    batch_size: int = 64
    micro_batch_size: int = 64
    epochs: float = 50.0
    lr_schedule: str = "constant"
    max_grad_norm: float = 5.0

    def shape(self) -> dict:
        return {"hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size, "attention_dropout": self.attention_dropout}

    def validate(self) -> None:
        super().validate()
        if self.max_length < 1 or not 0 <= self.dropout < 1 or not 0 <= self.attention_dropout < 1:
            raise InvalidRequestError("max_length must be >= 1 and dropouts in [0, 1).")
        if self.window_stride < 0 or self.time_budget_s < 0 or self.cpu_budget_s < 0:
            raise InvalidRequestError("window_stride and the time budgets must be >= 0 (0 = default / no limit).")
        if (self.time_budget_s or self.cpu_budget_s) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # The loop calls progress on the main process only; a stop there would strand the others.
            raise InvalidRequestError("A time budget (--max-minutes) works in one process only; under torchrun "
                                      "use --epochs or --max-steps.")
        if self.hidden_size % self.num_attention_heads:
            raise InvalidRequestError(f"hidden_size {self.hidden_size} must be a multiple of num_attention_heads "
                                      f"{self.num_attention_heads}.")


@dataclasses.dataclass
class RecommendResult:
    name: str
    path: Path
    card: Card
    training: TrainResult
    curve: list[dict]  # validation points: step, train_seconds, hr@10, ndcg@10
    best: dict | None


def training_examples(sequences: Sequence[Sequence[int]], max_length: int, stride: int = 0):
    """Each sequence (item numbers) cut from its end into windows of ``max_length`` items, as
    TokenizedExamples that start with the start token. Consecutive windows end ``stride`` items
    apart (0 = ``max_length``: windows do not overlap); with a shorter stride the windows
    overlap, so more positions are trained with a long context. The first window of a sequence
    is never shorter than needed: it starts at the sequence's first item."""
    from slmkit.data import IGNORE_INDEX, TokenizedExample

    stride = stride or max_length
    examples = []
    for sequence in sequences:
        tokens = [item + FIRST_ITEM for item in sequence]
        for end in range(len(tokens), 0, -stride):
            window = tokens[max(0, end - max_length):end]
            examples.append(TokenizedExample([START_ID, *window], [IGNORE_INDEX, *window]))
            if end <= max_length:
                break  # this window already starts at the first item; a shorter one would repeat it
    return examples


def train_recommender(logs: Sequence[str | Path], name: str, config: RecommendConfig | None = None,
                      items_file: str | Path | None = None, checkpoint_dir: Path | None = None,
                      resume: bool = False, keep_checkpoints: bool = False,
                      progress: Callable[[dict], None] | None = None) -> RecommendResult:
    """Train (or, with ``resume`` on an existing ``name``, update) the recommender ``name``."""
    import torch

    from slmkit.data import data_sha256
    from slmkit.finetune import training_metrics
    from slmkit.models import check_name, store_path
    from slmkit.recommend.data import read_logs, read_titles, user_sequences
    from slmkit.recommend.model import build_model, chunk_rows, make_loss
    from slmkit.training import stage, train

    config = config or RecommendConfig()
    config.validate()
    files = [Path(p).expanduser() for p in logs]
    sequences = user_sequences(read_logs(files))
    titles = read_titles(items_file) if items_file else {}
    destination = store_path(check_name(name))
    updating = destination.exists() and resume
    if not updating:
        stage.check_destination(destination)
    all_items = {item for sequence in sequences.values() for item in sequence}
    if updating:
        from transformers import AutoModelForCausalLM

        parent = read_card(destination)
        catalogue = Catalogue.read(destination).extended(all_items)
        with MODEL_BUILD_LOCK:
            network = AutoModelForCausalLM.from_pretrained(str(destination), dtype=torch.float32, use_safetensors=True)
        if network.get_input_embeddings().weight.shape[0] < len(catalogue) + FIRST_ITEM:
            network.resize_token_embeddings(len(catalogue) + FIRST_ITEM, mean_resizing=False)
        parent_hash = parent.content_sha256 if parent else ""
    else:
        catalogue = Catalogue(sorted(all_items, key=natural_key))
        network = build_model(len(catalogue), config.shape(), config.max_length, config.seed)
        parent, parent_hash = None, ""
    catalogue.titles.update(titles)
    numbered = [[catalogue.index[item] for item in sequence] for sequence in sequences.values()]
    split = leave_one_out(numbered) if config.holdout else Split([list(s) for s in numbered], [], [])
    catalogue.popularity = _counts(split.train, len(catalogue))
    examples = training_examples(split.train, config.max_length, config.window_stride)
    run_dir = stage.run_directory(name + (".update" if updating else ""), checkpoint_dir, resume)
    fingerprint = stage.fingerprint(config, data=data_sha256(files), items=len(catalogue), parent=parent_hash)
    selector = _Selector(network, split, config, run_dir, progress)
    loss_fn = make_loss(config.dropout, chunk_rows(len(catalogue), config.logits_chunk_rows))
    budget_reached = False
    # Tiny values (denormal floats) appear in this small network's activations and gradients and
    # make CPU arithmetic on them many times slower (measured: 0.20 -> 0.08 s per step on
    # MovieLens); flushing them to zero changes nothing the model can tell apart.
    torch.set_flush_denormal(True)
    try:
        result = train(network, examples, loss_fn, config, run_dir, pad_id=0, resume=resume,
                       fingerprint=fingerprint, progress=selector)
    except TimeBudgetReached:
        budget_reached, result = True, selector.partial_result(selector.losses)
    finally:
        torch.set_flush_denormal(False)
    best = selector.restore_best() if config.select_best else None
    card = Card(name=name, stage="recommend", architecture="LlamaForCausalLM",
                parameters=stage.parameter_count(network), dtype="float32",
                parents=[ParentRef(name, parent_hash, None)] if parent_hash else [],
                args={**dataclasses.asdict(config), "task": "recommendation", "data": [str(f) for f in files],
                      "data_sha256": data_sha256(files), "items_file": str(items_file) if items_file else None,
                      "users": len(sequences), "items": len(catalogue), "train_sequences": len(examples),
                      "interactions": sum(len(s) for s in sequences.values()), "update": updating},
                metrics={**training_metrics(result), "validation_curve": selector.curve, "best": best,
                         "train_cpu_seconds": round(result.cpu_seconds, 2),
                         "time_budget_reached": budget_reached})
    path = _write(destination, network, catalogue, sequences, card, replace=updating)
    if not keep_checkpoints:
        stage.remove_run_directory(run_dir)
    return RecommendResult(name, path, card, result, selector.curve, best)


def _counts(sequences: Sequence[Sequence[int]], items: int) -> list[int]:
    counts = [0] * items
    for sequence in sequences:
        for item in sequence:
            counts[item] += 1
    return counts


class TimeBudgetReached(Exception):
    """Raised by the progress callback to end a run whose time budget is spent."""


class _Selector:
    """The loop's progress callback: measures validation HR@10/NDCG@10 every
    ``validate_every`` steps and keeps the best weights in the run directory (so a resumed run
    keeps them too). Training seconds exclude the time spent validating."""

    def __init__(self, model, split: Split, config: RecommendConfig, run_dir: Path, forward):
        self.model, self.split, self.config, self.run_dir, self.forward = model, split, config, run_dir, forward
        self.curve: list[dict] = []
        self.losses: list[float] = []
        self.last_event: dict = {}
        self.best: dict | None = None
        self.started = self.cpu_started = None
        self.offset = self.cpu_offset = 0.0
        self.validating = self.cpu_validating = 0.0

    def __call__(self, event: dict) -> None:
        if self.started is None:
            self._load(event["step"])
            self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.losses.append(event["loss"])
        step, total = event["step"], event["total_steps"]
        self.last_event = event
        seconds = self.offset + time.perf_counter() - self.started - self.validating
        cpu_seconds = self.cpu_offset + time.process_time() - self.cpu_started - self.cpu_validating
        over_budget = ((bool(self.config.time_budget_s) and seconds >= self.config.time_budget_s)
                       or (bool(self.config.cpu_budget_s) and cpu_seconds >= self.config.cpu_budget_s))
        due = self.split.validation and (step == total or over_budget or (self.config.validate_every
                                                                          and step % self.config.validate_every == 0))
        if due:
            began, cpu_began = time.perf_counter(), time.process_time()
            metrics = self.validation_metrics()
            self.validating += time.perf_counter() - began
            self.cpu_validating += time.process_time() - cpu_began
            # Wall seconds depend on what else runs on the machine; CPU seconds (all threads) less so.
            point = {"step": step, "train_seconds": round(seconds, 2), "train_cpu_seconds": round(cpu_seconds, 2),
                     "hr@10": metrics["hr@10"], "ndcg@10": metrics["ndcg@10"], "loss": event["loss"]}
            self.curve.append(point)
            if self.best is None or point["ndcg@10"] > self.best["ndcg@10"]:
                self.best = point
                self._save_best()
            self._save_selection()
            event = {**event, "validation_hr": point["hr@10"], "validation_ndcg": point["ndcg@10"]}
        if self.forward:
            self.forward(event)
        if over_budget and step < total:
            raise TimeBudgetReached

    def partial_result(self, losses: list[float]) -> TrainResult:
        """What the loop would have returned, for a run ended by the time budget."""
        event = self.last_event
        seconds = self.offset + time.perf_counter() - self.started - self.validating
        cpu = self.cpu_offset + time.process_time() - self.cpu_started - self.cpu_validating
        return TrainResult(event["step"], losses, [], int(event["tokens_per_s"] * seconds), seconds,
                           event["tokens_per_s"], cpu, None, True)

    def validation_metrics(self) -> dict:
        from slmkit.recommend.model import score_histories

        was_training = self.model.training
        try:
            return evaluate_scorer(lambda histories: score_histories(self.model, [[i + FIRST_ITEM for i in h]
                                                                                   for h in histories],
                                                                      self.config.max_length),
                                   self.split.validation)
        finally:
            self.model.train(was_training)

    def _load(self, first_step: int) -> None:
        """On resume, keep what was measured before the checkpoint the run resumed from."""
        path = self.run_dir / SELECTION_FILE
        if not path.is_file():
            return
        saved = json.loads(path.read_text())
        self.curve = [p for p in saved["curve"] if p["step"] < first_step]
        self.offset = self.curve[-1]["train_seconds"] if self.curve else 0.0
        self.cpu_offset = self.curve[-1].get("train_cpu_seconds", 0.0) if self.curve else 0.0
        best = saved.get("best")
        self.best = best if best and best["step"] < first_step and (self.run_dir / BEST_WEIGHTS).is_file() else None

    def _save_best(self) -> None:
        from safetensors.torch import save_file

        self.run_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.run_dir / f".{BEST_WEIGHTS}.tmp"
        save_file({k: v.detach().clone().contiguous() for k, v in self.model.state_dict().items()
                   if k != "lm_head.weight"}, str(temporary))
        os.replace(temporary, self.run_dir / BEST_WEIGHTS)

    def _save_selection(self) -> None:
        write_text_atomic(self.run_dir / SELECTION_FILE, json.dumps({"curve": self.curve, "best": self.best}))

    def restore_best(self) -> dict | None:
        """Load the best validation weights into the model; returns their validation point."""
        from safetensors.torch import load_file

        path = self.run_dir / BEST_WEIGHTS
        if self.best is None or not path.is_file():
            return self.best
        self.model.load_state_dict(load_file(str(path)), strict=False)
        self.model.tie_weights()
        return self.best


def _write(destination: Path, network, catalogue: Catalogue, sequences: dict, card: Card, replace: bool) -> Path:
    """Write the artifact atomically; an update is staged beside the old one and swapped in."""
    from slmkit.training.stage import is_main_process, wait_for_everyone

    if is_main_process():
        target = destination.parent / f".{destination.name}.next" if replace else destination
        if target.exists():
            shutil.rmtree(target)  # a staging copy left by an update that was killed
        with staged_directory(target) as staging:
            network.save_pretrained(staging)
            write_text_atomic(staging / CATALOGUE_FILE, catalogue.to_json())
            write_text_atomic(staging / HISTORIES_FILE, json.dumps(sequences))
            finalize_card(staging, card)
        if replace:
            retired = destination.parent / f".{destination.name}.old"
            shutil.rmtree(retired, ignore_errors=True)
            os.rename(destination, retired)
            os.rename(target, destination)
            shutil.rmtree(retired, ignore_errors=True)
    wait_for_everyone()
    return destination
