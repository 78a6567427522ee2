"""Pieces every `slm` verb uses: console objects, shared options, loading with progress."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

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
Backend = Annotated[str, typer.Option(help="Engine backend (auto picks the fastest available).")]
Draft = Annotated[str | None, typer.Option(help="Draft model for assisted (speculative) decoding on the torch backend: same tokenizer, greedy output unchanged.")]  # noqa: E501
Prefill = Annotated[str, typer.Option(help="Who prefills long prompts on llama.cpp: auto (PyTorch bf16 on AMX CPUs when the float weights are at hand, else llama.cpp), torch, or llamacpp (token-for-token llama.cpp's own).")]  # noqa: E501
DraftTokens = Annotated[int, typer.Option(min=1, max=16, help="With --draft: tokens the draft proposes per step.")]


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


def load_with_progress(reference: str, backend: str = "auto", **options):
    """Load an engine, showing a progress bar while a built-in model is imported the first time.

    One stream unless ``max_batch_size`` says otherwise: a CLI verb asks one thing at a time,
    and llama.cpp keeps KV room for every stream it may run."""
    options.setdefault("max_batch_size", 1)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    quiet_libraries()
    from slmkit.engine import load_engine

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task(f"Loading {reference}", total=None)

        def report(step: str, done: int, total: int) -> None:
            progress.update(task, description=f"Importing {reference}: {step}", completed=done, total=total)

        return load_engine(reference, backend=backend, progress=report, **options)


def card_dict(card) -> dict | None:
    import dataclasses

    return dataclasses.asdict(card) if card else None


def human_count(count: int | None) -> str:
    if count is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def human_bytes(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


