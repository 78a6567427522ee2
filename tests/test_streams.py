"""Chunk hand-off from a scheduler thread to event-loop readers (engine/streams.py)."""

import asyncio
import threading
import time

from slmkit.engine.streams import ChunkQueue, wait_for_readers


def test_a_producer_that_waits_for_its_readers_resumes_after_they_took_their_chunks():
    loop = asyncio.new_event_loop()
    queues = [ChunkQueue() for _ in range(3)]
    taken: list[tuple[int, float]] = []
    ready = threading.Event()

    async def read(index: int) -> None:
        while True:
            item = await queues[index].get_async()
            time.sleep(0.01)  # the reader's work before its next wait (writing the event out)
            taken.append((item, time.monotonic()))
            if item == 2:
                return

    async def main() -> None:
        readers = [asyncio.ensure_future(read(i)) for i in range(3)]
        await asyncio.sleep(0.05)  # every reader waits on its queue
        ready.set()
        await asyncio.gather(*readers)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    ready.wait(5)
    wait_for_readers(1.0)  # the first call starts keeping this thread's wake-ups
    resumed = []
    for step in range(3):
        for queue in queues:
            queue.put(step)
        wait_for_readers(1.0)
        resumed.append(time.monotonic())
    thread.join(5)
    loop.close()
    assert len(taken) == 9
    for step in range(3):
        assert all(when <= resumed[step] for item, when in taken if item == step)


def test_a_producer_that_never_waits_keeps_nothing_and_waiting_is_bounded():
    loop = asyncio.new_event_loop()
    queue = ChunkQueue()
    got = []

    async def read() -> None:
        got.append(await queue.get_async())

    def producer() -> None:
        time.sleep(0.05)
        queue.put("x")  # a thread that never called wait_for_readers

    thread = threading.Thread(target=producer)
    thread.start()
    loop.run_until_complete(read())
    thread.join()
    assert got == ["x"]

    # a loop that never runs: the producer's wait gives up after its timeout
    stalled = asyncio.new_event_loop()
    waiting = ChunkQueue()

    async def park() -> None:
        future = stalled.create_future()
        waiting._waiter = (stalled, future)  # a reader that is waiting, on a loop that is stuck

    stalled.run_until_complete(park())
    wait_for_readers(0.0)
    waiting.put("y")
    started = time.monotonic()
    wait_for_readers(0.05)
    assert 0.04 <= time.monotonic() - started < 1.0
    stalled.close()
    loop.close()
