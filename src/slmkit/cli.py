"""The ``slm`` command line: each verb parses its options, calls one library function and
formats the result. Heavy imports happen inside the verbs so ``slm --help`` stays fast."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from slmkit.errors import SlmError

app = typer.Typer(
    help="slmkit: load, specialize, shrink, package and serve small language models on your own hardware.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Manage the local model store ($SLM_HOME, default ~/.slm).", no_args_is_help=True)
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)

ModelArg = Annotated[str, typer.Argument(help="Model reference: a built-in name (smollm2-135m), a stored name, a path to an HF directory or .gguf file, or hf:org/name from the local cache.")]  # noqa: E501
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", help="Most new tokens to generate.")]
Temperature = Annotated[float, typer.Option(help="0 = greedy; higher = more random.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling: keep the smallest set of tokens with this much probability.")]
TopK = Annotated[int, typer.Option(help="Keep only the K most likely tokens (0 = off).")]
RepetitionPenalty = Annotated[float, typer.Option(help="Above 1 discourages repeating tokens.")]
Seed = Annotated[int | None, typer.Option(help="Seed for sampling: the same seed gives the same answer.")]
System = Annotated[str | None, typer.Option(help="System prompt.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def quiet_libraries() -> None:
    """Hide library progress bars and warnings that say nothing to a slmkit user."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_with_progress(reference: str, backend: str = "auto"):
    """Load an engine, showing a progress bar while a built-in model is imported the first time."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    quiet_libraries()
    from slmkit.engine import load_engine

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task(f"Loading {reference}", total=None)

        def report(step: str, done: int, total: int) -> None:
            progress.update(task, description=f"Importing {reference}: {step}", completed=done, total=total)

        return load_engine(reference, backend=backend, progress=report)


@app.command()
def generate(
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="The prompt; '-' reads it from standard input.")],
    system: System = None,
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    repetition_penalty: RepetitionPenalty = 1.0,
    seed: Seed = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop when this text appears (repeatable).")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Complete the prompt as plain text, without the chat template.")] = False,  # noqa: E501
    backend: Annotated[str, typer.Option(help="Engine backend.")] = "auto",
    json_output: JsonFlag = False,
) -> None:
    """Answer one prompt, streaming the text as it is generated.

    Example: [bold]slm generate smollm2-135m "What is the capital of France?"[/bold]
    """
    from slmkit.generate import build_request, collect

    if prompt == "-":
        prompt = sys.stdin.read()
    engine = load_with_progress(model, backend)
    request = build_request(prompt, chat=not raw, system=system, max_new_tokens=max_tokens, stop=stop,
                            temperature=temperature, top_p=top_p, top_k=top_k,
                            repetition_penalty=repetition_penalty, seed=seed)
    stream = engine.stream(request)
    if json_output:
        result = collect(stream)
        print(json.dumps({"model": engine.model_name, "text": result.text, "finish_reason": result.finish_reason,
                          "load_time_s": engine.load_time_s, **result.stats.as_dict()}))
        return
    stats = None
    for chunk in stream:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        stats = chunk.stats or stats
    sys.stdout.write("\n")
    if stats:
        err.print(f"[dim]{stats.prompt_tokens} prompt + {stats.completion_tokens} completion tokens, "
                  f"first token {stats.time_to_first_token_s:.2f} s, {stats.decode_tokens_per_s:.1f} tok/s[/dim]")


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help="Model reference (default: smollm2-135m).")] = "smollm2-135m",
    system: System = None,
    max_tokens: MaxTokens = 512,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    repetition_penalty: RepetitionPenalty = 1.0,
    seed: Seed = None,
    backend: Annotated[str, typer.Option(help="Engine backend.")] = "auto",
) -> None:
    """Chat with a model in the terminal. Type /reset to forget the conversation, /exit to quit.

    Example: [bold]slm chat smollm2-135m --system "Answer in one sentence."[/bold]
    """
    from slmkit.chat import Conversation
    from slmkit.engine import SamplingParams

    engine = load_with_progress(model, backend)
    conversation = Conversation(engine, system=system, max_new_tokens=max_tokens,
                                sampling=SamplingParams(temperature, top_p, top_k, repetition_penalty, seed))
    err.print(f"[bold]{engine.model_name}[/bold] ready. /reset clears the history, /exit quits.")
    while True:
        try:
            text = input(">>> ")
        except EOFError:
            break
        if text.strip() in ("/exit", "/quit", "/bye"):
            break
        if text.strip() == "/reset":
            conversation.reset()
            err.print("[dim]History cleared.[/dim]")
            continue
        if not text.strip():
            continue
        stats = None
        try:
            for chunk in conversation.say(text):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                stats = chunk.stats or stats
        except KeyboardInterrupt:
            err.print("\n[dim](stopped)[/dim]")
            continue
        except SlmError as exc:
            err.print(f"[red]error:[/red] {exc.message}")
            continue
        sys.stdout.write("\n")
        if stats:
            err.print(f"[dim]{stats.completion_tokens} tokens, {stats.decode_tokens_per_s:.1f} tok/s[/dim]")


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
                           "card": _card_dict(m.card)} for m in stored], indent=2))
        return
    table = Table("name", "architecture", "params", "size", "stage", "parent")
    for m in stored:
        card = m.card
        table.add_row(m.name, card.architecture if card else "?", _human_count(card.parameters if card else None),
                      _human_bytes(m.size_bytes), card.stage if card else "?",
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
    from slmkit.models import get_model, lineage

    model = get_model(name)
    chain = lineage(name)
    if json_output:
        print(json.dumps({"name": name, "path": str(model.path), "size_bytes": model.size_bytes,
                          "card": _card_dict(model.card), "lineage": [c.name for c in chain]}, indent=2))
        return
    out.print(f"[bold]{name}[/bold]  ({model.path}, {_human_bytes(model.size_bytes)})")
    out.print_json(data=_card_dict(model.card) or {})
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


def _card_dict(card) -> dict | None:
    import dataclasses

    return dataclasses.asdict(card) if card else None


def _human_count(count: int | None) -> str:
    if count is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def _human_bytes(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def main() -> None:
    """Entry point: user errors become one red line and exit code 1, never a traceback."""
    try:
        app()
    except SlmError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
