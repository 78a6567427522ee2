"""``slm recommend for``: the top-k items for a known user or for a given history.

:func:`load_recommender` reads a recommender artifact once; :func:`recommend` answers one
request: the user's stored history (or the ``history`` given, for a user the model never
saw) is scored over the whole catalogue, items already seen are excluded, and titles are
attached when the catalogue has them. An empty history gets the most popular items.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from slmkit.errors import InvalidRequestError, ModelNotFoundError
from slmkit.loading import MODEL_BUILD_LOCK
from slmkit.recommend.model import FIRST_ITEM, HISTORIES_FILE, Catalogue, is_recommender

MAX_K = 1000


@dataclasses.dataclass
class Recommender:
    name: str
    path: Path
    model: object  # transformers LlamaForCausalLM, in eval mode
    catalogue: Catalogue
    histories: dict[str, list[str]]
    max_length: int


@dataclasses.dataclass
class Recommendations:
    items: list[dict]  # {"item", "title", "score"}, best first
    source: str  # "model" or "popularity" (empty history)
    user: str | None
    history_length: int
    unknown_items: list[str]  # history items the catalogue does not hold (ignored)


def load_recommender(reference: str | Path, threads: int | None = None) -> Recommender:
    """Load the recommender ``reference`` (a store name or a directory)."""
    import torch
    from transformers import AutoModelForCausalLM

    from slmkit.artifact import read_card
    from slmkit.references import resolve

    if threads:
        torch.set_num_threads(threads)
    resolved = resolve(reference)
    folder = resolved.path if resolved.path.is_dir() else resolved.path.parent
    if resolved.format != "hf" and is_recommender(folder):
        raise InvalidRequestError(f"{reference} is a {resolved.format.upper()} export of a recommender, made to run on a "
                                  "device (docs/recommend.md#export); recommend with the recommender it was exported "
                                  "from (its slm.json names the source).")
    if resolved.format != "hf" or not is_recommender(resolved.path):
        raise InvalidRequestError(f"{reference} is not a recommender (it has no catalogue.json). Train one with "
                                  "`slm recommend train LOGS --name NAME`.")
    card = read_card(resolved.path)
    max_length = int((card.args if card else {}).get("max_length", 200))
    with MODEL_BUILD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(str(resolved.path), dtype=torch.float32,
                                                     use_safetensors=True).eval()
    histories_path = resolved.path / HISTORIES_FILE
    histories = json.loads(histories_path.read_text(encoding="utf-8")) if histories_path.is_file() else {}
    return Recommender(resolved.name, resolved.path, model, Catalogue.read(resolved.path), histories, max_length)


def recommend(recommender: Recommender, user: str | None = None, history: Sequence[str] | None = None,
              k: int = 10, exclude_seen: bool = True) -> Recommendations:
    """The ``k`` best next items for ``user`` (stored history) or ``history`` (item ids, oldest first)."""
    import torch

    from slmkit.recommend.model import score_histories

    if (user is None) == (history is None):
        raise InvalidRequestError("Give either a user or a history (item ids, oldest first), not both.")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidRequestError(f"k must be an integer from 1 to {MAX_K}, got {k!r}.", param="k")
    if user is not None:
        if user not in recommender.histories:
            raise ModelNotFoundError(f"Unknown user {user!r}: {recommender.name} has no history for them. Pass "
                                     "their items as a history instead (--history item1,item2,...).", param="user")
        history = recommender.histories[user]
    history = [str(item) for item in history]
    catalogue = recommender.catalogue
    unknown = [item for item in history if item not in catalogue.index]
    known = [catalogue.index[item] for item in history if item in catalogue.index]
    if known:
        scores = score_histories(recommender.model, [[n + FIRST_ITEM for n in known]], recommender.max_length)[0]
        source = "model"
    else:
        scores = torch.tensor(catalogue.popularity or [0] * len(catalogue), dtype=torch.float32)
        source = "popularity"
    if exclude_seen and known:
        scores[torch.tensor(sorted(set(known)))] = -torch.inf
    top = scores.topk(min(k, len(catalogue)))
    items = [{"item": catalogue.items[n], "title": catalogue.titles.get(catalogue.items[n]), "score": float(s)}
             for s, n in zip(top.values.tolist(), top.indices.tolist(), strict=True) if s != -float("inf")]
    return Recommendations(items, source, user, len(history), unknown)
