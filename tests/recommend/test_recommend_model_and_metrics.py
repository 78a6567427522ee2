"""The full-catalogue loss (chunked = unchunked) and the ranking metrics and baselines."""

import math

import pytest
import torch

from slmkit.recommend.evaluate import (
    evaluate_scorer,
    item_knn,
    leave_one_out,
    markov,
    most_popular,
    rank_metrics,
)
from slmkit.recommend.model import catalogue_cross_entropy, chunk_rows


def test_chunked_cross_entropy_equals_the_full_one_with_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(500, 16, requires_grad=True)
    targets = torch.randint(0, 500, (37,))
    full = catalogue_cross_entropy(hidden, weight, targets, rows_per_chunk=1000)
    full_grads = torch.autograd.grad(full, (hidden, weight))
    chunked = catalogue_cross_entropy(hidden, weight, targets, rows_per_chunk=5)
    chunked_grads = torch.autograd.grad(chunked, (hidden, weight))
    reference = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    assert torch.allclose(full, reference) and torch.allclose(chunked, reference, rtol=1e-5)
    for a, b in zip(full_grads, chunked_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_automatic_chunks_bound_the_logits():
    assert chunk_rows(100_000) * 100_000 <= 1 << 23 and chunk_rows(1682) > 4000
    assert chunk_rows(10, requested=7) == 7


def test_rank_metrics_exact_values_and_seen_items_masked():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0],
                           [5.0, 4.0, 3.0, 2.0, 1.0],
                           [5.0, 4.0, 3.0, 2.0, 1.0]])
    # row 0: target 0 ranks first; row 1: target 3, items 0 and 1 seen -> rank 1 (of 3 left);
    # row 2: target 4 ranks 4th, outside k=2.
    metrics = rank_metrics(scores, [[2], [0, 1], []], [0, 3, 4], k=2)
    assert metrics["hr@2"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_ties_do_not_favour_the_target():
    scores = torch.zeros(1, 50)
    assert rank_metrics(scores, [[]], [49], k=10)["hr@10"] == 0.0


def test_leave_one_out_split():
    split = leave_one_out([[1, 2, 3, 4], [5, 6]])
    assert split.train == [[1, 2], [5, 6]] and split.validation == [([1, 2], 3)]
    assert split.test == [([1, 2, 3], 4)] and split.test_train() == [[1, 2, 3], [5, 6]]


def test_baselines_on_a_cycle():
    items = 20
    sequences = [[(start + step) % items for step in range(8)] for start in range(items)]
    split = leave_one_out(sequences)
    assert evaluate_scorer(markov(split.train, items), split.validation, k=1)["hr@1"] == 1.0
    assert evaluate_scorer(item_knn(split.train, items), split.validation, k=2)["hr@2"] > 0.5
    popular = evaluate_scorer(most_popular(split.train, items), split.validation, k=1)["hr@1"]
    assert popular < 0.5


def test_sparse_markov_for_large_catalogues_scores_like_the_dense_one(monkeypatch):
    import slmkit.recommend.evaluate as evaluate

    train = [[0, 1, 2, 1, 3], [2, 1, 0], [4]]
    histories = [[0, 1], [2], [], [3, 4]]
    dense = evaluate.markov(train, 6)(histories)
    monkeypatch.setattr(evaluate, "KNN_MAX_ITEMS", 3)
    sparse = evaluate.markov(train, 6)(histories)
    assert torch.allclose(dense, sparse)
    with pytest.raises(ValueError, match="items x items"):
        evaluate.item_knn(train, 6)
