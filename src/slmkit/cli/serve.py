"""`slm serve`: the OpenAI-compatible server."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from slmkit.cli.common import Backend, Prefill, err


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Chat model reference to serve (repeatable). Default: smollm2-135m.")] = None,  # noqa: E501
    embedding_model: Annotated[list[str] | None, typer.Option(help="Embedding model (repeatable). Default: minilm-l6.")] = None,  # noqa: E501
    host: Annotated[str, typer.Option(help="Address to bind. Loopback by default; 0.0.0.0 exposes the server to your network.")] = "127.0.0.1",  # noqa: E501
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[list[str] | None, typer.Option(help="Require this key as 'Authorization: Bearer KEY' (repeatable; or set SLM_API_KEY).")] = None,  # noqa: E501
    max_memory: Annotated[str | None, typer.Option(help="Memory budget for loaded models, e.g. 2GB; least recently used models unload first.")] = None,  # noqa: E501
    max_tokens_limit: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 4096,
    default_max_tokens: Annotated[int, typer.Option(help="Tokens generated at most when a request names no max_tokens.")] = 512,  # noqa: E501
    max_batch_size: Annotated[int, typer.Option(help="Sequences decoded together per model.")] = 8,
    context_length: Annotated[int | None, typer.Option(help="Tokens per request, prompt and answer (llama.cpp backend; each of the max-batch-size streams keeps KV room for this many). Default: the model's context, at most 4096.")] = None,  # noqa: E501
    max_queue: Annotated[int, typer.Option(help="Requests that may wait beyond the batch before the server answers 429.")] = 64,  # noqa: E501
    request_timeout: Annotated[float, typer.Option(help="Seconds a generation may run.")] = 300.0,
    write_timeout: Annotated[float, typer.Option(help="Seconds a streaming client may read nothing before it is cut off.")] = 30.0,  # noqa: E501
    max_body_size: Annotated[str, typer.Option(help="Largest request body, e.g. 8MB.")] = "8MB",
    cors_origin: Annotated[list[str] | None, typer.Option(help="Allow browser pages from this origin (repeatable). CORS is off by default.")] = None,  # noqa: E501
    allow_host: Annotated[list[str] | None, typer.Option(help="Accept this Host header besides loopback names (needed behind a proxy or DNS name).")] = None,  # noqa: E501
    backend: Backend = "auto",
    prefill: Prefill = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads per model (default: all cores).")] = None,
    drain_timeout: Annotated[float, typer.Option(help="Seconds in-flight requests may finish after SIGTERM.")] = 10.0,
    preload: Annotated[bool, typer.Option(help="Load the first model at start-up.")] = True,
    adapter: Annotated[list[str] | None, typer.Option(help="LoRA adapter served on the first --model as one shared base: NAME=PATH, or a model made with slm finetune --keep-adapter (repeatable; torch backend).")] = None,  # noqa: E501
    router: Annotated[str | None, typer.Option(help="Router (slm router train) that answers model=\"auto\" with the specialist it picks.")] = None,  # noqa: E501
) -> None:
    """Serve models with an OpenAI-compatible API, a web chat page and Prometheus metrics.

    Example: [bold]slm serve --model smollm2-135m --api-key secret[/bold]
    """
    from slmkit.cli.common import quiet_libraries
    from slmkit.serve import banner, exposure_warning, parse_size
    from slmkit.serve import serve as run_server
    from slmkit.server.settings import ServerSettings

    quiet_libraries()
    keys = list(api_key or []) + ([os.environ["SLM_API_KEY"]] if os.environ.get("SLM_API_KEY") else [])
    settings = ServerSettings(
        models=model or ["smollm2-135m"], embedding_models=embedding_model or ["minilm-l6"], host=host, port=port,
        api_keys=keys, backend=backend, prefill=prefill, threads=threads,
        max_memory_bytes=parse_size(max_memory) if max_memory else None, max_body_bytes=parse_size(max_body_size),
        max_tokens_limit=max_tokens_limit, default_max_tokens=default_max_tokens, max_batch_size=max_batch_size,
        context_length=context_length,
        max_queue=max_queue, request_timeout_s=request_timeout, write_timeout_s=write_timeout, cors_origins=cors_origin or [],
        allowed_hosts=allow_host or [], drain_timeout_s=drain_timeout, preload=preload, router=router,
        adapters=dict(_adapter_option(a) for a in adapter or []),
    )
    err.print(banner(settings), highlight=False, soft_wrap=True)
    warning = exposure_warning(settings)
    if warning:
        err.print(f"[bold red]{warning}[/bold red]", highlight=False, soft_wrap=True)
    run_server(settings)


def _adapter_option(text: str) -> tuple[str, str]:
    """``NAME=REFERENCE`` or ``REFERENCE`` (named after its last path component)."""
    from pathlib import Path

    name, _, reference = text.partition("=") if "=" in text else (Path(text).name, "", text)
    return name, reference
