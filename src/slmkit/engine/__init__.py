"""The generation engine: one interface that every backend implements and every caller uses.

Callers (CLI, server, support bot, evals) build a :class:`GenerationRequest` and iterate
``engine.stream(request)``; each :class:`Chunk` carries new text, and the last one carries
the finish reason and :class:`GenerationStats`. Closing the iterator early cancels the
generation. Backends differ only in how they turn token ids into next-token logits; the
text side (chat template, sampling, incremental detokenizing, stop strings, limits) is shared
in :mod:`slmkit.engine.sequence` and :mod:`slmkit.engine.sampling`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

from slmkit.errors import InvalidRequestError

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 10.0  # below 0.01 sampling is greedy in all but name: send 0
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 0.1, 10.0


@dataclasses.dataclass
class SamplingParams:
    """How the next token is picked. ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    repetition_penalty: float = 1.0
    seed: int | None = None
    # Also report each chosen token's log-probability under the model's own distribution (the
    # raw scores, before the grammar mask and the penalty) in Chunk.logprobs.
    logprobs: bool = False
    # A compiled grammar (slmkit.engine.constrained.JsonGrammar) that masks the tokens it rejects;
    # set by the engine from GenerationRequest.json_schema, not by callers.
    grammar: object | None = None

    def validate(self) -> None:
        # Floors and ceilings keep the arithmetic finite: a temperature or penalty of 1e-40
        # divides logits into infinities, and sampling from those is meaningless.
        if not (self.temperature == 0.0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE):
            raise InvalidRequestError(
                f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE} and {MAX_TEMPERATURE}, "
                f"got {self.temperature}.", param="temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}.", param="top_p")
        if self.top_k < 0:
            raise InvalidRequestError(f"top_k must be >= 0, got {self.top_k}.", param="top_k")
        if not MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise InvalidRequestError(
                f"repetition_penalty must be between {MIN_REPETITION_PENALTY} and {MAX_REPETITION_PENALTY} "
                f"(1 = no penalty), got {self.repetition_penalty}.", param="repetition_penalty")


@dataclasses.dataclass
class GenerationRequest:
    """One generation. Give ``messages`` (chat, rendered with the model's chat template) or
    ``prompt`` (raw text, completed as is)."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_new_tokens: int = 256
    stop: list[str] = dataclasses.field(default_factory=list)
    sampling: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    # Speculative decoding with prompt-lookup drafts of this many tokens (0 = off). Used only
    # with greedy decoding, where it cannot change the output; backends may ignore it.
    prompt_lookup_tokens: int = 0
    # Constrain the output to JSON valid against this JSON Schema ({"type": "object"}: any JSON
    # object); see slmkit.engine.constrained. On llama.cpp, greedy constrained requests feed the
    # tokens the grammar forces without a step each (jump-forward).
    json_schema: dict | None = None

    def validate(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise InvalidRequestError("Give exactly one of messages or prompt.")
        if self.messages is not None:
            if not self.messages:
                raise InvalidRequestError("messages must not be empty.", param="messages")
            for index, message in enumerate(self.messages):
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    raise InvalidRequestError(f"messages[{index}] needs a string 'content'.", param="messages")
                if message.get("role") not in ("system", "user", "assistant"):
                    raise InvalidRequestError(
                        f"messages[{index}].role must be system, user or assistant, got {message.get('role')!r}.",
                        param="messages",
                    )
        if self.max_new_tokens < 1:
            raise InvalidRequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.", param="max_tokens")
        if not 0 <= self.prompt_lookup_tokens <= 16:
            raise InvalidRequestError("prompt_lookup_tokens must be between 0 and 16.", param="prompt_lookup_tokens")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise InvalidRequestError("json_schema must be a JSON Schema object.", param="response_format")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidRequestError("stop strings must be non-empty strings.", param="stop")
        self.sampling.validate()


@dataclasses.dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_s: float = 0.0
    total_s: float = 0.0
    draft_tokens: int = 0  # speculative decoding: tokens proposed by the drafter ...
    accepted_draft_tokens: int = 0  # ... and how many of them the model agreed with

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the first one (the prefill is excluded)."""
        decode_s = self.total_s - self.time_to_first_token_s
        return (self.completion_tokens - 1) / decode_s if self.completion_tokens > 1 and decode_s > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        out = dataclasses.asdict(self)
        out["decode_tokens_per_s"] = self.decode_tokens_per_s
        return out


@dataclasses.dataclass
class Chunk:
    """A piece of a stream. ``finish_reason`` ("stop" or "length") and ``stats`` are set
    on the last chunk only."""

    text: str
    token_ids: list[int] = dataclasses.field(default_factory=list)
    # With SamplingParams.logprobs: one per token id; None for a token no choice was made for
    # (one the grammar forced and the backend fed without computing its scores).
    logprobs: list[float | None] | None = None
    finish_reason: str | None = None
    stats: GenerationStats | None = None


