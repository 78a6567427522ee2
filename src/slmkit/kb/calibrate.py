"""Abstention calibration: sweep the threshold on the retrieval confidence and choose it by a fixed rule.

The support bot abstains when its one score for the answer mode (``Answer.score``: retrieval
similarity times key-term coverage, or the specialist's margin over abstaining) is below a
threshold. :func:`sweep` recomputes
answer accuracy, abstention and false abstention of an evaluation at every threshold (answers do
not change with the threshold, only which of them are replaced by "I don't know"), and
:func:`choose_threshold` picks one by the documented rule:

    maximize abstention on unanswerable questions minus false abstention on answerable ones
    (Youden's J); when several thresholds tie, take the middle one of the tied range, so the
    threshold sits as far as possible from the questions on either side.

The rule is applied to the tuning set only; the held-out set reports what that threshold gives.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from slmkit.kb.evaluate import EvalReport, QAResult, apply_threshold

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0001, 0.01))


@dataclasses.dataclass
class SweepPoint:
    threshold: float
    answer_accuracy: float  # on answerable questions: answered (not abstained) and correct
    abstention_rate: float  # on unanswerable questions
    false_abstention_rate: float  # on answerable questions


def rates(results: list[QAResult]) -> tuple[float, float, float]:
    """(answer accuracy, abstention, false abstention) of results whose threshold is applied."""
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]

    def mean(values: list[bool]) -> float:
        return float(np.mean(values)) if values else 0.0

    return (mean([bool(r.correct) for r in answerable]), mean([r.abstained for r in unanswerable]),
            mean([r.abstained for r in answerable]))


def grid(results: list[QAResult]) -> tuple[float, ...]:
    """Thresholds to sweep: 0 to 1 by 0.01 for scores in that range (similarities), else 201
    points over the scores' range rounded out to whole numbers (the specialist's margin, nats)."""
    scores = [r.confidence for r in results if np.isfinite(r.confidence)]
    if not scores or (min(scores) >= 0.0 and max(scores) <= 1.0):
        return THRESHOLDS
    low, high = np.floor(min(scores)), np.ceil(max(scores)) + 1e-9
    return tuple(round(float(t), 3) for t in np.linspace(low, high, 201))


def sweep(results: list[QAResult], thresholds: tuple[float, ...] | None = None) -> list[SweepPoint]:
    """The metrics at every threshold, from one evaluation's results."""
    return [SweepPoint(t, *rates(apply_threshold(results, t))) for t in thresholds or grid(results)]


def choose_threshold(results: list[QAResult], thresholds: tuple[float, ...] | None = None) -> float:
    """The threshold the rule picks (see the module docstring) on these results."""
    points = sweep(results, thresholds)
    scores = [p.abstention_rate - p.false_abstention_rate for p in points]
    best = max(scores)
    tied = [p.threshold for p, s in zip(points, scores, strict=True) if s >= best - 1e-12]
    return tied[len(tied) // 2] if len(tied) % 2 else round((tied[len(tied) // 2 - 1] + tied[len(tied) // 2]) / 2, 3)


def plot_sweep(reports: list[EvalReport], path: Path) -> Path:
    """Write a PNG with, per report, answer accuracy, abstention and false abstention against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(reports))
    rows = -(-len(reports) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False, sharey=True)
    # each panel has its own score scale (similarity-based or the specialist's margin), so x is not shared
    for axis in axes.flat[len(reports):]:
        axis.set_visible(False)
    for axis, report in zip(axes.flat, reports, strict=False):
        points = sweep(report.results)
        x = [p.threshold for p in points]
        axis.plot(x, [p.answer_accuracy for p in points], label="answer accuracy")
        axis.plot(x, [p.abstention_rate for p in points], label="abstention (unanswerable)")
        axis.plot(x, [p.false_abstention_rate for p in points], label="false abstention (answerable)", linestyle="--")
        axis.axvline(report.threshold, color="grey", linewidth=1)
        axis.set_title(f"{report.kb} ({report.mode}, {report.model})", fontsize=9)
        axis.set_xlabel("abstention threshold (specialist margin, nats)" if report.mode == "specialist"
                        else "abstention threshold (similarity × key-term coverage)")
        axis.set_xlim(x[0], x[-1])
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("rate")
    axes[0][0].legend(fontsize=8, loc="center left")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)
    return path
