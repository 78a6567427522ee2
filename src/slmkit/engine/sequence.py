"""The text side of one generating sequence, shared by every backend.

Token ids go in one at a time; text deltas come out that never split a UTF-8 character or a
byte-level BPE merge, never show any part of a stop string, and stop at EOS, a stop string or
the token limit.
"""

from __future__ import annotations

import time

from slmkit.engine import Chunk, GenerationStats

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Decode a growing list of ids into text deltas.

    Decodes a short window that starts a few tokens back (so tokenizers that drop a leading
    space on a fresh decode still produce the right text) and withholds output while it ends
    in an incomplete UTF-8 sequence.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        after = self._decode(self.ids[self.prefix_offset :])
        if after.endswith(REPLACEMENT) or len(after) <= len(before):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        """Whatever is still withheld, less a character left incomplete at the end.

        When the token limit cuts a multi-byte character in half, its bytes are dropped
        rather than shown as U+FFFD, so no chunk ever carries a replacement character that
        the model did not mean.
        """
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        after = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return after[len(before) :].rstrip(REPLACEMENT)


class StopMatcher:
    """Withhold text that might be the start of a stop string; cut at the first full match."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:length]):
                    hold = max(hold, length)
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class SequenceState:
    """Everything about one sequence except the model: ids, text, limits, timing."""

    def __init__(self, tokenizer, prompt_ids: list[int], eos_ids: set[int], max_new_tokens: int, stop: list[str]):
        self.prompt_ids = list(prompt_ids)
        self.generated: list[int] = []
        self.eos_ids = eos_ids
        self.max_new_tokens = max_new_tokens
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.stops = StopMatcher(stop)
        self.stats = GenerationStats(prompt_tokens=len(prompt_ids))
        self.started = time.perf_counter()
        self.finish_reason: str | None = None
        self._unsent_ids: list[int] = []
        self._unsent_logprobs: list[float | None] | None = None

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.generated

    def append(self, token_id: int, logprob: float | None = None, with_logprobs: bool = False) -> Chunk:
        """Take the next sampled token; the returned chunk is final when ``finish_reason`` is set.
        ``with_logprobs``: the chunks carry each token's ``logprob`` (None where none was computed).

        A chunk with no text carries no ids either: they travel with the next chunk that has
        text, so callers may drop empty chunks without losing ids.
        """
        if not self.generated:
            self.stats.time_to_first_token_s = time.perf_counter() - self.started
        self.generated.append(token_id)
        self._unsent_ids.append(token_id)
        if with_logprobs:
            if self._unsent_logprobs is None:
                self._unsent_logprobs = []
            self._unsent_logprobs.append(logprob)
        self.stats.completion_tokens = len(self.generated)
        is_eos = token_id in self.eos_ids
        raw = self.detokenizer.flush() if is_eos else self.detokenizer.push(token_id)
        text, stopped = self.stops.push(raw)
        if stopped:
            return self._finish("stop", text)
        if is_eos:
            return self._finish("stop", text + self.stops.flush())
        if len(self.generated) >= self.max_new_tokens:
            rest, stopped = self.stops.push(self.detokenizer.flush())
            if stopped:
                return self._finish("stop", text + rest)
            return self._finish("length", text + rest + self.stops.flush())
        return self._chunk(text)

    def _chunk(self, text: str, reason: str | None = None) -> Chunk:
        """A chunk carrying every token id since the last chunk that had text."""
        if not text and reason is None:
            return Chunk(text="")
        ids, self._unsent_ids = self._unsent_ids, []
        logprobs, self._unsent_logprobs = self._unsent_logprobs, None
        return Chunk(text=text, token_ids=ids, logprobs=logprobs, finish_reason=reason,
                     stats=self.stats if reason else None)

    def _finish(self, reason: str, text: str) -> Chunk:
        self.finish_reason = reason
        self.stats.total_s = time.perf_counter() - self.started
        return self._chunk(text, reason)
