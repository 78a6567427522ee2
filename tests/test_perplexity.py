import math

import torch

from slmkit.perplexity import perplexity
from tiny import corpus_lines


def test_perplexity_matches_transformers_loss(tiny_engine):
    text = "\n".join(corpus_lines(60))
    ids = tiny_engine.tokenize(text)[:100]
    result = perplexity(tiny_engine, tiny_engine.tokenizer.decode(ids), window=100)
    with torch.no_grad():
        loss = tiny_engine.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert result.windows == 1 and result.scored_tokens == len(ids) - 1
    assert math.isclose(result.mean_nll, loss, rel_tol=1e-4)
    assert math.isclose(result.perplexity, math.exp(loss), rel_tol=1e-4)


def test_windows_cover_the_whole_text(tiny_engine):
    text = "\n".join(corpus_lines(200))
    n = len(tiny_engine.tokenize(text))
    result = perplexity(tiny_engine, text, window=64)
    assert result.windows == math.ceil((n - 1) / 64)
    chunk_lengths = [min(64, n - start) for start in range(0, n - 1, 64)]
    assert result.scored_tokens == sum(length - 1 for length in chunk_lengths)
    capped = perplexity(tiny_engine, text, window=64, max_tokens=130)
    assert capped.scored_tokens == 63 + 63 + 1
