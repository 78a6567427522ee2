"""Document extraction on held-out layouts: the specialist vs its peers.

Rows, all on the same gold file (default: the held-out split of `make example-docs`, layouts
never used in training or tuning):
- ``regex``: label regexes only, no model (slmkit.docs.extract.regex_baseline);
- ``base``: the base model (SmolLM2-135M-Instruct) without the JSON constraint: the peer;
- ``base-constrained``: the base model with the JSON constraint, string fields free text;
- ``base-copy``: the base model, each string field one of the document's spans of its kind;
- ``tuned-free``: the fine-tuned specialist with the JSON constraint, string fields free text;
- ``tuned``: the fine-tuned specialist as `slm docs extract -m docs-extractor` runs it (each
  string field one of the document's spans of its kind).
Kind accuracy is the same classifier in every model row (minilm-l6 centroids, slmkit.docs.classify).

Each row's scores are kept in a JSON file beside the data as soon as the row is done, so a killed
run continues with the rows still missing, and rows can be measured by separate invocations
(``--rows``); the tables are printed from that file. Accuracy does not depend on when a row ran;
seconds per page do (a shared machine's load).

Second table (``--speed``): the cost of constrained decoding. The same model and prompts decode
the same number of tokens with and without a JSON-schema mask, alternating; medians of decode
tokens/s.

Third table (``--summaries``): ``slm docs summarize`` against its peers on the same documents,
scored by :func:`slmkit.docs.summarize.coverage` against the generator's gold parties and subject
(share of party names and subject words the summary contains): ``lead`` (the document's first
words, as many as slmkit's summary has: the naive baseline), ``free`` (the model asked to write
the summary itself, greedy, no constraint: the untuned peer) and ``slmkit`` (extraction + chosen
sentences).

Usage: python bench/docs.py [--data build/example-docs/data] [--split heldout] [--limit 12]
                            [--rows regex,base,base-constrained,tuned] [--speed] [--summaries]
(SLM_HOME defaults to build/example-docs/home, where make example-docs puts the specialist.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROWS = ("regex", "base", "base-constrained", "base-copy", "tuned-free", "tuned")
DEFAULT_MODEL = "docs-extractor"


def row_label(row: str, base: str, tuned: str) -> str:
    return {"regex": "regex baseline (no model)", "base": f"{base}, no constraint (peer)",
            "base-constrained": f"{base}, JSON constraint", "base-copy": f"{base}, JSON + copy constraint",
            "tuned-free": f"{tuned} (LoRA), JSON constraint",
            "tuned": f"{tuned} (LoRA), JSON + copy constraint"}[row]


def score_row(row: str, gold: Path, limit: int | None, base: str, tuned: str) -> dict:
    from slmkit.docs.classify import classify_pages
    from slmkit.docs.evaluate import evaluate_docs
    from slmkit.docs.extract import extract_pages, regex_baseline
    from slmkit.embeddings import load_embedding_model
    from slmkit.engine import load_engine

    started = time.perf_counter()
    if row == "regex":
        report = evaluate_docs(gold, regex_baseline, limit=limit)
    else:
        # loaded as slm docs extract loads it (slmkit.docs.batch.Extractor): no prompt-lookup drafts, which
        # llama.cpp would take on these greedy requests and which can change an answer; no prefix cache
        engine = load_engine(tuned if row.startswith("tuned") else base, threads=2, prefix_cache_tokens=0)
        embedder = load_embedding_model("minilm-l6", threads=2)
        constrained, copy = row != "base", row in ("base-copy", "tuned")
        report = evaluate_docs(
            gold, lambda pages, schema: extract_pages(pages, schema, engine, constrained=constrained, copy=copy,
                                                      with_confidence=False),
            classify=lambda pages: classify_pages(pages, engine, embedder=embedder)["kind"], limit=limit)
        engine.close()
    # Per-document values and hits beside the scores, to see where the errors are (on dev).
    model = f"-{tuned}" if row.startswith("tuned") and tuned != DEFAULT_MODEL else ""
    details = gold.parent.parent / f"details-{gold.parent.name}-{limit or 'all'}-{row}{model}.jsonl"
    details.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in report.results), encoding="utf-8")
    return {**report.summary(), "minutes": (time.perf_counter() - started) / 60}


def constraint_speed(model: str, gold: Path, rounds: int, tokens: int) -> dict:
    """Decode tokens/s with and without the JSON mask, same prompts and lengths, alternating."""
    from slmkit.docs.evaluate import read_gold
    from slmkit.docs.extract import build_messages
    from slmkit.docs.pdf import read_pages
    from slmkit.docs.schemas import load_schema
    from slmkit.engine import GenerationRequest, load_engine
    from slmkit.generate import collect

    engine = load_engine(model, threads=2)
    # A schema that cannot end early (one long string), so the constrained run decodes its full length.
    schema = {"type": "object", "properties": {"notes": {"type": "string", "minLength": 8 * tokens}},
              "required": ["notes"]}
    plain, constrained, lengths = [], [], []
    for item in read_gold(gold)[:rounds]:
        messages = build_messages(read_pages(item["path"]), load_schema(item["kind"]))
        # The plain run may end early at its end-of-turn token; the constrained run then decodes
        # exactly as many tokens, so both rates cover the same positions.
        first = collect(engine.stream(GenerationRequest(messages=messages, max_new_tokens=tokens)))
        length = first.stats.completion_tokens
        if length < 8:
            continue
        second = collect(engine.stream(GenerationRequest(messages=messages, max_new_tokens=length, json_schema=schema)))
        plain.append(first.stats.decode_tokens_per_s)
        constrained.append(second.stats.decode_tokens_per_s)
        lengths.append(length)
    engine.close()
    return {"plain": statistics.median(plain), "constrained": statistics.median(constrained), "runs": len(plain),
            "tokens": statistics.median(lengths)}


def mask_cost(model: str, gold: Path, rounds: int) -> dict:
    """Milliseconds per token the grammar adds (mask + advance), replaying training-style answers
    through the extraction schema with the model's tokenizer; no model forward pass involved."""
    import torch

    from slmkit.docs.evaluate import read_gold
    from slmkit.docs.extract import answer_json
    from slmkit.docs.schemas import load_schema
    from slmkit.engine.constrained import compile_json_schema
    from slmkit.engine.torch_backend import load_tokenizer
    from slmkit.references import resolve_hf

    tokenizer = load_tokenizer(resolve_hf(model).path)
    timings = []
    for item in read_gold(gold)[:rounds]:
        schema = load_schema(item["kind"])
        answer = {f.name: None if item["fields"].get(f.name) is None else str(item["fields"][f.name])
                  for f in schema.fields}
        ids = tokenizer(answer_json(answer), add_special_tokens=False)["input_ids"]
        state = compile_json_schema(schema.generation_schema(), tokenizer).start()
        logits = torch.zeros(1, len(tokenizer))
        started = time.perf_counter()
        for token in ids:
            state.mask(logits.clone())
            state.advance(token)
        timings.append((time.perf_counter() - started) * 1000 / len(ids))
    return {"ms_per_token": statistics.median(timings), "answers": len(timings)}


