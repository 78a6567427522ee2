"""The models a server offers, loaded lazily and unloaded least-recently-used first when a
memory budget would be exceeded.

- A request **checks out** a model (:meth:`ModelPool.checkout`): its slot in the model's
  batch + queue is counted first (429 when full), then the model is loaded if needed, and the
  engine stays pinned until the lease is released, so it cannot be evicted before it is used.
- The pool's mutex guards counters and the loaded table only; loading and closing engines
  happen in worker threads, outside it, so the event loop never waits on a slow ``close()``.
- A failed load is remembered for ``failed_load_retry_s``: requests in that window get the
  same error at once instead of each retrying a load that just failed.
- An engine that died (its scheduler thread ended) is closed and loaded again, by the next
  request or by :meth:`revive` (which ``/health`` calls, reporting ``reloading`` meanwhile).
- Models given as file paths are published under their directory (or file) name, so no
  server path reaches a client; the path itself is still accepted in requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from slmkit.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError, SlmError
from slmkit.server.errors import HTTPError

log = logging.getLogger("slmkit.server")
EVICTION_GRACE_S = 10.0  # an engine handed out by get() is not evicted this soon after
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:~|[A-Za-z]:)?(?:/[^\s/'\"`,;:()\[\]{}<>]+){2,}/?")


class Lease:
    """A checked-out model: ``engine`` stays loaded until :meth:`release` (idempotent)."""

    def __init__(self, pool: ModelPool, model_id: str, engine):
        self.pool, self.model_id, self.engine = pool, model_id, engine
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.pool.release(self.model_id)


class ModelPool:
    def __init__(self, settings):
        self.settings = settings
        self.references: dict[str, str] = {}  # public id -> the reference the operator gave
        # Recommenders among --model are served by /v1/recommendations (server/recommendations.py).
        from slmkit.server.recommendations import split_models

        chat_references, recommender_references = split_models(list(dict.fromkeys(settings.models)))
        self.chat_ids = self._publish(chat_references)
        self.recommender_ids = self._publish(recommender_references)
        # LoRA adapters share the first chat model's engine (their base); a lease on one holds a view.
        clash = [name for name in settings.adapters if name in self.references]
        if clash:
            raise InvalidRequestError(f"The adapter name {clash[0]!r} is already a model id on this server; name it "
                                      "differently (--adapter NEWNAME=PATH).")
        self.adapter_ids = list(settings.adapters) if self.chat_ids else []
        self.chat_ids += self.adapter_ids
        self.embedding_ids = self._publish(settings.embedding_models)
        self.loaded: collections.OrderedDict[str, object] = collections.OrderedDict()  # LRU order
        self.resident: dict[str, object] = {}  # kept for the server's life (the router): counted, never evicted
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.created = int(time.time())
        self.reloading: set[str] = set()
        self._handed_out: dict[str, float] = {}
        self._failures: dict[str, tuple[float, BaseException]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._embed_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._mutex = threading.Lock()  # counters and the loaded table only; never held across I/O

    def _publish(self, references: list[str]) -> list[str]:
        ids = []
        for reference in dict.fromkeys(references):
            public = public_name(reference)
            while public in self.references:
                public += "-2"
            self.references[public] = reference
            ids.append(public)
        return ids

    def all_ids(self) -> list[str]:
        return self.chat_ids + self.embedding_ids + self.recommender_ids

    def resolve_id(self, name: str, kind: str) -> str:
        """The public id for ``name`` (a public id or the reference it was published from)."""
        ids = self.chat_ids if kind == "chat" else self.embedding_ids
        if name in ids:
            return name
        for public in ids:
            if self.references[public] == name:
                return public
        raise ModelNotFoundError(f"The model {scrub_paths(name)!r} does not exist on this server. "
                                 f"Available {kind} models: {', '.join(ids) or 'none'}.")

    def check(self, model_id: str, kind: str) -> None:
        self.resolve_id(model_id, kind)

    async def checkout(self, name: str, kind: str = "chat") -> Lease:
        """Take a slot for ``name`` (429 when its batch and queue are full), load it if needed
        and return the engine pinned until the lease is released."""
        model_id = self.resolve_id(name, kind)
        self.acquire(model_id)
        try:
            engine = await self._engine(model_id, kind)
        except BaseException:
            self.release(model_id)
            raise
        return Lease(self, model_id, engine)

    async def get(self, name: str, kind: str = "chat"):
        """The loaded engine (chat) or embedding model for ``name``, loading it if needed.

        Prefer :meth:`checkout`, which also holds a queue slot; an engine from ``get`` is only
        protected from eviction for a few seconds."""
        model_id = self.resolve_id(name, kind)
        engine = await self._engine(model_id, kind)
        with self._mutex:
            self._handed_out[model_id] = time.monotonic()
        return engine

    async def preload(self, name: str, kind: str = "chat") -> None:
        """Load ``name`` now (start-up), without pinning it."""
        await self._engine(self.resolve_id(name, kind), kind)

    async def _engine(self, model_id: str, kind: str):
        if model_id in self.adapter_ids:  # a view of the base engine, which holds every adapter
            return (await self._engine(self.chat_ids[0], "chat")).adapter(model_id)
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            with self._mutex:
                engine = self.loaded.get(model_id)
            if engine is not None and not getattr(engine, "healthy", True):
                log.error("the engine of %s stopped; loading it again", model_id)
                with self._mutex:
                    self.loaded.pop(model_id, None)
                await anyio.to_thread.run_sync(_close_quietly, engine)
                engine = None
            if engine is None:
                failure = self._failures.get(model_id)
                if failure and time.monotonic() < failure[0]:
                    raise failure[1]
                try:
                    await anyio.to_thread.run_sync(self._load, model_id, kind)
                except BaseException as exc:
                    self._failures[model_id] = (time.monotonic() + self.settings.failed_load_retry_s, exc)
                    raise
                self._failures.pop(model_id, None)
            with self._mutex:
                self.loaded.move_to_end(model_id)
                return self.loaded[model_id]

    def _load(self, model_id: str, kind: str) -> None:
        from slmkit.engine import load_engine
        from slmkit.references import resolve

        reference = self.references[model_id]
        try:
            with_adapters = kind == "chat" and self.adapter_ids and model_id == self.chat_ids[0]
            if self.settings.max_memory_bytes:
                self._make_room(_estimate_bytes(resolve(reference).path) + (
                    sum(_adapter_bytes(self.settings.adapters[name]) for name in self.adapter_ids) if with_adapters else 0))
            if with_adapters:
                from slmkit.engine.torch_backend import TorchEngine
                from slmkit.references import resolve_hf

                engine = TorchEngine(resolve_hf(reference).path, model_name=model_id, threads=self.settings.threads,
                                     max_batch_size=self.settings.max_batch_size,
                                     adapters={name: self.settings.adapters[name] for name in self.adapter_ids})
                _warm_up(engine)
            elif kind == "chat":
                engine = load_engine(reference, backend=self.settings.backend, threads=self.settings.threads,
                                     max_batch_size=self.settings.max_batch_size, prefill=self.settings.prefill,
                                     context_length=self.settings.context_length)
                _warm_up(engine)
            else:
                from slmkit.embeddings import load_embedding_model

                engine = load_embedding_model(reference, threads=self.settings.threads)
        except SlmError as exc:
            log.error("could not load %s: %s", model_id, exc.message)
            exc.message = scrub_paths(exc.message)  # 4xx messages reach clients as they are
            raise
        except Exception as exc:
            log.exception("could not load %s", model_id)
            raise CorruptModelError(f"{model_id} could not be loaded ({type(exc).__name__}).") from exc
        with self._mutex:
            self.loaded[model_id] = engine

    def _make_room(self, needed: int) -> None:
        """Unload least recently used idle models until ``needed`` bytes fit the budget."""
        budget, now = self.settings.max_memory_bytes, time.monotonic()
        victims = []
        with self._mutex:
            used = sum(_memory(e) for e in (*self.loaded.values(), *self.resident.values()))
            for model_id in list(self.loaded):
                if used + needed <= budget:
                    break
                recently_handed = now - self._handed_out.get(model_id, -1e9) < EVICTION_GRACE_S
                busy = self.in_flight[model_id] + (sum(self.in_flight[a] for a in self.adapter_ids)
                                                   if self.chat_ids and model_id == self.chat_ids[0] else 0)
                if busy == 0 and not recently_handed:
                    engine = self.loaded.pop(model_id)
                    used -= _memory(engine)
                    victims.append(engine)
        for engine in victims:  # outside the mutex: closing joins a thread
            _close_quietly(engine)

    # Recommenders (server/recommendations.py) are loaded by their route, not as engines, but
    # they live in ``loaded`` like engines: listed by /health, counted in the memory budget,
    # evicted least-recently-used first when idle.
    def loaded_recommender(self, model_id: str):
        """The loaded recommender entry of ``model_id`` (marked as just used), or None."""
        with self._mutex:
            entry = self.loaded.get(model_id)
            if entry is not None:
                self.loaded.move_to_end(model_id)
            return entry

    def add_recommender(self, model_id: str, load: Callable[[], object], needed_bytes: int):
        """Make room for ``needed_bytes`` under the memory budget, then ``load()`` and keep the
        entry (an object with ``memory_bytes`` and ``close()``); returns it."""
        if self.settings.max_memory_bytes:
            self._make_room(needed_bytes)
        entry = load()
        with self._mutex:
            previous = self.loaded.pop(model_id, None)
            self.loaded[model_id] = entry
        if previous is not None and previous is not entry:
            _close_quietly(previous)
        return entry

    def add_resident(self, name: str, load: Callable[[], object], needed_bytes: int):
        """Make room for ``needed_bytes`` under the memory budget, then ``load()`` something the
        server keeps for its whole life (the router and its embedding model, server/routing.py):
        its ``memory_bytes`` count against the budget and it is never evicted."""
        if self.settings.max_memory_bytes:
            self._make_room(needed_bytes)
        entry = load()
        with self._mutex:
            self.resident[name] = entry
        return entry

    def acquire(self, model_id: str) -> None:
        """Count a request against the model's batch plus queue; 429 when both are full.

        Every successful call must be paired with :meth:`release`.
        """
        limit = self.settings.max_batch_size + self.settings.max_queue
        with self._mutex:
            if self.in_flight[model_id] >= limit:
                raise HTTPError(429, f"The server is busy: {limit} requests are already running or queued for "
                                     f"{model_id}. Retry shortly.", "rate_limit_error", code="server_busy",
                                headers={"Retry-After": "1"})
            self.in_flight[model_id] += 1

    def release(self, model_id: str) -> None:
        with self._mutex:
            self.in_flight[model_id] -= 1

    def embedding_lock(self, model_id: str) -> threading.Lock:
        """Held around every use of an embedding model: its tokenizer is not thread-safe."""
        with self._mutex:
            return self._embed_locks[model_id]

    def unhealthy(self) -> list[str]:
        with self._mutex:
            return [m for m, e in self.loaded.items() if not getattr(e, "healthy", True)]

    def revive(self) -> list[str]:
        """Start reloading every dead engine in the background; the ids being reloaded."""
        for model_id in self.unhealthy():
            if model_id not in self.reloading:
                self.reloading.add(model_id)
                kind = "chat" if model_id in self.chat_ids else "embedding"
                asyncio.get_running_loop().create_task(self._reload(model_id, kind))
        return sorted(self.reloading)

    async def _reload(self, model_id: str, kind: str) -> None:
        try:
            await self._engine(model_id, kind)
        except Exception:  # noqa: BLE001 - logged by _load; /health keeps reporting it
            pass
        finally:
            self.reloading.discard(model_id)

    def snapshot(self) -> dict[str, dict]:
        with self._mutex:
            items = list(self.loaded.items())
        out = {}
        for model_id, engine in items:
            scheduler = getattr(engine, "scheduler", None)
            out[model_id] = {
                "memory_bytes": _memory(engine),
                "queue_depth": scheduler.queue_depth if scheduler else 0,
                "active": scheduler.active_count if scheduler else 0,
                "healthy": bool(getattr(engine, "healthy", True)),
            }
        return out

    def close(self) -> None:
        with self._mutex:
            engines = list(self.loaded.values())
            self.loaded.clear()
        for engine in engines:
            _close_quietly(engine)


def public_name(reference: str) -> str:
    """How a model is named to clients: a file path becomes its last component."""
    looks_like_path = os.path.isabs(reference) or reference.startswith(("./", "../", "~")) or (
        os.sep in reference and not reference.startswith("hf:") and Path(reference).exists())
    return Path(reference).expanduser().name if looks_like_path else reference


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last component (error messages for clients)."""
    return _ABSOLUTE_PATH.sub(lambda m: Path(m.group(0).rstrip("/")).name or "/", text)


