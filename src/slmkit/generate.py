"""``slm generate``: one prompt in, one answer out (streamed or whole)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from slmkit.engine import Chunk, Engine, GenerationRequest, GenerationStats, SamplingParams


@dataclasses.dataclass
class GenerationResult:
    text: str
    finish_reason: str
    stats: GenerationStats
    token_ids: list[int]
    logprobs: list[float | None] | None = None  # with SamplingParams.logprobs, one per token id


def build_request(
    prompt: str,
    *,
    chat: bool = True,
    system: str | None = None,
    max_new_tokens: int = 256,
    stop: list[str] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
) -> GenerationRequest:
    """A request for ``prompt``: as a user chat turn (``chat``) or as raw text to complete."""
    sampling = SamplingParams(temperature, top_p, top_k, repetition_penalty, seed)
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return GenerationRequest(messages=messages, max_new_tokens=max_new_tokens, stop=stop or [], sampling=sampling)
    return GenerationRequest(prompt=prompt, max_new_tokens=max_new_tokens, stop=stop or [], sampling=sampling)


def collect(chunks: Iterator[Chunk]) -> GenerationResult:
    """Join a stream into one result."""
    parts, ids, logprobs, last = [], [], None, None
    for chunk in chunks:
        parts.append(chunk.text)
        ids.extend(chunk.token_ids)
        if chunk.logprobs is not None:
            logprobs = [] if logprobs is None else logprobs
            logprobs.extend(chunk.logprobs)
        last = chunk
    assert last is not None and last.stats is not None, "an engine stream always ends with a final chunk"
    return GenerationResult("".join(parts), last.finish_reason or "stop", last.stats, ids, logprobs)


def generate(engine: Engine, prompt: str, **options) -> GenerationResult:
    """Answer ``prompt`` with ``engine``; ``options`` are those of :func:`build_request`."""
    return collect(engine.stream(build_request(prompt, **options)))
