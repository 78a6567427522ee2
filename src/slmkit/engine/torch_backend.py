"""PyTorch backend: runs an HF-format artifact with ``transformers`` on the CPU.

Several LoRA adapters (``slm finetune --keep-adapter``) can be served on one shared base
(``TorchEngine(path, adapters={name: dir})``): peft loads them, the base weights are held once,
each adapter adds only its low-rank matrices (stacked per layer, :mod:`slmkit.engine.lora_stack`),
and one batch may mix sequences of different adapters and of the plain base.
:meth:`TorchEngine.adapter` gives an engine view whose requests run with one adapter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from slmkit.engine import Chunk, GenerationRequest
from slmkit.engine.sampling import Sampler
from slmkit.engine.sequence import SequenceState
from slmkit.errors import ContextLengthExceededError, CorruptModelError, InvalidRequestError
from slmkit.loading import MODEL_BUILD_LOCK


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"Cannot load the tokenizer in {path}: {exc}") from exc


def load_causal_lm(path: Path):
    """Load weights from safetensors only (never pickle), float32, in eval mode."""
    from transformers import AutoModelForCausalLM

    if not any(Path(path).glob("*.safetensors")):
        raise CorruptModelError(f"{path} has no .safetensors weights; slmkit does not load pickle weights.")
    try:
        with MODEL_BUILD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CorruptModelError(f"Cannot load the model in {path}: {exc}") from exc
    return model.eval()


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes held by ``model``'s parameters and buffers, each storage counted once: tied weights
    (SmolLM2's input embedding is its output layer) share one storage, which ``state_dict()``
    lists under both names."""
    storages = {}
    for _, tensor in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def end_of_turn_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def render_prompt(tokenizer, request: GenerationRequest) -> list[int]:
    """Token ids of the prompt: chat messages through the model's chat template, or raw text."""
    if request.messages is not None:
        if not tokenizer.chat_template:
            raise InvalidRequestError("This model has no chat template, so it cannot take chat messages; send a raw "
                                      "prompt (/v1/completions) instead.", param="messages")
        from jinja2 import TemplateError

        try:
            text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:  # the template's own checks (e.g. "roles must alternate"), sandbox refusals
            raise InvalidRequestError(f"The model's chat template rejected these messages: {str(exc)[:300]}",
                                      param="messages", code="chat_template_error") from exc
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(request.prompt)["input_ids"]


def check_context(prompt_tokens: int, max_new_tokens: int, context_length: int,
                  model_context: int | None = None) -> None:
    """Refuse prompt + answer beyond ``context_length``; ``model_context``: the model's own,
    when the engine keeps a shorter window per request (the fix is then to load a longer one)."""
    if prompt_tokens + max_new_tokens > context_length:
        over = prompt_tokens + max_new_tokens - context_length
        if model_context is None or model_context <= context_length:
            limit, fix = "the model's context", ""
        else:
            limit = "this engine's context per request"
            fix = (f" Or load the model with context_length={model_context}, its own context "
                   f"(slm serve --context-length {model_context}).")
        raise ContextLengthExceededError(
            f"The prompt takes {prompt_tokens} tokens and {max_new_tokens} more were asked for, "
            f"{over} over {limit} of {context_length} tokens. "
            f"Shorten the prompt or lower max_tokens.{fix}"
        )


def teacher_forced_logprobs(model, token_ids: list[int]) -> list[float]:
    """Log-probability of each token after the first given the ones before it (one forward pass)."""
    with torch.inference_mode():
        ids = torch.tensor([token_ids], dtype=torch.long)
        logprobs = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0, :-1].float(), dim=-1)
        return logprobs.gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1).tolist()


def shared_prefix_logprobs(model, prompt_ids: list[int], continuations: list[list[int]], rows_per_pass: int = 8,
                           select_rows=None) -> list[list[float]]:
    """Teacher-forced log-probabilities of each continuation after ``prompt_ids``, the prompt's
    forward pass run once (see :func:`slmkit.engine.scoring.score_continuations`).

    The prompt's KV cache is repeated for a batch of up to ``rows_per_pass`` continuations,
    right-padded: a padding token comes after every real token of its row, so causal attention
    keeps it out of the scores that are read. ``select_rows(n)`` prepares the LoRA stack for a
    batch of ``n`` rows.
    """
    import copy

    from transformers import DynamicCache

    from slmkit.engine.scoring import continuation_rows

    results: list[list[float]] = [[] for _ in continuations]
    todo = [i for i, c in enumerate(continuations) if c]
    with torch.inference_mode():
        if select_rows:
            select_rows(1)
        cache = DynamicCache()
        first_logits = model(input_ids=torch.tensor([prompt_ids], dtype=torch.long), cache=cache,
                             use_cache=True).logits[0, -1]
        for start in range(0, len(todo), rows_per_pass):
            group = todo[start:start + rows_per_pass]
            length = max(len(continuations[i]) for i in group)
            ids = torch.zeros((len(group), length), dtype=torch.long)  # (rows, tokens), right-padded
            for row, index in enumerate(group):
                ids[row, : len(continuations[index])] = torch.tensor(continuations[index], dtype=torch.long)
            rows_cache = copy.deepcopy(cache)
            rows_cache.batch_repeat_interleave(len(group))  # (1, heads, prompt, dim) -> (rows, heads, prompt, dim)
            if select_rows:
                select_rows(len(group))
            logits = model(input_ids=ids, cache=rows_cache, use_cache=True).logits  # (rows, tokens, vocab)
            for row, index in enumerate(group):
                results[index] = continuation_rows(first_logits, logits[row], continuations[index])
    return results


