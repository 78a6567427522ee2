"""Pick the next token from logits, the same way on every backend.

The processing is the one users know from transformers' ``generate`` — repetition penalty,
temperature, top-k, top-p, in that order, with the same keep/remove rules (ties at the top-k
threshold kept; top-p keeps the smallest set of best tokens whose probability reaches
``top_p``) — written here on one NumPy row instead of calling transformers' logits processors.
Measured on SmolLM2's 49,152-token vocabulary, one thread: transformers' processors plus the
old torch checks took ~450 us per greedy token and ~5.8 ms per top-p token, enough to cost
llama.cpp a fifth of its decode speed; this path takes tens of microseconds (``bench/sampling.py``).
``tests/test_sampling.py`` checks that the kept tokens and their probabilities equal
transformers' processors on random logits.

Each request has its own random generator, so a seed reproduces a sample exactly on every
backend. A request with a grammar (``SamplingParams.grammar``, see
:mod:`slmkit.engine.constrained`) first has every token the grammar rejects masked out, so
constrained decoding works on every backend that samples through here.
"""

from __future__ import annotations

import numpy as np
import torch

from slmkit.engine import SamplingParams
from slmkit.errors import InvalidRequestError, SlmError

# Top-p first looks for its nucleus among this many best tokens (a partial sort); only when
# they hold less than top_p of the probability does it sort the whole vocabulary.
NUCLEUS_CANDIDATES = 1024


class NonFiniteLogitsError(SlmError):
    """The model itself produced NaN or infinite logits: a broken model or a numeric bug, not
    the request's fault (the server answers 500 with a generic message)."""

    http_status = 500
    error_type = "server_error"
    code = "non_finite_logits"


