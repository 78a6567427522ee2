"""Answer selection: pick the documentation sentence that answers a question, by the model's own likelihood.

Candidates are the sentences of the retrieved chunks closest to the question (by the embedding
model). Each is then scored by how well it explains the question: the mean log-probability the
language model gives the question's tokens after reading the sentence ("query likelihood",
teacher-forced, the candidates scored together through ``Engine.continuation_logprobs``, no
generation).
The answer is the best sentence itself, so it is always text from the documents (copying is
enforced by construction, not asked of the model), short, and cited.

The scorer and its settings (candidate count, the mix of likelihood and embedding similarity,
one or two sentences) were chosen on the tuning set (``examples/pydoc-kb``) only; see
``docs/support-bot.md``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from slmkit.engine import Engine
from slmkit.engine.scoring import score_continuations

CANDIDATES = 3  # sentences scored by the model per question (the closest by embedding similarity)
SENTENCE_CHARS = 300  # a candidate longer than this is cut at a word boundary before scoring and answering
FEATURES = ("similarity", "likelihood", "pmi", "overlap", "rank", "chunk", "length")  # see candidate_features
# Weights of the ranking features (names of FEATURES), chosen on the tuning sets by
# examples/pydoc-kb/tune_ranker.py: the standardized cosine similarity plus the standardized question likelihood.
RANKER_WEIGHTS = {"similarity": 1.0, "likelihood": 1.0}
ANSWER_SENTENCES = 2  # how many of the best sentences make the answer


@dataclasses.dataclass
class Candidate:
    source: int  # 0-based index of the chunk (as the sources list numbers them, minus one)
    text: str
    similarity: float  # cosine similarity to the question
    likelihood: float = float("nan")  # mean log-probability of the question given this sentence
    score: float = float("nan")


def shorten(text: str, max_chars: int = SENTENCE_CHARS) -> str:
    """``text`` cut to at most ``max_chars`` at a word boundary ("…" marks the cut)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    return text[:max_chars].rsplit(" ", 1)[0] + " …"


def distinct(candidates: list[Candidate], count: int) -> list[Candidate]:
    """The first ``count`` candidates whose text is not a repeat of an earlier one (documentation
    repeats itself across pages; a repeated candidate would take a slot and could be answered twice)."""
    chosen, seen = [], set()
    for candidate in candidates:
        key = " ".join(candidate.text.split())
        if key not in seen:
            seen.add(key)
            chosen.append(candidate)
        if len(chosen) == count:
            break
    return chosen


def question_likelihoods(engine: Engine, question: str, sentences: list[str]) -> list[float]:
    """Mean log-probability of the tokens of ``question`` after each of ``sentences`` (higher: the
    sentence explains it). The sequences share their first tokens ("Text:"), so they are scored as
    continuations of that prefix, together (``Engine.continuation_logprobs``)."""
    contexts = [engine.tokenize(f"Text: {sentence}\n") for sentence in sentences]
    asked = engine.tokenize(f"Question: {question.strip()}")
    if not asked or not contexts:
        return [float("-inf")] * len(sentences)
    sequences = [context + asked for context in contexts]
    shared = min(len(context) for context in contexts)  # the prompt must not reach into any question
    for position in range(shared):
        if any(sequence[position] != sequences[0][position] for sequence in sequences):
            shared = position
            break
    if shared == 0:  # no common first token: score each alone
        return [question_likelihood(engine, question, sentence) for sentence in sentences]
    rows = score_continuations(engine, sequences[0][:shared], [sequence[shared:] for sequence in sequences])
    # row j scores token shared + j; the question starts at token len(context)
    return [float(np.mean(row[len(context) - shared:])) if context else float("-inf")
            for row, context in zip(rows, contexts, strict=True)]


