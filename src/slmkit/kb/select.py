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

import numpy as np

from slmkit.engine import Engine
from slmkit.engine.scoring import score_continuations

CANDIDATES = 3  # sentences scored by the model per question (the closest by embedding similarity)
SENTENCE_CHARS = 300  # a candidate longer than this is cut at a word boundary before scoring and answering
EMBEDDING_WEIGHT = 1.0  # weight of the standardized cosine similarity beside the standardized likelihood
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


def rank_candidates(engine: Engine, question: str, candidates: list[Candidate],
                    embedding_weight: float = EMBEDDING_WEIGHT) -> list[Candidate]:
    """Score every candidate with the model and return them best first.

    The score is the standardized question likelihood plus ``embedding_weight`` times the
    standardized cosine similarity (both standardized over this question's candidates, so the
    two scales mix without calibration).
    """
    for candidate, likelihood in zip(candidates, question_likelihoods(engine, question, [c.text for c in candidates]),
                                     strict=True):
        candidate.likelihood = likelihood
    if not candidates:
        return []
    finite = [c.likelihood if np.isfinite(c.likelihood) else -1e9 for c in candidates]
    scores = standardize(finite) + embedding_weight * standardize([c.similarity for c in candidates])
    for candidate, score in zip(candidates, scores, strict=True):
        candidate.score = float(score)
    return sorted(candidates, key=lambda c: -c.score)


def format_answer(best: list[Candidate]) -> str:
    """The chosen sentences, each followed by its citation ``[n]``."""
    return " ".join(f"{c.text} [{c.source + 1}]" for c in best)