def _warm_up(engine) -> None:
    """One greedy token, so a model that loads but cannot generate fails here, not per request;
    and what an engine loads at first use is loaded now (``preload``)."""
    from slmkit.engine import GenerationRequest

    if hasattr(engine, "preload"):
        engine.preload()
    chunks = engine.stream(GenerationRequest(prompt="Hello", max_new_tokens=1))
    try:
        for _ in chunks:
            pass
    finally:
        with contextlib.suppress(Exception):
            chunks.close()


def _close_quietly(engine) -> None:
    with contextlib.suppress(Exception):
        engine.close()


def _memory(engine) -> int:
    return int(getattr(engine, "memory_bytes", 0) or 0)


def _adapter_bytes(reference: str) -> int:
    """Memory a LoRA adapter will take on its base: its weights in the stacks' 16-bit type
    (engine/lora_stack.py), read from the safetensors header."""
    from safetensors import safe_open

    from slmkit.engine.torch_backend import adapter_directory

    try:
        with safe_open(str(adapter_directory(reference) / "adapter_model.safetensors"), framework="pt") as weights:
            numbers = sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    except (OSError, SlmError, ValueError):
        return 0  # the load itself reports the problem
    return numbers * 2


def _estimate_bytes(path: Path) -> int:
    """Memory a model will take, judged by its weights on disk (HF, GGUF or ONNX)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    weights = [p for p in path.rglob("*") if p.suffix in (".safetensors", ".gguf", ".onnx", ".data")]
    return sum(p.stat().st_size for p in weights or [p for p in path.rglob("*") if p.is_file()])
