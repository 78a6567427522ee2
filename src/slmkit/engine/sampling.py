"""Pick the next token from logits, the same way on every backend.

Uses transformers' logits processors (the reference implementations users already know from
``generate``) applied to a single row of logits, with a per-request ``torch.Generator`` so a
seed reproduces a sample exactly.

A request with a grammar (``SamplingParams.grammar``, see :mod:`slmkit.engine.constrained`)
first has every token the grammar rejects masked out, so constrained decoding works on every
backend that samples through here.
"""

from __future__ import annotations

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from slmkit.engine import SamplingParams
from slmkit.errors import InvalidRequestError, SlmError


class NonFiniteLogitsError(SlmError):
    """The model itself produced NaN or infinite logits: a broken model or a numeric bug, not
    the request's fault (the server answers 500 with a generic message)."""

    http_status = 500
    error_type = "server_error"
    code = "non_finite_logits"


class Sampler:
    def __init__(self, params: SamplingParams):
        self.greedy = params.temperature == 0.0
        self.processors = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            self.processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if not self.greedy:
            self.processors.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k > 0:
                self.processors.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                self.processors.append(TopPLogitsWarper(params.top_p))
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()
        self.grammar_state = params.grammar.start() if params.grammar is not None else None

    def __call__(self, logits: torch.Tensor, context_ids: list[int] | torch.Tensor) -> int:
        """Next token for one sequence. ``logits`` is (vocab,), ``context_ids`` the tokens so far."""
        scores = logits.float().unsqueeze(0)
        if not _samplable(scores):
            raise NonFiniteLogitsError("The model produced NaN or infinite scores for this request.")
        if self.grammar_state is not None:
            scores = self.grammar_state.mask(scores.clone())  # never write into the backend's logits
        if len(self.processors):
            context = torch.as_tensor(context_ids, dtype=torch.long)
            scores = self.processors(context.unsqueeze(0), scores)
        if not _samplable(scores):
            raise InvalidRequestError("The sampling settings turned the scores into NaN or infinity; use a temperature "
                                      "and repetition_penalty nearer 1.", param="temperature")
        if self.greedy:
            token = int(scores.argmax(dim=-1))
        else:
            probs = torch.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        if self.grammar_state is not None:
            self.grammar_state.advance(token)
        return token


def _samplable(scores: torch.Tensor) -> bool:
    """No NaN or +inf and at least one finite score. Masked or filtered tokens are -inf, which
    is fine; anything else would make argmax pick garbage and multinomial raise."""
    return not bool(torch.isnan(scores).any() | torch.isposinf(scores).any()) and bool(torch.isfinite(scores).any())
