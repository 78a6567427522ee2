"""`slm models list|show|import|rm`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from slmkit.cli.common import JsonFlag, card_dict, err, human_bytes, human_count, out, quiet_libraries

models_app = typer.Typer(help="Manage the local model store ($SLM_HOME, default ~/.slm).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(json_output: JsonFlag = False) -> None:
    """List stored models.

    Example: [bold]slm models list --json[/bold]
    """
    from rich.table import Table

    from slmkit.models import list_models
    from slmkit.references import BUILTIN_MODELS

    stored = list_models()
    if json_output:
        print(json.dumps([{"name": m.name, "path": str(m.path), "size_bytes": m.size_bytes,
                           "card": card_dict(m.card)} for m in stored], indent=2))
        return
    table = Table("name", "architecture", "params", "size", "stage", "parent")
    for m in stored:
        card = m.card
        table.add_row(m.name, card.architecture if card else "?", human_count(card.parameters if card else None),
                      human_bytes(m.size_bytes), card.stage if card else "?",
                      ", ".join(p.name for p in card.parents) if card and card.parents else "-")
    out.print(table)
    missing = [n for n in BUILTIN_MODELS if n not in {m.name for m in stored}]
    if missing:
        err.print(f"[dim]Built-in (ready to use by name): {', '.join(missing)}[/dim]")


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="Stored model name.")], json_output: JsonFlag = False) -> None:
    """Show a stored model's card and its lineage back to the root.

    Example: [bold]slm models show smollm2-135m[/bold]
    """
    from slmkit.engine import serving_plan
    from slmkit.models import get_model, lineage

    model = get_model(name)
    chain = lineage(name)
    plan = serving_plan(name)
    if json_output:
        print(json.dumps({"name": name, "path": str(model.path), "size_bytes": model.size_bytes,
                          "card": card_dict(model.card), "lineage": [c.name for c in chain], "inference": plan},
                         indent=2))
        return
    out.print(f"[bold]{name}[/bold]  ({model.path}, {human_bytes(model.size_bytes)})")
    out.print(f"inference: {plan['backend']} on {plan['file']}  (other backends: slm generate --backend NAME)")
    out.print_json(data=card_dict(model.card) or {})
    if chain:
        out.print("lineage: " + " ← ".join(f"{c.name} ({c.stage})" for c in chain))


@models_app.command("import")
def models_import(
    path: Annotated[str, typer.Argument(help="A .gguf file or a Hugging Face directory (safetensors weights).")],
    name: Annotated[str | None, typer.Option(help="Name in the store (default: the file or folder name).")] = None,
) -> None:
    """Import a model into the store (GGUF files are converted to float safetensors).

    Example: [bold]slm models import ./SmolLM2.Q8_0.gguf --name smol-q8[/bold]
    """
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    quiet_libraries()
    from slmkit.models import import_model

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task("Importing", total=None)
        stored = import_model(Path(path), name=name, progress=lambda step, done, total: progress.update(
            task, description=f"Importing: {step}", completed=done, total=total))
    out.print(f"Imported [bold]{stored.name}[/bold] into {stored.path}")


@models_app.command("rm")
def models_rm(name: Annotated[str, typer.Argument(help="Stored model name.")]) -> None:
    """Delete a model from the store.

    Example: [bold]slm models rm my-old-student[/bold]
    """
    from slmkit.models import remove_model

    path = remove_model(name)
    out.print(f"Removed {name} ({path})")