class Engine(Protocol):
    """What every backend provides."""

    model_name: str
    context_length: int

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        """Generate for ``request``; closing the iterator cancels the generation."""
        ...

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens the prompt of ``request`` takes once rendered."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain ``text`` (no chat template, no special tokens added)."""
        ...

    def token_logprobs(self, token_ids: list[int]) -> list[float]:
        """Teacher-forced log-probability of each token after the first, given those before it.

        Returns ``len(token_ids) - 1`` values; ``token_ids`` must fit in the context.
        This is what perplexity is computed from on every backend.
        """
        ...

    def continuation_logprobs(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[list[float]]:
        """Teacher-forced log-probability of each token of every continuation after one shared prompt,
        the prompt computed once; row ``i`` equals ``token_logprobs(prompt_ids + continuations[i])[len(prompt_ids) - 1:]``.

        Callers use :func:`slmkit.engine.scoring.score_continuations`, which falls back to
        ``token_logprobs`` for an engine without it.
        """
        ...

    def close(self) -> None:
        ...


BACKENDS = ("torch", "llamacpp", "onnxruntime")
# Other spellings users type (the project's own name for llama.cpp, ONNX Runtime's short name).
BACKEND_ALIASES = {"llama.cpp": "llamacpp", "llama-cpp": "llamacpp", "onnx": "onnxruntime", "pytorch": "torch"}
# The backend each artifact format runs on fastest; "auto" picks it.
FORMAT_BACKENDS = {"hf": "torch", "gguf": "llamacpp", "onnx": "onnxruntime"}
# Who prefills long prompts on llama.cpp (engine/llamacpp_prefill.py).
PREFILL_CHOICES = ("auto", "torch", "llamacpp")
# Options only some backends take; the others drop them.
BACKEND_OPTIONS = {
    "torch": ("threads", "max_batch_size", "draft", "draft_tokens"),
    "llamacpp": ("threads", "context_length", "batch_size", "ubatch_size", "max_batch_size",
                 "prefix_cache_tokens", "prefix_cache_entries", "draft", "draft_tokens", "prompt_lookup",
                 "jump_forward", "prefill", "prefill_min_tokens", "prefill_dtype"),
    "onnxruntime": ("threads",),
}


def backend_name(backend: str) -> str:
    """The canonical name of ``backend`` ("auto" stays "auto"); a clear error for an unknown one."""
    name = BACKEND_ALIASES.get(backend, backend)
    if name not in ("auto", *BACKENDS):
        raise InvalidRequestError(
            f"Unknown backend {backend!r}. Available: auto, {', '.join(BACKENDS)} "
            f"(also accepted: {', '.join(BACKEND_ALIASES)}).",
            param="backend",
        )
    return name


def serving_plan(reference: str, backend: str = "auto") -> dict[str, str]:
    """Which backend and which file :func:`load_engine` would use for ``reference``, without
    loading (or importing) anything: ``{"backend": ..., "file": ...}`` (the file name only).

    Only a built-in model not imported yet is answered from its package (no import is made)."""
    from slmkit.references import BUILTIN_MODELS, builtin_file, builtin_gguf_name, resolve

    backend = backend_name(backend)
    text = str(reference)
    if text in BUILTIN_MODELS and builtin_file(text).suffix == ".gguf":
        if backend in ("auto", "llamacpp"):
            written = builtin_gguf_name(text)
            return {"backend": "llamacpp", "file": f"{written}/model.gguf" if written else builtin_file(text).name}
        if backend == "torch":
            return {"backend": "torch", "file": f"model.safetensors (float import of {builtin_file(text).name})"}
    resolved = resolve(reference, prefer_gguf=backend in ("auto", "llamacpp"))
    chosen = FORMAT_BACKENDS[resolved.format] if backend == "auto" else backend
    path = resolved.path
    if resolved.format != "gguf" and path.is_dir():
        weights = sorted(path.glob("*.safetensors" if chosen == "torch" else "*.onnx"))
        path = weights[0] if weights else path
    if resolved.format == "gguf" and path.parent.name.startswith(f"{resolved.name}-"):
        return {"backend": chosen, "file": f"{path.parent.name}/{path.name}"}  # the model's own export
    return {"backend": chosen, "file": path.name}


def load_engine(reference: str, backend: str = "auto", progress=None, **options) -> Engine:
    """Load the model ``reference`` (see :mod:`slmkit.references`) on ``backend``.

    ``auto`` runs a GGUF file or export on llama.cpp, an ONNX export on ONNX Runtime and an HF
    directory on PyTorch; a built-in model that ships a GGUF runs that GGUF on llama.cpp.
    ``torch`` also runs a GGUF (imported into the store first). Options a backend does not
    take are dropped (see :data:`BACKEND_OPTIONS`).
    """
    backend = backend_name(backend)
    if options.get("prefill", "auto") not in PREFILL_CHOICES:  # checked here: other backends drop it
        raise InvalidRequestError(f"prefill must be {', '.join(PREFILL_CHOICES)}, got {options['prefill']!r}.",
                                  param="prefill")
    from slmkit.references import resolve, resolve_hf

    resolved = resolve(reference, progress=progress, prefer_gguf=backend in ("auto", "llamacpp"))
    if backend == "auto":
        backend = FORMAT_BACKENDS[resolved.format]
    options = {k: v for k, v in options.items() if k in BACKEND_OPTIONS[backend]}
    if backend == "llamacpp":
        if resolved.format != "gguf":
            raise InvalidRequestError(
                f"{resolved.name} is not GGUF; the llamacpp backend runs .gguf files. "
                f"Export it first: slm export gguf {reference}"
            )
        from slmkit.engine.llamacpp_backend import LlamaCppEngine

        return LlamaCppEngine(resolved.path, model_name=resolved.name, text_side=resolved.text_side, **options)
    if backend == "onnxruntime":
        if resolved.format != "onnx":
            raise InvalidRequestError(
                f"{resolved.name} is not an ONNX export; the onnxruntime backend runs those. "
                f"Export it first: slm export onnx {reference}"
            )
        from slmkit.engine.onnx_backend import OnnxEngine

        return OnnxEngine(resolved.path, model_name=resolved.name, **options)
    from slmkit.engine.torch_backend import TorchEngine

    resolved = resolve_hf(reference, progress=progress)
    return TorchEngine(resolved.path, model_name=resolved.name, **options)