def copy_ceiling(gold: Path, limit: int | None) -> dict:
    """No model: the share of gold fields some candidate span (or null) of the copy constraint
    normalizes to, i.e. the best field accuracy an extractor choosing among the spans can get; the
    mean number of spans per field; and the classifier's kind accuracy (minilm-l6 centroids)."""
    from slmkit.docs.classify import classify_pages
    from slmkit.docs.evaluate import read_gold
    from slmkit.docs.extract import document_candidates
    from slmkit.docs.normalize import normalize, same_value
    from slmkit.docs.pdf import read_pages
    from slmkit.docs.schemas import load_schema
    from slmkit.embeddings import load_embedding_model

    embedder = load_embedding_model("minilm-l6", threads=2)
    reachable, total, spans_seen, kinds_right, items = {}, {}, [], 0, read_gold(gold)[:limit]
    for item in items:
        pages, schema = read_pages(item["path"]), load_schema(item["kind"])
        kinds_right += classify_pages(pages, None, embedder=embedder)["kind"] == item["kind"]
        spans = document_candidates(pages, schema)
        for field in schema.fields:
            want = item["fields"].get(field.name)
            options = field.choices if field.choices else spans[field.name]
            spans_seen += [len(options)] if options is not None else []
            kind = field.kind if field.kind != "choice" else "text"
            hit = want is None or options is None or any(  # free text (None) can write anything
                same_value(field.kind, normalize(kind, o) if isinstance(o, str) else o, want) for o in options)
            for key in (item["kind"], "*"):
                total[key] = total.get(key, 0) + 1
                reachable[key] = reachable.get(key, 0) + hit
    return {"documents": len(items), "ceiling": {k: reachable[k] / total[k] for k in total},
            "spans_per_field": statistics.mean(spans_seen), "kind_accuracy": kinds_right / len(items)}


