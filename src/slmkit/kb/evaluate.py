"""``slm kb eval``: how well a knowledge base and a model answer a file of questions.

Each line of the QA file is ``{"question": str, "answer_keywords": [str], "source": str | [str] | null}``.
``source`` names the document (its name as ingested, e.g. ``if.md``; a list when the answer is
in several) and ``null`` with no keywords marks a question the documents cannot answer.
Measured: retrieval recall@1 and @5 (is a source document among the first 1 / 5 chunks),
answer accuracy (every keyword appears in the answer, case-insensitive), abstention rate on
unanswerable questions (and false abstentions on answerable ones), and answer latency
p50/p95 from question to the last token, retrieval included.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from slmkit.errors import InvalidRequestError
from slmkit.generate import collect
from slmkit.kb.answer import answer_stream
from slmkit.kb.retrieve import default_embedder, search


@dataclasses.dataclass
class QAItem:
    question: str
    answer_keywords: list[str]
    sources: list[str]  # empty: unanswerable

    @property
    def answerable(self) -> bool:
        return bool(self.sources)


@dataclasses.dataclass
class QAResult:
    question: str
    answerable: bool
    retrieved: list[str]
    answer: str
    abstained: bool
    correct: bool | None  # None for unanswerable questions
    latency_s: float


@dataclasses.dataclass
class EvalReport:
    kb: str
    model: str
    questions: int
    answerable: int
    unanswerable: int
    recall_at_1: float
    recall_at_5: float
    answer_accuracy: float
    abstention_rate: float  # on unanswerable questions
    false_abstention_rate: float  # on answerable questions
    latency_p50_s: float
    latency_p95_s: float
    results: list[QAResult]

    def summary(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "results"}


def read_qa(path: Path) -> list[QAItem]:
    """Parse a QA JSONL file; raises with the line number of the first bad line."""
    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"Cannot read the QA file {path}: {exc}.") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            source = row.get("source")
            sources = [] if source is None else [source] if isinstance(source, str) else list(source)
            item = QAItem(str(row["question"]), [str(k) for k in row.get("answer_keywords") or []], sources)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequestError(f"{path}:{number}: expected {{\"question\": str, \"answer_keywords\": [str], "
                                      f"\"source\": str or null}} ({exc}).") from exc
        items.append(item)
    if not items:
        raise InvalidRequestError(f"{path} has no questions.")
    return items


def keywords_present(answer: str, keywords: list[str]) -> bool:
    text = answer.lower()
    return all(k.lower() in text for k in keywords)


def said_dont_know(answer: str) -> bool:
    return "don't know" in answer.lower() or "do not know" in answer.lower()


def evaluate(kb: str, qa_path: Path, engine, max_new_tokens: int = 64,
             progress: Callable[[int, int], None] | None = None, **options) -> EvalReport:
    """Run every question of ``qa_path`` through retrieval and :func:`answer_stream`."""
    items = read_qa(qa_path)
    embedder = default_embedder()
    results = []
    for done, item in enumerate(items, start=1):
        retrieved = [h.file for h in search(kb, item.question, k=5, embedder=embedder)]
        started = time.perf_counter()
        answer = answer_stream(kb, [{"role": "user", "content": item.question}], engine,
                               max_new_tokens=max_new_tokens, embedder=embedder, **options)
        text = collect(answer.chunks).text
        latency = time.perf_counter() - started
        abstained = answer.abstained or said_dont_know(text)
        correct = (not abstained and keywords_present(text, item.answer_keywords)) if item.answerable else None
        results.append(QAResult(item.question, item.answerable, retrieved, text, abstained, correct, latency))
        if progress:
            progress(done, len(items))
    model = "quote (no model)" if options.get("mode") == "quote" else getattr(engine, "model_name", "?")
    return summarize(kb, model, items, results)


def summarize(kb: str, model: str, items: list[QAItem], results: list[QAResult]) -> EvalReport:
    answerable = [(i, r) for i, r in zip(items, results, strict=True) if i.answerable]
    unanswerable = [r for i, r in zip(items, results, strict=True) if not i.answerable]

    def rate(values: list[bool]) -> float:
        return float(np.mean(values)) if values else 0.0

    latencies = [r.latency_s for r in results]
    return EvalReport(
        kb=kb, model=model, questions=len(items), answerable=len(answerable), unanswerable=len(unanswerable),
        recall_at_1=rate([bool(set(r.retrieved[:1]) & set(i.sources)) for i, r in answerable]),
        recall_at_5=rate([bool(set(r.retrieved[:5]) & set(i.sources)) for i, r in answerable]),
        answer_accuracy=rate([bool(r.correct) for _, r in answerable]),
        abstention_rate=rate([r.abstained for r in unanswerable]),
        false_abstention_rate=rate([r.abstained for _, r in answerable]),
        latency_p50_s=float(np.percentile(latencies, 50)), latency_p95_s=float(np.percentile(latencies, 95)),
        results=results)