def question_likelihood(engine: Engine, question: str, sentence: str) -> float:
    """Mean log-probability of the tokens of ``question`` after ``sentence`` (one teacher-forced pass)."""
    context = engine.tokenize(f"Text: {sentence}\n")
    asked = engine.tokenize(f"Question: {question.strip()}")
    if not context or not asked:
        return float("-inf")
    logprobs = engine.token_logprobs(context + asked)  # logprobs[i] scores token i + 1
    return float(np.mean(logprobs[len(context) - 1:]))


def standardize(values: list[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    spread = array.std()
    return (array - array.mean()) / spread if spread > 1e-9 else np.zeros_like(array)


def answer_pmis(engine: Engine, question: str, sentences: list[str]) -> list[float]:
    """How much more likely each sentence is as an answer to ``question`` than with no question: its
    mean token log-probability after ``Question: Q\nAnswer:`` minus after ``Answer:`` alone (a
    pointwise mutual information; the second term removes a sentence's own plainness, which the
    first alone rewards). Each prompt is computed once for all sentences (``score_continuations``)."""
    continuations = [engine.tokenize(f" {sentence}") for sentence in sentences]
    if not continuations:
        return []
    asked = score_continuations(engine, engine.tokenize(f"Question: {question.strip()}\nAnswer:"), continuations)
    plain = score_continuations(engine, engine.tokenize("Answer:"), continuations)
    return [float(np.mean(a)) - float(np.mean(p)) if c else float("-inf")
            for a, p, c in zip(asked, plain, continuations, strict=True)]


def rank_candidates(engine: Engine, question: str, candidates: list[Candidate],
                    weights: dict[str, float] | None = None) -> list[Candidate]:
    """Score every candidate and return them best first.

    The score is ``candidate_features`` (standardized over this question's candidates where the
    scales differ) weighted by ``weights`` (names of ``FEATURES``; default ``RANKER_WEIGHTS``).
    The model runs only for the features that have a weight.
    """
    weights = RANKER_WEIGHTS if weights is None else weights
    unknown = set(weights) - set(FEATURES)
    if unknown:
        raise ValueError(f"Unknown ranking features {sorted(unknown)}; use names of {FEATURES}.")
    if not candidates:
        return []
    texts = [c.text for c in candidates]
    likelihoods = question_likelihoods(engine, question, texts) if weights.get("likelihood") else [math.nan] * len(texts)
    pmis = answer_pmis(engine, question, texts) if weights.get("pmi") else [math.nan] * len(texts)
    matrix = candidate_features(question, texts, [c.source for c in candidates], [c.similarity for c in candidates],
                                likelihoods, pmis)
    scores = matrix @ np.array([weights.get(name, 0.0) for name in FEATURES])
    for candidate, likelihood, score in zip(candidates, likelihoods, scores, strict=True):
        candidate.likelihood, candidate.score = float(likelihood), float(score)
    return sorted(candidates, key=lambda c: -c.score)


def candidate_features(question: str, texts: list[str], sources: list[int], similarities: list[float],
                       likelihoods: list[float], pmis: list[float]) -> np.ndarray:
    """One row per candidate, one column per name of ``FEATURES``: the cosine similarity, the
    question likelihood and the answer's pointwise mutual information with the question, each
    standardized over this question's candidates; the share of the question's key terms in the
    sentence; the candidate's rank by similarity and its chunk's rank (0 = best); the log length."""
    from slmkit.kb.answer import term_coverage

    count = len(texts)

    def finite(values: list[float]) -> list[float]:
        return [value if np.isfinite(value) else -1e9 for value in values]

    columns = [standardize(similarities), standardize(finite(likelihoods)), standardize(finite(pmis)),
               [term_coverage(question, [text]) for text in texts], np.arange(count), sources,
               np.log([max(len(text), 1) for text in texts])]
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns]) if count else np.zeros((0, len(FEATURES)))


def format_answer(best: list[Candidate]) -> str:
    """The chosen sentences, each followed by its citation ``[n]``."""
    return " ".join(f"{c.text} [{c.source + 1}]" for c in best)
