"""The PyTorch backend on a tiny model: parity with transformers, streaming, limits, cancellation."""

import pytest
import torch

from slmkit.engine import GenerationRequest, SamplingParams
from slmkit.errors import ContextLengthExceededError, InvalidRequestError
from slmkit.generate import build_request, collect, generate

PROMPTS = ["Hello", "def main():", "東京 😀", "The for statement", "x" * 50]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_match_transformers_generate(tiny_engine, prompt):
    request = build_request(prompt, max_new_tokens=24)
    ours = collect(tiny_engine.stream(request))
    prompt_ids = tiny_engine.prepare(request)
    with torch.no_grad():
        reference = tiny_engine.model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=24, do_sample=False, eos_token_id=list(tiny_engine.eos_ids),
            pad_token_id=tiny_engine.tokenizer.pad_token_id,
        )[0, len(prompt_ids):].tolist()
    assert ours.token_ids == reference


@pytest.mark.parametrize("prompt", PROMPTS)
def test_stream_joins_to_the_same_text_as_whole(tiny_engine, prompt):
    chunks = list(tiny_engine.stream(build_request(prompt, max_new_tokens=30)))
    whole = generate(tiny_engine, prompt, max_new_tokens=30)
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].finish_reason and all(c.finish_reason is None for c in chunks[:-1])
    text = tiny_engine.tokenizer.decode(whole.token_ids, skip_special_tokens=True)
    assert whole.text == text


def test_chat_template_is_applied(tiny_engine):
    request = build_request("hi there", system="be brief")
    rendered = tiny_engine.tokenizer.decode(tiny_engine.prepare(request))
    assert rendered == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"
    raw = tiny_engine.tokenizer.decode(tiny_engine.prepare(build_request("hi there", chat=False)))
    assert raw == "hi there"


def test_stats_are_reported(tiny_engine):
    result = generate(tiny_engine, "Hello", max_new_tokens=10)
    assert result.finish_reason == "length"
    assert result.stats.completion_tokens == 10 == len(result.token_ids)
    assert result.stats.prompt_tokens == len(tiny_engine.prepare(build_request("Hello")))
    assert 0 < result.stats.time_to_first_token_s <= result.stats.total_s
    assert result.stats.decode_tokens_per_s > 0


def test_seeded_sampling_is_reproducible(tiny_engine):
    def sample(seed):
        return generate(tiny_engine, "Hello", max_new_tokens=20, temperature=1.0, top_p=0.95, seed=seed).token_ids

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_stop_string_ends_generation_and_is_not_shown(tiny_engine):
    free = generate(tiny_engine, "Hello", max_new_tokens=30).text
    stop = free[10:13]
    assert stop and stop in free
    stopped = generate(tiny_engine, "Hello", max_new_tokens=30, stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free[: free.index(stop)]


def test_prompt_over_the_context_says_by_how_much(tiny_engine):
    context = tiny_engine.context_length
    long_prompt = " ".join(["word"] * (context + 20))
    with pytest.raises(ContextLengthExceededError) as info:
        tiny_engine.stream(build_request(long_prompt, chat=False, max_new_tokens=8))
    prompt_tokens = tiny_engine.count_prompt_tokens(build_request(long_prompt, chat=False))
    assert f"{prompt_tokens + 8 - context} over" in info.value.message


def test_prompt_that_exactly_fits_is_accepted(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    ids = tokenizer(" ".join(["word"] * 1000), add_special_tokens=False)["input_ids"][: tiny_engine.context_length - 1]
    prompt = tokenizer.decode(ids)
    count = tiny_engine.count_prompt_tokens(build_request(prompt, chat=False))
    result = generate(tiny_engine, prompt, chat=False, max_new_tokens=tiny_engine.context_length - count)
    assert result.stats.completion_tokens >= 1


def test_bad_requests_are_refused_before_any_work(tiny_engine):
    bad = [
        GenerationRequest(prompt="x", max_new_tokens=0),
        GenerationRequest(),
        GenerationRequest(messages=[{"role": "robot", "content": "x"}]),
        GenerationRequest(prompt="x", sampling=SamplingParams(temperature=-1)),
        GenerationRequest(prompt="x", sampling=SamplingParams(top_p=0)),
        GenerationRequest(prompt="x", stop=[""]),
    ]
    for request in bad:
        with pytest.raises(InvalidRequestError):
            tiny_engine.stream(request)


def test_closing_the_stream_cancels_and_frees_the_engine(tiny_engine):
    stream = tiny_engine.stream(build_request("Hello", max_new_tokens=100))
    next(stream)
    stream.close()
    result = generate(tiny_engine, "Hello", max_new_tokens=5)  # would deadlock if the lock were still held
    assert result.stats.completion_tokens == 5


def test_memory_counts_tied_embeddings_once(tiny_model_dir, tmp_path):
    """A model whose output layer is its input embedding (SmolLM2's shape) holds that matrix once;
    state_dict() lists it under both names, and memory_bytes once counted it twice."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    from slmkit.engine.torch_backend import TorchEngine

    untied = TorchEngine(tiny_model_dir)
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = True
    tied_dir = tmp_path / "tied"
    LlamaForCausalLM(config).save_pretrained(tied_dir)
    for file in tiny_model_dir.iterdir():
        if "token" in file.name or file.name == "generation_config.json":
            shutil.copy(file, tied_dir / file.name)
    tied = TorchEngine(tied_dir)
    assert tied.model.lm_head.weight is tied.model.model.embed_tokens.weight
    embedding = tied.model.lm_head.weight.numel() * 4
    # parameters() yields the shared matrix once; buffers() adds the rotary frequencies.
    assert tied.memory_bytes == sum(t.numel() * t.element_size() for t in (*tied.model.parameters(), *tied.model.buffers()))
    assert untied.memory_bytes - tied.memory_bytes == embedding  # the same model less its separate output layer
    untied.close()
    tied.close()
