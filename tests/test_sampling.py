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
