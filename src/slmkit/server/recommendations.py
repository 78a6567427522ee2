"""``POST /v1/recommendations``: top-k items from a recommender artifact (`slm recommend train`).

Body: ``{"model": "shop-rec", "user": "u42", "k": 10}`` or ``{"history": ["i1", "i2"], ...}``;
``model`` may be left out when the server has one recommender. The answer lists the items
(best first) with titles and scores. Recommenders named with ``slm serve --model`` are served
here instead of as chat models (:func:`split_models`); ``/v1/models`` lists them with
``"kind": "recommender"``. A recommender is loaded on first use into the server's model pool,
where it counts against ``--max-memory`` and is evicted least-recently-used first like any
model, and it is reloaded when its card changes on disk, so ``slm recommend train --resume``
on newer logs reaches a running server without a restart.
"""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from slmkit.errors import ModelNotFoundError
from slmkit.server.errors import HTTPError

MAX_HISTORY = 10_000
MAX_K = 100
ItemId = StrictStr | StrictInt


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    user: ItemId | None = None
    history: list[ItemId] | None = Field(default=None, max_length=MAX_HISTORY)
    k: StrictInt = Field(default=10, ge=1, le=MAX_K)
    exclude_seen: StrictBool = True


def _recommender_path(reference: str) -> Path | None:
    """The directory of ``reference`` (a directory or a store name) if it is a recommender.
    Only looks at the disk: a built-in chat model is never imported just to check."""
    from slmkit.models import NAME_PATTERN, models_dir
    from slmkit.recommend.model import is_recommender

    path = Path(reference).expanduser()
    if not path.is_dir() and NAME_PATTERN.match(reference) and ".." not in reference:
        path = models_dir() / reference
    return path.resolve() if path.is_dir() and is_recommender(path) else None


def split_models(references: list[str]) -> tuple[list[str], list[str]]:
    """(chat models, recommenders) among the references given to ``slm serve --model``."""
    recommenders = [r for r in references if _recommender_path(r) is not None]
    return [r for r in references if r not in recommenders], recommenders


class LoadedRecommender:
    """A recommender held in the server's pool: counted in ``--max-memory`` by ``memory_bytes``
    (weights plus the catalogue and histories read from disk) and evicted like an engine."""

    healthy = True

    def __init__(self, recommender, version: int):
        self.recommender, self.version = recommender, version
        weights = sum(t.numel() * t.element_size() for t in recommender.model.state_dict().values())
        self.memory_bytes = weights + _side_bytes(recommender.path)

    def close(self) -> None:
        self.recommender = None


def _side_bytes(path: Path) -> int:
    from slmkit.recommend.model import CATALOGUE_FILE, HISTORIES_FILE

    return sum((path / name).stat().st_size for name in (CATALOGUE_FILE, HISTORIES_FILE) if (path / name).is_file())


class Recommenders:
    """The recommenders a server offers (``pool.recommender_ids``), loaded lazily into the pool,
    reloaded when their card changes on disk."""

    def __init__(self, pool, threads: int | None = None):
        self.pool, self.threads = pool, threads
        self._lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        return self.pool.recommender_ids

    def resolve(self, model_id: str | None) -> str:
        """The public id of the recommender a request names (or the only one)."""
        if model_id is None:
            if len(self.ids) != 1:
                raise HTTPError(400, "Name the recommender in `model`. This server has: "
                                     f"{', '.join(self.ids) or 'none'}.", param="model")
            return self.ids[0]
        if model_id in self.ids:
            return model_id
        for public in self.ids:
            if self.pool.references[public] == model_id:
                return public
        from slmkit.server.pool import scrub_paths

        raise ModelNotFoundError(f"No recommender {scrub_paths(model_id)!r} on this server. Available: "
                                 f"{', '.join(self.ids) or 'none (start the server with --model RECOMMENDER)'}.")

    def get(self, model_id: str):
        """The loaded recommender ``model_id`` (a public id from :meth:`resolve`)."""
        from slmkit.recommend.predict import load_recommender
        from slmkit.server.pool import _estimate_bytes

        path = _recommender_path(self.pool.references[model_id])
        if path is None:
            raise ModelNotFoundError(f"The recommender {model_id!r} is no longer in the store.")
        version = (path / "slm.json").stat().st_mtime_ns if (path / "slm.json").exists() else 0
        with self._lock:
            entry = self.pool.loaded_recommender(model_id)
            if entry is None or entry.recommender is None or entry.version != version:
                entry = self.pool.add_recommender(
                    model_id, lambda: LoadedRecommender(load_recommender(path, threads=self.threads), version),
                    _estimate_bytes(path) + _side_bytes(path))
            return entry.recommender


def register(app, pool, recommenders: Recommenders) -> None:
    """Add the route to ``app``; requests count against ``pool``'s per-model queue bound."""

    @app.post("/v1/recommendations")
    async def recommendations(body: RecommendationRequest):
        from slmkit.recommend.predict import recommend

        if (body.user is None) == (body.history is None):
            raise HTTPError(400, "Send either `user` (a known user id) or `history` (item ids, oldest first).",
                            param="user" if body.user is not None else "history", code="invalid_value")
        model_id = recommenders.resolve(body.model)
        pool.acquire(model_id)  # the slot first: a recommender in use is never evicted
        try:
            recommender = await anyio.to_thread.run_sync(recommenders.get, model_id)
            history = [str(i) for i in body.history] if body.history is not None else None
            user = str(body.user) if body.user is not None else None
            result = await anyio.to_thread.run_sync(lambda: recommend(recommender, user=user, history=history,
                                                                      k=body.k, exclude_seen=body.exclude_seen))
        finally:
            pool.release(model_id)
        return {"object": "list", "model": model_id, "user": result.user, "source": result.source,
                "data": [{"rank": rank, **entry} for rank, entry in enumerate(result.items, 1)],
                "unknown_items": result.unknown_items}
