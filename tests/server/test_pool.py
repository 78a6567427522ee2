"""The model pool: leases pin engines, closing never blocks the event loop, failed loads are
remembered, and errors raised while loading never show server paths."""

import asyncio
import shutil
import threading
import time

import httpx
import pytest

from conftest import LiveServer, leaks


@pytest.fixture()
def two_models(tmp_path, tiny_model_dir):
    second = tmp_path / "second"
    shutil.copytree(tiny_model_dir, second)
    size = sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    return second, int(size * 1.5)  # a budget with room for one model


def test_a_checked_out_engine_is_not_evicted_before_it_is_used(tiny_model_dir, two_models):
    from slmkit.engine import GenerationRequest
    from slmkit.server.pool import ModelPool
    from slmkit.server.settings import ServerSettings

    second, budget = two_models
    pool = ModelPool(ServerSettings(models=[str(tiny_model_dir), str(second)], embedding_models=[],
                                    max_memory_bytes=budget))

    async def main():
        first = await pool.checkout(tiny_model_dir.name)
        other = await pool.checkout("second")  # over budget, but the first is checked out
        assert tiny_model_dir.name in pool.loaded
        chunks = list(first.engine.stream(GenerationRequest(prompt="Hello", max_new_tokens=3)))
        first.release(), other.release()
        return chunks

    try:
        assert asyncio.run(main())[-1].finish_reason in ("stop", "length")
    finally:
        pool.close()


def test_closing_an_evicted_engine_never_blocks_the_event_loop(tiny_model_dir, two_models):
    from slmkit.server.settings import ServerSettings

    second, budget = two_models
    settings = ServerSettings(models=[str(tiny_model_dir), str(second)], embedding_models=[], max_memory_bytes=budget)
    with LiveServer(settings) as live:
        engine = live.pool.loaded[tiny_model_dir.name]
        original = engine.close

        def slow_close():  # a close that takes a while, as joining a busy scheduler thread can
            time.sleep(2)
            original()

        engine.close = slow_close
        done, worst = threading.Event(), [0.0]

        def poll():
            while not done.is_set():
                started = time.perf_counter()
                httpx.get(live.url + "/health", timeout=30)
                worst[0] = max(worst[0], time.perf_counter() - started)
                time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            response = httpx.post(live.url + "/v1/completions", json={"model": "second", "prompt": "hi", "max_tokens": 2},
                                  timeout=60)
        finally:
            done.set()
            poller.join()
        assert response.status_code == 200 and list(live.pool.loaded) == ["second"]
        assert worst[0] < 0.5, f"/health waited {worst[0]:.2f} s while an engine was closed"


def test_a_failed_load_is_remembered_not_retried_by_every_request(tmp_path):
    from slmkit.server.settings import ServerSettings

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"junk")
    settings = ServerSettings(models=[str(broken)], embedding_models=[], preload=False, failed_load_retry_s=60)
    live = LiveServer(settings)
    loads = []
    original = live.pool._load
    live.pool._load = lambda *args: (loads.append(args), original(*args))[1]
    with live:
        body = {"model": "broken", "prompt": "x", "max_tokens": 2}
        answers = [httpx.post(live.url + "/v1/completions", json=body, timeout=30) for _ in range(5)]
    assert [a.status_code for a in answers] == [500] * 5
    assert len(loads) == 1, "each request tried to load the broken model again"
    assert all(not leaks(a.text) for a in answers)


def test_errors_raised_while_loading_never_carry_server_paths(tmp_path):
    from slmkit.server.settings import ServerSettings

    missing = tmp_path / "models" / "gone"
    settings = ServerSettings(models=[str(missing)], embedding_models=[], preload=False)
    with LiveServer(settings) as live:
        response = httpx.post(live.url + "/v1/completions", json={"model": "gone", "prompt": "x", "max_tokens": 2},
                              timeout=30)
        by_path = httpx.post(live.url + "/v1/completions", json={"model": str(missing), "prompt": "x"}, timeout=30)
        unknown = httpx.post(live.url + "/v1/completions", json={"model": str(tmp_path / "other"), "prompt": "x"},
                             timeout=30)
    assert 400 <= response.status_code < 500 and "gone" in response.json()["error"]["message"]
    for answer in (response, by_path, unknown):
        assert str(tmp_path) not in answer.text and not leaks(answer.text), answer.text
