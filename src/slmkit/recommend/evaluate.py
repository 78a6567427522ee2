"""Leave-one-out evaluation with full ranking, and the baselines computed in the same run.

Protocol: for every user with at least three interactions, the last item is the **test**
target and the one before it the **validation** target. Training sees neither. To score a
target, every item of the catalogue is ranked from the user's earlier items, the items the
user already has are masked, and HR@K (target in the top K) and NDCG@K (``1 / log2(rank + 2)``
when it is) are averaged over users. Validation scores choose hyperparameters; test scores
are the headline.

Baselines (each a function from training sequences to a ``scorer(histories) -> scores``):
MostPop (interaction counts), ItemKNN (cosine item-item similarity of the user-item matrix,
summed over the history; neighbours per item chosen on validation) and Markov-1 (counts of
item → next item after the history's last item). Ties are broken by popularity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

Scorer = Callable[[Sequence[Sequence[int]]], torch.Tensor]  # histories (item numbers) -> (n, items)
KNN_NEIGHBOURS = (20, 50, 100, 0)  # 0 = every item; chosen on validation
KNN_MAX_ITEMS = 30_000  # the dense item-item matrix is items² floats


@dataclasses.dataclass
class Split:
    """Leave-one-out split of item-number sequences (users with < 3 items only train)."""

    train: list[list[int]]  # per user: what training sees
    validation: list[tuple[list[int], int]]  # (history, target)
    test: list[tuple[list[int], int]]
    short: list[list[int]] = dataclasses.field(default_factory=list)  # users with < 3 items (also in train)

    def test_train(self) -> list[list[int]]:
        """What a model scored on test may learn from: everything but the test targets."""
        return [history for history, _ in self.test] + self.short


def leave_one_out(sequences: Sequence[Sequence[int]]) -> Split:
    split = Split([], [], [], [])
    for sequence in sequences:
        sequence = list(sequence)
        if len(sequence) >= 3:
            split.train.append(sequence[:-2])
            split.validation.append((sequence[:-2], sequence[-2]))
            split.test.append((sequence[:-1], sequence[-1]))
        else:
            split.train.append(sequence)
            split.short.append(sequence)
    return split


def rank_metrics(scores: torch.Tensor, histories: Sequence[Sequence[int]], targets: Sequence[int],
                 k: int = 10) -> dict:
    """HR@k and NDCG@k of ``targets`` under ``scores`` (n, items), seen items masked.

    The rank of a target is the number of items scored above it, plus equal-scored items with
    a lower number (a fixed, not a lucky, tie order).
    """
    scores = scores.float().clone()
    for row, history in enumerate(histories):
        seen = [item for item in set(history) if item != targets[row]]
        if seen:
            scores[row, seen] = -math.inf
    target = torch.tensor(list(targets))
    target_scores = scores[torch.arange(len(target)), target].unsqueeze(1)
    below = torch.arange(scores.shape[1]).unsqueeze(0) < target.unsqueeze(1)
    ranks = (scores > target_scores).sum(1) + ((scores == target_scores) & below).sum(1)
    hits = ranks < k
    gains = torch.where(hits, 1.0 / torch.log2(ranks.float() + 2), torch.zeros(()))
    return {f"hr@{k}": float(hits.float().mean()), f"ndcg@{k}": float(gains.mean()), "users": len(target)}


def evaluate_scorer(scorer: Scorer, cases: Sequence[tuple[list[int], int]], k: int = 10,
                    batch_size: int = 512) -> dict:
    totals = {f"hr@{k}": 0.0, f"ndcg@{k}": 0.0}
    for start in range(0, len(cases), batch_size):
        chunk = cases[start:start + batch_size]
        histories, targets = [h for h, _ in chunk], [t for _, t in chunk]
        metrics = rank_metrics(scorer(histories), histories, targets, k)
        for key in totals:
            totals[key] += metrics[key] * len(chunk)
    return {**{key: value / max(len(cases), 1) for key, value in totals.items()}, "users": len(cases)}


def popularity(train: Sequence[Sequence[int]], items: int) -> torch.Tensor:
    counts = torch.zeros(items)
    for sequence in train:
        counts.index_add_(0, torch.tensor(sequence, dtype=torch.long), torch.ones(len(sequence)))
    return counts


def _tie_breaker(train, items) -> torch.Tensor:
    counts = popularity(train, items)
    return counts / (counts.max() + 1) * 1e-3  # below any real score difference of 1e-3


def most_popular(train: Sequence[Sequence[int]], items: int) -> Scorer:
    counts = popularity(train, items)
    return lambda histories: counts.expand(len(histories), -1)


def markov(train: Sequence[Sequence[int]], items: int) -> Scorer:
    """First-order Markov chain: how often each item followed the history's last item."""
    transitions = torch.zeros(items, items) if items <= KNN_MAX_ITEMS else None
    pairs = [(a, b) for sequence in train for a, b in zip(sequence, sequence[1:], strict=False)]
    ties = _tie_breaker(train, items)
    if transitions is not None:
        if pairs:
            source, target = torch.tensor(pairs).T
            transitions.index_put_((source, target), torch.ones(len(pairs)), accumulate=True)
        row_sums = transitions.sum(1, keepdim=True).clamp(min=1)
        transitions /= row_sums

        def score(histories):
            last = torch.tensor([h[-1] if h else 0 for h in histories])
            rows = transitions[last].clone()
            rows[torch.tensor([not h for h in histories])] = 0
            return rows + ties
        return score
    following: dict[int, dict[int, float]] = {}
    for a, b in pairs:
        following.setdefault(a, {})
        following[a][b] = following[a].get(b, 0.0) + 1

    def sparse_score(histories):
        out = ties.expand(len(histories), -1).clone()
        for row, history in enumerate(histories):
            nxt = following.get(history[-1], {}) if history else {}
            total = sum(nxt.values()) or 1.0
            for item, count in nxt.items():
                out[row, item] += count / total
        return out
    return sparse_score


