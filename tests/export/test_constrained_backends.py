"""Constrained decoding works on every backend: llama.cpp and ONNX Runtime sample through the
shared Sampler, so a JSON-schema request gives valid JSON there too, the same as PyTorch's."""

import json

import jsonschema
import pytest

from slmkit.engine import GenerationRequest, SamplingParams, load_engine
from slmkit.generate import collect

SCHEMA = {"type": "object", "properties": {"name": {"type": ["string", "null"], "maxLength": 10},
                                           "count": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["name", "count"], "additionalProperties": False}
BACKENDS = {"gguf-f32": "llamacpp", "onnx-fp32": "onnxruntime"}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def engines(request, exports, eot_model_dir):
    from slmkit.engine.torch_backend import TorchEngine

    reference = TorchEngine(eot_model_dir)
    engine = load_engine(str(exports[request.param].path), backend=BACKENDS[request.param])
    yield reference, engine
    engine.close()
    reference.close()


@pytest.mark.parametrize("temperature,seed", [(0.0, None), (1.3, 1), (1.3, 2)])
def test_schema_holds_and_matches_pytorch(engines, temperature, seed):
    reference, engine = engines
    request = GenerationRequest(prompt="Write the record:", max_new_tokens=60, json_schema=SCHEMA,
                                sampling=SamplingParams(temperature=temperature, seed=seed))
    got = collect(engine.stream(request))
    assert got.finish_reason == "stop"
    jsonschema.validate(json.loads(got.text), SCHEMA)
    assert got.text == collect(reference.stream(request)).text
