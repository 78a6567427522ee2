"""Shared-prefix candidate scoring for the support bot's `specialist` and `select` modes.

For questions of the pydoc tuning set (``examples/pydoc-kb/qa.jsonl``, knowledge base ``pydoc``
ingested), builds exactly what each mode scores (the specialist's chat prompt and its 4
candidate answers plus the abstention message; select's 3 "Text: SENTENCE / Question: ..."
sequences) and times the model scoring them two ways, alternating so both see the same machine
load: one ``token_logprobs`` pass per candidate (the peer, what the modes did before) and one
``continuation_logprobs`` call (prompt computed once). Prints a markdown table with the median
per question, the ratio, and the largest score difference between the two.

Usage: python bench/kb_scoring.py [--questions 12] [--backend torch|llamacpp]
(the specialist ``smollm2-135m-kb`` must be in the store: ``make example-kb-specialist``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from slmkit.engine import load_engine
from slmkit.kb import select, specialist
from slmkit.kb.answer import CONTEXT_CHUNKS, IDK_MESSAGE, scored_sentences
from slmkit.kb.retrieve import default_embedder, search

QA = Path(__file__).parent.parent / "examples" / "pydoc-kb" / "qa.jsonl"


class PerCandidate:
    """The engine without ``continuation_logprobs``: every candidate scored alone (the peer)."""

    def __init__(self, engine):
        self.engine, self.tokenizer, self.context_length = engine, engine.tokenizer, engine.context_length

    def tokenize(self, text):
        return self.engine.tokenize(text)

    def token_logprobs(self, token_ids):
        return self.engine.token_logprobs(token_ids)


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args()
    embedder = default_embedder()
    questions = [json.loads(line)["question"] for line in QA.read_text().splitlines() if line.strip()]
    questions = questions[:: max(1, len(questions) // args.questions)][: args.questions]
    rows = []
    for mode, model in (("specialist", specialist.SPECIALIST_NAME), ("select", "smollm2-135m")):
        engine = load_engine(model, backend=args.backend)
        peer = PerCandidate(engine)
        shared_s, alone_s, differences, prompt_tokens = [], [], [], []
        for question in questions:
            hits = search("pydoc", question, k=5, embedder=embedder)[:CONTEXT_CHUNKS]
            if mode == "specialist":
                candidates = specialist.candidate_sentences("pydoc", question, embedder, hits=hits)
                messages = specialist.specialist_messages(question, candidates)
                options = [f"{c.text} [{c.source + 1}]" for c in candidates] + [IDK_MESSAGE]
                prompt = engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                prompt_tokens.append(len(engine.tokenize(prompt)))
                score = lambda e: specialist.completion_logprobs(e, messages, options)  # noqa: B023, E731
            else:
                sentences, similarities = scored_sentences(question, hits, embedder)
                order = sorted(range(len(sentences)), key=lambda i: -similarities[i])[: select.CANDIDATES]
                texts = [select.shorten(sentences[i][1]) for i in order]
                prompt_tokens.append(2)  # "Text:" is all the candidates share
                score = lambda e: select.question_likelihoods(e, question, texts)  # noqa: B023, E731
            score(engine)  # warm-up
            for _ in range(2):  # alternate, so both see the same load
                took, alone = timed(lambda: score(peer))  # noqa: B023
                alone_s.append(took)
                took, shared = timed(lambda: score(engine))  # noqa: B023
                shared_s.append(took)
                differences.append(float(np.max(np.abs(np.subtract(alone, shared)))))
        engine.close()
        rows.append((mode, model, statistics.median(prompt_tokens), statistics.median(alone_s),
                     statistics.median(shared_s), max(differences)))
    print(f"| mode | model ({args.backend}) | shared prompt tokens (median) | one pass per candidate (s) "
          "| shared prefix (s) | ratio | largest score difference |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode, model, tokens, alone, shared, difference in rows:
        print(f"| {mode} | {model} | {tokens:.0f} | {alone:.3f} | {shared:.3f} | {alone / shared:.2f}x | {difference:.1e} |")
    print(f"\n{len(questions)} questions of {QA.name} (tuning set), median seconds per question.")


if __name__ == "__main__":
    main()