def item_knn(train: Sequence[Sequence[int]], items: int, neighbours: int = 0, shrink: float = 10.0) -> Scorer:
    """Item-based kNN: cosine similarity of item columns in the binary user-item matrix,
    keeping each item's ``neighbours`` most similar items (0 = all), summed over the history."""
    if items > KNN_MAX_ITEMS:
        raise ValueError(f"ItemKNN builds an items x items matrix; {items} items is over {KNN_MAX_ITEMS}.")
    matrix = torch.zeros(len(train), items)
    for row, sequence in enumerate(train):
        if sequence:
            matrix[row, torch.tensor(sorted(set(sequence)))] = 1.0
    co = matrix.T @ matrix  # (items, items) co-occurrence counts
    norms = co.diagonal().sqrt()
    similarity = co / (norms.unsqueeze(0) * norms.unsqueeze(1) + shrink)
    similarity.fill_diagonal_(0)
    if neighbours and neighbours < items:
        keep = similarity.topk(neighbours, dim=1)
        similarity = torch.zeros_like(similarity).scatter_(1, keep.indices, keep.values)
    ties = _tie_breaker(train, items)

    def score(histories):
        weights = torch.zeros(len(histories), items)
        for row, history in enumerate(histories):
            if history:
                weights[row, torch.tensor(sorted(set(history)))] = 1.0
        return weights @ similarity + ties
    return score


def baseline_report(split: Split, items: int, k: int = 10) -> dict:
    """Validation and test HR/NDCG@k of MostPop, ItemKNN (neighbours chosen on validation) and
    Markov-1. Validation scorers learn from the training split; test scorers also from the
    validation items (which are part of a test case's history), never from test targets."""
    test_train = split.test_train()
    report: dict[str, dict] = {}
    for name, build in (("MostPop", most_popular), ("Markov-1", markov)):
        report[name] = {"validation": evaluate_scorer(build(split.train, items), split.validation, k),
                        "test": evaluate_scorer(build(test_train, items), split.test, k)}
    if items <= KNN_MAX_ITEMS:
        best, best_neighbours = None, 0
        for neighbours in KNN_NEIGHBOURS:
            metrics = evaluate_scorer(item_knn(split.train, items, neighbours), split.validation, k)
            if best is None or metrics[f"ndcg@{k}"] > best[f"ndcg@{k}"]:
                best, best_neighbours = metrics, neighbours
        report["ItemKNN"] = {"validation": best, "neighbours": best_neighbours,
                             "test": evaluate_scorer(item_knn(test_train, items, best_neighbours), split.test, k)}
    return report


def evaluate_recommender(reference: str, k: int = 10, baselines: bool = True, write_card: bool = True) -> dict:
    """Validation and test HR@k/NDCG@k of the recommender ``reference`` and, computed in the
    same call on the same split, of the baselines. Scores go into the model's card."""
    from slmkit import artifact
    from slmkit.errors import InvalidRequestError
    from slmkit.recommend.model import FIRST_ITEM, score_histories
    from slmkit.recommend.predict import load_recommender

    recommender = load_recommender(reference)
    card = artifact.read_card(recommender.path)
    if card and not card.args.get("holdout", True):
        raise InvalidRequestError(f"{recommender.name} was trained on every interaction (--no-holdout), so its test "
                                  "items were seen in training. Retrain with --holdout to evaluate it.")
    catalogue = recommender.catalogue
    split = leave_one_out([[catalogue.index[i] for i in s if i in catalogue.index]
                           for s in recommender.histories.values()])
    if not split.test:
        raise InvalidRequestError(f"{recommender.name}'s users all have fewer than 3 items; leave-one-out needs 3.")

    def model_scorer(histories):
        return score_histories(recommender.model, [[i + FIRST_ITEM for i in h] for h in histories],
                               recommender.max_length)

    report = {"protocol": "leave-one-out, full ranking, seen items masked", "k": k, "users": len(split.test),
              "items": len(catalogue),
              "model": {"validation": evaluate_scorer(model_scorer, split.validation, k),
                        "test": evaluate_scorer(model_scorer, split.test, k)}}
    if baselines:
        report["baselines"] = baseline_report(split, len(catalogue), k)
    if write_card and card:
        card.metrics["evaluation"] = report
        artifact.write_card(recommender.path, card)
    return report
