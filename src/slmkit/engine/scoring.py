"""Teacher-forced scoring of several continuations after one shared prompt.

Answer selection (the support bot's ``select`` and ``specialist`` modes) scores a handful of
candidate answers after the same long prompt. Scoring each ``prompt + candidate`` alone repeats
the prompt's forward pass once per candidate; a backend's ``continuation_logprobs`` computes the
prompt's KV cache once and scores every candidate on top of it (PyTorch: the candidates as one
batch over the prompt's cache; llama.cpp and ONNX Runtime: one candidate at a time over the
same cache). :func:`score_continuations` uses it where the engine has it and falls back to one
``token_logprobs`` pass per candidate otherwise (a remote engine, a user's own), with the same
numbers either way.
"""

from __future__ import annotations

import torch

from slmkit.errors import ContextLengthExceededError, InvalidRequestError


def check_continuations(prompt_ids: list[int], continuations: list[list[int]], context_length: int) -> None:
    """Raise unless there is a prompt to score after and every prompt + continuation fits the context."""
    if not prompt_ids:
        raise InvalidRequestError("Scoring continuations needs at least one prompt token (the first continuation "
                                  "token is predicted from it).")
    longest = max((len(c) for c in continuations), default=0)
    if len(prompt_ids) + longest > context_length:
        raise ContextLengthExceededError(
            f"The prompt ({len(prompt_ids)} tokens) and its longest continuation ({longest}) do not fit the "
            f"context of {context_length}; shorten the prompt or the candidates.")


def continuation_rows(first_logits: torch.Tensor, logits: torch.Tensor | None, continuation: list[int]) -> list[float]:
    """Log-probabilities of the tokens of ``continuation``: the first from ``first_logits`` (the
    prompt's last position, shape (vocab,)), the others from ``logits`` (rows for the
    continuation's own positions but its last, shape (len - 1, vocab))."""
    if not continuation:
        return []
    scores = [float(torch.log_softmax(first_logits.float(), dim=-1)[continuation[0]])]
    if len(continuation) > 1:
        logprobs = torch.log_softmax(logits[: len(continuation) - 1].float(), dim=-1)
        targets = torch.tensor(continuation[1:], dtype=torch.long).unsqueeze(1)
        scores += logprobs.gather(1, targets).squeeze(1).tolist()
    return scores


def score_continuations(engine, prompt_ids: list[int], continuations: list[list[int]]) -> list[list[float]]:
    """For every continuation, the log-probability of each of its tokens after ``prompt_ids``
    (and its own earlier tokens): row ``i`` equals
    ``engine.token_logprobs(prompt_ids + continuations[i])[len(prompt_ids) - 1:]``.

    The engine's ``continuation_logprobs`` (prompt computed once) when it has one, else one
    teacher-forced pass per continuation.
    """
    prompt_ids, continuations = list(prompt_ids), [list(c) for c in continuations]
    shared = getattr(engine, "continuation_logprobs", None)
    if shared is not None:
        return shared(prompt_ids, continuations)
    check_continuations(prompt_ids, continuations, getattr(engine, "context_length", 1 << 30))
    return [engine.token_logprobs(prompt_ids + c)[len(prompt_ids) - 1:] if c else [] for c in continuations]
