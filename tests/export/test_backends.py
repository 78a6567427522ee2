"""The llama.cpp and ONNX Runtime backends behave like the PyTorch one: streaming, stop strings,
sampling, finish reasons, perplexity, and how ``load_engine`` picks them."""

import pytest

from slmkit.engine import GenerationRequest, SamplingParams, load_engine
from slmkit.generate import collect

EXACT_BACKENDS = {"gguf-f32": "llamacpp", "onnx-fp32": "onnxruntime"}


@pytest.fixture(scope="module")
def torch_engine(eot_model_dir):
    from slmkit.engine.torch_backend import TorchEngine

    engine = TorchEngine(eot_model_dir)
    yield engine
    engine.close()


@pytest.fixture(scope="module", params=sorted(EXACT_BACKENDS))
def export_engine(request, exports):
    engine = load_engine(str(exports[request.param].path), backend=EXACT_BACKENDS[request.param])
    yield engine
    engine.close()


def _prompt_request(**options) -> GenerationRequest:
    return GenerationRequest(prompt="The quick brown fox jumps over", **options)


def test_streams_the_same_chunks_as_pytorch(torch_engine, export_engine):
    request = _prompt_request(max_new_tokens=24)
    want = [(c.text, c.token_ids, c.finish_reason) for c in torch_engine.stream(request)]
    got = [(c.text, c.token_ids, c.finish_reason) for c in export_engine.stream(request)]
    assert got == want
    assert want[-1][2] == "length"


def test_stop_string_cuts_the_text_like_pytorch(torch_engine, export_engine):
    full = collect(torch_engine.stream(_prompt_request(max_new_tokens=24))).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    request = _prompt_request(max_new_tokens=24, stop=[stop])
    want, got = collect(torch_engine.stream(request)), collect(export_engine.stream(request))
    assert want.finish_reason == got.finish_reason == "stop"
    assert got.text == want.text and stop not in got.text


def test_seeded_sampling_reproduces_pytorch(torch_engine, export_engine):
    request = _prompt_request(max_new_tokens=16, sampling=SamplingParams(temperature=0.8, top_p=0.9, top_k=50, seed=7))
    assert collect(export_engine.stream(request)).text == collect(torch_engine.stream(request)).text


def test_perplexity_matches_pytorch(torch_engine, export_engine):
    from slmkit.export.parity import held_out_text
    from slmkit.perplexity import perplexity

    text = held_out_text(3000)
    want = perplexity(torch_engine, text, window=128)
    got = perplexity(export_engine, text, window=128)
    assert got.scored_tokens == want.scored_tokens
    assert got.perplexity == pytest.approx(want.perplexity, rel=1e-3)


def test_context_overflow_is_refused_before_any_output(export_engine):
    from slmkit.errors import ContextLengthExceededError

    with pytest.raises(ContextLengthExceededError):
        export_engine.stream(_prompt_request(max_new_tokens=export_engine.context_length))


def test_closing_the_stream_frees_the_engine(export_engine):
    stream = export_engine.stream(_prompt_request(max_new_tokens=50))
    next(stream)
    stream.close()
    assert collect(export_engine.stream(_prompt_request(max_new_tokens=3))).finish_reason == "length"


def test_auto_backend_follows_the_format(exports, eot_model_dir):
    from slmkit.engine.llamacpp_backend import LlamaCppEngine
    from slmkit.engine.onnx_backend import OnnxEngine
    from slmkit.engine.torch_backend import TorchEngine

    for path, kind in ((exports["gguf-q4_k_m"].path, LlamaCppEngine), (exports["gguf-q4_k_m"].path / "model.gguf",
                       LlamaCppEngine), (exports["onnx-int8"].path, OnnxEngine), (eot_model_dir, TorchEngine)):
        engine = load_engine(str(path))
        assert isinstance(engine, kind), path
        engine.close()


def test_backend_that_cannot_run_the_format_says_how_to_export(eot_model_dir, exports):
    from slmkit.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="slm export gguf"):
        load_engine(str(eot_model_dir), backend="llamacpp")
    with pytest.raises(InvalidRequestError, match="slm export onnx"):
        load_engine(str(eot_model_dir), backend="onnxruntime")
    with pytest.raises(InvalidRequestError, match="onnxruntime"):
        load_engine(str(exports["onnx-fp32"].path), backend="torch")


def test_store_names_resolve_to_exports(slm_home, eot_model_dir):
    from slmkit.engine.llamacpp_backend import LlamaCppEngine
    from slmkit.export.gguf import export_gguf
    from slmkit.references import resolve

    result = export_gguf(str(eot_model_dir), "q8_0", check=False)
    assert result.path == slm_home / "models" / "tiny-eot-q8_0"
    resolved = resolve("tiny-eot-q8_0")
    assert (resolved.format, resolved.path) == ("gguf", result.path / "model.gguf")
    engine = load_engine("tiny-eot-q8_0")
    assert isinstance(engine, LlamaCppEngine) and engine.model_name == "tiny-eot-q8_0"
    engine.close()


def test_bare_gguf_without_tokenizer_files_runs_from_its_own_metadata(exports, tmp_path, torch_engine):
    """A .gguf copied away from its export folder still runs: the tokenizer comes from the file,
    and the end-of-turn tokens are llama.cpp's own."""
    import shutil

    bare = tmp_path / "copy.gguf"
    shutil.copy(exports["gguf-f32"].path / "model.gguf", bare)
    engine = load_engine(str(bare))
    request = GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=20)
    got, want = collect(engine.stream(request)), collect(torch_engine.stream(request))
    assert (got.text, got.finish_reason) == (want.text, want.finish_reason)
    assert engine.tokenizer.convert_tokens_to_ids("<|im_end|>") in engine.eos_ids
    engine.close()


def test_server_options_for_the_torch_scheduler_are_accepted_on_every_backend(exports):
    """`slm serve` passes max_batch_size to load_engine whatever the backend."""
    for kind in ("gguf-f32", "onnx-fp32"):
        engine = load_engine(str(exports[kind].path), threads=1, max_batch_size=8)
        assert collect(engine.stream(_prompt_request(max_new_tokens=2))).finish_reason == "length"
        engine.close()


def test_continuation_scores_equal_scoring_each_prompt_and_continuation_alone(torch_engine, export_engine):
    prompt = torch_engine.tokenize("The quick brown fox jumps over the lazy dog. Question:")
    continuations = [torch_engine.tokenize(text) for text in (" Which dog?", " What did the fox jump over", " x", "")]
    got = export_engine.continuation_logprobs(prompt, continuations)
    assert [len(row) for row in got] == [len(c) for c in continuations]
    for row, continuation in zip(got, continuations, strict=True):
        alone = export_engine.token_logprobs(prompt + continuation)[len(prompt) - 1:] if continuation else []
        assert row == pytest.approx(alone, abs=1e-4)
        assert row == pytest.approx(torch_engine.token_logprobs(prompt + continuation)[len(prompt) - 1:]
                                    if continuation else [], abs=1e-3)
    # the prompt's KV is cut back after scoring: the engine still streams as before
    request = _prompt_request(max_new_tokens=8)
    assert collect(export_engine.stream(request)).text == collect(torch_engine.stream(request)).text
