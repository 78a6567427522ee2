"""`slm pretrain`, `slm finetune` and `slm eval`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from slmkit.cli.common import Backend, JsonFlag, ModelArg, err, out, quiet_libraries

DataArg = Annotated[list[Path], typer.Argument(help="Data: .jsonl (chat, prompt/completion or text records), .txt/.md files, or directories of them.")]  # noqa: E501
Name = Annotated[str | None, typer.Option("--name", help="Store name of the new model.")]
Epochs = Annotated[float, typer.Option(help="Passes over the training split.")]
MaxSteps = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps (overrides --epochs).")]
BatchSize = Annotated[int, typer.Option(help="Examples per optimizer step, across all processes.")]
MicroBatch = Annotated[int, typer.Option(help="Examples per forward pass per process (the rest is accumulated).")]
SeqLen = Annotated[int, typer.Option(help="Tokens per example; longer ones are cut.")]
Seed = Annotated[int, typer.Option(help="Seed for initialization and data order.")]
CheckpointEvery = Annotated[int, typer.Option(help="Save a checkpoint every N steps (0 = only at the end).")]
CheckpointDir = Annotated[Path | None, typer.Option(help="Checkpoint directory (default $SLM_HOME/runs/NAME).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the newest complete checkpoint.")]
KeepCheckpoints = Annotated[bool, typer.Option("--keep-checkpoints", help="Keep the checkpoints after success.")]
EvalEvery = Annotated[int, typer.Option(help="Validation loss every N steps (0 = only at the end).")]
Patience = Annotated[int, typer.Option(help="Stop after N validations without improvement (0 = never).")]
ValidationFraction = Annotated[float, typer.Option(help="Share of the examples held out for validation loss.")]
Packing = Annotated[bool, typer.Option("--packing/--no-packing", help="Concatenate examples into full blocks.")]
WarmupSteps = Annotated[int, typer.Option(help="Steps of linear learning-rate warmup.")]


def register(app: typer.Typer) -> None:
    app.command()(finetune)
    app.command()(pretrain)
    app.command(name="eval")(evaluate)


def _progress_callback(progress, task):
    def update(event: dict) -> None:
        if "phase" in event:  # a preparation pass before training, e.g. the teacher's logits
            progress.update(task, completed=event["step"], total=event["total_steps"], loss=event["phase"], speed="")
            return
        validation = event["validation_loss"]
        progress.update(task, completed=event["step"], total=event["total_steps"],
                        loss=f"loss {event['loss']:.4f}" + (f" val {validation:.4f}" if validation is not None else ""),
                        speed=f"{event['tokens_per_s']:.0f} tok/s")
    return update


def run_training_with_progress(description: str, run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
               TextColumn("{task.fields[speed]}"), TextColumn("ETA"), TimeRemainingColumn())
    # Under torchrun / accelerate launch only the first process draws the bar.
    with Progress(*columns, console=err, transient=False, disable=os.environ.get("RANK", "0") != "0") as progress:
        task = progress.add_task(description, total=None, loss="", speed="")
        return run(_progress_callback(progress, task))


def report_training(result, training, json_output: bool) -> None:
    from slmkit.training.stage import is_main_process

    if not is_main_process():
        return
    if json_output:
        print(json.dumps({"name": result.name, "path": str(result.path), "metrics": result.card.metrics,
                          "losses": training.losses, "validation": training.validation}))
        return
    metrics = result.card.metrics
    validation = metrics["validation_loss"]
    out.print(f"Saved [bold]{result.name}[/bold] to {result.path}: {metrics['steps']} steps, train loss "
              f"{metrics['train_loss']:.4f}" + (f", validation loss {validation:.4f}" if validation is not None else "")
              + f", {metrics['train_tokens_per_s']:.0f} tokens/s.")


def finetune(
    model: ModelArg,
    data: DataArg,
    method: Annotated[str, typer.Option(help="full: train every weight; lora: low-rank adapters (merged).")] = "lora",
    name: Name = None,
    learning_rate: Annotated[float, typer.Option(help="0 = the method's default (full 2e-5, lora 2e-4).")] = 0.0,
    epochs: Epochs = 1.0,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = 8,
    micro_batch_size: MicroBatch = 4,
    seq_len: SeqLen = 512,
    warmup_steps: WarmupSteps = 0,
    validation_fraction: ValidationFraction = 0.1,
    packing: Packing = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(help="LoRA scaling numerator (scale = alpha / r).")] = 32,
    keep_adapter: Annotated[bool, typer.Option("--keep-adapter", help="Also save the LoRA adapter in adapter/.")] = False,  # noqa: E501
    eval_every: EvalEvery = 0,
    early_stopping_patience: Patience = 0,
    checkpoint_every: CheckpointEvery = 50,
    checkpoint_dir: CheckpointDir = None,
    resume: Resume = False,
    keep_checkpoints: KeepCheckpoints = False,
    seed: Seed = 0,
    json_output: JsonFlag = False,
) -> None:
    """Fine-tune a model on chat, prompt/completion or text data; writes a new model to the store.

    Runs data-parallel unchanged under [bold]torchrun[/bold] or [bold]accelerate launch[/bold].

    Example: [bold]slm finetune smollm2-135m train.jsonl --method lora --name my-model[/bold]
    """
    quiet_libraries()
    from slmkit.finetune import FinetuneConfig
    from slmkit.finetune import finetune as run_finetune

    config = FinetuneConfig(method=method, learning_rate=learning_rate, epochs=epochs, max_steps=max_steps,
                            batch_size=batch_size, micro_batch_size=micro_batch_size, seq_len=seq_len,
                            warmup_steps=warmup_steps, validation_fraction=validation_fraction, packing=packing,
                            lora_r=lora_r, lora_alpha=lora_alpha, keep_adapter=keep_adapter, eval_every=eval_every,
                            early_stopping_patience=early_stopping_patience, checkpoint_every=checkpoint_every,
                            seed=seed)
    result = run_training_with_progress(f"Fine-tuning {model} ({method})", lambda progress: run_finetune(
        model, data, config, name=name, checkpoint_dir=checkpoint_dir, resume=resume,
        keep_checkpoints=keep_checkpoints, progress=progress))
    report_training(result, result.training, json_output)


def pretrain(
    data: DataArg,
    preset: Annotated[str, typer.Option(help="Model size: tiny (~1M), mini (~7M), small (~33M), or a JSON file of LlamaConfig keys.")] = "tiny",  # noqa: E501
    name: Annotated[str, typer.Option("--name", help="Store name of the new model.")] = "pretrained",
    tokenizer: Annotated[str | None, typer.Option(help="Reuse this model's tokenizer instead of training one.")] = None,
    vocab_size: Annotated[int, typer.Option(help="Tokenizer vocabulary to train (0 = the preset's).")] = 0,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    epochs: Epochs = 1.0,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = 16,
    micro_batch_size: MicroBatch = 8,
    seq_len: SeqLen = 256,
    warmup_steps: WarmupSteps = 20,
    validation_fraction: ValidationFraction = 0.05,
    eval_every: EvalEvery = 0,
    checkpoint_every: CheckpointEvery = 100,
    checkpoint_dir: CheckpointDir = None,
    resume: Resume = False,
    keep_checkpoints: KeepCheckpoints = False,
    seed: Seed = 0,
    json_output: JsonFlag = False,
) -> None:
    """Train a small Llama-architecture model from scratch, with a BPE tokenizer trained on the data.

    Example: [bold]slm pretrain notes/ --preset mini --epochs 3 --name notes-lm[/bold]
    """
    quiet_libraries()
    from slmkit.pretrain import PretrainConfig
    from slmkit.pretrain import pretrain as run_pretrain

    config = PretrainConfig(preset=preset, tokenizer=tokenizer, vocab_size=vocab_size, learning_rate=learning_rate,
                            epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                            micro_batch_size=micro_batch_size, seq_len=seq_len, warmup_steps=warmup_steps,
                            validation_fraction=validation_fraction, eval_every=eval_every,
                            checkpoint_every=checkpoint_every, seed=seed)
    result = run_training_with_progress(f"Pretraining {name} ({preset})", lambda progress: run_pretrain(
        data, config, name=name, checkpoint_dir=checkpoint_dir, resume=resume,
        keep_checkpoints=keep_checkpoints, progress=progress))
    report_training(result, result.training, json_output)


def evaluate(
    model: ModelArg,
    data: Annotated[Path | None, typer.Option(help="Tasks: JSONL of {prompt or messages, expected}.")] = None,
    text: Annotated[Path | None, typer.Option(help="Measure perplexity on this text file.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens per answer.")] = 64,
    window: Annotated[int, typer.Option(help="Perplexity window in tokens.")] = 512,
    raw: Annotated[bool, typer.Option("--raw", help="Send prompts as plain text, without the chat template.")] = False,
    backend: Backend = "auto",
    json_output: JsonFlag = False,
) -> None:
    """Score a model on tasks (exact match, contains, JSON-field accuracy) and/or its perplexity on a text.

    Scores of a model in the store are written into its card.

    Example: [bold]slm eval my-model --data test.jsonl --text notes.txt[/bold]
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    quiet_libraries()
    from slmkit.evaluate import evaluate as run_evaluate

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task(f"Evaluating {model}", total=None)

        def update(what: str, done: int, total: int) -> None:
            progress.update(task, description=f"Evaluating {model}: {what}", completed=done, total=total)

        result = run_evaluate(model, data=data, text=text, backend=backend, max_new_tokens=max_tokens,
                              window=window, raw=raw, progress=update)
    if json_output:
        print(json.dumps(dataclasses.asdict(result)))
        return
    _print_table(result)


def _print_table(result) -> None:
    from rich.table import Table

    table = Table("metric", "value", title=f"{result.model} ({result.backend})")
    if result.tasks:
        table.add_row("examples", str(result.tasks.examples))
        for metric in ("exact_match", "contains", "json_field_accuracy"):
            value = getattr(result.tasks, metric)
            if value is not None:
                table.add_row(metric, f"{value:.3f}")
    if result.perplexity:
        table.add_row("perplexity", f"{result.perplexity.perplexity:.3f}")
        table.add_row("scored tokens", str(result.perplexity.scored_tokens))
    out.print(table)
    if result.card_updated:
        err.print("[dim]Scores written into the model's card.[/dim]")
