"""``slm router eval``: how well a router sends prompts to the right specialist.

Accuracy counts the final decision (the fallback when the router is unsure), which is what a
server does; ``classifier_accuracy`` is the classifier's best route without the threshold.
Decision time is measured one prompt at a time (as a server sees them) after one warm-up call,
as wall time and as the process's CPU time (which a busy machine inflates far less; on an idle
machine with 2 cores wall time is at most about the CPU time).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from slmkit.router.model import Router
from slmkit.router.routes import RouteExample


def evaluate_router(router: Router, examples: Sequence[RouteExample]) -> dict:
    """Accuracy, per-route precision/recall, the confusion matrix and decision time p50/p95."""
    router.decide(examples[0].prompt)  # warm-up: first-call allocations are not a decision's cost
    decisions, cpu_ms = [], []
    for example in examples:
        started = time.process_time()
        decisions.append(router.decide(example.prompt))
        cpu_ms.append((time.process_time() - started) * 1000)
    truth = [e.route for e in examples]
    chosen = [d.route for d in decisions]
    labels = list(dict.fromkeys([*router.routes, router.fallback, *truth]))
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=int)  # rows: true route, columns: chosen route
    for t, c in zip(truth, chosen, strict=True):
        confusion[index[t], index[c]] += 1
    per_route = {}
    for label, i in index.items():
        chosen_as, actual = int(confusion[:, i].sum()), int(confusion[i, :].sum())
        if chosen_as == 0 and actual == 0:
            continue
        per_route[label] = {"precision": float(confusion[i, i] / chosen_as) if chosen_as else None,
                            "recall": float(confusion[i, i] / actual) if actual else None, "support": actual}
    milliseconds = np.array([d.seconds * 1000 for d in decisions])
    return {
        "router": router.name, "examples": len(examples),
        "accuracy": float(np.mean([t == c for t, c in zip(truth, chosen, strict=True)])),
        "classifier_accuracy": float(np.mean([t == d.predicted for t, d in zip(truth, decisions, strict=True)])),
        "fallback_rate": float(np.mean([d.fell_back for d in decisions])), "threshold": router.threshold,
        "per_route": per_route, "labels": labels, "confusion": confusion.tolist(),
        "decision_ms_p50": float(np.percentile(milliseconds, 50)),
        "decision_ms_p95": float(np.percentile(milliseconds, 95)),
        "decision_cpu_ms_p50": float(np.percentile(cpu_ms, 50)), "decision_cpu_ms_p95": float(np.percentile(cpu_ms, 95)),
        "mistakes": [{"prompt": e.prompt[:200], "route": e.route, "chosen": d.route, "confidence": round(d.confidence, 3)}
                     for e, d in zip(examples, decisions, strict=True) if e.route != d.route],
    }
