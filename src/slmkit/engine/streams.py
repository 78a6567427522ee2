"""One request's chunks, handed from a scheduler thread to whoever reads them.

A :class:`ChunkStream` is an ordinary iterator (``for chunk in engine.stream(...)`` blocks
in the calling thread) and also an async iterator (``async for`` awaits on the event loop
without a worker thread). The server reads the async way: handing every token through a
thread-pool hop cost a context switch and a loop wake-up per token per stream, which at 8
streams was a visible share of llama.cpp's step time.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import weakref
from collections.abc import Callable

DONE = object()  # put by the scheduler after a request's last chunk


class ChunkQueue:
    """A FIFO from one producer thread to one consumer that blocks or awaits."""

    def __init__(self):
        self._items: collections.deque = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None

    def put(self, item) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, future = waiter
            _waker(loop).wake(future)

    def get(self):
        with self._ready:
            while not self._items:
                self._ready.wait()
            return self._items.popleft()

    async def get_async(self):
        loop = asyncio.get_running_loop()
        while True:
            with self._ready:
                if self._items:
                    return self._items.popleft()
                future = loop.create_future()
                self._waiter = (loop, future)
            await future


class _LoopWaker:
    """Wakes an event loop's waiting readers in bursts: a scheduler step hands out one chunk to
    every running stream, and one ``call_soon_threadsafe`` (one write to the loop's wake-up
    pipe, one loop iteration) for all of them costs the loop less than one per chunk."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.lock = threading.Lock()
        self.pending: list[asyncio.Future] = []

    def wake(self, future: asyncio.Future) -> None:
        with self.lock:
            self.pending.append(future)
            if len(self.pending) > 1:
                return  # a drain is scheduled and has not run yet: it takes this one too
        events = getattr(_woken, "events", None)  # set when this producer waits for its readers
        handled = threading.Event() if events is not None else None
        try:
            self.loop.call_soon_threadsafe(self._drain, handled)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            with self.lock:
                self.pending.clear()
            return
        if handled is not None:
            events.append(handled)

    def _drain(self, handled: threading.Event | None) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for future in pending:
            if not future.done():
                future.set_result(None)
        if handled is not None:
            # after the readers it woke have run up to their next wait (their wake-ups were queued first)
            self.loop.call_soon(handled.set)


_woken = threading.local()


def wait_for_readers(timeout_s: float) -> None:
    """Wait (at most ``timeout_s`` in all) until the event-loop readers this thread woke since
    its last call have taken their chunks (a producer that never calls this keeps nothing)."""
    events = getattr(_woken, "events", None)
    if events is None:
        _woken.events = []  # from now on this thread's wake-ups are kept to be waited for
        return
    if not events:
        return
    deadline = time.monotonic() + timeout_s
    for event in events:
        if not event.wait(max(0.0, deadline - time.monotonic())):
            break
    events.clear()


_wakers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def _waker(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    with _wakers_lock:
        waker = _wakers.get(loop)
        if waker is None:
            waker = _wakers[loop] = _LoopWaker(loop)
        return waker


class ChunkStream:
    """The chunks of one request: the request joins its scheduler when reading starts
    (``start``), and closing the stream early cancels it (``cancel``)."""

    def __init__(self, output: ChunkQueue, start: Callable[[], None], cancel: Callable[[], None],
                 error: Callable[[BaseException], BaseException]):
        self.output, self._start, self._cancel, self._error = output, start, cancel, error
        self._started = self._finished = False

    def _begin(self) -> None:
        if self._finished:
            raise StopIteration
        if not self._started:
            self._started = True
            self._start()

    def _take(self, item):
        if item is DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise self._error(item) from item
        return item

    def __iter__(self):
        return self

    def __next__(self):
        self._begin()
        return self._take(self.output.get())

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            self._begin()
            return self._take(await self.output.get_async())
        except StopIteration:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop listening: a request still running is cancelled and its sequence freed."""
        if self._started and not self._finished:
            self._cancel()
        self._finished = True

    async def aclose(self) -> None:
        self.close()

    def __del__(self):
        self.close()
