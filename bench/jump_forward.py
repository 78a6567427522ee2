"""Jump-forward on `slm docs extract`'s copy-constrained request (run by `make bench`).

The extraction schema makes most answer tokens forced: the keys and punctuation, and the rest of
a value once its first tokens single out one document span. On llama.cpp those are fed together
with the next sampled token instead of one decode step each. This runs the same greedy requests
on two engines over the same GGUF, one with jump-forward off (one step per token, as before) and
one with it on, alternating document by document so both see the same machine; prints latency,
the share of forced tokens and whether the outputs are identical.

Documents are synthetic ones of the *tuning* layouts (the held-out layouts stay for accuracy).

    python bench/jump_forward.py [--count N] [--model NAME]
    (SLM_HOME=build/example-docs/home python bench/jump_forward.py --model docs-extractor: the specialist)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from prompt_lookup import extraction_requests  # noqa: E402

from slmkit.engine import load_engine  # noqa: E402
from slmkit.generate import collect  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12, help="documents")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    stepped = load_engine(args.model, backend="llamacpp", prefix_cache_tokens=0, jump_forward=False)
    jumped = load_engine(args.model, backend="llamacpp", prefix_cache_tokens=0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, make in enumerate(extraction_requests(args.count, Path(scratch), "dev")):
            request = make(0)  # as `slm docs extract` sends it (logprobs on, for its confidences)
            pair = [None, None]
            for which in ((0, 1) if index % 2 else (1, 0)):  # alternate which goes first
                pair[which] = collect((stepped, jumped)[which].stream(request))
            rows.append(pair)
    for engine in (stepped, jumped):
        engine.close()
    identical = sum(a.token_ids == b.token_ids for a, b in rows)
    plain_s = statistics.median(a.stats.total_s for a, _ in rows)
    fast_s = statistics.median(b.stats.total_s for _, b in rows)
    forced = sum(lp is None for _, b in rows for lp in b.logprobs)
    tokens = sum(len(b.token_ids) for _, b in rows)
    print(f"model {args.model} ({stepped.path.parent.name}/{stepped.path.name}) on llama.cpp, {len(rows)} "
          f"constrained extractions of tuning-layout documents, greedy, load average {os.getloadavg()[0]:.1f}\n")
    print("| decoding | median latency (s) | identical outputs |\n|---|---|---|")
    print(f"| one step per token | {plain_s:.2f} | - |")
    print(f"| jump-forward | {fast_s:.2f} | {identical}/{len(rows)} |")
    print(f"\nspeed-up {plain_s / fast_s:.2f}x in latency; {forced}/{tokens} answer tokens forced "
          f"({100 * forced / max(tokens, 1):.0f}%), fed without a step of their own")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n(ran in {time.perf_counter() - started:.0f} s)")
