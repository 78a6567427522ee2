"""Continuous batching in the PyTorch backend: concurrent requests decode together yet each
gets exactly the answer it would get alone."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from slmkit.generate import build_request, collect

CASES = [
    dict(prompt="Hello", max_new_tokens=20),
    dict(prompt="def main():" * 5, max_new_tokens=7),
    dict(prompt="東京 😀", max_new_tokens=33),
    dict(prompt="The for statement is used", max_new_tokens=12, chat=False),
    dict(prompt="x", max_new_tokens=25, temperature=0.9, seed=11),
    dict(prompt="while True:", max_new_tokens=30, temperature=1.2, top_k=20, seed=5),
]


def run(engine, case):
    return collect(engine.stream(build_request(**case)))


def test_concurrent_requests_get_the_same_answers_as_alone(tiny_engine):
    alone = [run(tiny_engine, case) for case in CASES]
    with ThreadPoolExecutor(len(CASES)) as pool:
        together = list(pool.map(lambda case: run(tiny_engine, case), CASES))
    for single, batched in zip(alone, together, strict=True):
        assert batched.token_ids == single.token_ids
        assert batched.text == single.text and batched.finish_reason == single.finish_reason


def test_stop_strings_apply_per_request_in_a_batch(tiny_engine):
    free = run(tiny_engine, dict(prompt="Hello", max_new_tokens=30)).text
    stop = free[8:11]
    cases = [dict(prompt="Hello", max_new_tokens=30, stop=[stop]), dict(prompt="Hello", max_new_tokens=30)]
    with ThreadPoolExecutor(2) as pool:
        stopped, unstopped = pool.map(lambda case: run(tiny_engine, case), cases)
    assert stopped.text == free[: free.index(stop)] and stopped.finish_reason == "stop"
    assert unstopped.text == free


def test_a_caller_that_stops_listening_frees_its_slot(tiny_engine):
    scheduler = tiny_engine.scheduler
    results = {}

    def steady(i):
        results[i] = run(tiny_engine, dict(prompt=f"request {i}", max_new_tokens=40))

    threads = [threading.Thread(target=steady, args=(i,)) for i in range(3)]
    quitter = tiny_engine.stream(build_request("leave early", max_new_tokens=400))
    for thread in threads:
        thread.start()
    next(quitter)
    quitter.close()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1, 2] and all(r.stats.completion_tokens == 40 for r in results.values())
    deadline = time.time() + 5
    while scheduler.active_count and time.time() < deadline:
        time.sleep(0.01)
    assert scheduler.active_count == 0 and scheduler.queue_depth == 0


def test_more_requests_than_the_batch_size_all_complete(tiny_engine):
    cases = [dict(prompt=f"item {i}", max_new_tokens=5 + i) for i in range(tiny_engine.scheduler.max_batch_size + 4)]
    alone = [run(tiny_engine, case).token_ids for case in cases]
    with ThreadPoolExecutor(len(cases)) as pool:
        together = [r.token_ids for r in pool.map(lambda case: run(tiny_engine, case), cases)]
    assert together == alone


def test_streams_awaited_on_one_event_loop_decode_together_without_a_thread_each(tiny_engine):
    """The server awaits PyTorch streams on its event loop: no worker thread per token or per
    stream, and awaited answers equal blocking ones."""
    import asyncio

    alone = [run(tiny_engine, case) for case in CASES]

    async def read(case):
        ids = []
        async for chunk in tiny_engine.stream(build_request(**case)):
            ids.extend(chunk.token_ids)
        return ids

    async def main():
        return await asyncio.gather(*(read(case) for case in CASES))

    threads_before = threading.active_count()
    awaited = asyncio.run(main())
    assert threading.active_count() <= threads_before  # asyncio.run adds no executor thread for the reads
    assert awaited == [single.token_ids for single in alone]
