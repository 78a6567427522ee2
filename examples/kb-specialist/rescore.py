"""Metrics of `slm kb eval --details` files at the support bot's current thresholds, and the plot.

`slm kb eval` answers every question and applies the abstention threshold afterwards, so a
details file can be re-scored at another threshold without running a model: this is how the
held-out rows were scored at the threshold the rule chose on the tuning set when the two sets
were evaluated in separate processes. Prints one markdown row per (set, mode, model).

Usage: ``python examples/kb-specialist/rescore.py DETAILS.jsonl [...] [--plot docs/img/kb-threshold.png]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    from slmkit.kb.answer import ABSTAIN_BELOW
    from slmkit.kb.calibrate import choose_threshold, plot_sweep, rates
    from slmkit.kb.evaluate import EvalReport, QAResult, apply_threshold

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("details", nargs="+", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--recompute-coverage", action="store_true",
                        help="recompute key-term coverage and the score with the current rules (needs the knowledge bases)")
    args = parser.parse_args()
    fields = {f.name for f in dataclasses.fields(QAResult)}
    groups: dict[tuple, list[QAResult]] = defaultdict(list)
    for path in args.details:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            model = row.get("model") or ("quote (no model)" if row["mode"] == "quote" else "smollm2-135m")
            groups[(row["kb"], row["mode"], model)].append(QAResult(**{k: v for k, v in row.items() if k in fields}))
    if args.recompute_coverage:
        from slmkit.kb import answer
        from slmkit.kb.retrieve import default_embedder, search

        embedder = default_embedder()
        for (kb, mode, _), results in groups.items():
            for r in results:
                if mode != "specialist":
                    hits = search(kb, r.question, k=5, embedder=embedder)[:answer.CONTEXT_CHUNKS]
                    r.coverage = answer.term_coverage(r.question, [f"{h.section} {h.text}" for h in hits])
                    r.confidence = answer.abstention_score(mode, r.similarity, r.coverage)
    print("| set | mode | model | threshold | answer accuracy | abstention | false abstention | p50 / p95 s | rule on this set |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    reports = []
    for (kb, mode, model), results in groups.items():
        threshold = ABSTAIN_BELOW[mode]
        applied = apply_threshold(results, threshold)
        accuracy, abstention, false_abstention = rates(applied)
        latencies = [r.latency_s for r in applied]
        p50, p95 = np.percentile(latencies, 50), np.percentile(latencies, 95)
        print(f"| {kb} | {mode} | {model} | {threshold:.2f} | {accuracy:.3f} | {abstention:.3f} | {false_abstention:.3f} "
              f"| {p50:.2f} / {p95:.2f} | {choose_threshold(results):.2f} |")
        reports.append(EvalReport(kb, model, len(results), 0, 0, 0.0, 0.0, accuracy, abstention, false_abstention,
                                  float(p50), float(p95), results, threshold=threshold, mode=mode))
    if args.plot:
        plot_sweep(reports, args.plot)


if __name__ == "__main__":
    main()
