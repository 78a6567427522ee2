"""`slm generate` and `slm chat`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from slmkit.cli.common import (
    Backend,
    Draft,
    DraftTokens,
    JsonFlag,
    MaxTokens,
    ModelArg,
    Prefill,
    RepetitionPenalty,
    Seed,
    System,
    Temperature,
    TopK,
    TopP,
    err,
    load_with_progress,
)
from slmkit.errors import SlmError


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.command()(chat)


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
    backend: Backend = "auto",
    prefill: Prefill = "auto",
    draft: Draft = None,
    draft_tokens: DraftTokens = 4,
    json_output: JsonFlag = False,
) -> None:
    """Answer one prompt, streaming the text as it is generated.

    Example: [bold]slm generate smollm2-135m "What is the capital of France?"[/bold]
    """
    from slmkit.generate import build_request, collect

    if prompt == "-":
        prompt = sys.stdin.read()
    engine = load_with_progress(model, backend, draft=draft, draft_tokens=draft_tokens, prefill=prefill)
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


def chat(
    model: Annotated[str | None, typer.Argument(help="Model reference (default: smollm2-135m; with --url, the server's first model).")] = None,  # noqa: E501
    system: System = None,
    max_tokens: MaxTokens = 512,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    repetition_penalty: RepetitionPenalty = 1.0,
    seed: Seed = None,
    backend: Backend = "auto",
    draft: Draft = None,
    draft_tokens: DraftTokens = 4,
    url: Annotated[str | None, typer.Option(help="Chat with a running server instead (e.g. http://127.0.0.1:8000).")] = None,  # noqa: E501
    api_key: Annotated[str | None, typer.Option(envvar="SLM_API_KEY", help="API key for --url.")] = None,
) -> None:
    """Chat with a model in the terminal. Type /reset to forget the conversation, /exit to quit.

    Example: [bold]slm chat smollm2-135m --system "Answer in one sentence."[/bold]
    or, against a server: [bold]slm chat --url http://127.0.0.1:8000[/bold]
    """
    from slmkit.chat import Conversation
    from slmkit.engine import SamplingParams

    if url:
        from slmkit.client import RemoteEngine

        engine = RemoteEngine(url, model=model, api_key=api_key)
    else:
        engine = load_with_progress(model or "smollm2-135m", backend, draft=draft, draft_tokens=draft_tokens)
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