def load_draft_model(reference: str, target, tokenizer):
    """A draft model for assisted decoding; it must speak the target's vocabulary."""
    from slmkit.references import resolve_hf

    draft_path = resolve_hf(reference).path
    draft_vocab = load_tokenizer(draft_path).get_vocab()
    if draft_vocab != tokenizer.get_vocab():
        raise InvalidRequestError(
            f"The draft model {reference} uses a different tokenizer from the target model; assisted decoding "
            "needs the same vocabulary. Distill a draft from the target (slm distill) or drop --draft."
        )
    model = load_causal_lm(draft_path)
    if model.config.vocab_size < target.config.vocab_size:
        raise InvalidRequestError(f"The draft model {reference} has fewer output rows than the target's vocabulary.")
    return model


def check_scoring_window(tokens: int, context_length: int) -> None:
    """``token_logprobs`` scores one window; it must fit the context."""
    if tokens > context_length:
        raise ContextLengthExceededError(
            f"{tokens} tokens do not fit the context of {context_length}; score shorter windows."
        )


def prepare_prompt(tokenizer, request: GenerationRequest, context_length: int,
                   model_context: int | None = None) -> list[int]:
    """Validate ``request`` and return its prompt ids; raises before any work is done.
    Every backend prepares requests this way (``model_context``: see :func:`check_context`)."""
    from slmkit.engine.constrained import bind

    request.validate()
    prompt_ids = render_prompt(tokenizer, request)
    check_context(len(prompt_ids), request.max_new_tokens, context_length, model_context)
    bind(request, tokenizer)  # a json_schema becomes request.sampling.grammar
    return prompt_ids


def adapter_directory(reference: str | Path) -> Path:
    """The LoRA adapter directory of ``reference``: an adapter directory (adapter_config.json +
    adapter_model.safetensors), or a model (store name or directory) that keeps one in adapter/."""
    from slmkit.models import NAME_PATTERN, store_path

    path = Path(reference).expanduser()
    if not path.is_dir() and NAME_PATTERN.match(str(reference)) and ".." not in str(reference):
        path = store_path(str(reference))
    if (path / "adapter" / "adapter_config.json").is_file():
        path = path / "adapter"
    if not (path / "adapter_config.json").is_file():
        raise InvalidRequestError(f"{Path(str(reference)).name} is not a LoRA adapter: no adapter_config.json. Make one "
                                  "with `slm finetune MODEL DATA --method lora --keep-adapter`.")
    if not (path / "adapter_model.safetensors").is_file():
        raise CorruptModelError(f"The adapter {Path(str(reference)).name} has no adapter_model.safetensors; slmkit does "
                                "not load pickle weights.")
    return path


def load_adapters(model, adapters: dict[str, str | Path]):
    """(``model`` wrapped by peft with every adapter of ``adapters`` (name -> adapter reference),
    their :class:`~slmkit.engine.lora_stack.AdapterStack`)."""
    from peft import PeftModel

    from slmkit.engine.lora_stack import AdapterStack

    wrapped = None
    for name, reference in adapters.items():
        directory = adapter_directory(reference)
        try:
            with MODEL_BUILD_LOCK:
                if wrapped is None:
                    wrapped = PeftModel.from_pretrained(model, str(directory), adapter_name=name, is_trainable=False)
                else:
                    wrapped.load_adapter(str(directory), adapter_name=name, is_trainable=False)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise CorruptModelError(f"Cannot load the adapter {name} on this base model: {str(exc)[:300]}") from exc
    wrapped.eval()
    return wrapped, AdapterStack(wrapped, list(adapters))


