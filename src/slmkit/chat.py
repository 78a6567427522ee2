"""``slm chat``: a conversation that keeps its history and streams each answer."""

from __future__ import annotations

from collections.abc import Iterator

from slmkit.engine import Chunk, Engine, GenerationRequest, SamplingParams


class Conversation:
    """Messages so far plus the settings each turn is generated with."""

    def __init__(self, engine: Engine, system: str | None = None, max_new_tokens: int = 512,
                 sampling: SamplingParams | None = None):
        self.engine = engine
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling or SamplingParams()
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def say(self, text: str) -> Iterator[Chunk]:
        """Stream the answer to ``text``; the answer joins the history once it is complete.

        An answer cut short (the caller stops iterating) is kept as far as it got, so the
        history always matches what the user saw.
        """
        self.messages.append({"role": "user", "content": text})
        request = GenerationRequest(messages=list(self.messages), max_new_tokens=self.max_new_tokens,
                                    sampling=self.sampling)
        try:
            stream = self.engine.stream(request)
        except Exception:
            self.messages.pop()
            raise
        parts: list[str] = []
        try:
            for chunk in stream:
                parts.append(chunk.text)
                yield chunk
        finally:
            self.messages.append({"role": "assistant", "content": "".join(parts)})
