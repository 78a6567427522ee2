"""`slm kb ingest|list|show|rm|search|ask|eval`: the support bot over your own documents."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from slmkit.cli.common import JsonFlag, MaxTokens, err, human_bytes, load_with_progress, out, quiet_libraries

kb_app = typer.Typer(help="Knowledge bases: answer questions from your own documents, with sources.",
                     no_args_is_help=True)
KbName = Annotated[str, typer.Argument(help="Knowledge base name (stored as $SLM_HOME/kb/NAME.sqlite).")]
AnswerModel = Annotated[str | None, typer.Option(
    "--model", "-m", help="Model that answers (default: the grounded-QA specialist smollm2-135m-kb when it is in the "
                          "store, see `make example-kb-specialist`; else smollm2-135m).")]
AnswerMode = Annotated[str | None, typer.Option(
    help="specialist: the model copies the one retrieved sentence that answers, or abstains (default with the "
         "specialist); select: the two retrieved sentences the model scores as the best answer, cited (default "
         "with other models); generate: the model writes one sentence from the excerpts; quote: the closest "
         "documentation sentences, cited, no model run.")]


def register(app: typer.Typer) -> None:
    app.add_typer(kb_app, name="kb")


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


@kb_app.command("ingest")
def kb_ingest(name: KbName,
              paths: Annotated[list[Path], typer.Argument(help="Files or folders of .md, .txt, .html, .pdf documents.")],
              json_output: JsonFlag = False) -> None:
    """Add documents to a knowledge base (created if new); re-running updates only changed files.

    Example: [bold]slm kb ingest support ./docs[/bold]
    """
    import dataclasses

    quiet_libraries()
    from slmkit.kb.index import ingest

    with _progress_bar() as progress:
        task = progress.add_task("Reading", total=None)
        report = ingest(name, paths, progress=lambda step, done, total: progress.update(
            task, description=step[:60], completed=done, total=total))
    if json_output:
        print(json.dumps({**dataclasses.asdict(report), "path": str(report.path)}, indent=2))
        return
    out.print(f"[bold]{name}[/bold]: {len(report.added)} added, {len(report.updated)} updated, "
              f"{len(report.unchanged)} unchanged, {len(report.removed)} removed; "
              f"{report.chunks_embedded} chunks embedded in {report.seconds:.1f} s")
    for document, message in report.errors.items():
        err.print(f"[yellow]skipped[/yellow] {document}: {message}", highlight=False)


@kb_app.command("list")
def kb_list(json_output: JsonFlag = False) -> None:
    """List knowledge bases.

    Example: [bold]slm kb list[/bold]
    """
    from rich.table import Table

    from slmkit.kb.index import list_kbs

    kbs = list_kbs()
    if json_output:
        print(json.dumps([{"name": k.name, "path": str(k.path), "documents": k.documents, "chunks": k.chunks,
                           "size_bytes": k.size_bytes} for k in kbs], indent=2))
        return
    table = Table("name", "documents", "chunks", "size")
    for k in kbs:
        table.add_row(k.name, str(k.documents), str(k.chunks), human_bytes(k.size_bytes))
    out.print(table)


@kb_app.command("show")
def kb_show(name: KbName, json_output: JsonFlag = False) -> None:
    """Show a knowledge base's documents and chunk counts.

    Example: [bold]slm kb show support[/bold]
    """
    from rich.table import Table

    from slmkit.kb.index import kb_documents, kb_info

    info, documents = kb_info(name), kb_documents(name)
    if json_output:
        print(json.dumps({"name": name, "path": str(info.path), "chunks": info.chunks,
                          "embedding_model": info.embedding_model, "documents": documents}, indent=2))
        return
    out.print(f"[bold]{name}[/bold] ({info.path}, {human_bytes(info.size_bytes)}, embeddings: {info.embedding_model})")
    table = Table("document", "chunks", "size", "sha256")
    for d in documents:
        table.add_row(d["name"], str(d["chunks"]), human_bytes(d["size_bytes"]), d["sha256"][:12])
    out.print(table)


@kb_app.command("rm")
def kb_rm(name: KbName) -> None:
    """Delete a knowledge base (the documents themselves are not touched).

    Example: [bold]slm kb rm support[/bold]
    """
    from slmkit.kb.index import remove_kb

    out.print(f"Removed {name} ({remove_kb(name)})")


@kb_app.command("search")
def kb_search(name: KbName, query: Annotated[str, typer.Argument(help="What to look for.")],
              k: Annotated[int, typer.Option("-k", help="How many chunks to show.")] = 5,
              json_output: JsonFlag = False) -> None:
    """Show the chunks hybrid retrieval (BM25 + embeddings, fused by rank) finds for a query.

    Example: [bold]slm kb search support "reset password"[/bold]
    """
    quiet_libraries()
    from slmkit.kb.retrieve import search

    hits = search(name, query, k=k)
    sources = [h.source(n, snippet_chars=300) | {"bm25_rank": h.bm25_rank, "vector_rank": h.vector_rank}
               for n, h in enumerate(hits, start=1)]
    if json_output:
        print(json.dumps(sources, indent=2))
        return
    for s in sources:
        where = s["file"] + (f" p.{s['page']}" if s["page"] else "")
        out.print(f"[bold][{s['n']}][/bold] {where} § {s['section']}  [dim]rrf {s['score']:.4f}, cosine "
                  f"{s['similarity']:.3f}, bm25 #{s['bm25_rank'] or '-'}, vector #{s['vector_rank'] or '-'}[/dim]",
                  highlight=False)
        out.print(f"    {s['snippet']}", highlight=False)


def _print_sources(sources: list[dict]) -> None:
    for s in sources:
        page = f" p.{s['page']}" if s["page"] else ""
        err.print(f"[dim][{s['n']}] {s['file']}{page} § {s['section']}[/dim]", highlight=False)


@kb_app.command("ask")
def kb_ask(name: KbName,
           question: Annotated[str | None, typer.Argument(help="The question; leave out to chat (follow-ups use the conversation).")] = None,  # noqa: E501
           model: AnswerModel = None, max_tokens: MaxTokens = 96, mode: AnswerMode = None,
           json_output: JsonFlag = False) -> None:
    """Answer from the knowledge base with numbered sources, or say it does not know.

    Example: [bold]slm kb ask support "How do I reset my password?"[/bold]
    """
    from slmkit.generate import collect
    from slmkit.kb.answer import answer_stream
    from slmkit.kb.specialist import default_mode, default_model

    model = model or default_model()
    mode = mode or default_mode(model)

    engine = load_with_progress(model) if mode != "quote" else None
    messages: list[dict] = []
    while True:
        text = question if question is not None else _read_line()
        if text is None:
            return
        messages.append({"role": "user", "content": text})
        answer = answer_stream(name, messages, engine, max_new_tokens=max_tokens, mode=mode)
        if json_output:
            result = collect(answer.chunks)
            print(json.dumps({"answer": result.text, "abstained": answer.abstained, "confidence": answer.confidence,
                              "score": answer.score, "mode": mode,
                              "query": answer.query, "answered_by": answer.answered_by, "sources": answer.sources,
                              **result.stats.as_dict()}))
            return
        parts = []
        for chunk in answer.chunks:
            parts.append(chunk.text)
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(parts)})
        if not answer.abstained:
            _print_sources(answer.sources)
            err.print(f"[dim]answered by {answer.answered_by}[/dim]", highlight=False)
        if question is not None:
            return


def _read_line() -> str | None:
    try:
        text = input(">>> ").strip()
    except EOFError:
        return None
    return None if text in ("/exit", "/quit", "/bye") else text or _read_line()


@kb_app.command("eval")
def kb_eval(sets: Annotated[list[str], typer.Argument(
                help="NAME QA_FILE pairs: a knowledge base and its JSONL questions (question, answer_keywords, source); "
                     "give several pairs to evaluate several sets in one run.")],
            model: Annotated[str | None, typer.Option(
                "--model", "-m", help="Model(s) that answer, separated by commas: every mode runs with each, so "
                                      "`-m smollm2-135m-kb,smollm2-135m` compares the specialist with the bundled "
                                      "model in one run (default: as `slm kb ask`).")] = None,
            max_tokens: MaxTokens = 64,
            mode: Annotated[str | None, typer.Option(help="specialist, select, generate or quote, or several "
                                                          "separated by commas (each is run on every set; default: "
                                                          "as `slm kb ask`).")] = None,
            threshold: Annotated[float | None, typer.Option(help="Abstain below this abstention score (default: each "
                                                                  "mode's calibrated threshold, ABSTAIN_BELOW).")] = None,
            details: Annotated[Path | None, typer.Option(help="Also write every question's answer to this JSONL file.")] = None,  # noqa: E501
            plot: Annotated[Path | None, typer.Option(help="Write a PNG of accuracy, abstention and false abstention "
                                                           "against the abstention threshold.")] = None,
            threads: Annotated[int | None, typer.Option(help="Model threads (default: the backend's; 1 keeps llama.cpp "
                                                             "from spinning on a busy machine).", min=1)] = None,
            json_output: JsonFlag = False) -> None:
    """Measure retrieval recall@1/@5, answer accuracy, abstention, false abstention and latency per QA set.

    Example: [bold]slm kb eval pydoc examples/pydoc-kb/qa.jsonl manuals examples/manuals-kb/qa.jsonl[/bold]
    """
    import dataclasses

    from rich.table import Table

    from slmkit.errors import InvalidRequestError
    from slmkit.kb.answer import MODES
    from slmkit.kb.calibrate import choose_threshold, plot_sweep
    from slmkit.kb.evaluate import evaluate
    from slmkit.kb.specialist import default_mode, default_model

    if len(sets) % 2:
        raise InvalidRequestError("Give knowledge bases and QA files in pairs: slm kb eval NAME QA_FILE [NAME QA_FILE ...].")
    models = [m.strip() for m in (model or default_model()).split(",") if m.strip()]
    modes = [m.strip() for m in (mode or default_mode(models[0])).split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise InvalidRequestError(f"--mode takes {', '.join(MODES)} (comma-separated for several), got {mode!r}.")
    pairs = [(sets[i], Path(sets[i + 1])) for i in range(0, len(sets), 2)]
    options = {"threads": threads} if threads else {}
    engines = {m: load_with_progress(m, **options) for m in models} if any(m != "quote" for m in modes) else {}
    runs = [(m, one_mode) for one_mode in modes for m in (models if one_mode != "quote" else models[:1])]
    reports = []
    with _progress_bar() as progress:
        for name, qa_file in pairs:
            for one_model, one_mode in runs:
                task = progress.add_task(f"{name} ({one_mode}, {one_model})", total=None)
                reports.append(evaluate(name, qa_file, engines.get(one_model) if one_mode != "quote" else None,
                                        max_new_tokens=max_tokens, mode=one_mode, threshold=threshold,
                                        progress=lambda done, total, task=task: progress.update(
                                            task, completed=done, total=total)))
    if details:
        rows = [json.dumps({"kb": r.kb, "mode": r.mode, "model": r.model, **dataclasses.asdict(result)}) + "\n"
                for r in reports for result in r.results]
        details.parent.mkdir(parents=True, exist_ok=True)
        temporary = details.with_name(f".{details.name}.tmp")
        temporary.write_text("".join(rows), encoding="utf-8")
        temporary.replace(details)
    if plot:
        plot_sweep(reports, plot)
    summaries = [r.summary() | {"threshold_chosen_by_rule_on_this_set": choose_threshold(r.results)} for r in reports]
    if json_output:
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
        return
    table = Table("metric", *[f"{r.kb} · {r.mode} · {r.model}" for r in reports], title="slm kb eval")
    table.add_row("questions (answerable + unanswerable)", *[f"{r.answerable} + {r.unanswerable}" for r in reports])
    for label, key in (("retrieval recall@1", "recall_at_1"), ("retrieval recall@5", "recall_at_5"),
                       ("answer accuracy", "answer_accuracy"), ("abstention on unanswerable", "abstention_rate"),
                       ("false abstention on answerable", "false_abstention_rate")):
        table.add_row(label, *[f"{getattr(r, key):.3f}" for r in reports])
    table.add_row("latency p50", *[f"{r.latency_p50_s:.2f} s" for r in reports])
    table.add_row("latency p95", *[f"{r.latency_p95_s:.2f} s" for r in reports])
    table.add_row("abstention threshold used", *[f"{r.threshold:.2f}" for r in reports])
    table.add_row("threshold the rule picks on this set", *[f"{s['threshold_chosen_by_rule_on_this_set']:.2f}"
                                                             for s in summaries])
    out.print(table)
