"""Shared-prefix scoring (``Engine.continuation_logprobs``) on the PyTorch engine: the same numbers
as scoring each prompt + continuation alone, with the prompt's forward pass run once."""

import pytest

from slmkit.engine.scoring import score_continuations
from slmkit.errors import ContextLengthExceededError, InvalidRequestError

PROMPT = "The assert statement raises an exception when its expression is false. Question:"
CANDIDATES = [" Which exception?", " What does assert do when the test fails in optimized mode?", " x", ""]


def _alone(engine, prompt_ids, continuations):
    return [engine.token_logprobs(prompt_ids + c)[len(prompt_ids) - 1:] if c else [] for c in continuations]


class _PerCandidate:
    """An engine without ``continuation_logprobs`` (like a remote one): the fallback path."""

    def __init__(self, engine):
        self.engine, self.context_length = engine, engine.context_length

    def token_logprobs(self, token_ids):
        return self.engine.token_logprobs(token_ids)


def test_scores_equal_each_prompt_and_continuation_scored_alone(tiny_engine):
    prompt = tiny_engine.tokenize(PROMPT)
    continuations = [tiny_engine.tokenize(c) for c in CANDIDATES]
    got = tiny_engine.continuation_logprobs(prompt, continuations)
    want = _alone(tiny_engine, prompt, continuations)
    assert [len(row) for row in got] == [len(c) for c in continuations] and got[-1] == []
    for row, expected in zip(got, want, strict=True):
        assert row == pytest.approx(expected, abs=1e-4)
    assert score_continuations(_PerCandidate(tiny_engine), prompt, continuations) == want  # the fallback path


def test_more_continuations_than_one_batch_keep_their_order(tiny_engine):
    from slmkit.engine.torch_backend import shared_prefix_logprobs

    prompt = tiny_engine.tokenize(PROMPT)
    continuations = [tiny_engine.tokenize(f" answer number {n} " + "word " * n) for n in range(7)]
    got = shared_prefix_logprobs(tiny_engine.model, prompt, continuations, rows_per_pass=3)
    for row, expected in zip(got, _alone(tiny_engine, prompt, continuations), strict=True):
        assert row == pytest.approx(expected, abs=1e-4)


def test_the_prompt_runs_through_the_model_once(tiny_engine):
    prompt = tiny_engine.tokenize(PROMPT * 4)
    continuations = [tiny_engine.tokenize(c) for c in CANDIDATES[:3]]
    fed = []
    hook = tiny_engine.model.model.embed_tokens.register_forward_hook(lambda _m, args, _out: fed.append(args[0].shape))
    try:
        tiny_engine.continuation_logprobs(prompt, continuations)
    finally:
        hook.remove()
    longest = max(len(c) for c in continuations)
    assert fed == [(1, len(prompt)), (3, longest)]  # one prompt pass, then the candidates as one batch


def test_bad_input_says_what_is_wrong(tiny_engine):
    with pytest.raises(InvalidRequestError, match="at least one prompt token"):
        tiny_engine.continuation_logprobs([], [[1, 2]])
    with pytest.raises(ContextLengthExceededError, match="do not fit the context"):
        tiny_engine.continuation_logprobs([5] * 10, [[6] * tiny_engine.context_length])
