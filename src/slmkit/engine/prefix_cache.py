"""Which prompt prefixes a backend still holds the KV of, so a repeated prefix is not prefilled again.

The cache only keeps books: each entry is a prompt's token ids and a ``handle`` the backend
gives it (for llama.cpp, a sequence id in the shared KV cache). A lookup returns the entry that
shares the longest run of leading tokens with a new prompt and that length; tokens are compared
exactly, so KV is only ever reused for the very same tokens at the very same positions. The
total number of tokens held is bounded, and the least recently used entries go first; the
backend frees whatever handles :meth:`PrefixCache.insert` returns.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np


@dataclasses.dataclass
class CacheEntry:
    tokens: np.ndarray  # int64 token ids whose KV the handle holds, positions 0..len-1
    handle: int


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    """LRU map from prompt token ids to backend handles, bounded in entries and in tokens."""

    def __init__(self, max_entries: int, max_tokens: int):
        self.max_entries, self.max_tokens = max_entries, max_tokens
        self.entries: OrderedDict[int, CacheEntry] = OrderedDict()  # handle -> entry, oldest first
        self.hits = self.reused_tokens = 0

    @property
    def tokens_held(self) -> int:
        return sum(len(e.tokens) for e in self.entries.values())

    def lookup(self, prompt_ids: list[int]) -> tuple[CacheEntry | None, int]:
        """The entry sharing the longest prefix with ``prompt_ids`` and that length.

        At most ``len(prompt_ids) - 1`` tokens are matched: the last prompt token is always
        run again, since its logits are what the first sampled token comes from.
        """
        if not self.entries or len(prompt_ids) < 2:
            return None, 0
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        best, best_length = None, 0
        for entry in self.entries.values():
            length = common_prefix_length(entry.tokens, prompt)
            if length > best_length:
                best, best_length = entry, length
        best_length = min(best_length, len(prompt_ids) - 1)
        if best is None or best_length == 0:
            return None, 0
        self.entries.move_to_end(best.handle)
        self.hits += 1
        self.reused_tokens += best_length
        return best, best_length

    def wants(self, prompt_ids: list[int]) -> bool:
        """False when an entry already covers all of ``prompt_ids`` (storing it would add nothing)."""
        if len(prompt_ids) > self.max_tokens:
            return False
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        return not any(len(e.tokens) >= len(prompt) and common_prefix_length(e.tokens, prompt) == len(prompt)
                       for e in self.entries.values())

    def insert(self, prompt_ids: list[int], handle: int) -> list[int]:
        """Record that ``handle`` now holds the KV of ``prompt_ids``; returns handles to free:
        entries the new one covers (their tokens are a prefix of it) and LRU evictions."""
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        freed = [h for h, e in self.entries.items()
                 if len(e.tokens) <= len(prompt) and common_prefix_length(e.tokens, prompt) == len(e.tokens)]
        for h in freed:
            del self.entries[h]
        self.entries[handle] = CacheEntry(prompt, handle)
        while len(self.entries) > self.max_entries or self.tokens_held > self.max_tokens:
            freed.append(self.entries.popitem(last=False)[0])
        return freed