class Sampler:
    def __init__(self, params: SamplingParams):
        self.greedy = params.temperature == 0.0
        self.temperature, self.top_k, self.top_p = params.temperature, params.top_k, params.top_p
        self.repetition_penalty = params.repetition_penalty
        self.rng = np.random.default_rng(params.seed)  # seed None: fresh entropy
        self.grammar_state = params.grammar.start() if params.grammar is not None else None
        self.logprobs = params.logprobs
        self.last_logprob: float | None = None  # of the last chosen token, when logprobs is asked for

    def __call__(self, logits: torch.Tensor | np.ndarray, context_ids: list[int] | torch.Tensor) -> int:
        """Next token for one sequence. ``logits`` is (vocab,), ``context_ids`` the tokens so far.

        ``logits`` may be a view of the backend's own buffer: it is never written to."""
        if self.greedy and self.grammar_state is None and self.repetition_penalty == 1.0:
            # One pass over the row instead of two: argmax returns the first NaN if there is one,
            # +inf if there is one, and a -inf when every score is -inf, so checking the chosen
            # score finds a broken model as the full check in _processed does.
            raw = _as_row(logits)
            token = int(raw.argmax())
            if not np.isfinite(raw[token]):
                raise NonFiniteLogitsError("The model produced NaN or infinite scores for this request.")
            if self.logprobs:
                self.last_logprob = _logprob(raw, token)
            return token
        scores = self._processed(logits, context_ids)
        if self.greedy:
            token = int(scores.argmax())
            if not np.isfinite(scores[token]):
                raise _unsamplable()
        else:
            token = self._sample(scores)
        if self.grammar_state is not None:
            self.grammar_state.advance(token)
        if self.logprobs:
            self.last_logprob = _logprob(_as_row(logits), token)
        return token

    def _processed(self, logits, context_ids) -> np.ndarray:
        """The row after the model check, the grammar mask and the repetition penalty; a copy
        only when one of those two writes to it."""
        raw = _as_row(logits)
        if not np.isfinite(raw.max()):  # NaN propagates through max; +inf is the max; all -inf too
            raise NonFiniteLogitsError("The model produced NaN or infinite scores for this request.")
        if self.grammar_state is None and self.repetition_penalty == 1.0:
            return raw
        scores = raw.copy()
        if self.grammar_state is not None:
            self.grammar_state.mask(torch.from_numpy(scores).unsqueeze(0))  # in place, shares memory
        if self.repetition_penalty != 1.0:
            self._penalize(scores, context_ids)
        return scores

    def _penalize(self, scores: np.ndarray, context_ids) -> np.ndarray:
        ids = np.unique(np.asarray(context_ids, dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < scores.shape[0])]
        seen = scores[ids]
        with np.errstate(over="ignore"):  # an overflow becomes inf, which the caller reports
            scores[ids] = np.where(seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty)
        return scores

    def probabilities(self, logits: torch.Tensor | np.ndarray, context_ids: list[int] | torch.Tensor) -> np.ndarray:
        """The (vocab,) distribution a sampled (temperature > 0) request draws from, after every
        processing step; no grammar state is advanced."""
        scores = self._processed(logits, context_ids)
        candidates, weights = self._filtered(scores)
        full = np.zeros(scores.shape[0])
        full[slice(None) if candidates is None else candidates] = weights / weights.sum(dtype=np.float64)
        return full

    def _sample(self, scores: np.ndarray) -> int:
        candidates, weights = self._filtered(scores)
        cumulative = np.cumsum(weights, dtype=np.float64)
        pick = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        pick = min(pick, len(cumulative) - 1)
        return int(pick if candidates is None else candidates[pick])

    def _filtered(self, scores: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Temperature, top-k and top-p: the token ids still in play (None = all) and their
        unnormalized probabilities."""
        with np.errstate(over="ignore"):  # float32 like transformers: a tiny temperature overflows to inf, refused below
            scores = scores / np.float32(self.temperature)
        vocab = scores.shape[0]
        candidates = None
        if 0 < self.top_k < vocab:
            threshold = np.partition(scores, vocab - self.top_k)[vocab - self.top_k]
            candidates = np.flatnonzero(scores >= threshold)  # ties at the threshold stay, as in transformers
        kept = scores if candidates is None else scores[candidates]
        best = kept.max()
        if not np.isfinite(best):
            raise _unsamplable()
        weights = np.exp(kept - best)
        if self.top_p < 1.0:
            local = _nucleus(weights / weights.sum(dtype=np.float64), self.top_p)
            candidates = local if candidates is None else candidates[local]
            weights = weights[local]
        return candidates, weights


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the tokens top-p keeps, by transformers' rule: sorted ascending, a token goes
    while the probability summed up to and including it is <= 1 - top_p; the best always stays."""
    size = probs.shape[0]
    drop_mass = 1.0 - top_p
    if size > NUCLEUS_CANDIDATES:
        best = np.argpartition(probs, size - NUCLEUS_CANDIDATES)[size - NUCLEUS_CANDIDATES:]
        rest = 1.0 - probs[best].sum()  # every token outside ``best`` is no more likely than those in it
        if rest <= drop_mass:
            order = best[np.argsort(probs[best], kind="stable")]
            removed = rest + np.cumsum(probs[order]) <= drop_mass
            removed[-1] = False
            return order[~removed]
    order = np.argsort(probs, kind="stable")
    removed = np.cumsum(probs[order]) <= drop_mass
    removed[-1] = False
    return order[~removed]


def _logprob(raw: np.ndarray, token: int) -> float:
    top = float(raw.max())
    return float(raw[token]) - top - float(np.log(np.exp(raw - top, dtype=np.float64).sum()))


def _as_row(logits) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach()
        if logits.dtype != torch.float32:
            logits = logits.float()
        return logits.reshape(-1).numpy()
    row = np.asarray(logits).reshape(-1)
    return row if row.dtype == np.float32 else row.astype(np.float32)


def _unsamplable() -> InvalidRequestError:
    return InvalidRequestError("The sampling settings turned the scores into NaN or infinity; use a temperature "
                               "and repetition_penalty nearer 1.", param="temperature")
