"""``slm kb eval``: how well a knowledge base and a model answer a file of questions.

Each line of the QA file is ``{"question": str, "answer_keywords": [str], "source": str | [str] | null}``.
``source`` names the document (its name as ingested, e.g. ``if.md``; a list when the answer is
in several) and ``null`` with no keywords marks a question the documents cannot answer.
Measured: retrieval recall@1 and @5 (is a source document among the first 1 / 5 chunks),
answer accuracy (every keyword appears in the answer, case-insensitive), abstention rate on
unanswerable questions (and false abstentions on answerable ones), and answer latency
p50/p95 from question to the last token, retrieval included.

Every question is answered whatever its retrieval confidence, and the abstention threshold is
applied afterwards: that gives the same answers as the bot (which abstains before running the
model) and lets :mod:`slmkit.kb.calibrate` sweep the threshold without re-running anything. The
latency of a question abstained on is the retrieval time (what the bot spends before saying it
does not know).
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
from slmkit.kb.answer import ABSTAIN_BELOW, IDK_MESSAGE, MIN_SIMILARITY, answer_stream
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
    answer: str  # what the bot says at the report's threshold
    abstained: bool
    correct: bool | None  # None for unanswerable questions
    latency_s: float
    confidence: float = 0.0  # the mode's abstention score (answer.Answer.score), what the threshold applies to
    generated: str = ""  # the answer produced without abstention (for the threshold sweep)
    generated_correct: bool | None = None  # every keyword in ``generated`` and no "don't know"
    said_dont_know: bool = False  # the answer itself says it does not know
    retrieval_s: float = 0.0
    answer_s: float = 0.0  # question to last token when answering
    similarity: float = 0.0  # best cosine similarity between the question and a retrieved chunk
    coverage: float = float("nan")  # share of the question's key terms in the retrieved text
    margin: float = float("nan")  # specialist mode: log p(best sentence) - log p(abstention message)


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
    threshold: float = MIN_SIMILARITY  # abstain when the confidence is below this
    mode: str = "generate"
    qa_file: str = ""

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
             progress: Callable[[int, int], None] | None = None, threshold: float | None = None,
             **options) -> EvalReport:
    """Run every question of ``qa_path`` through retrieval and :func:`answer_stream`.

    ``threshold`` is the abstention threshold on the mode's abstention score (``min_similarity``
    of ``answer_stream``; default the calibrated ``ABSTAIN_BELOW[mode]``); ``options`` go to
    ``answer_stream`` (``mode``, sampling).
    """
    mode = options.get("mode", "generate")
    threshold = ABSTAIN_BELOW.get(mode, MIN_SIMILARITY) if threshold is None else threshold
    items = read_qa(qa_path)
    embedder = default_embedder()
    results = []
    for done, item in enumerate(items, start=1):
        started = time.perf_counter()
        retrieved = [h.file for h in search(kb, item.question, k=5, embedder=embedder)]
        retrieval_s = time.perf_counter() - started
        started = time.perf_counter()
        answer = answer_stream(kb, [{"role": "user", "content": item.question}], engine,
                               max_new_tokens=max_new_tokens, embedder=embedder, min_similarity=float("-inf"), **options)
        text = collect(answer.chunks).text
        answer_s = time.perf_counter() - started
        if mode == "specialist":  # the specialist decides to abstain only after running the model
            retrieval_s = answer_s
        dont_know = said_dont_know(text)
        results.append(QAResult(
            item.question, item.answerable, retrieved, text, False, None, answer_s, confidence=answer.score,
            similarity=answer.confidence, coverage=answer.coverage, margin=answer.margin,
            generated=text, said_dont_know=dont_know, retrieval_s=retrieval_s, answer_s=answer_s,
            generated_correct=(not dont_know and keywords_present(text, item.answer_keywords)) if item.answerable
            else None))
        if progress:
            progress(done, len(items))
    model = "quote (no model)" if mode == "quote" else getattr(engine, "model_name", "?")
    report = summarize(kb, model, items, apply_threshold(results, threshold))
    return dataclasses.replace(report, threshold=threshold, mode=mode, qa_file=str(qa_path))


def apply_threshold(results: list[QAResult], threshold: float) -> list[QAResult]:
    """The results as the bot would give them when abstaining below ``threshold`` confidence."""
    applied = []
    for r in results:
        abstained = r.confidence < threshold or r.said_dont_know
        applied.append(dataclasses.replace(
            r, abstained=abstained, answer=IDK_MESSAGE if r.confidence < threshold else r.generated,
            latency_s=r.retrieval_s if r.confidence < threshold else r.answer_s,
            correct=(not abstained and bool(r.generated_correct)) if r.answerable else None))
    return applied


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
