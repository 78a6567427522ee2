"""Prompt-lookup decoding on copy-heavy tasks (run by `make bench`).

SmolLM2-135M-Instruct, greedy, with and without prompt-lookup drafting, alternating the two so
both see the same machine load; prints latency, decode tok/s, acceptance and whether the outputs
are identical. Tasks:
- ``qa`` (default): grounded answers about passages of Python's own documentation (pydoc_data);
- ``extract``: `slm docs extract`'s constrained JSON answer on synthetic invoices, contracts and
  tickets of the held-out layouts (the values are copied from the document).

    python bench/prompt_lookup.py [--task qa|extract] [--count N]
    SLM_BENCH_BACKEND=llamacpp python bench/prompt_lookup.py --task extract
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from pydoc_data.topics import topics

from slmkit.engine import GenerationRequest, load_engine
from slmkit.generate import collect

MODEL = os.environ.get("SLM_BENCH_MODEL", "smollm2-135m")
TOPICS = ["assert", "break", "continue", "del", "global", "pass", "return", "yield", "import", "with"]
DRAFT_TOKENS = 6


def request(topic: str, lookup: int) -> GenerationRequest:
    passage = " ".join(topics[topic].split())[:900]
    messages = [{"role": "system", "content": "Answer using the text. Quote it where you can."},
                {"role": "user", "content": f"Text: {passage}\n\nQuestion: What does the {topic} statement do?"}]
    return GenerationRequest(messages=messages, max_new_tokens=96, prompt_lookup_tokens=lookup)


def extraction_requests(count: int, folder: Path, split: str) -> list:
    """(prompt-lookup tokens -> request) makers for `slm docs extract`'s constrained answer on
    ``count`` synthetic documents of the held-out layouts (``split="heldout"``) or of the
    tuning layouts (``"dev"``, the documents the draft length is chosen on)."""
    from slmkit.docs.extract import build_request
    from slmkit.docs.pdf import read_pages
    from slmkit.docs.schemas import load_schema
    from slmkit.docs.synthetic import HELDOUT_LAYOUTS, TUNE_LAYOUTS, make_documents, write_pdf

    makers = []
    layouts, seed = (HELDOUT_LAYOUTS, 3) if split == "heldout" else (TUNE_LAYOUTS, 2)  # examples/docs' seeds
    for index, document in enumerate(make_documents(count, layouts, seed)):
        path = folder / f"{index}-{document.kind}.pdf"
        write_pdf(document, path)
        schema = load_schema(document.kind)
        pages = read_pages(path, isolated=False)
        # The request `slm docs extract` sends (each string field one of the document's spans).
        makers.append(lambda lookup, p=pages, s=schema: build_request(p, s, 256, prompt_lookup_tokens=lookup))
    return makers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("qa", "extract"), default="qa")
    parser.add_argument("--count", type=int, default=10, help="documents or questions")
    parser.add_argument("--split", choices=("heldout", "dev"), default="heldout", help="extract: which layouts")
    parser.add_argument("--draft", type=int, default=DRAFT_TOKENS, help="draft tokens per step")
    args = parser.parse_args()
    # The PyTorch scheduler: on llama.cpp (the default since issue 19) prompt lookup is opt-in.
    engine = load_engine(MODEL, backend=os.environ.get("SLM_BENCH_BACKEND", "torch"),
                         **({"prompt_lookup": True} if os.environ.get("SLM_BENCH_BACKEND") == "llamacpp" else {}))
    with tempfile.TemporaryDirectory() as scratch:
        if args.task == "extract":
            makers = extraction_requests(args.count, Path(scratch), args.split)
        else:
            makers = [lambda lookup, t=topic: request(t, lookup) for topic in TOPICS[: args.count]]
        rows = []
        for make in makers:
            plain = collect(engine.stream(make(0)))
            fast = collect(engine.stream(make(args.draft)))
            rows.append((make, plain, fast))
    identical = sum(p.token_ids == f.token_ids for _, p, f in rows)
    plain_s = statistics.median(p.stats.total_s for _, p, _ in rows)
    fast_s = statistics.median(f.stats.total_s for _, _, f in rows)
    plain_tps = statistics.median(p.stats.decode_tokens_per_s for _, p, _ in rows)
    fast_tps = statistics.median(f.stats.decode_tokens_per_s for _, _, f in rows)
    drafted = sum(f.stats.draft_tokens for _, _, f in rows)
    accepted = sum(f.stats.accepted_draft_tokens for _, _, f in rows)
    task = ("constrained extractions of held-out synthetic documents" if args.task == "extract"
            else "grounded questions on pydoc_data passages")
    print(f"model {MODEL} on {type(engine).__name__}, "
          f"{len(rows)} {task}, greedy, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}\n")
    print("| decoding | median answer latency (s) | median decode tok/s | identical outputs |")
    print("|---|---|---|---|")
    print(f"| plain greedy | {plain_s:.2f} | {plain_tps:.1f} | - |")
    print(f"| prompt lookup ({args.draft} draft tokens) | {fast_s:.2f} | {fast_tps:.1f} | {identical}/{len(rows)} |")
    print(f"\nspeed-up {plain_s / fast_s:.2f}x in latency; {accepted}/{drafted} drafted tokens accepted "
          f"({100 * accepted / max(drafted, 1):.0f}%)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n(ran in {time.perf_counter() - started:.0f} s)")