class TorchEngine:
    """One model on the CPU. Concurrent requests are decoded together by a
    :class:`~slmkit.engine.torch_batching.BatchScheduler` (up to ``max_batch_size`` at once)."""

    def __init__(self, path: Path, model_name: str | None = None, threads: int | None = None,
                 max_batch_size: int = 8, draft: str | None = None, draft_tokens: int = 4,
                 adapters: dict[str, str | Path] | None = None):
        from slmkit.engine.torch_batching import BatchScheduler

        if threads:
            torch.set_num_threads(threads)
        started = time.perf_counter()
        self.path = Path(path)
        self.model_name = model_name or self.path.name
        self.tokenizer = load_tokenizer(self.path)
        self.model = load_causal_lm(self.path)
        self.adapters, self.adapter_stack = list(adapters or {}), None
        if adapters:
            self.model, self.adapter_stack = load_adapters(self.model, adapters)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.eos_ids = end_of_turn_ids(self.model, self.tokenizer)
        self.memory_bytes = weights_bytes(self.model)
        self.draft_model, self.draft_tokens = None, draft_tokens
        if draft:
            self.draft_model = load_draft_model(draft, self.model, self.tokenizer)
        self._lock = threading.Lock()
        self.scheduler = BatchScheduler(self.model, self._lock, max_batch_size=max_batch_size,
                                        select_adapters=self.adapter_stack.select if self.adapter_stack else None)
        self.load_time_s = time.perf_counter() - started

    @property
    def healthy(self) -> bool:
        """False once the engine is closed or its scheduler has died (a server reloads it)."""
        return self.model is not None and self.scheduler.healthy

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(render_prompt(self.tokenizer, request))

    def prepare(self, request: GenerationRequest) -> list[int]:
        return prepare_prompt(self.tokenizer, request, self.context_length)

    def adapter(self, name: str) -> AdapterView:
        """This engine with every request run through the LoRA adapter ``name``."""
        if name not in self.adapters:
            raise InvalidRequestError(f"No adapter {name!r} on {self.model_name}. Loaded: {', '.join(self.adapters) or 'none'}.")
        return AdapterView(self, name)

    def stream(self, request: GenerationRequest, adapter: str | None = None) -> Iterator[Chunk]:
        from slmkit.engine.drafting import ModelDrafter, PromptLookupDrafter
        from slmkit.engine.torch_batching import Slot

        prompt_ids = self.prepare(request)
        state = SequenceState(self.tokenizer, prompt_ids, self.eos_ids, request.max_new_tokens, request.stop)
        slot = Slot(state, Sampler(request.sampling), adapter=adapter)
        greedy = request.sampling.temperature == 0 and request.sampling.repetition_penalty == 1.0
        greedy = greedy and request.sampling.grammar is None  # drafts skip the Sampler, so its grammar too
        if request.prompt_lookup_tokens and greedy:
            slot.drafter, slot.draft_tokens = PromptLookupDrafter(), request.prompt_lookup_tokens
        elif self.draft_model is not None and greedy:
            slot.drafter, slot.draft_tokens = ModelDrafter(self.draft_model), self.draft_tokens
        return self.scheduler.submit(slot)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_logprobs(self, token_ids: list[int], adapter: str | None = None) -> list[float]:
        check_scoring_window(len(token_ids), self.context_length)
        with self._lock:
            if self.adapter_stack is not None:
                self.adapter_stack.select([adapter])
            return teacher_forced_logprobs(self.model, token_ids)

    def continuation_logprobs(self, prompt_ids: list[int], continuations: list[list[int]],
                              adapter: str | None = None) -> list[list[float]]:
        """Log-probabilities of each continuation's tokens after ``prompt_ids``, the prompt computed
        once (:func:`slmkit.engine.scoring.score_continuations` says what they equal)."""
        from slmkit.engine.scoring import check_continuations

        check_continuations(prompt_ids, continuations, self.context_length)
        with self._lock:
            select_rows = (lambda rows: self.adapter_stack.select([adapter] * rows)) if self.adapter_stack else None
            return shared_prefix_logprobs(self.model, list(prompt_ids), [list(c) for c in continuations],
                                          select_rows=select_rows)

    def close(self) -> None:
        self.scheduler.stop()
        self.model = None


class AdapterView:
    """A :class:`TorchEngine` seen through one of its LoRA adapters: same interface, same
    scheduler (so its sequences batch with the base's and the other adapters'), no weights of
    its own. Closing a view does nothing; the engine owns the model."""

    memory_bytes = 0

    def __init__(self, engine: TorchEngine, adapter: str):
        self.engine, self.adapter_name = engine, adapter
        self.model_name = adapter
        self.tokenizer, self.context_length = engine.tokenizer, engine.context_length

    @property
    def healthy(self) -> bool:
        return self.engine.healthy

    @property
    def scheduler(self):
        return self.engine.scheduler

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return self.engine.count_prompt_tokens(request)

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        return self.engine.stream(request, adapter=self.adapter_name)

    def tokenize(self, text: str) -> list[int]:
        return self.engine.tokenize(text)

    def token_logprobs(self, token_ids: list[int]) -> list[float]:
        return self.engine.token_logprobs(token_ids, adapter=self.adapter_name)

    def continuation_logprobs(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[list[float]]:
        return self.engine.continuation_logprobs(prompt_ids, continuations, adapter=self.adapter_name)

    def close(self) -> None:
        pass
