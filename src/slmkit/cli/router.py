"""`slm router train|eval|route|list|rm`: send each prompt to the specialist that should answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slmkit.cli.common import JsonFlag, err, out, quiet_libraries

app = typer.Typer(help="Routers: a small classifier that sends each prompt to a specialist (a model, a LoRA "
                       "adapter, kb:NAME, docs:SCHEMA, recommend:NAME) or to the general model when unsure.",
                  no_args_is_help=True)
RoutesArg = Annotated[list[Path], typer.Argument(help='Routes files: JSONL lines {"prompt": ..., "route": ...}.')]
RouterArg = Annotated[str, typer.Argument(help="The router: a name in $SLM_HOME/routers or a directory.")]


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="router")


@app.command()
def train(
    routes: RoutesArg,
    name: Annotated[str, typer.Option("--name", help="Name of the router ($SLM_HOME/routers/NAME).")],
    fallback: Annotated[str, typer.Option(help="Route that answers when the router is unsure.")] = "general",
    threshold: Annotated[float | None, typer.Option(help="Confidence below which the fallback answers (default: "
                                                         "chosen on a validation split of the routes).")] = None,
    embedding_model: Annotated[str, typer.Option(help="Sentence-embedding model.")] = "minilm-l6",
    max_tokens: Annotated[int, typer.Option(help="Prompts are cut to this many tokens before embedding.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    json_output: JsonFlag = False,
) -> None:
    """Train a router on prompts labelled with their specialist.

    Example: [bold]slm router train examples/router/train.jsonl --name helpdesk[/bold]
    """
    quiet_libraries()
    from slmkit.router.train import RouterConfig, train_router

    config = RouterConfig(embedding_model=embedding_model, fallback=fallback, threshold=threshold,
                          max_tokens=max_tokens, seed=seed)
    with err.status("Training the router"):
        result = train_router(routes, name, config)
    if json_output:
        out.print_json(json.dumps({"name": result.name, "metrics": result.metrics}))
        return
    metrics = result.metrics
    out.print(f"Router [bold]{result.name}[/bold]: {len(metrics['routes'])} routes, {metrics['train_examples']} "
              f"prompts; validation accuracy {metrics['validation_accuracy']:.3f} (split of the training routes), "
              f"threshold {metrics['threshold']:.3f}, C={metrics['regularization_C']:g}.")


@app.command("eval")
def evaluate(
    router: RouterArg,
    routes: RoutesArg,
    details: Annotated[Path | None, typer.Option(help="Write the full report (with every mistake) to this JSON file.")] = None,  # noqa: E501
    threads: Annotated[int, typer.Option(help="CPU threads for the embedding model (one short prompt gains little from more).")] = 1,  # noqa: E501
    json_output: JsonFlag = False,
) -> None:
    """Accuracy, per-route precision/recall, the confusion matrix and decision time on a routes file.

    Example: [bold]slm router eval helpdesk examples/router/heldout.jsonl[/bold]
    """
    quiet_libraries()
    from slmkit.router.evaluate import evaluate_router
    from slmkit.router.model import load_router
    from slmkit.router.routes import read_routes

    examples = read_routes(routes)
    with err.status("Evaluating"):
        report = evaluate_router(load_router(router, threads=threads), examples)
    if details is not None:
        from slmkit.artifact import write_text_atomic

        details.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(details, json.dumps(report, indent=2) + "\n")
    if json_output:
        out.print_json(json.dumps(report))
        return
    print_report(report)


def print_report(report: dict) -> None:
    from rich.table import Table

    out.print(f"[bold]{report['router']}[/bold] on {report['examples']} prompts: accuracy "
              f"[bold]{report['accuracy']:.3f}[/bold] (classifier alone {report['classifier_accuracy']:.3f}; "
              f"{report['fallback_rate']:.1%} fell back below threshold {report['threshold']:.3f}); decision "
              f"p50 {report['decision_ms_p50']:.1f} ms, p95 {report['decision_ms_p95']:.1f} ms (CPU time p50 "
              f"{report['decision_cpu_ms_p50']:.1f} ms)")
    table = Table("route", "precision", "recall", "support")
    for label, row in report["per_route"].items():
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        table.add_row(label, fmt(row["precision"]), fmt(row["recall"]), str(row["support"]))
    out.print(table)
    confusion = Table("true \\ chosen", *report["labels"], title="confusion matrix")
    for label, row in zip(report["labels"], report["confusion"], strict=True):
        confusion.add_row(label, *(str(v) for v in row))
    out.print(confusion)


@app.command()
def route(
    router: RouterArg,
    prompt: Annotated[str, typer.Argument(help="The prompt to route.")],
    json_output: JsonFlag = False,
) -> None:
    """Which specialist would answer PROMPT, and how sure the router is."""
    quiet_libraries()
    import dataclasses

    from slmkit.router.model import load_router

    decision = load_router(router).decide(prompt)
    if json_output:
        out.print_json(json.dumps(dataclasses.asdict(decision)))
        return
    note = f" (unsure: best was {decision.predicted})" if decision.fell_back else ""
    out.print(f"{decision.route}{note}  confidence {decision.confidence:.3f}, {decision.seconds * 1000:.1f} ms")


@app.command("list")
def list_routers(json_output: JsonFlag = False) -> None:
    """The routers in $SLM_HOME/routers."""
    from slmkit.artifact import read_card
    from slmkit.router.model import router_names, routers_dir

    rows = []
    for name in router_names():
        card = read_card(routers_dir() / name)
        metrics = card.metrics if card else {}
        rows.append({"name": name, "routes": sorted(metrics.get("routes", {})),
                     "validation_accuracy": metrics.get("validation_accuracy")})
    if json_output:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("No routers yet: slm router train ROUTES.jsonl --name NAME")
    for row in rows:
        out.print(f"{row['name']}: {', '.join(row['routes'])}")


@app.command()
def rm(router: RouterArg) -> None:
    """Delete a router from $SLM_HOME/routers."""
    import shutil

    from slmkit.router.model import router_names, router_path, routers_dir

    path = router_path(router)
    if path.parent != routers_dir() or path.name not in router_names():
        from slmkit.errors import InvalidRequestError

        raise InvalidRequestError(f"{router} is not in the routers folder; delete the directory yourself.")
    shutil.rmtree(path)
    out.print(f"Deleted router {path.name}.")
