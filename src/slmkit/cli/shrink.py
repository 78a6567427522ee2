"""`slm prune` (and, later, `slm distill`): make models smaller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slmkit.cli.common import JsonFlag, ModelArg, err, out


def register(app: typer.Typer) -> None:
    app.command()(prune)


def prune(
    model: ModelArg,
    name: Annotated[str | None, typer.Option("--name", help="Store name of the pruned model (default: MODEL-pruned).")] = None,  # noqa: E501
    layers: Annotated[int, typer.Option(help="Remove this many layers, the ones that change their input least.")] = 0,
    kv_groups: Annotated[int, typer.Option(help="Remove this many key/value head groups per layer (with their query heads).")] = 0,  # noqa: E501
    mlp_ratio: Annotated[float, typer.Option(help="Keep this fraction of MLP channels, by activation.")] = 1.0,
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
    config = PruneConfig(layers=layers, kv_groups=kv_groups, mlp_ratio=mlp_ratio, sparsity=sparsity, method=method,
                         pattern=pattern, calibration_tokens=calibration_tokens)
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
