"""Many clients at once: batching keeps answers independent; disconnects and a full queue
are handled without stalling anyone."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from conftest import LiveServer


def ask(client, model_id, prompt, max_tokens=24):
    stream = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_sixteen_concurrent_streams_get_their_own_answers(client, model_id):
    prompts = [f"question number {i}: " + "why " * (i % 5) for i in range(16)]
    alone = [ask(client, model_id, p) for p in prompts]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda p: ask(client, model_id, p), prompts))
    assert together == alone


def test_a_disconnecting_client_does_not_stall_the_others(server, client, model_id):
    results = {}

    def steady(i):
        results[i] = ask(client, model_id, f"steady {i}", max_tokens=60)

    threads = [threading.Thread(target=steady, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={
            "model": model_id, "messages": [{"role": "user", "content": "long"}], "max_tokens": 400,
            "temperature": 0, "stream": True}) as response:
        for _ in zip(range(3), response.iter_lines(), strict=False):
            pass  # read a little, then hang up
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1, 2, 3]
    scheduler = server.pool.loaded[model_id].scheduler
    deadline = time.time() + 5
    while (scheduler.active_count or server.pool.in_flight[model_id]) and time.time() < deadline:
        time.sleep(0.02)
    assert scheduler.active_count == 0 and server.pool.in_flight[model_id] == 0


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(re.search(rf"^{name} ([0-9.e+]+)$", text, re.M).group(1))


def test_after_twenty_streams_with_disconnects_no_asyncio_task_or_slot_is_left(server, model_id):
    """RELIABILITY #12 at test scale: 20 concurrent streams, every 10th hanging up mid-stream."""
    idle_tasks = metric(server.url, "slm_event_loop_tasks")
    body = {"model": model_id, "messages": [{"role": "user", "content": "go on"}], "max_tokens": 60,
            "temperature": 0.7, "stream": True}

    def one(i):
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            if i % 10 == 0:
                for _ in zip(range(3), lines, strict=False):
                    pass
                return "hung up"
            return "done" if any(line == "data: [DONE]" for line in lines) else "no done"

    with ThreadPoolExecutor(20) as workers:
        outcomes = list(workers.map(one, range(20)))
    assert outcomes.count("done") == 18 and outcomes.count("hung up") == 2
    deadline = time.time() + 10
    while time.time() < deadline and (server.pool.in_flight[model_id]
                                      or metric(server.url, "slm_event_loop_tasks") > idle_tasks):
        time.sleep(0.05)
    assert server.pool.in_flight[model_id] == 0 and server.pool.loaded[model_id].scheduler.active_count == 0
    assert metric(server.url, "slm_event_loop_tasks") <= idle_tasks, "asyncio tasks leaked by finished streams"


def test_full_queue_answers_429_with_retry_after(tiny_model_dir):
    from slmkit.server.settings import ServerSettings

    settings = ServerSettings(models=[str(tiny_model_dir)], embedding_models=[], max_batch_size=1, max_queue=1)
    with LiveServer(settings) as live:
        body = {"model": str(tiny_model_dir), "messages": [{"role": "user", "content": "x"}], "max_tokens": 450,
                "stream": True, "temperature": 0}
        streams = [httpx.stream("POST", live.url + "/v1/chat/completions", json=body, timeout=60) for _ in range(2)]
        opened = [s.__enter__() for s in streams]
        try:
            started = time.perf_counter()
            refused = httpx.post(live.url + "/v1/chat/completions", json={**body, "stream": False})
            elapsed = time.perf_counter() - started
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["type"] == "rate_limit_error" and elapsed < 1.0
        finally:
            for stream, response in zip(streams, opened, strict=True):
                response.close()
                stream.__exit__(None, None, None)
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0)
        deadline = time.time() + 10
        while live.pool.in_flight[tiny_model_dir.name] and time.time() < deadline:
            time.sleep(0.05)
        assert client.completions.create(model=str(tiny_model_dir), prompt="ok", max_tokens=3).usage.completion_tokens == 3


def test_memory_budget_unloads_the_least_recently_used_model(tmp_path, tiny_model_dir):
    import shutil

    from slmkit.server.settings import ServerSettings

    second = tmp_path / "second"
    shutil.copytree(tiny_model_dir, second)
    size = sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    settings = ServerSettings(models=[str(tiny_model_dir), str(second)], embedding_models=[],
                              max_memory_bytes=int(size * 1.5))  # room for one model
    with LiveServer(settings) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0)
        assert list(live.pool.loaded) == [tiny_model_dir.name]
        client.completions.create(model="second", prompt="hi", max_tokens=2)
        assert list(live.pool.loaded) == ["second"]
        client.completions.create(model=tiny_model_dir.name, prompt="hi", max_tokens=2)
        assert list(live.pool.loaded) == [tiny_model_dir.name]
