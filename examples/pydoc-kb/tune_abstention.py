"""Choose the abstention score's key-term weight on the TUNING set (pydoc) only.

The score of the ``generate``, ``select`` and ``quote`` modes is the retrieval similarity scaled by
``1 - w + w * coverage`` (``kb.answer.abstention_score``; coverage is the share of the question's
key terms found in the retrieved text). For each weight ``w`` this reads one ``slm kb eval
--details`` file of the tuning set, applies the calibration rule of ``kb.calibrate`` (Youden's J,
middle of the tied range) and prints abstention and false abstention at the chosen threshold.
The weight with the best J wins; on a tie the smallest weight (the least change to similarity).

Usage::

    slm kb eval pydoc examples/pydoc-kb/qa.jsonl --mode quote --details build/kb-eval/pydoc-quote.jsonl
    python examples/pydoc-kb/tune_abstention.py build/kb-eval/pydoc-quote.jsonl
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main(details: Path) -> None:
    from slmkit.kb import answer
    from slmkit.kb.calibrate import choose_threshold, rates
    from slmkit.kb.evaluate import QAResult, apply_threshold

    fields = {f.name for f in dataclasses.fields(QAResult)}
    rows = [json.loads(line) for line in details.read_text(encoding="utf-8").splitlines() if line.strip()]
    results = [QAResult(**{k: v for k, v in row.items() if k in fields}) for row in rows]
    # Coverage is recomputed with the current key-term rules (the details may predate them).
    from slmkit.kb.retrieve import default_embedder, search

    embedder = default_embedder()
    for row, result in zip(rows, results, strict=True):
        hits = search(row["kb"], result.question, k=5, embedder=embedder)[:answer.CONTEXT_CHUNKS]
        result.coverage = answer.term_coverage(result.question, [f"{h.section} {h.text}" for h in hits])
    print("| key-term weight w | threshold (rule) | abstention | false abstention | J | answer accuracy |")
    print("|---:|---:|---:|---:|---:|---:|")
    best = None
    for weight in WEIGHTS:
        scored = [dataclasses.replace(r, confidence=r.similarity * (1 - weight + weight * r.coverage)) for r in results]
        threshold = choose_threshold(scored)
        accuracy, abstention, false_abstention = rates(apply_threshold(scored, threshold))
        j = abstention - false_abstention
        print(f"| {weight} | {threshold:.3f} | {abstention:.3f} | {false_abstention:.3f} | {j:.3f} | {accuracy:.3f} |")
        if best is None or j > best[0] + 1e-12:
            best = (j, weight, threshold)
    print(f"\nchosen: w = {best[1]}, threshold {best[2]:.3f} (in kb/answer.py: COVERAGE_WEIGHT = "
          f"{answer.COVERAGE_WEIGHT}, ABSTAIN_BELOW = {answer.ABSTAIN_BELOW})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
