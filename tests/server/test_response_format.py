"""``response_format`` json_object and json_schema in /v1/chat/completions: the content always
parses and validates, streamed or not; a bad schema is a 400 and the server goes on serving."""

import json

import httpx
import jsonschema
import pytest

SCHEMA = {"type": "object", "properties": {"vendor": {"type": ["string", "null"], "maxLength": 16},
                                           "total": {"type": ["number", "null"]},
                                           "kind": {"enum": ["invoice", "contract", "ticket"]}},
          "required": ["vendor", "total", "kind"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "doc", "schema": SCHEMA, "strict": True}}
MESSAGES = [{"role": "user", "content": "Read the invoice and answer in JSON."}]


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_json_schema_content_validates(client, model_id, seed):
    response = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=200, response_format=JSON_SCHEMA,
                                              temperature=0 if seed is None else 1.3, seed=seed)
    assert response.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(response.choices[0].message.content), SCHEMA)


def test_streamed_json_equals_the_whole_answer(client, model_id):
    whole = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=200, temperature=0,
                                           response_format=JSON_SCHEMA).choices[0].message.content
    stream = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=200, temperature=0,
                                            response_format=JSON_SCHEMA, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == whole
    jsonschema.validate(json.loads(whole), SCHEMA)


def test_json_object_is_an_object(client, model_id):
    response = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=200, temperature=0,
                                              response_format={"type": "json_object"})
    if response.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(response.choices[0].message.content), dict)
    else:
        assert response.choices[0].message.content.startswith("{")


@pytest.mark.parametrize("response_format", [
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(open"}}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": "not an object"}},
    {"type": "json_schema", "json_schema": "nope"},
    {"type": "xml"},
])
def test_bad_response_format_is_400_and_the_server_goes_on(server, model_id, response_format):
    body = {"model": model_id, "messages": MESSAGES, "max_tokens": 50, "response_format": response_format}
    response = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "response_format"
    ok = httpx.post(server.url + "/v1/chat/completions",
                    json={**body, "max_tokens": 200, "temperature": 0, "response_format": JSON_SCHEMA})
    assert ok.status_code == 200
    jsonschema.validate(json.loads(ok.json()["choices"][0]["message"]["content"]), SCHEMA)


def test_remote_engine_forwards_json_schema(server, model_id):
    """`slm chat --url` and other RemoteEngine callers get the same constraint as local engines
    (without forwarding, the tiny random model's text never parses)."""
    from slmkit.client import RemoteEngine
    from slmkit.engine import GenerationRequest, SamplingParams
    from slmkit.errors import InvalidRequestError
    from slmkit.generate import collect

    engine = RemoteEngine(server.url, model=model_id)
    try:
        for seed in (1, 2, 3):
            request = GenerationRequest(messages=MESSAGES, max_new_tokens=200, json_schema=SCHEMA,
                                        sampling=SamplingParams(temperature=1.3, seed=seed))
            result = collect(engine.stream(request))
            assert result.finish_reason == "stop"
            jsonschema.validate(json.loads(result.text), SCHEMA)
        with pytest.raises(InvalidRequestError, match="needs chat messages"):
            list(engine.stream(GenerationRequest(prompt="x", json_schema=SCHEMA)))
    finally:
        engine.close()
