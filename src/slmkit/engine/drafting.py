"""Draft proposers for speculative decoding in the PyTorch backend.

A drafter guesses the next few tokens cheaply; the model then checks all of them in one
forward pass and keeps the longest prefix it agrees with, plus one token of its own. With
greedy decoding the output is exactly what plain decoding would give; the gain is fewer
forward passes, which is what a CPU backend bound by per-step overhead needs.
"""

from __future__ import annotations

from typing import Protocol


class Drafter(Protocol):
    def propose(self, ids: list[int], count: int) -> list[int]:
        """Up to ``count`` guessed continuations of ``ids`` (may be empty)."""
        ...


class PromptLookupDrafter:
    """Prompt-lookup (n-gram) drafting: find the latest earlier occurrence of the text's last
    few tokens and propose what followed it. Free, and good when answers quote their context
    (retrieval-grounded answers, code edits, summaries)."""

    # At least two tokens must match: a lone one-token match drafts noise whose verification
    # costs more than it saves (bench/prompt_lookup.py --task extract, tuning layouts: 1.44x with
    # 2-3-token matches vs 1.36x with 1-3, 2 draft tokens; docs/benchmarks.md).
    def __init__(self, max_ngram: int = 3, min_ngram: int = 2):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, ids: list[int], count: int) -> list[int]:
        if count <= 0:
            return []
        for size in range(min(self.max_ngram, len(ids) - 1), self.min_ngram - 1, -1):
            tail = ids[-size:]
            # Latest match first: recent context predicts the continuation best.
            for start in range(len(ids) - size - 1, -1, -1):
                if ids[start : start + size] == tail:
                    follow = ids[start + size : start + size + count]
                    if follow:
                        return follow
        return []


class ModelDrafter:
    """Drafts with a small model that shares the target's tokenizer (assisted decoding).

    One drafter per sequence: it keeps the draft model's KV cache for that sequence and, on
    each call, rewinds it to the longest prefix still valid (tokens the target rejected are
    dropped) before drafting greedily.
    """

    def __init__(self, model):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache()
        self.cached_ids: list[int] = []

    def propose(self, ids: list[int], count: int) -> list[int]:
        import torch

        if count <= 0:
            return []
        common = 0
        for mine, theirs in zip(self.cached_ids, ids, strict=False):
            if mine != theirs:
                break
            common += 1
        common = min(common, len(ids) - 1)  # always feed at least one token to get fresh logits
        if common < len(self.cached_ids):
            self.cache.crop(common - len(self.cached_ids))
        feed = ids[common:]
        draft: list[int] = []
        with torch.inference_mode():
            for _ in range(count):
                logits = self.model(input_ids=torch.tensor([feed]), cache=self.cache, use_cache=True,
                                    logits_to_keep=1).logits[0, -1]
                token = int(logits.argmax())
                draft.append(token)
                feed = [token]
        # The cache holds ids and every drafted token but the last.
        self.cached_ids = list(ids) + draft[:-1]
        return draft