FREE_PROMPT = ("Summarize this document in one or two sentences. Name the parties (who sent it, who it is for) "
               "and say what it is about.")


def summary_rows(gold: Path, limit: int | None, model: str) -> dict:
    """Per row: mean party and subject coverage and words, over the gold documents that give a
    ``subject`` (written by examples/docs/build_data.py)."""
    from slmkit.docs.evaluate import read_gold
    from slmkit.docs.pdf import read_pages
    from slmkit.docs.summarize import coverage, lead_summary, summarize_pages
    from slmkit.embeddings import load_embedding_model
    from slmkit.engine import GenerationRequest, load_engine
    from slmkit.generate import collect

    items = [item for item in read_gold(gold)[:limit] if "subject" in item]
    if not items:
        raise SystemExit(f"{gold} has no subjects: rebuild it with examples/docs/build_data.py")
    engine, embedder = load_engine(model, threads=2), load_embedding_model("minilm-l6")
    scores, examples, seconds = {"lead": [], "free": [], "slmkit": []}, [], {"free": 0.0, "slmkit": 0.0}
    for item in items:
        pages = read_pages(item["path"])
        started = time.perf_counter()
        ours = summarize_pages(pages, engine, embedder)["summary"]
        seconds["slmkit"] += time.perf_counter() - started
        started = time.perf_counter()
        document = "\n\n".join(pages)[:6000]
        free = collect(engine.stream(GenerationRequest(
            messages=[{"role": "user", "content": f'{FREE_PROMPT}\n\nDocument:\n"""\n{document}\n"""'}],
            max_new_tokens=80))).text.strip()
        seconds["free"] += time.perf_counter() - started
        lead = lead_summary(pages, len(ours.split()))
        for row, text in (("lead", lead), ("free", free), ("slmkit", ours)):
            scores[row].append(coverage(text, item["parties"], item["subject"]))
        examples.append({"file": item["file"], "slmkit": ours, "free": free, "lead": lead})
        print(f"{item['file']}: {ours}", flush=True)
    engine.close()
    mean = lambda row, key: statistics.mean(s[key] for s in scores[row])  # noqa: E731
    return {"documents": len(items), "model": model, "examples": examples,
            "rows": {row: {"parties": mean(row, "parties"), "subject": mean(row, "subject"), "words": mean(row, "words"),
                           "seconds": seconds.get(row, 0.0) / len(items)} for row in scores}}


def subject_choice(gold: Path, limit: int | None) -> dict:
    """Subject words present in the chosen subject sentence alone (no model): the most central
    sentence vs the document's stated subject first — how the subject rule was chosen, on ``dev``."""
    from slmkit.docs.evaluate import read_gold
    from slmkit.docs.pdf import read_pages
    from slmkit.docs.summarize import combine, coverage, gists, split_sections, stated_subject
    from slmkit.embeddings import load_embedding_model

    embedder, scores = load_embedding_model("minilm-l6"), {"central": [], "stated-first": []}
    for item in read_gold(gold)[:limit]:
        pages = read_pages(item["path"])
        central = combine(gists(split_sections(pages), embedder))[0]
        for rule, subject in (("central", central), ("stated-first", stated_subject(pages) or central)):
            scores[rule].append(coverage(subject, [], item["subject"])["subject"])
    return {rule: statistics.mean(values) for rule, values in scores.items()}


def print_summary_table(result: dict) -> None:
    labels = {"lead": "lead baseline (first words, same length)", "free": f"{result['model']} writes it (peer)",
              "slmkit": f"slm docs summarize ({result['model']} extraction + chosen sentences)"}
    print(f"\nSummaries ({result['documents']} documents):\n")
    print("| summary | party names present | subject words present | words | s/document |\n|---|---:|---:|---:|---:|")
    for row, r in result["rows"].items():
        seconds = f"{r['seconds']:.1f}" if r["seconds"] else "–"
        print(f"| {labels[row]} | {r['parties']:.3f} | {r['subject']:.3f} | {r['words']:.1f} | {seconds} |")


