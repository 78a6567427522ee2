"""Parity of GGUF and ONNX exports with the PyTorch model they came from (tiny model, CI)."""

import json

import pytest

from slmkit.artifact import content_hash, read_card

FLOAT_EXPORTS = ("gguf-f32", "gguf-f16", "onnx-fp32")
QUANTIZED_EXPORTS = ("gguf-q4_k_m", "onnx-int8")


@pytest.mark.parametrize("kind", FLOAT_EXPORTS)
def test_float_exports_decode_the_same_first_32_tokens_and_stop_where_pytorch_stops(exports, kind):
    parity = exports[kind].card.metrics["parity"]
    assert parity["greedy_tokens"] == 32
    assert parity["greedy_all_match"], parity["greedy"]
    reason, length = parity["chat_stop"]["reference"]
    assert reason == "stop" and length < 128  # the tiny model really ends its turn early
    assert parity["chat_stop"]["export"] == [reason, length]
    assert parity["perplexity"]["within_budget"]
    assert parity["passed"]


@pytest.mark.parametrize("kind", QUANTIZED_EXPORTS)
def test_quantized_exports_stay_within_their_perplexity_budget(exports, kind):
    ppl = exports[kind].card.metrics["parity"]["perplexity"]
    assert ppl["export"] != ppl["reference"]  # quantization did change the weights
    assert ppl["relative_change"] <= ppl["budget"]


@pytest.mark.parametrize("kind", ("gguf-f16", "gguf-q4_k_m"))
def test_gguf_file_carries_chat_template_end_of_turn_and_tokenizer(exports, kind):
    parity = exports[kind].card.metrics["parity"]
    assert parity["file_chat_template_match"]
    assert parity["file_end_of_turn_match"]
    assert parity["runtime_tokenizer_match"]


def test_raw_llama_cpp_chat_ends_the_turn_where_pytorch_does(exports, eot_model_dir):
    """llama.cpp alone (its own tokenizer, the GGUF's template and EOS), as Ollama would run it."""
    from slmkit.engine import GenerationRequest
    from slmkit.engine.llamacpp_backend import open_llama
    from slmkit.engine.torch_backend import TorchEngine
    from slmkit.export.parity import STOP_PROMPT
    from slmkit.generate import collect

    messages = [{"role": "user", "content": STOP_PROMPT}]
    torch_engine = TorchEngine(eot_model_dir)
    want = collect(torch_engine.stream(GenerationRequest(messages=messages, max_new_tokens=64)))
    llm = open_llama(exports["gguf-f32"].path / "model.gguf", n_ctx=512, n_threads=2, verbose=False)
    got = llm.create_chat_completion(messages, max_tokens=64, temperature=0.0)
    llm.close()
    assert want.finish_reason == "stop"
    assert got["choices"][0]["finish_reason"] == "stop"
    assert got["choices"][0]["message"]["content"] == want.text


def test_q4_k_m_on_small_rows_falls_back_and_records_the_types(exports):
    """64-value rows cannot hold q4_K's 256-value blocks: llama.cpp falls back per tensor and the
    card says which types the file really holds."""
    card = exports["gguf-q4_k_m"].card
    types = card.metrics["tensor_types"]
    assert "Q4_K" not in types and "Q5_0" in types
    assert card.dtype == "q4_k_m"


@pytest.mark.parametrize("kind", ("gguf-q4_k_m", "onnx-int8"))
def test_export_card_names_format_size_and_parent(exports, eot_model_dir, kind):
    result = exports[kind]
    card = read_card(result.path)
    assert card.stage == "export"
    assert card.format == kind.split("-")[0]
    assert card.parents[0].content_sha256 == content_hash(eot_model_dir)
    assert card.metrics["size_bytes"] == sum(p.stat().st_size for p in result.path.rglob("*") if p.name != "slm.json")
    assert card.content_sha256 == content_hash(result.path)
    assert json.loads((result.path / "slm.json").read_text())["metrics"]["parity"]["passed"] is True
    assert not list(result.path.parent.glob(".*partial"))
