"""The server through the official openai client: the API users' tools actually call."""

import asyncio
import base64
import json

import httpx
import numpy as np
import openai
import pytest

from slmkit.generate import generate

PROMPTS = ["Hello", "東京 😀 naïve", "def main():", "Tell me about for loops", "e\u0301 Ωμέγα"]


def test_chat_non_streaming(client, model_id):
    response = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hello"}],
                                              max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert response.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    assert response.usage.completion_tokens == 12 or choice.finish_reason == "stop"
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_stream_equals_non_stream_and_the_library(client, model_id, tiny_engine, prompt):
    messages = [{"role": "user", "content": prompt}]
    whole = client.chat.completions.create(model=model_id, messages=messages, max_tokens=30, temperature=0)
    deltas, finishes, ids = [], [], set()
    stream = client.chat.completions.create(model=model_id, messages=messages, max_tokens=30, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    for index, chunk in enumerate(chunks):
        ids.add(chunk.id)
        if chunk.choices:
            delta = chunk.choices[0].delta
            assert (delta.role == "assistant") == (index == 0), "role only in the first delta"
            deltas.append(delta.content or "")
            finishes.append(chunk.choices[0].finish_reason)
    assert len(ids) == 1
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert "".join(deltas) == whole.choices[0].message.content
    assert all("\ufffd" not in d for d in deltas) or "\ufffd" in whole.choices[0].message.content
    library = generate(tiny_engine, prompt, max_new_tokens=30)
    assert whole.choices[0].message.content == library.text


def test_async_client(server, model_id):
    async def main():
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        results = await asyncio.gather(*[
            client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": p}], max_tokens=8,
                                           temperature=0) for p in PROMPTS])
        await client.close()
        return [r.choices[0].message.content for r in results]

    assert len(asyncio.run(main())) == len(PROMPTS)


def test_completions_stream_and_whole(client, model_id, tiny_engine):
    whole = client.completions.create(model=model_id, prompt="The for statement", max_tokens=15, temperature=0)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model_id, prompt="The for statement", max_tokens=15, temperature=0, stream=True) if c.choices)
    assert whole.object == "text_completion" and streamed == whole.choices[0].text
    assert whole.choices[0].text == generate(tiny_engine, "The for statement", chat=False, max_new_tokens=15).text


def test_stop_sequences(client, model_id):
    free = client.completions.create(model=model_id, prompt="Hello", max_tokens=30, temperature=0).choices[0].text
    stop = free[10:13]
    stopped = client.completions.create(model=model_id, prompt="Hello", max_tokens=30, temperature=0, stop=[stop])
    assert stopped.choices[0].text == free[: free.index(stop)] and stopped.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(client, model_id):
    def sample():
        return client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=20, temperature=1.0, seed=42).choices[0].message.content

    assert sample() == sample()


def test_models(client, model_id):
    ids = [m.id for m in client.models.list().data]
    assert ids == [model_id, "minilm-l6"]
    assert client.models.retrieve("minilm-l6").id == "minilm-l6"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_embeddings_float_and_base64(client):
    floats = client.embeddings.create(model="minilm-l6", input=["password reset", "forgot my password", "cats"])
    vectors = np.array([d.embedding for d in floats.data])
    assert vectors.shape == (3, 384) and floats.usage.prompt_tokens > 0
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    raw = httpx.post(str(client.base_url) + "embeddings", json={"input": "password reset", "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-5)


def test_error_objects(client, model_id):
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert model_id in missing.value.body["message"], "the 404 lists the available models"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "word " * 600}],
                                       max_tokens=10)
    assert too_long.value.code == "context_length_exceeded" and too_long.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "x"}], n=2)
    assert many.value.param == "n"


def test_context_boundary(client, model_id, tiny_engine):
    from slmkit.generate import build_request

    tokenizer = tiny_engine.tokenizer
    ids = tokenizer(" ".join(["word"] * 800), add_special_tokens=False)["input_ids"]
    prompt = tokenizer.decode(ids[: tiny_engine.context_length - 1])
    count = tiny_engine.count_prompt_tokens(build_request(prompt, chat=False))
    fits = client.completions.create(model=model_id, prompt=prompt, max_tokens=tiny_engine.context_length - count)
    assert fits.usage.prompt_tokens == count
    with pytest.raises(openai.BadRequestError) as over:
        client.completions.create(model=model_id, prompt=prompt, max_tokens=tiny_engine.context_length - count + 1)
    assert over.value.code == "context_length_exceeded"


def test_omitted_max_tokens_is_capped_by_the_server(client, model_id, server):
    response = client.completions.create(model=model_id, prompt="Hello", temperature=0)
    assert response.usage.completion_tokens <= server.settings.default_max_tokens
    assert response.choices[0].finish_reason == "length" or response.usage.completion_tokens < 40


def test_error_after_the_first_byte_is_an_event(server, model_id, monkeypatch):
    engine = server.pool.loaded[model_id]
    original = engine.stream

    def failing_stream(request):
        chunks = original(request)

        def broken():
            yield next(chunks)
            chunks.close()
            raise RuntimeError("secret internal detail /root/path")

        return broken()

    monkeypatch.setattr(engine, "stream", failing_stream)
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={
            "model": model_id, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20,
            "temperature": 0, "stream": True}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200 and events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "/root" not in error["message"] and "secret" not in error["message"]


@pytest.mark.parametrize("chat", [True, False])
def test_stream_events_carry_any_text_exactly(chat):
    """Token events are written around a placeholder; every text (quotes, backslashes, newlines,
    NUL, non-ASCII, the placeholder's own letters) must come back exactly, as valid JSON."""
    import asyncio
    import json

    from slmkit.engine import Chunk, GenerationStats
    from slmkit.server.generation import stream_events

    texts = ['say "hi"\\n', "line\nbreak\ttab", "\x00nul", "é漢字🙂", "slmkit-token-text", "</script>"]

    async def chunks():
        for text in texts:
            yield Chunk(text=text, token_ids=[1])
        yield Chunk(text="", finish_reason="stop", stats=GenerationStats(prompt_tokens=3, completion_tokens=6))

    async def run():
        return [event async for event in stream_events(chunks(), chat=chat, model='m"x', include_usage=True,
                                                        on_finish=lambda stats: None)]

    events = asyncio.run(run())
    assert events[-1] == "data: [DONE]\n\n"
    bodies = [json.loads(event[len("data: "):]) for event in events[:-1]]
    pieces = [b["choices"][0]["delta"].get("content", "") if chat else b["choices"][0]["text"]
              for b in bodies if b["choices"]]
    assert "".join(pieces) == "".join(texts)
    assert all(b["model"] == 'm"x' for b in bodies)
    assert bodies[-1]["usage"]["completion_tokens"] == 6