def print_tables(results: dict, base: str, tuned: str) -> None:
    rows = [(row_label(row, base, tuned), results[row]) for row in ROWS if row in results]
    print("| extractor | field accuracy | invoice | contract | ticket | kind accuracy | model answer schema-valid "
          "| result schema-valid | s/page |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        kinds = " | ".join(f"{r['accuracy_by_kind'].get(k, 0):.3f}" for k in ("invoice", "contract", "ticket"))
        kind = f"{r['kind_accuracy']:.3f}" if r["kind_accuracy"] is not None else "–"
        answer = f"{r['answer_valid']:.3f}" if r.get("answer_valid") is not None else "–"
        print(f"| {label} | {r['field_accuracy']:.3f} | {kinds} | {kind} | {answer} | {r['schema_valid']:.3f} | "
              f"{r['seconds_per_page']:.2f} |")
    print("\n| field | " + " | ".join(label for label, _ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for name in rows[0][1]["accuracy_by_field"]:
        print(f"| {name} | " + " | ".join(f"{r['accuracy_by_field'].get(name, 0):.3f}" for _, r in rows) + " |")
    if "speed" in results:
        speed = results["speed"]
        ratio = speed["constrained"] / speed["plain"]
        print(f"\nConstrained decoding cost ({speed['model']}, {speed['runs']} dev prompts, median {speed['tokens']} "
              "tokens each, plain and constrained alternating):\n")
        print("| decoding | decode tok/s (median) | ratio |\n|---|---:|---:|")
        print(f"| plain | {speed['plain']:.1f} | 1.00x |")
        print(f"| JSON-schema constrained | {speed['constrained']:.1f} | {ratio:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/example-docs/data"))
    parser.add_argument("--split", default="heldout")
    parser.add_argument("--limit", type=int, default=None, help="score the first N documents only")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--speed", action="store_true", help="also measure the constrained decoding cost")
    parser.add_argument("--mask-cost", action="store_true", help="only measure the grammar's own cost per token")
    parser.add_argument("--summaries", action="store_true", help="only score summaries (slm docs summarize vs peers)")
    parser.add_argument("--subjects", action="store_true", help="only compare subject rules (no model; use on dev)")
    parser.add_argument("--ceiling", action="store_true", help="only the copy constraint's ceiling and kind accuracy "
                                                               "(no language model)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    os.environ.setdefault("SLM_HOME", str(Path("build/example-docs/home").resolve()))
    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    gold = args.data / args.split / "gold.jsonl"
    if args.mask_cost:
        cost = mask_cost(args.base, args.data / "dev" / "gold.jsonl", args.rounds)
        print(f"grammar mask + advance: {cost['ms_per_token']:.3f} ms per token (median of {cost['answers']} answers)")
        return
    if args.ceiling:
        result = copy_ceiling(gold, args.limit)
        print(f"{result['documents']} documents of {gold}: kind accuracy {result['kind_accuracy']:.3f}, "
              f"{result['spans_per_field']:.1f} spans per field, copy-constraint ceiling "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(result["ceiling"].items())))
        return
    if args.subjects:
        for rule, value in subject_choice(gold, args.limit).items():
            print(f"{rule}: subject words present {value:.3f}")
        return
    if args.summaries:
        store = args.data / f"summaries-{args.split}-{args.limit or 'all'}.json"
        if not store.exists():
            store.write_text(json.dumps(summary_rows(gold, args.limit, args.base), indent=1))
        print_summary_table(json.loads(store.read_text()))
        return
    # Another specialist (e.g. its GGUF export, --model docs-extractor-f16) keeps its rows apart.
    model = f"-{args.model}" if args.model != DEFAULT_MODEL else ""
    store = args.data / f"bench-{args.split}-{args.limit or 'all'}{model}.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for row in args.rows.split(","):
        if row not in ROWS:
            raise SystemExit(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
        if row not in results:
            results[row] = score_row(row, gold, args.limit, args.base, args.model)
            store.write_text(json.dumps(results, indent=1))
            print(f"{row}: field accuracy {results[row]['field_accuracy']:.3f} ({results[row]['minutes']:.1f} min)",
                  flush=True)
    if args.speed and "speed" not in results:
        results["speed"] = {**constraint_speed(args.model, args.data / "dev" / "gold.jsonl", args.rounds, args.tokens),
                            "model": args.model}
        store.write_text(json.dumps(results, indent=1))
    documents = next(r["documents"] for k, r in results.items() if k != "speed")
    print(f"\n{documents} documents of {gold} ({args.split} layouts)\n")
    print_tables(results, args.base, args.model)


if __name__ == "__main__":
    main()
