"""One bad request must never take the server down: per-request failures stay with their
request, the event loop never runs heavy work, and a dead engine is loaded again."""

import contextlib
import json
import shutil
import threading
import time

import httpx
import pytest

from conftest import LiveServer

CHAT = "/v1/chat/completions"


def chat_body(model, content="Hello", **more):
    return {"model": model, "messages": [{"role": "user", "content": content}], **more}


def assert_serving(live_or_server, model_id, content="Hello"):
    """/health is 200 and a normal request completes."""
    assert httpx.get(live_or_server.url + "/health", timeout=10).status_code == 200
    ok = httpx.post(live_or_server.url + CHAT, json=chat_body(model_id, content, max_tokens=5, temperature=0),
                    timeout=30)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("field,value", [("temperature", 1e-40), ("temperature", 5e-3),
                                         ("repetition_penalty", 1e-300), ("repetition_penalty", 0.01)])
@pytest.mark.parametrize("stream", [False, True])
def test_extreme_sampling_values_are_400_naming_the_parameter(server, model_id, field, value, stream):
    # On the old server, temperature=1e-40 hung forever and killed the scheduler for everyone.
    response = httpx.post(server.url + CHAT, json=chat_body(model_id, max_tokens=5, stream=stream, **{field: value}),
                          timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
    assert_serving(server, model_id)


@pytest.fixture(scope="module")
def poisoned(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model whose embedding of one token is NaN, and the seeded request
    that samples that token at its third step (so it fails mid-batch, after two tokens)."""
    import torch
    from safetensors.torch import load_file, save_file

    from slmkit.engine import GenerationRequest, SamplingParams
    from slmkit.engine.torch_backend import TorchEngine

    engine = TorchEngine(tiny_model_dir)
    steady = GenerationRequest(messages=[{"role": "user", "content": "steady"}], max_new_tokens=120)
    steady_ids = {i for c in engine.stream(steady) for i in c.token_ids} | set(engine.prepare(steady))
    for seed in range(50):
        request = GenerationRequest(messages=[{"role": "user", "content": "doomed"}], max_new_tokens=12,
                                    sampling=SamplingParams(temperature=1.0, seed=seed))
        prompt = set(engine.prepare(request))
        ids = [i for c in engine.stream(request) for i in c.token_ids]
        token = ids[2] if len(ids) > 3 else None
        if token is not None and token not in prompt | set(ids[:2]) | steady_ids | set(engine.tokenize("Hello")):
            break
    else:
        pytest.fail("no seed samples a token that only the doomed request uses")
    engine.close()
    folder = tmp_path_factory.mktemp("poisoned") / "tiny-nan"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["model.embed_tokens.weight"][token] = torch.nan
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder, seed


def test_a_sequence_whose_logits_turn_nan_fails_alone(poisoned):
    from slmkit.server.settings import ServerSettings

    folder, seed = poisoned
    settings = ServerSettings(models=[str(folder)], embedding_models=[], max_batch_size=8)
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=60) as http:
        alone = http.post(CHAT, json=chat_body("tiny-nan", "steady", max_tokens=120, temperature=0)).json()
        results = {}

        def steady():
            results["steady"] = http.post(CHAT, json=chat_body("tiny-nan", "steady", max_tokens=120, temperature=0))

        thread = threading.Thread(target=steady)
        thread.start()
        time.sleep(0.05)  # the steady request is decoding when the doomed one joins the batch
        doomed = http.post(CHAT, json=chat_body("tiny-nan", "doomed", max_tokens=12, temperature=1.0, seed=seed))
        with http.stream("POST", CHAT, json=chat_body("tiny-nan", "doomed", max_tokens=12, temperature=1.0,
                                                      seed=seed, stream=True)) as streamed:
            events = [line[6:] for line in streamed.iter_lines() if line.startswith("data: ")]
        thread.join(timeout=60)
        assert doomed.status_code == 500 and doomed.json()["error"]["type"] == "server_error", doomed.text
        assert "nan" not in doomed.json()["error"]["message"].lower()
        assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["type"] == "server_error"
        assert results["steady"].status_code == 200
        assert results["steady"].json()["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]
        assert live.pool.loaded["tiny-nan"].scheduler.healthy
        assert_serving(live, "tiny-nan", "steady")


def test_a_dead_engine_is_loaded_again_and_health_says_so_meanwhile(tiny_model_dir):
    from slmkit.server.settings import ServerSettings

    settings = ServerSettings(models=[str(tiny_model_dir)], embedding_models=[])
    with LiveServer(settings) as live:
        model_id = tiny_model_dir.name
        dead = live.pool.loaded[model_id]
        dead.scheduler.stop()  # the scheduler thread ends, as it would if a bug killed it
        first = httpx.get(live.url + "/health", timeout=10)
        assert first.status_code == 503 and first.json()["status"] == "reloading"
        deadline = time.time() + 60
        while httpx.get(live.url + "/health", timeout=10).status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        assert live.pool.loaded[model_id] is not dead
        assert_serving(live, model_id)


def max_health_latency(url, seconds_or_event):
    """Poll /health until the event is set; the slowest answer in seconds."""
    worst = 0.0
    with httpx.Client(timeout=30) as http:
        while not seconds_or_event.is_set():
            started = time.perf_counter()
            assert http.get(url + "/health").status_code == 200
            worst = max(worst, time.perf_counter() - started)
            time.sleep(0.01)
    return worst


def test_an_8_mb_prompt_does_not_delay_health(server, model_id):
    prompt = "hello world " * ((8 * 1024 * 1024 - 4096) // 12)
    done, results = threading.Event(), {}

    def send():
        try:
            for path, body in ((CHAT, chat_body(model_id, prompt, max_tokens=5)),
                               ("/v1/completions", {"model": model_id, "prompt": prompt})):
                results[path] = httpx.post(server.url + path, json=body, timeout=120)
        finally:
            done.set()

    sender = threading.Thread(target=send)
    sender.start()
    worst = max_health_latency(server.url, done)
    sender.join()
    for response in results.values():
        assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    assert worst < 0.1, f"/health took {worst * 1000:.0f} ms while a huge prompt was handled"


def test_non_streaming_requests_of_disconnected_clients_are_cancelled(server, model_id):
    # RELIABILITY 13, scaled to the tiny model: long requests whose clients give up after 0.5 s.
    body = {"model": model_id, "prompt": "Once upon a time", "max_tokens": 450, "temperature": 0}

    def impatient(_):
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(server.url + "/v1/completions", json=body, timeout=0.5)

    threads = [threading.Thread(target=impatient, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scheduler = server.pool.loaded[model_id].scheduler
    deadline = time.time() + 5
    while (scheduler.active_count or server.pool.in_flight[model_id]) and time.time() < deadline:
        time.sleep(0.05)
    assert scheduler.active_count == 0 and server.pool.in_flight[model_id] == 0, "abandoned requests still decode"
    started = time.perf_counter()
    small = httpx.post(server.url + "/v1/completions", json={**body, "max_tokens": 10}, timeout=30)
    assert small.status_code == 200 and time.perf_counter() - started < 5


def test_a_stalled_stream_reader_is_cut_off_and_blocks_nobody(long_tiny_model_dir):
    import socket

    from slmkit.server.settings import ServerSettings

    settings = ServerSettings(models=[str(long_tiny_model_dir)], embedding_models=[], write_timeout_s=1.0, max_tokens_limit=4096)
    with LiveServer(settings) as live:
        body = json.dumps(chat_body("tiny-long", "x", max_tokens=4000, temperature=0, stream=True)).encode()
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", live.settings.port))
        stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        try:  # ... and never read a byte
            deadline = time.time() + 2
            while not live.pool.in_flight["tiny-long"] and time.time() < deadline:
                time.sleep(0.01)
            other = httpx.post(live.url + CHAT, json=chat_body("tiny-long", "hi", max_tokens=8, temperature=0),
                               timeout=30)
            assert other.status_code == 200
            deadline = time.time() + 30
            while live.pool.in_flight["tiny-long"] and time.time() < deadline:
                time.sleep(0.1)
            assert live.pool.in_flight["tiny-long"] == 0, "the stalled stream still holds its slot"
            assert live.pool.loaded["tiny-long"].scheduler.active_count == 0
        finally:
            stalled.close()


@pytest.fixture(scope="module")
def template_models(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("templates")
    strict, bare = root / "tiny-strict", root / "tiny-bare"
    for folder in (strict, bare):
        shutil.copytree(tiny_model_dir, folder)
    from tiny import CHATML_TEMPLATE

    for folder in (strict, bare):  # the template lives in chat_template.jinja or tokenizer_config.json
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        if folder == strict:
            config["chat_template"] = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
                                       "supported') }}{% endif %}" + CHATML_TEMPLATE)
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    from slmkit.server.settings import ServerSettings

    with LiveServer(ServerSettings(models=[str(strict), str(bare)], embedding_models=[])) as live:
        yield live


def test_a_template_that_rejects_the_messages_is_400(template_models):
    system = {"model": "tiny-strict", "messages": [{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": "hi"}], "max_tokens": 4}
    for stream in (False, True):
        response = httpx.post(template_models.url + CHAT, json={**system, "stream": stream}, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
        assert "System role not supported" in response.json()["error"]["message"]
    assert_serving(template_models, "tiny-strict")


def test_a_model_without_chat_template_is_400_for_chat_and_works_for_completions(template_models):
    response = httpx.post(template_models.url + CHAT, json=chat_body("tiny-bare", max_tokens=4), timeout=30)
    assert response.status_code == 400 and "chat template" in response.json()["error"]["message"]
    completion = httpx.post(template_models.url + "/v1/completions",
                            json={"model": "tiny-bare", "prompt": "Hello", "max_tokens": 4}, timeout=30)
    assert completion.status_code == 200


def test_concurrent_embedding_requests_never_5xx(server):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"sentence number {i} about passwords, cats and " + "long words " * (i % 30) for i in range(24)]

    def embed(i):
        return httpx.post(server.url + "/v1/embeddings", json={"input": texts[: 1 + i % 24]}, timeout=120)

    with ThreadPoolExecutor(24) as workers:
        statuses = [r.status_code for r in workers.map(embed, range(48))]
    assert statuses == [200] * 48
    assert server.pool.in_flight["minilm-l6"] == 0


@pytest.mark.parametrize("value,message", [(["x"] * 2049, "at most 2048"), ([], "at least one"), ([""], "empty"),
                                           ("", "empty")])
def test_embedding_inputs_are_limited_in_the_schema(server, value, message):
    response = httpx.post(server.url + "/v1/embeddings", json={"input": value}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    assert message in response.json()["error"]["message"]


def test_clients_that_leave_before_the_first_byte_leave_no_slot_behind(server, model_id):
    import socket

    body = json.dumps(chat_body(model_id, "x", max_tokens=30, stream=True)).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.settings.port)) as gone:
            gone.sendall(request)  # and hang up at once
    deadline = time.time() + 10
    while server.pool.in_flight[model_id] and time.time() < deadline:
        time.sleep(0.05)
    assert server.pool.in_flight[model_id] == 0
    assert_serving(server, model_id)
