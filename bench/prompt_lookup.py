"""Prompt-lookup decoding on grounded answers (run by `make bench`).

Answers questions about passages of Python's own documentation (pydoc_data) with
SmolLM2-135M-Instruct, greedy, with and without prompt-lookup drafting, alternating the two
so both see the same machine load. Prints latency, decode tok/s, acceptance and whether the
outputs are identical.
"""

from __future__ import annotations

import os
import statistics
import time
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


def main():
    # The PyTorch scheduler: on llama.cpp (the default since issue 19) prompt lookup is opt-in.
    engine = load_engine(MODEL, backend=os.environ.get("SLM_BENCH_BACKEND", "torch"),
                         **({"prompt_lookup": True} if os.environ.get("SLM_BENCH_BACKEND") == "llamacpp" else {}))
    rows = []
    for topic in TOPICS:
        plain = collect(engine.stream(request(topic, 0)))
        fast = collect(engine.stream(request(topic, DRAFT_TOKENS)))
        rows.append((topic, plain, fast))
    identical = sum(p.token_ids == f.token_ids for _, p, f in rows)
    plain_s = statistics.median(p.stats.total_s for _, p, _ in rows)
    fast_s = statistics.median(f.stats.total_s for _, _, f in rows)
    plain_tps = statistics.median(p.stats.decode_tokens_per_s for _, p, _ in rows)
    fast_tps = statistics.median(f.stats.decode_tokens_per_s for _, _, f in rows)
    drafted = sum(f.stats.draft_tokens for _, _, f in rows)
    accepted = sum(f.stats.accepted_draft_tokens for _, _, f in rows)
    print(f"model {MODEL}, {len(rows)} grounded questions on pydoc_data passages, greedy, "
          f"{os.cpu_count()} CPU cores\n")
    print("| decoding | median answer latency (s) | median decode tok/s | identical outputs |")
    print("|---|---|---|---|")
    print(f"| plain greedy | {plain_s:.2f} | {plain_tps:.1f} | - |")
    print(f"| prompt lookup ({DRAFT_TOKENS} draft tokens) | {fast_s:.2f} | {fast_tps:.1f} | {identical}/{len(rows)} |")
    print(f"\nspeed-up {plain_s / fast_s:.2f}x in latency; {accepted}/{drafted} drafted tokens accepted "
          f"({100 * accepted / max(drafted, 1):.0f}%)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n(ran in {time.perf_counter() - started:.0f} s)")
