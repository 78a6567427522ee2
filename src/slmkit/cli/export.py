"""`slm export gguf|onnx|docker` and `slm bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slmkit.cli.common import JsonFlag, ModelArg, card_dict, err, human_bytes, out, quiet_libraries

export_app = typer.Typer(help="Export a model as GGUF (llama.cpp, Ollama), ONNX (ONNX Runtime) or a container.",
                         no_args_is_help=True)
Threads = Annotated[int, typer.Option(help="CPU threads for quantizing and the parity checks.")]
NoCheck = Annotated[bool, typer.Option("--no-check", help="Skip the parity checks against the PyTorch model.")]


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
    app.command()(bench)


def _run_with_progress(work, label: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    quiet_libraries()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task(label, total=None)

        def report(step: str, done: int, total: int) -> None:
            progress.update(task, description=f"{label}: {step}", completed=done, total=total)

        return work(report)


def _report(result, json_output: bool) -> None:
    card = result.card
    if json_output:
        print(json.dumps({"path": str(result.path), "card": card_dict(card)}, indent=2))
        return
    out.print(f"[bold]{card.name}[/bold] ({card.format}, {card.dtype}) → {result.path}  "
              f"{human_bytes(card.metrics['size_bytes'])}")
    parity = card.metrics.get("parity")
    if parity is None:
        err.print("[dim]Parity checks skipped (--no-check).[/dim]")
        return
    if parity.get("kind") == "item_scores":  # a recommender (export/__init__.py: item_score_parity)
        verdict = "[green]passed[/green]" if parity["passed"] else "[red]FAILED[/red]"
        budget = "" if parity.get("tolerance") is None else f" (tolerance {parity['tolerance']:.0e})"
        out.print(f"parity {verdict}: next-item scores of {parity['histories']} random histories, largest difference "
                  f"{parity['max_abs_difference']:.2e}{budget}; top-10 identical {parity['top10_identical']}/"
                  f"{parity['histories']}, overlap {parity['top10_overlap']:.0%}")
        return
    ppl = parity["perplexity"]
    matched = sum(item["match"] for item in parity["greedy"])
    verdict = "[green]passed[/green]" if parity["passed"] else "[red]FAILED[/red]"
    out.print(f"parity {verdict}: greedy {matched}/{len(parity['greedy'])} prompts identical for "
              f"{parity['greedy_tokens']} tokens; chat stop {parity['chat_stop']['export']} vs PyTorch "
              f"{parity['chat_stop']['reference']}; perplexity {ppl['export']:.3f} vs {ppl['reference']:.3f} "
              f"({ppl['relative_change']:+.2%}, budget {ppl['budget']:.1%})")
    if not parity["passed"]:
        err.print(f"[yellow]The export differs from the PyTorch model beyond its budget; see {result.path}/slm.json."
                  "[/yellow]")


@export_app.command("gguf")
def export_gguf(
    model: ModelArg,
    quant: Annotated[str, typer.Option(help="f32, f16, q8_0, q4_0, q4_k_m, q5_k_m or q6_k (llama.cpp's names).")] = "q4_k_m",  # noqa: E501
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Artifact directory to write (default: the store, as NAME-QUANT).")] = None,  # noqa: E501
    threads: Threads = 2,
    no_check: NoCheck = False,
    json_output: JsonFlag = False,
) -> None:
    """Write a GGUF file (tokenizer and chat template inside) and quantize it with llama.cpp.

    The artifact directory holds model.gguf (usable as is by llama.cpp and Ollama), the
    tokenizer files and slm.json with the parity checks. For a recommender the item catalogue
    is the file's vocabulary, catalogue.json goes beside it and the check compares next-item scores.

    Example: [bold]slm export gguf smollm2-135m --quant q4_k_m[/bold]
    """
    from slmkit.export.gguf import check_quant
    from slmkit.export.gguf import export_gguf as run

    check_quant(quant)  # before the progress bar, so the error is the only output
    result = _run_with_progress(lambda report: run(model, quant, output, threads, not no_check, report),
                                f"Exporting {model} to GGUF {quant}")
    _report(result, json_output)


@export_app.command("onnx")
def export_onnx(
    model: ModelArg,
    int8: Annotated[bool, typer.Option("--int8", help="Quantize weights to int8 (ONNX Runtime dynamic quantization).")] = False,  # noqa: E501
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Artifact directory to write (default: the store, as NAME-onnx or NAME-onnx-int8).")] = None,  # noqa: E501
    threads: Threads = 2,
    no_check: NoCheck = False,
    json_output: JsonFlag = False,
) -> None:
    """Export an ONNX decoder with KV-cache inputs/outputs, with the tokenizer alongside.

    Example: [bold]slm export onnx smollm2-135m --int8[/bold]
    """
    from slmkit.export.onnx import export_onnx as run

    result = _run_with_progress(lambda report: run(model, int8, output, threads, not no_check, report),
                                f"Exporting {model} to ONNX{' int8' if int8 else ''}")
    _report(result, json_output)


@export_app.command("coreml")
def export_coreml(
    model: ModelArg,
    context: Annotated[int, typer.Option(help="KV-cache length in tokens: the longest prompt + answer the package holds.")] = 2048,  # noqa: E501
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Artifact directory to write (default: the store, as NAME-coreml).")] = None,  # noqa: E501
    no_check: NoCheck = False,
    json_output: JsonFlag = False,
) -> None:
    """Convert to a Core ML package (.mlpackage, float16, stateful KV cache) with coremltools.

    Conversion works on Linux; running the package needs macOS 15 / iOS 18 or newer, so no
    prediction is made here. The check compares the traced graph with PyTorch.

    Example: [bold]slm export coreml smollm2-135m --context 2048[/bold]
    """
    from slmkit.export.coreml import export_coreml as run

    result = _run_with_progress(lambda report: run(model, output, context, not no_check, report),
                                f"Exporting {model} to Core ML")
    card = result.card
    if json_output:
        print(json.dumps({"path": str(result.path), "card": card_dict(card)}, indent=2))
        return
    out.print(f"[bold]{card.name}[/bold] (coreml, float16, context {context}) → {result.path}  "
              f"{human_bytes(card.metrics['size_bytes'])}")
    check = card.metrics.get("trace_check")
    if check is None:
        err.print("[dim]Trace check skipped (--no-check).[/dim]")
    else:
        verdict = "[green]passed[/green]" if check["passed"] else "[red]FAILED[/red]"
        out.print(f"trace check {verdict}: max |logit difference| {check['max_abs_logit_diff']:.2e} vs PyTorch over "
                  f"chunks {check['chunks']}")
    err.print("[dim]Not run here: Core ML needs macOS 15 / iOS 18 (docs/export.md, section CoreML, shows how).[/dim]")


@export_app.command("docker")
def export_docker(
    model: ModelArg,
    outdir: Annotated[Path, typer.Argument(help="Build context directory to create.")],
    port: Annotated[int, typer.Option(help="Port the container serves on.")] = 8000,
    backend: Annotated[str, typer.Option(help="Backend the server runs (auto picks by format).")] = "auto",
    json_output: JsonFlag = False,
) -> None:
    """Write a Docker build context (Dockerfile, the model, pinned requirements) serving the model.

    Example: [bold]slm export docker smollm2-135m-q4_k_m ./smol-image && docker build -t smol ./smol-image[/bold]
    """
    from slmkit.export.docker import export_docker as run

    quiet_libraries()
    result = run(model, outdir, port=port, backend=backend)
    if json_output:
        print(json.dumps({"path": str(result.path), "files": result.files}, indent=2))
        return
    out.print(f"Build context for [bold]{result.model_name}[/bold] in {result.path}: {', '.join(result.files)}")
    err.print(f"[dim]docker build -t {result.model_name.lower()} {result.path} && "
              f"docker run -p {port}:{port} {result.model_name.lower()}[/dim]")


def bench(
    model: ModelArg,
    tokens: Annotated[int, typer.Option(help="Tokens to decode per measurement.")] = 128,
    threads: Annotated[int, typer.Option(help="CPU threads for every engine.")] = 2,
    formats: Annotated[str, typer.Option(help="Comma-separated rows to measure (default: all).")] = "all",
    chart: Annotated[Path | None, typer.Option(help="Write a PNG bar chart here.")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Where exports are made (default: the store).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Measure every format × backend of a model, and the peers, in one run: size, load time,
    time to first token, prefill and decode tok/s, peak RSS and perplexity.

    Example: [bold]slm bench smollm2-135m --chart bench.png[/bold]
    """
    from slmkit.bench import ROWS, markdown_table, run_bench, write_chart

    quiet_libraries()
    rows = ROWS if formats == "all" else tuple(f.strip() for f in formats.split(","))
    with err.status("Benchmarking (exports are made first when missing)...") as status:
        results = run_bench(model, rows=rows, tokens=tokens, threads=threads, workdir=workdir,
                            progress=lambda text: status.update(text))
    if chart:
        write_chart(results, chart)
    if json_output:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return
    out.print(markdown_table(results), markup=False)
