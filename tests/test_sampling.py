import torch

from slmkit.engine import SamplingParams
from slmkit.engine.sampling import Sampler


def logits(seed=0, vocab=300):
    return torch.randn(vocab, generator=torch.Generator().manual_seed(seed))


def test_greedy_is_argmax():
    scores = logits()
    assert Sampler(SamplingParams())(scores, torch.tensor([1, 2])) == int(scores.argmax())


def test_same_seed_same_samples_and_other_seed_differs():
    def draw(seed):
        sampler = Sampler(SamplingParams(temperature=1.5, seed=seed))
        return [sampler(logits(i), torch.tensor([0])) for i in range(50)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_top_k_one_is_greedy_whatever_the_temperature():
    for i in range(20):
        scores = logits(i)
        assert Sampler(SamplingParams(temperature=5.0, top_k=1, seed=i))(scores, torch.tensor([0])) == int(scores.argmax())


def test_top_p_keeps_only_the_nucleus():
    scores = torch.full((10,), -10.0)
    scores[3], scores[5] = 5.0, 4.9  # together far above 0.9 of the mass
    picks = {Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=s))(scores, torch.tensor([0])) for s in range(40)}
    assert picks <= {3, 5} and len(picks) == 2


def test_repetition_penalty_steers_greedy_away_from_seen_tokens():
    scores = torch.zeros(10)
    scores[4], scores[6] = 2.0, 1.5
    assert Sampler(SamplingParams(repetition_penalty=2.0))(scores, torch.tensor([4])) == 6


def transformers_distribution(scores: torch.Tensor, context: list[int], params: SamplingParams) -> torch.Tensor:
    """The reference: transformers' own logits processors, in the order generate() applies them."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    processors.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k > 0:
        processors.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        processors.append(TopPLogitsWarper(params.top_p))
    out = processors(torch.tensor([context]), scores.clone().unsqueeze(0))[0]
    return torch.softmax(out.double(), dim=-1)


def test_the_distribution_equals_transformers_logits_processors():
    import itertools

    vocab = 5000  # above the nucleus shortcut's candidate count, so both top-p paths run
    settings = [dict(temperature=t, top_k=k, top_p=p, repetition_penalty=r)
                for t, k, p, r in itertools.product([0.3, 1.0, 1.7], [0, 1, 40, 4000], [1.0, 0.95, 0.5, 0.05],
                                                    [1.0, 1.3])]
    for index, setting in enumerate(settings):
        generator = torch.Generator().manual_seed(index)
        scores = torch.randn(vocab, generator=generator) * (1 + index % 4)
        context = torch.randint(0, vocab, (30,), generator=generator).tolist()
        params = SamplingParams(**setting)
        ours = Sampler(params).probabilities(scores, context)
        reference = transformers_distribution(scores, context, params).numpy()
        assert set(ours.nonzero()[0]) == set(reference.nonzero()[0]), setting
        assert abs(ours - reference).max() < 1e-6, setting


def test_samples_follow_the_distribution():
    scores = torch.tensor([2.0, 1.0, 0.0, -1.0])
    sampler = Sampler(SamplingParams(temperature=1.0, seed=0))
    counts = torch.bincount(torch.tensor([sampler(scores, [0]) for _ in range(20000)]), minlength=4).double()
    assert torch.allclose(counts / counts.sum(), torch.softmax(scores.double(), 0), atol=0.015)


def test_the_backend_buffer_is_never_written():
    import numpy as np

    row = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    before = row.copy()
    Sampler(SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.5, seed=1))(row, [1, 2, 3])
    Sampler(SamplingParams(repetition_penalty=1.5))(row, [1, 2, 3])
    assert (row == before).all()


def test_non_finite_model_scores_are_a_server_error_and_bad_settings_a_request_error():
    import pytest

    from slmkit.engine.sampling import NonFiniteLogitsError
    from slmkit.errors import InvalidRequestError

    for bad in (float("nan"), float("inf")):
        scores = logits()
        scores[7] = bad
        for params in (SamplingParams(), SamplingParams(temperature=0.7, top_p=0.9)):
            with pytest.raises(NonFiniteLogitsError):
                Sampler(params)(scores, [0])
    with pytest.raises(NonFiniteLogitsError):
        Sampler(SamplingParams())(torch.full((10,), float("-inf")), [0])
    huge = torch.full((10,), 3e38)
    with pytest.raises(InvalidRequestError, match="temperature"):
        Sampler(SamplingParams(repetition_penalty=0.01))(huge, list(range(10)))
