"""Constrained decoding: output that always parses as JSON valid against a JSON Schema.

llguidance compiles the schema into a grammar over the model's own tokens. Each sequence gets a
matcher that follows the tokens sampled so far and says which tokens keep the text a valid
prefix; the shared :class:`~slmkit.engine.sampling.Sampler` sets every other logit to -inf
before it samples, so the constraint holds the same way on every backend (PyTorch, llama.cpp,
ONNX Runtime). The end-of-turn token is allowed only once the JSON is complete; after that it
is the only one allowed.

A request asks for it with ``GenerationRequest.json_schema``; :func:`bind` (called by every
backend when it prepares a request) compiles the schema for the engine's tokenizer into
``request.sampling.grammar``. Compiled grammars are cached per tokenizer, so a server that
sees the same schema again does not recompile it.

The output is JSON in the layout of ``json.dumps``' defaults (``", "`` and ``": "``, no other
whitespace), properties in the schema's order. A token limit reached before the JSON closes
still cuts it (``finish_reason == "length"``): give room.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import weakref

import numpy as np
import torch

from slmkit.errors import InvalidRequestError, SlmError

ANY_JSON_OBJECT = {"type": "object"}
# The layout json.dumps writes by default; no free whitespace, so a small model cannot pad forever.
JSON_LAYOUT = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
MAX_SCHEMA_CHARS = 100_000
GRAMMARS_PER_TOKENIZER = 64

_lock = threading.Lock()
_per_tokenizer: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class _TokenizerCache:
    ll_tokenizer: object
    grammars: collections.OrderedDict


def _cache_for(tokenizer) -> _TokenizerCache:
    """llguidance's view of ``tokenizer`` (about a second to build for a 49k vocabulary; once)."""
    with _lock:
        cache = _per_tokenizer.get(tokenizer)
        if cache is None:
            import llguidance.hf

            try:
                ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer)
            except ValueError as exc:
                raise InvalidRequestError(f"JSON output needs a fast (Rust) tokenizer: {exc}") from exc
            cache = _TokenizerCache(ll_tokenizer, collections.OrderedDict())
            _per_tokenizer[tokenizer] = cache
        return cache


class JsonGrammar:
    """A JSON Schema compiled for one tokenizer. Immutable; every sequence that uses it gets
    its own :class:`GrammarState` from :meth:`start`."""

    def __init__(self, schema: dict, ll_tokenizer):
        import llguidance

        self.schema = schema
        self.vocab_size = ll_tokenizer.vocab_size
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_LAYOUT)
        except ValueError as exc:
            raise InvalidRequestError(f"The JSON schema is not usable: {exc}", param="response_format") from exc
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, ll_tokenizer)
        if is_error:
            raise InvalidRequestError(f"The JSON schema is not usable: {messages[0]}", param="response_format")
        # A pristine matcher, copied for each sequence (copying skips recompiling the lexer).
        self._initial = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
        if self._initial.is_error():
            raise InvalidRequestError(f"The JSON schema is not usable: {self._initial.get_error()}",
                                      param="response_format")

    def start(self) -> GrammarState:
        return GrammarState(self._initial.deep_copy(), self.vocab_size)


class GrammarState:
    """The grammar's position in one sequence: which tokens may come next."""

    def __init__(self, matcher, vocab_size: int):
        self.matcher = matcher
        self.vocab_size = vocab_size

    def allowed(self) -> torch.Tensor:
        """Boolean (vocab_size,) tensor of the tokens the grammar accepts next."""
        if self.matcher.is_error():
            raise SlmError(f"Constrained decoding failed: {self.matcher.get_error()}")
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        return torch.from_numpy(np.unpackbits(bits, bitorder="little")[: self.vocab_size].astype(bool))

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` (1, vocab) with every token the grammar rejects set to -inf (in place).
        Rows past the tokenizer's vocabulary (padding rows of the output layer) are rejected too."""
        allowed = self.allowed()
        width = min(scores.shape[-1], allowed.shape[0])
        scores[0, :width].masked_fill_(~allowed[:width], float("-inf"))
        scores[0, width:] = float("-inf")
        return scores

    def forced(self) -> list[int]:
        """The tokens the grammar allows and nothing else from here (a key's name and its
        punctuation, the rest of the only document span that starts this way): they need no
        choice, so a backend may feed them all in one step without sampling (jump-forward)."""
        if self.matcher.is_error():
            return []
        return list(self.matcher.compute_ff_tokens())

    def advance(self, token_id: int) -> None:
        if not self.matcher.consume_token(token_id):
            raise SlmError(f"Constrained decoding failed on token {token_id}: {self.matcher.get_error()}")

    @property
    def complete(self) -> bool:
        """The text so far is a whole JSON value that the schema accepts."""
        return self.matcher.is_accepting()


def compile_json_schema(schema: dict, tokenizer) -> JsonGrammar:
    """``schema`` compiled for ``tokenizer`` (a transformers fast tokenizer); cached."""
    if not isinstance(schema, dict):
        raise InvalidRequestError("A JSON schema must be a JSON object.", param="response_format")
    try:
        key = json.dumps(schema, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"The JSON schema is not plain JSON: {exc}", param="response_format") from exc
    if len(key) > MAX_SCHEMA_CHARS:
        raise InvalidRequestError(f"The JSON schema is over {MAX_SCHEMA_CHARS} characters; simplify it.",
                                  param="response_format")
    cache = _cache_for(tokenizer)
    with _lock:
        grammar = cache.grammars.get(key)
        if grammar is not None:
            cache.grammars.move_to_end(key)
            return grammar
    grammar = JsonGrammar(schema, cache.ll_tokenizer)
    with _lock:
        cache.grammars[key] = grammar
        while len(cache.grammars) > GRAMMARS_PER_TOKENIZER:
            cache.grammars.popitem(last=False)
    return grammar


def bind(request, tokenizer) -> None:
    """Compile ``request.json_schema`` (if any) for ``tokenizer`` into ``request.sampling.grammar``.

    The request gets its own copy of its sampling parameters, so a ``SamplingParams`` shared by
    several requests is never changed. Raises :class:`InvalidRequestError` for a schema that
    cannot be compiled, before any token is generated.
    """
    if request.json_schema is None:
        return
    grammar = compile_json_schema(request.json_schema, tokenizer)
    request.sampling = dataclasses.replace(request.sampling, grammar=grammar)
