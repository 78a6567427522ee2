"""``POST /v1/recommendations``: top-k items from a recommender artifact (`slm recommend train`).

Body: ``{"model": "shop-rec", "user": "u42", "k": 10}`` or ``{"history": ["i1", "i2"], ...}``;
``model`` may be left out when the server has one recommender. The answer lists the items
(best first) with titles and scores. Recommenders named with ``slm serve --model`` are served
here instead of as chat models (:func:`split_models`). A recommender is loaded on first use
and reloaded when its card changes on disk, so ``slm recommend train --resume`` on newer logs
reaches a running server without a restart.
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


class Recommenders:
    """The recommenders a server offers, loaded lazily, reloaded when their card changes."""

    def __init__(self, ids: list[str], threads: int | None = None):
        self.ids, self.threads = ids, threads
        self._loaded: dict[str, tuple[int, object]] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str | None):
        from slmkit.recommend.predict import load_recommender

        if model_id is None:
            if len(self.ids) != 1:
                raise HTTPError(400, "Name the recommender in `model`. This server has: "
                                     f"{', '.join(self.ids) or 'none'}.", param="model")
            model_id = self.ids[0]
        if model_id not in self.ids:
            raise ModelNotFoundError(f"No recommender {model_id!r} on this server. Available: "
                                     f"{', '.join(self.ids) or 'none (start the server with --model RECOMMENDER)'}.")
        path = _recommender_path(model_id)
        if path is None:
            raise ModelNotFoundError(f"The recommender {model_id!r} is no longer in the store.")
        version = (path / "slm.json").stat().st_mtime_ns if (path / "slm.json").exists() else 0
        with self._lock:
            cached = self._loaded.get(model_id)
            if cached is None or cached[0] != version:
                self._loaded[model_id] = (version, load_recommender(path, threads=self.threads))
            return model_id, self._loaded[model_id][1]


def register(app, pool, recommenders: Recommenders) -> None:
    """Add the route to ``app``; requests count against ``pool``'s per-model queue bound."""

    @app.post("/v1/recommendations")
    async def recommendations(body: RecommendationRequest):
        from slmkit.recommend.predict import recommend

        if (body.user is None) == (body.history is None):
            raise HTTPError(400, "Send either `user` (a known user id) or `history` (item ids, oldest first).",
                            param="user" if body.user is not None else "history", code="invalid_value")
        model_id, recommender = await anyio.to_thread.run_sync(recommenders.get, body.model)
        pool.acquire(model_id)
        try:
            history = [str(i) for i in body.history] if body.history is not None else None
            user = str(body.user) if body.user is not None else None
            result = await anyio.to_thread.run_sync(lambda: recommend(recommender, user=user, history=history,
                                                                      k=body.k, exclude_seen=body.exclude_seen))
        finally:
            pool.release(model_id)
        return {"object": "list", "model": model_id, "user": result.user, "source": result.source,
                "data": [{"rank": rank, **entry} for rank, entry in enumerate(result.items, 1)],
                "unknown_items": result.unknown_items}
