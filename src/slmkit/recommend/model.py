"""The recommender network: a small Llama decoder whose vocabulary is the item catalogue.

Token ids: 0 is padding, 1 starts a user's sequence, item ``i`` of the catalogue is ``i + 2``.
The model reads a user's items in time order and, at every position, scores every item of the
catalogue as the next one. Training uses full-catalogue cross-entropy (a softmax over every
item, not sampled negatives); when the catalogue is large the logits are computed in chunks of
positions and recomputed in the backward pass (:func:`catalogue_cross_entropy`), so memory
grows with ``chunk × items`` instead of ``positions × items``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

from slmkit.data import IGNORE_INDEX
from slmkit.errors import CorruptModelError

PAD_ID, START_ID, FIRST_ITEM = 0, 1, 2
CATALOGUE_FILE = "catalogue.json"
HISTORIES_FILE = "histories.json"
LOGITS_BUDGET = 1 << 23  # floats of logits per chunk when chunking is automatic (32 MB in float32)


@dataclasses.dataclass
class Catalogue:
    """The items a recommender knows, in token order, with titles and training counts."""

    items: list[str]
    titles: dict[str, str] = dataclasses.field(default_factory=dict)
    popularity: list[int] = dataclasses.field(default_factory=list)  # interactions per item in training

    def __post_init__(self):
        self.index = {item: number for number, item in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def tokens(self, items: Sequence[str]) -> list[int]:
        return [self.index[item] + FIRST_ITEM for item in items if item in self.index]

    def extended(self, new_items: Sequence[str]) -> Catalogue:
        """This catalogue plus ``new_items`` not in it yet, appended so old token ids stay."""
        extra = sorted({item for item in new_items if item not in self.index}, key=natural_key)
        return Catalogue(self.items + extra, dict(self.titles), self.popularity + [0] * len(extra))

    def to_json(self) -> str:
        return json.dumps({"items": self.items, "titles": self.titles, "popularity": self.popularity})

    @classmethod
    def read(cls, directory: Path) -> Catalogue:
        path = Path(directory) / CATALOGUE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(list(map(str, data["items"])), dict(data.get("titles", {})),
                       [int(c) for c in data.get("popularity", [])])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptModelError(f"{path} is missing or not a valid catalogue ({exc}). Retrain the recommender "
                                    "with `slm recommend train`.") from exc


def natural_key(item: str) -> tuple:
    """Numeric ids in numeric order (2 before 10), then the rest alphabetically."""
    return (0, int(item), "") if item.isdigit() else (1, 0, item)


def is_recommender(directory: Path) -> bool:
    return (Path(directory) / CATALOGUE_FILE).is_file()


def build_model(items: int, shape: dict, max_length: int, seed: int):
    """A fresh Llama over ``items`` item tokens plus the two special ones."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, vocab_size=items + FIRST_ITEM, max_position_embeddings=max_length + 1,
                         pad_token_id=PAD_ID, bos_token_id=START_ID, eos_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def item_weight(model) -> torch.Tensor:
    """(items, hidden): the output embedding rows of the catalogue (special tokens left out)."""
    return model.get_output_embeddings().weight[FIRST_ITEM:]


def hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float = 0.0) -> torch.Tensor:
    """(B, T, hidden) after the final norm; ``dropout`` on the item embeddings while training."""
    embeds = model.get_input_embeddings()(input_ids)
    if dropout and model.training:
        embeds = F.dropout(embeds, dropout, training=True)
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    return base(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state


def chunk_rows(items: int, requested: int = 0) -> int:
    """Positions per logits chunk: ``requested``, or as many as fit LOGITS_BUDGET floats."""
    return requested if requested > 0 else max(64, LOGITS_BUDGET // max(items, 1))


def _summed_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(hidden @ weight.T, targets, reduction="sum")  # (rows, items) logits


def catalogue_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                            rows_per_chunk: int) -> torch.Tensor:
    """Summed softmax cross-entropy of ``targets`` (item numbers) over every item.

    ``hidden`` is (rows, hidden), ``weight`` (items, hidden). With more rows than
    ``rows_per_chunk`` the logits are built one chunk at a time and rebuilt in the backward
    pass (activation checkpointing), so at most one chunk's logits exist at once.
    """
    from torch.utils.checkpoint import checkpoint

    if hidden.shape[0] <= rows_per_chunk:
        return _summed_cross_entropy(hidden, weight, targets)
    total = hidden.new_zeros(())
    for start in range(0, hidden.shape[0], rows_per_chunk):
        part = slice(start, start + rows_per_chunk)
        total = total + checkpoint(_summed_cross_entropy, hidden[part], weight, targets[part], use_reentrant=False)
    return total


def make_loss(dropout: float, rows_per_chunk: int):
    """The training loop's ``loss_fn``: next-item cross-entropy over the whole catalogue."""

    def next_item_loss(model, batch: dict) -> torch.Tensor:
        hidden = hidden_states(model, batch["input_ids"], batch["attention_mask"], dropout)
        trained = batch["targets"] != IGNORE_INDEX
        total = catalogue_cross_entropy(hidden[trained], item_weight(model), batch["targets"][trained] - FIRST_ITEM,
                                        rows_per_chunk)
        return total / batch["normalizer"]

    return next_item_loss


def score_histories(model, histories: Sequence[Sequence[int]], max_length: int, batch_size: int = 256) -> torch.Tensor:
    """(len(histories), items) next-item scores for token-id histories (items only, no start token).

    Each history is cut to its last ``max_length`` items; an empty one is scored from the start
    token alone.
    """
    model.eval()
    weight = item_weight(model)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(histories), batch_size):
            chunk = [[START_ID, *list(h)[-max_length:]] for h in histories[start:start + batch_size]]
            width = max(len(c) for c in chunk)
            if all(len(c) == width for c in chunk):  # no padding (one user's request): plain causal attention
                hidden = hidden_states(model, torch.tensor(chunk), None)
                rows.append(hidden[:, -1] @ weight.T)
                continue
            input_ids = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                mask[row, :len(ids)] = 1
            hidden = hidden_states(model, input_ids, mask)  # (B, T, hidden), right-padded
            last = hidden[torch.arange(len(chunk)), mask.sum(1) - 1]  # (B, hidden)
            rows.append(last @ weight.T)
    return torch.cat(rows)
