"""Perplexity of a text under a model, the same way on every backend.

The text is tokenized once and cut into consecutive windows of ``window`` tokens; each
window is scored teacher-forced by ``engine.token_logprobs`` (so every token but the first of
each window is predicted from the tokens before it in that window). Perplexity is
``exp(mean negative log-likelihood)`` over all scored tokens. Because every backend returns
the same per-token log-probabilities, numbers are comparable across torch, llama.cpp and
ONNX Runtime for the same window.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from slmkit.engine import Engine
from slmkit.errors import InvalidRequestError


@dataclasses.dataclass
class PerplexityResult:
    perplexity: float
    mean_nll: float
    scored_tokens: int
    windows: int
    window: int


def perplexity(engine: Engine, text: str, window: int = 512, max_tokens: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> PerplexityResult:
    """Perplexity of ``text``; ``max_tokens`` caps how much of the text is scored."""
    window = min(window, engine.context_length)
    if window < 2:
        raise InvalidRequestError(f"window must be at least 2 tokens, got {window}.")
    ids = engine.tokenize(text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise InvalidRequestError("The text is too short to measure perplexity: it needs at least 2 tokens.")
    starts = list(range(0, len(ids) - 1, window))
    total_nll, scored = 0.0, 0
    for done, start in enumerate(starts):
        chunk = ids[start : start + window]
        if len(chunk) < 2:
            continue
        logprobs = engine.token_logprobs(chunk)
        total_nll -= sum(logprobs)
        scored += len(logprobs)
        if progress:
            progress(done + 1, len(starts))
    mean = total_nll / scored
    return PerplexityResult(math.exp(mean), mean, scored, len(starts), window)
