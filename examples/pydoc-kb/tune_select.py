"""Choose the settings of ``--mode select`` on the TUNING set (the pydoc QA file) only.

For every answerable pydoc question: retrieve as the bot does, take the retrieved sentences
closest to the question, score each by the model's question likelihood (one forward pass each),
then compare, without re-running the model, how many answers contain all the keywords for
each candidate count, likelihood/embedding mix and number of answer sentences. Prints a markdown
table; the chosen values are the constants of ``slmkit/kb/select.py``.

Never run this on the held-out set (``examples/manuals-kb``).

Usage: ``python examples/pydoc-kb/tune_select.py pydoc examples/pydoc-kb/qa.jsonl [MODEL]``
(the knowledge base must be ingested: ``make example-kb``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from slmkit.engine import load_engine
from slmkit.kb import select
from slmkit.kb.answer import CONTEXT_CHUNKS, sanitize, scored_sentences
from slmkit.kb.evaluate import keywords_present, read_qa
from slmkit.kb.retrieve import default_embedder, search

MAX_CANDIDATES = 6
WEIGHTS = (0.0, 0.5, 1.0, 2.0, float("inf"))  # inf: embedding similarity only (no model)


def main(kb: str, qa_path: Path, model: str = "smollm2-135m") -> None:
    engine = load_engine(model)
    embedder = default_embedder()
    scored = []  # per question: (keywords, candidates in embedding order with likelihoods)
    for item in [i for i in read_qa(qa_path) if i.answerable]:
        hits = search(kb, item.question, k=5, embedder=embedder)[:CONTEXT_CHUNKS]
        sentences, similarities = scored_sentences(item.question, hits, embedder)
        order = sorted(range(len(sentences)), key=lambda i: -similarities[i])[:MAX_CANDIDATES]
        candidates = [select.Candidate(sentences[i][0], sanitize(select.shorten(sentences[i][1])),
                                       float(similarities[i])) for i in order]
        for candidate in candidates:
            candidate.likelihood = select.question_likelihood(engine, item.question, candidate.text)
        scored.append((item.answer_keywords, candidates))
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print("| candidates | embedding weight | answer sentences | correct | accuracy |")
    print("|---:|---:|---:|---:|---:|")
    for count in (3, 6):
        for weight in WEIGHTS:
            for sentences in (1, 2):
                correct = 0
                for keywords, candidates in scored:
                    pool = [select.Candidate(c.source, c.text, c.similarity, c.likelihood) for c in candidates[:count]]
                    if weight == float("inf"):
                        ranked = pool
                    else:
                        for c, s in zip(pool, select.standardize([c.likelihood for c in pool])
                                        + weight * select.standardize([c.similarity for c in pool]), strict=True):
                            c.score = float(s)
                        ranked = sorted(pool, key=lambda c: -c.score)
                    correct += keywords_present(select.format_answer(ranked[:sentences]), keywords)
                print(f"| {count} | {weight} | {sentences} | {correct} / {len(scored)} | {correct / len(scored):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:4])
