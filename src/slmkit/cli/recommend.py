"""`slm recommend train|for|eval`: next-item recommendations from local behaviour logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slmkit.cli.common import JsonFlag, err, out, quiet_libraries

app = typer.Typer(help="Recommendations from local behaviour logs: train a small sequential model over item ids, "
                       "recommend, evaluate.", no_args_is_help=True)
LogsArg = Annotated[list[Path], typer.Argument(help="Behaviour logs: CSV/TSV/JSONL of user, item, timestamp "
                                                    "(optional rating, event) or MovieLens u.data.")]
ModelName = Annotated[str, typer.Argument(help="The recommender: a store name or a directory.")]


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="recommend")


@app.command()
def train(
    logs: LogsArg,
    name: Annotated[str, typer.Option("--name", help="Store name of the recommender.")],
    items: Annotated[Path | None, typer.Option(help="Item metadata with titles (MovieLens u.item, CSV/TSV with item "
                                                    "and title columns, or JSONL).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the training sequences.")] = 50.0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps (overrides --epochs).")] = None,  # noqa: E501
    max_minutes: Annotated[float, typer.Option(help="Stop after this many minutes of training (0 = no limit).")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Sequences per optimizer step.")] = 64,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    max_length: Annotated[int, typer.Option(help="Most recent items the model reads per user.")] = 50,
    hidden_size: Annotated[int, typer.Option(help="Width of the model (item embedding size).")] = 64,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 2,
    dropout: Annotated[float, typer.Option(help="Dropout on item embeddings and attention while training.")] = 0.2,
    holdout: Annotated[bool, typer.Option("--holdout/--no-holdout", help="Keep each user's last two items out of "
                                                                          "training, for validation and test.")] = True,
    validate_every: Annotated[int, typer.Option(help="Validation HR@10 every N steps; the best weights are kept "
                                                     "(0 = only at the end).")] = 100,
    checkpoint_every: Annotated[int, typer.Option(help="Save a checkpoint every N steps (0 = only at the end).")] = 100,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Checkpoint directory (default $SLM_HOME/runs/NAME).")] = None,  # noqa: E501
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run; if NAME exists, update it "
                                                          "on the (longer) logs starting from its weights.")] = False,
    keep_checkpoints: Annotated[bool, typer.Option("--keep-checkpoints", help="Keep checkpoints after success.")] = False,  # noqa: E501
    seed: Annotated[int, typer.Option(help="Seed for initialization and data order.")] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads for PyTorch.")] = 2,
    json_output: JsonFlag = False,
) -> None:
    """Train a recommender on behaviour logs (or update one with --resume); writes it to the store.

    Example: [bold]slm recommend train ../shared/data/ml-100k/ml-100k.inter --items ../shared/data/ml-100k/ml-100k.item --name movies[/bold]
    """  # noqa: E501
    import os

    # Idle OpenMP threads sleep instead of spinning (read when torch loads, so set before): on a
    # shared machine a spinning thread burns the CPU its partner waits for (2.5 -> 0.32 s per
    # step measured under load; docs/recommend.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    quiet_libraries()
    import torch

    from slmkit.cli.train import run_training_with_progress
    from slmkit.recommend.train import RecommendConfig, train_recommender

    torch.set_num_threads(threads)
    config = RecommendConfig(epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                             micro_batch_size=batch_size, learning_rate=learning_rate, max_length=max_length,
                             hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=4 * hidden_size, dropout=dropout, attention_dropout=dropout,
                             holdout=holdout, validate_every=validate_every, checkpoint_every=checkpoint_every,
                             time_budget_s=60 * max_minutes, seed=seed)
    result = run_training_with_progress(f"Training recommender {name}", lambda progress: train_recommender(
        logs, name, config, items_file=items, checkpoint_dir=checkpoint_dir, resume=resume,
        keep_checkpoints=keep_checkpoints, progress=progress))
    if json_output:
        print(json.dumps({"name": result.name, "path": str(result.path), "best": result.best,
                          "curve": result.curve, "steps": result.training.steps}))
        return
    best = result.best
    out.print(f"Saved recommender [bold]{result.name}[/bold] to {result.path}: {result.card.args['items']} items, "
              f"{result.card.args['users']} users, {result.training.steps} steps"
              + (f"; best validation HR@10 {best['hr@10']:.4f}, NDCG@10 {best['ndcg@10']:.4f} at step {best['step']}"
                 if best else "") + ".")


@app.command(name="for")
def recommend_for(
    model: ModelName,
    user: Annotated[str | None, typer.Argument(help="A user id from the training logs.")] = None,
    history: Annotated[str | None, typer.Option(help="Comma-separated item ids, oldest first, for a user the "
                                                     "model never saw.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Also recommend items already in the history.")] = False,  # noqa: E501
    threads: Annotated[int, typer.Option(help="CPU threads (one request is too small to gain from more).")] = 1,
    json_output: JsonFlag = False,
) -> None:
    """Top-k items for a known USER or a --history, excluding items already seen.

    Example: [bold]slm recommend for movies 196 -k 10[/bold]; [bold]slm recommend for movies --history 50,172,181[/bold]
    """
    quiet_libraries()
    from slmkit.errors import InvalidRequestError
    from slmkit.recommend.predict import load_recommender, recommend

    if (user is None) == (history is None):
        raise InvalidRequestError("Give a USER or --history item1,item2,... (one of them).")
    items = [i.strip() for i in history.split(",") if i.strip()] if history is not None else None
    result = recommend(load_recommender(model, threads=threads), user=user, history=items, k=k, exclude_seen=not include_seen)
    if json_output:
        print(json.dumps({"user": result.user, "source": result.source, "items": result.items,
                          "unknown_items": result.unknown_items}))
        return
    if result.unknown_items:
        err.print(f"[yellow]note:[/yellow] not in the catalogue, ignored: {', '.join(result.unknown_items[:10])}")
    if result.source == "popularity":
        err.print("[dim]Empty history: the most popular items.[/dim]")
    from rich.table import Table

    table = Table("#", "item", "title", "score", title=f"{model}: for {user or 'the given history'}")
    for rank, entry in enumerate(result.items, 1):
        table.add_row(str(rank), entry["item"], entry["title"] or "", f"{entry['score']:.3f}")
    out.print(table)


@app.command(name="eval")
def evaluate(
    model: ModelName,
    k: Annotated[int, typer.Option("-k", help="Cut-off of HR@k and NDCG@k.")] = 10,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Also score MostPop, ItemKNN and "
                                                                                "Markov-1 in the same run.")] = True,
    json_output: JsonFlag = False,
) -> None:
    """Leave-one-out full-ranking HR@k/NDCG@k on the training logs' held-out items, with baselines.

    Example: [bold]slm recommend eval movies[/bold]
    """
    quiet_libraries()
    from slmkit.recommend.evaluate import evaluate_recommender

    report = evaluate_recommender(model, k=k, baselines=baselines)
    if json_output:
        print(json.dumps(report))
        return
    from rich.table import Table

    table = Table("model", f"val HR@{k}", f"val NDCG@{k}", f"test HR@{k}", f"test NDCG@{k}",
                  title=f"{model}: {report['users']} users, {report['items']} items ({report['protocol']})")
    rows = {model: report["model"], **report.get("baselines", {})}
    for name, scores in rows.items():
        table.add_row(name, *(f"{scores[part][metric]:.4f}" for part in ("validation", "test")
                              for metric in (f"hr@{k}", f"ndcg@{k}")))
    out.print(table)
