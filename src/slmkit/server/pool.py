"""The models a server offers, loaded lazily and unloaded least-recently-used first when a
memory budget would be exceeded."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from pathlib import Path

import anyio

from slmkit.errors import ModelNotFoundError
from slmkit.server.errors import HTTPError


class ModelPool:
    def __init__(self, settings):
        self.settings = settings
        self.chat_ids = list(dict.fromkeys(settings.models))
        # Recommenders among --model are served by /v1/recommendations (server/recommendations.py).
        from slmkit.server.recommendations import split_models
        self.chat_ids, self.recommender_ids = split_models(self.chat_ids)
        self.embedding_ids = list(dict.fromkeys(settings.embedding_models))
        self.loaded: collections.OrderedDict[str, object] = collections.OrderedDict()  # LRU order
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.created = int(time.time())
        self._locks: dict[str, asyncio.Lock] = {}
        self._mutex = threading.Lock()

    def all_ids(self) -> list[str]:
        return self.chat_ids + self.embedding_ids

    def check(self, model_id: str, kind: str) -> None:
        ids = self.chat_ids if kind == "chat" else self.embedding_ids
        if model_id not in ids:
            raise ModelNotFoundError(f"The model {model_id!r} does not exist on this server. "
                                     f"Available {kind} models: {', '.join(ids) or 'none'}.")

    async def get(self, model_id: str, kind: str = "chat"):
        """The loaded engine (chat) or embedding model for ``model_id``, loading it if needed."""
        self.check(model_id, kind)
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            if model_id not in self.loaded:
                await anyio.to_thread.run_sync(self._load, model_id, kind)
            self.loaded.move_to_end(model_id)
            return self.loaded[model_id]

    def _load(self, model_id: str, kind: str) -> None:
        from slmkit.engine import load_engine
        from slmkit.references import resolve

        if self.settings.max_memory_bytes:
            self._make_room(_estimate_bytes(resolve(model_id).path))
        if kind == "chat":
            engine = load_engine(model_id, backend=self.settings.backend, threads=self.settings.threads,
                                 max_batch_size=self.settings.max_batch_size)
        else:
            from slmkit.embeddings import load_embedding_model

            engine = load_embedding_model(model_id, threads=self.settings.threads)
        with self._mutex:
            self.loaded[model_id] = engine

    def _make_room(self, needed: int) -> None:
        budget = self.settings.max_memory_bytes
        with self._mutex:
            for victim in list(self.loaded):
                if sum(_memory(e) for e in self.loaded.values()) + needed <= budget:
                    break
                if self.in_flight[victim] == 0:
                    engine = self.loaded.pop(victim)
                    with contextlib.suppress(Exception):
                        engine.close()

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
                "healthy": getattr(scheduler, "error", None) is None,
            }
        return out

    def close(self) -> None:
        with self._mutex:
            for engine in self.loaded.values():
                with contextlib.suppress(Exception):
                    engine.close()
            self.loaded.clear()


def _memory(engine) -> int:
    return int(getattr(engine, "memory_bytes", 0) or 0)


def _estimate_bytes(path: Path) -> int:
    """Memory a model will take, judged by its weights on disk (HF, GGUF or ONNX)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    weights = [p for p in path.rglob("*") if p.suffix in (".safetensors", ".gguf", ".onnx", ".data")]
    return sum(p.stat().st_size for p in weights or [p for p in path.rglob("*") if p.is_file()])
