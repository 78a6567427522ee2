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

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
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
