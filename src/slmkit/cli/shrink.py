"""`slm prune` and `slm distill`: make models smaller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slmkit.cli.common import JsonFlag, ModelArg, err, out


def register(app: typer.Typer) -> None:
    app.command()(prune)
    app.command()(distill)


def prune(
    model: ModelArg,
    name: Annotated[str | None, typer.Option("--name", help="Store name of the pruned model (default: MODEL-pruned).")] = None,  # noqa: E501
    layers: Annotated[int, typer.Option(help="Remove this many layers, the ones that change their input least.")] = 0,
    kv_groups: Annotated[int, typer.Option(help="Remove this many key/value head groups per layer (with their query heads).")] = 0,  # noqa: E501
    mlp_ratio: Annotated[float, typer.Option(help="Keep this fraction of MLP channels, by activation.")] = 1.0,
    hidden_size: Annotated[int, typer.Option(help="Keep this many embedding channels (model width), by activation; "
                                              "0 keeps all.")] = 0,
    sparsity: Annotated[float, typer.Option(help="Zero this fraction of the blocks' weights (same shapes).")] = 0.0,
    method: Annotated[str, typer.Option(help="Weight scores for --sparsity: magnitude or wanda.")] = "wanda",
    pattern: Annotated[str, typer.Option(help="unstructured, or 2:4 (two zeros in every four weights).")] = "unstructured",
    calibration: Annotated[Path | None, typer.Option(help="Text file to score with (default: Python's docs).")] = None,
    calibration_tokens: Annotated[int, typer.Option(help="Calibration tokens to use.")] = 4096,
    evaluation: Annotated[Path | None, typer.Option(help="Held-out text for perplexity before/after (default: Python's docs).")] = None,  # noqa: E501
    json_output: JsonFlag = False,
) -> None:
    """Prune a model into a new, smaller artifact and report perplexity before and after.

    Example: [bold]slm prune smollm2-135m --layers 10 --mlp-ratio 0.5 --name smol-pruned[/bold]
    """
    from slmkit.cli.common import quiet_libraries
    from slmkit.prune import PruneConfig
    from slmkit.prune import prune as run_prune

    quiet_libraries()
    config = PruneConfig(layers=layers, kv_groups=kv_groups, mlp_ratio=mlp_ratio, hidden_size=hidden_size,
                         sparsity=sparsity, method=method, pattern=pattern, calibration_tokens=calibration_tokens)
    with err.status("Pruning") as status:
        result = run_prune(model, config, name=name,
                           calibration_text=calibration.read_text() if calibration else None,
                           evaluation_text=evaluation.read_text() if evaluation else None,
                           progress=lambda step: status.update(f"Pruning: {step}"))
    metrics = result.card.metrics
    if json_output:
        print(json.dumps({"name": result.name, "path": str(result.path), "metrics": metrics}))
        return
    out.print(f"Saved [bold]{result.name}[/bold] to {result.path}")
    out.print(f"parameters {metrics['parameters_before']:,} → {metrics['parameters_after']:,}; perplexity "
              f"{metrics['perplexity_before']:.2f} → {metrics['perplexity_after']:.2f}"
              + (f"; block weights {metrics['block_weight_sparsity']:.0%} zero (dense kernels: no speed or size gain)"
                 if metrics["block_weight_sparsity"] else ""))


def distill(
    data: Annotated[list[Path], typer.Argument(help="Training text or JSONL (chat, prompt/completion, text); for --method sequence, the prompts.")],  # noqa: E501
    teacher: Annotated[str, typer.Option(help="Teacher model reference.")] = "smollm2-135m",
    student: Annotated[str | None, typer.Option(help="Student: a model reference or a preset (tiny, mini, small).")] = None,  # noqa: E501
    from_pruned: Annotated[bool, typer.Option(help="Student = the teacher pruned with --layers/--kv-groups/--mlp-ratio.")] = False,  # noqa: E501
    layers: Annotated[int, typer.Option(help="With --from-pruned: layers to remove.")] = 0,
    kv_groups: Annotated[int, typer.Option(help="With --from-pruned: key/value groups to remove per layer.")] = 0,
    mlp_ratio: Annotated[float, typer.Option(help="With --from-pruned: fraction of MLP channels kept.")] = 1.0,
    hidden_size: Annotated[int, typer.Option(help="With --from-pruned: embedding channels kept (0 = all).")] = 0,
    method: Annotated[str, typer.Option(help="logits (same tokenizer) or sequence (teacher answers; any tokenizer).")] = "logits",  # noqa: E501
    divergence: Annotated[str, typer.Option(help="forward_kl, reverse_kl or jsd.")] = "forward_kl",
    temperature: Annotated[float, typer.Option(help="Softmax temperature of both distributions.")] = 1.0,
    alpha: Annotated[float, typer.Option(help="Share of the distillation loss; the rest is next-token loss.")] = 0.9,
    top_k: Annotated[int, typer.Option(help="Teacher logits cached per position.")] = 32,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per optimizer step.")] = 8,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 5e-4,
    seq_len: Annotated[int, typer.Option(help="Tokens per training example.")] = 256,
    name: Annotated[str | None, typer.Option("--name", help="Store name of the student.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint of this run.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 0,
    json_output: JsonFlag = False,
) -> None:
    """Distill a teacher into a smaller student (logit or sequence-level), on the one training loop.

    Example: [bold]slm distill notes.txt --teacher smollm2-135m --from-pruned --layers 10 --mlp-ratio 0.5 --name smol-small[/bold]
    """  # noqa: E501
    from slmkit.cli.common import quiet_libraries
    from slmkit.cli.train import report_training, run_training_with_progress
    from slmkit.distill import DistillConfig
    from slmkit.distill import distill as run_distill
    from slmkit.prune import PruneConfig

    quiet_libraries()
    config = DistillConfig(method=method, divergence=divergence, temperature=temperature, alpha=alpha, top_k=top_k,
                           epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                           micro_batch_size=min(batch_size, 4), learning_rate=learning_rate, seq_len=seq_len,
                           checkpoint_every=checkpoint_every)
    prune_config = PruneConfig(layers=layers, kv_groups=kv_groups, mlp_ratio=mlp_ratio,
                                hidden_size=hidden_size) if from_pruned else None
    result = run_training_with_progress(f"Distilling {teacher}", lambda progress: run_distill(
        teacher, student, data, config, name=name, prune_config=prune_config, resume=resume, progress=progress))
    report_training(result, result.training, json_output)
