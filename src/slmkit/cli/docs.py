"""`slm docs extract|classify|summarize|organize|eval`: fields out of PDFs into JSON, on your own CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from slmkit.cli.common import JsonFlag, err, load_with_progress, out, quiet_libraries

docs_app = typer.Typer(help="Documents: extract fields into JSON that fits a schema, classify, score.",
                       no_args_is_help=True)
Files = Annotated[list[Path], typer.Argument(help="PDF (or .txt) documents.")]
ExtractModel = Annotated[str, typer.Option("--model", "-m", help="Model that reads the documents (e.g. a specialist "
                                                                 "from make example-docs).")]
SchemaOption = Annotated[str | None, typer.Option("--schema", "-s", help="Built-in schema (invoice, contract, ticket) or "
                                                                         "a JSON Schema file; default: classify each "
                                                                         "document and use its kind's schema.")]


def register(app: typer.Typer) -> None:
    app.add_typer(docs_app, name="docs")


Workers = Annotated[int, typer.Option("--workers", "-w", help="Local worker processes, each loading the model once "
                                                          "(output identical to one process).")]
RayAddress = Annotated[str | None, typer.Option("--ray", help="Run on Ray Data: a cluster address, 'auto' (the running "
                                                              "cluster, else a local one) or 'local' (a private Ray "
                                                              "on this machine with --workers CPUs).")]


@docs_app.command("extract")
def docs_extract(files: Files, schema: SchemaOption = None, model: ExtractModel = "smollm2-135m",
                 output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the JSONL here "
                                                                                   "(default: standard output).")] = None,
                 answer: Annotated[bool, typer.Option(help="Keep the model's raw answer in each result.")] = False,
                 workers: Workers = 1, ray: RayAddress = None) -> None:
    """One JSON object per document: each field's value (ISO dates, numbers, ISO 4217 codes, null when
    the document does not give it), confidence and source (page and character span).

    Example: [bold]slm docs extract invoice.pdf --schema invoice[/bold]
    """
    quiet_libraries()
    from slmkit.docs.batch import Extractor, run_documents

    lines, failed = [], 0
    results = run_documents(files, Extractor(model, schema), workers=workers, ray=ray, load_engine=load_with_progress)
    for file, done in zip(files, results, strict=True):
        if "error" in done:
            failed += 1
            err.print(f"[yellow]skipped[/yellow] {file.name}: {done['error']}", highlight=False)
            continue
        result = done["result"]
        if not answer:
            result.pop("answer", None)
        record = {"file": file.name, **result, "pages": done["pages"], "seconds": done["seconds"]}
        lines.append(json.dumps(record, ensure_ascii=False))
        if output is None:
            print(lines[-1], flush=True)
    if output is not None:
        _write_atomically(output, "".join(line + "\n" for line in lines))
        out.print(f"{len(lines)} documents → {output}" + (f", {failed} skipped" if failed else ""))
    if failed:
        sys.exit(1)


@docs_app.command("classify")
def docs_classify(files: Files, model: ExtractModel = "smollm2-135m") -> None:
    """The kind of each document (invoice, contract, ticket) with its confidence, one JSON line each
    (nearest kind centroid of minilm-l6 embeddings; the model is not used for the built-in kinds)."""
    quiet_libraries()
    from slmkit.docs.classify import classify_pages
    from slmkit.docs.pdf import read_pages
    from slmkit.embeddings import load_embedding_model
    from slmkit.errors import SlmError

    embedder = load_embedding_model("minilm-l6")
    failed = 0
    for file in files:
        try:
            print(json.dumps({"file": file.name, **classify_pages(read_pages(file), None, embedder=embedder)}),
                  flush=True)
        except SlmError as exc:
            failed += 1
            err.print(f"[yellow]skipped[/yellow] {file.name}: {exc.message}", highlight=False)
    if failed:
        sys.exit(1)


@docs_app.command("summarize")
def docs_summarize(file: Annotated[Path, typer.Argument(help="A PDF (or .txt/.md) document, any length.")],
                   schema: SchemaOption = None, model: ExtractModel = "smollm2-135m",
                   gists: Annotated[int, typer.Option(help="Section gists in a long document's summary.")] = 3,
                   json_output: JsonFlag = False) -> None:
    """A short summary: the parties and key facts (copied by the extractor, checked in the document)
    and the subject (a sentence chosen from the document); long documents section by section.

    Example: [bold]slm docs summarize contract.pdf -m docs-extractor[/bold]
    """
    quiet_libraries()
    from slmkit.docs.pdf import read_pages
    from slmkit.docs.schemas import load_schema
    from slmkit.docs.summarize import summarize_pages
    from slmkit.embeddings import load_embedding_model

    pages = read_pages(file)
    engine = load_with_progress(model)
    embedder = load_embedding_model("minilm-l6")
    with _progress_bar() as progress:
        task = progress.add_task("Sections", total=None)
        result = summarize_pages(pages, engine, embedder, load_schema(schema) if schema else None, max_gists=gists,
                                 progress=lambda done, total: progress.update(task, completed=done, total=total))
    if json_output:
        print(json.dumps({"file": file.name, "pages": len(pages), **result}, ensure_ascii=False))
        return
    out.print(result["summary"], highlight=False)
    for party in result["parties"]:
        source = party["source"]
        out.print(f"  {party['field']}: {party['name']}" + (f" (page {source['page']})" if source else ""), highlight=False)
    if result["section_count"] > 1:
        out.print(f"  {result['section_count']} sections; gists of the {len(result['sections'])} closest to the whole:")
        for section in result["sections"]:
            out.print(f"  p.{section['page']} {section['title']}: {section['gist']}", highlight=False)


@docs_app.command("organize")
def docs_organize(inbox: Annotated[Path, typer.Argument(help="Folder of documents (read only, never changed).")],
                  output: Annotated[Path, typer.Argument(help="Folder for index.jsonl, index.csv and one folder per kind.")],
                  model: ExtractModel = "smollm2-135m",
                  copy: Annotated[bool, typer.Option(help="Copy each document into OUT/<kind>/.")] = True,
                  workers: Workers = 1, ray: RayAddress = None) -> None:
    """Classify every document of INBOX, extract its fields and a one-line summary into OUT/index.jsonl
    and index.csv; re-running skips documents already indexed unchanged (also after a crash).

    Example: [bold]slm docs organize ./inbox ./sorted -m docs-extractor --workers 2[/bold]
    """
    quiet_libraries()
    from slmkit.docs.batch import Extractor
    from slmkit.docs.organize import organize

    extractor = Extractor(model, None, confidence=False)
    if workers == 1 and not ray:  # load here, before the documents' progress bar (one live display at a time)
        extractor = extractor.load(load_with_progress)
    with _progress_bar() as progress:
        task = progress.add_task("Documents", total=None)
        report = organize(inbox, output, extractor, copy=copy, workers=workers, ray=ray,
                          progress=lambda name, done, total: progress.update(
                              task, description=(name or "done")[:50], completed=done, total=total))
    out.print(f"{len(report.done)} indexed, {len(report.skipped)} unchanged, {len(report.errors)} failed → {report.index}")
    for name, message in report.errors.items():
        err.print(f"[yellow]failed[/yellow] {name}: {message}", highlight=False)


@docs_app.command("eval")
def docs_eval(gold: Annotated[Path, typer.Argument(help="JSONL, one {\"file\", \"kind\", \"fields\"} per document; "
                                                        "files relative to it.")],
              model: ExtractModel = "smollm2-135m",
              constrained: Annotated[bool, typer.Option(help="Constrain the answer to the schema's JSON.")] = True,
              copy: Annotated[bool, typer.Option(help="Constrain string fields to the document's spans of their "
                                                      "kind (with --constrained).")] = True,
              classify: Annotated[bool, typer.Option(help="Also score kind accuracy (minilm-l6 centroids).")] = True,
              details: Annotated[Path | None, typer.Option(help="Write per-document results (JSONL) here.")] = None,
              json_output: JsonFlag = False) -> None:
    """Field accuracy per field and kind, kind accuracy, schema validity and seconds per page.

    Example: [bold]slm docs eval build/example-docs/data/heldout/gold.jsonl -m docs-extractor[/bold]
    """
    quiet_libraries()
    from slmkit.docs.classify import classify_pages
    from slmkit.docs.evaluate import evaluate_docs
    from slmkit.docs.extract import extract_pages
    from slmkit.embeddings import load_embedding_model

    engine = load_with_progress(model, prompt_lookup=True)
    embedder = load_embedding_model("minilm-l6") if classify else None
    with _progress_bar() as progress:
        task = progress.add_task("Documents", total=None)
        report = evaluate_docs(
            gold, lambda pages, schema: extract_pages(pages, schema, engine, constrained=constrained, copy=copy,
                                                      with_confidence=False),
            classify=(lambda pages: classify_pages(pages, engine, embedder=embedder)["kind"]) if classify else None,
            progress=lambda done, total: progress.update(task, completed=done, total=total))
    summary = report.summary()
    if details:
        _write_atomically(details, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in report.results))
    if json_output:
        print(json.dumps(summary, indent=2))
        return
    out.print(f"{report.documents} documents: field accuracy [bold]{report.field_accuracy:.3f}[/bold]"
              + (f", kind accuracy {report.kind_accuracy:.3f}" if classify else "")
              + f", schema-valid {report.schema_valid:.3f}, {report.seconds_per_page:.2f} s/page")
    for name, value in report.accuracy_by_field.items():
        out.print(f"  {name:<32} {value:.3f}")
    for failure in report.failures:
        err.print(f"[yellow]failed[/yellow] {failure}", highlight=False)


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
