"""Constrained decoding: whatever the sampling, the output parses and validates against the
schema; bad schemas are refused before any output; the engine's other paths stay untouched."""

import json

import jsonschema
import pytest
import torch

from slmkit.engine import GenerationRequest, SamplingParams
from slmkit.errors import InvalidRequestError
from slmkit.generate import collect

SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": ["string", "null"], "maxLength": 12},
        "total": {"type": ["number", "null"]},
        "currency": {"enum": ["EUR", "USD", "GBP", None]},
        "lines": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
        "paid": {"type": "boolean"},
    },
    "required": ["invoice_number", "total", "currency", "lines", "paid"],
    "additionalProperties": False,
}
PROMPT = [{"role": "user", "content": "Extract the invoice fields as JSON."}]


def _request(seed: int | None, temperature: float, schema=SCHEMA, **options) -> GenerationRequest:
    return GenerationRequest(messages=PROMPT, max_new_tokens=200, json_schema=schema,
                             sampling=SamplingParams(temperature=temperature, seed=seed), **options)


def test_greedy_and_random_samples_always_validate(tiny_engine):
    for seed, temperature in [(None, 0.0)] + [(seed, 1.5) for seed in range(12)]:
        result = collect(tiny_engine.stream(_request(seed, temperature)))
        assert result.finish_reason == "stop", result.text
        jsonschema.validate(json.loads(result.text), SCHEMA)


def test_the_same_requests_without_the_schema_are_not_json(tiny_engine):
    """The random tiny model writes no JSON by itself: what the test above sees is the constraint."""
    parsed = 0
    for seed in range(12):
        text = collect(tiny_engine.stream(_request(seed, 1.5, schema=None))).text
        try:
            json.loads(text)
            parsed += 1
        except ValueError:
            pass
    assert parsed == 0


def test_any_json_object(tiny_engine):
    for seed in range(4):
        result = collect(tiny_engine.stream(_request(seed, 1.0, schema={"type": "object"}, )))
        if result.finish_reason == "stop":
            assert isinstance(json.loads(result.text), dict)
        else:  # cut by the token limit: still a prefix of an object
            assert result.text.startswith("{")


def test_seeded_constrained_sampling_reproduces(tiny_engine):
    first = collect(tiny_engine.stream(_request(5, 1.2))).text
    assert collect(tiny_engine.stream(_request(5, 1.2))).text == first


@pytest.mark.parametrize("schema", [
    {"type": "no-such-type"},
    {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}},
    {"type": "string", "pattern": "(unclosed"},
])
def test_unusable_schema_is_refused_before_any_output_and_the_engine_still_works(tiny_engine, schema):
    with pytest.raises(InvalidRequestError) as raised:
        tiny_engine.stream(_request(None, 0.0, schema=schema))
    assert raised.value.param == "response_format"
    result = collect(tiny_engine.stream(_request(None, 0.0)))
    jsonschema.validate(json.loads(result.text), SCHEMA)


def test_schema_must_be_an_object():
    with pytest.raises(InvalidRequestError, match="JSON Schema object"):
        _request(None, 0.0, schema=["not", "a", "schema"]).validate()


def test_shared_sampling_params_are_not_changed(tiny_engine):
    shared = SamplingParams(temperature=0.0)
    request = GenerationRequest(messages=PROMPT, max_new_tokens=200, json_schema=SCHEMA, sampling=shared)
    collect(tiny_engine.stream(request))
    assert shared.grammar is None
    plain = collect(tiny_engine.stream(GenerationRequest(messages=PROMPT, max_new_tokens=20, sampling=shared)))
    with pytest.raises(ValueError):
        json.loads(plain.text)


def test_prompt_lookup_drafting_is_off_for_constrained_requests(tiny_engine):
    """Drafted tokens skip the Sampler; a constrained request must not draft (or its JSON breaks)."""
    want = collect(tiny_engine.stream(_request(None, 0.0))).text
    got = collect(tiny_engine.stream(_request(None, 0.0, prompt_lookup_tokens=4)))
    assert got.text == want
    assert got.stats.draft_tokens == 0


def test_sampler_never_picks_a_masked_token(tiny_engine):
    from slmkit.engine.constrained import compile_json_schema
    from slmkit.engine.sampling import Sampler

    grammar = compile_json_schema({"enum": ["yes", "no"]}, tiny_engine.tokenizer)
    allowed = grammar.start().allowed()
    quote = tiny_engine.tokenizer.convert_ids_to_tokens(int(allowed.nonzero()[0]))
    assert quote.startswith('"')
    for seed in range(30):
        logits = torch.randn(len(tiny_engine.tokenizer), generator=torch.Generator().manual_seed(seed)) * 10
        token = Sampler(SamplingParams(temperature=2.0, seed=seed, grammar=grammar))(logits, [0])
        assert allowed[token]


def test_compiled_grammars_are_cached(tiny_engine):
    from slmkit.engine.constrained import compile_json_schema

    assert compile_json_schema(SCHEMA, tiny_engine.tokenizer) is compile_json_schema(dict(SCHEMA), tiny_engine.tokenizer)
