"""A trained router: load it and decide which specialist answers a prompt.

The artifact is a directory ``$SLM_HOME/routers/NAME/`` (or any directory given by path):

- ``classifier.safetensors``: ``weight`` (routes x embedding size) and ``bias`` (routes) of a
  multinomial logistic regression over the embedding model's unit-length sentence vectors;
- ``router.json``: the route labels (row order of ``weight``), the confidence ``threshold``,
  the ``fallback`` label, the ``embedding_model`` reference and ``max_tokens`` (the prompt is
  cut to that many tokens before it is embedded, in training and in use alike);
- ``slm.json``: the card (data hash, settings, validation metrics).

No pickle anywhere: the classifier is two arrays and a JSON file.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slmkit.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError

CLASSIFIER_FILE = "classifier.safetensors"
# Only the start of a prompt is embedded (max_tokens tokens); cutting the text first keeps a
# megabyte-long message from costing seconds of tokenizing. 128 tokens never need more.
ROUTING_CHARS = 4000
CONFIG_FILE = "router.json"


def routers_dir() -> Path:
    from slmkit.models import slm_home

    return slm_home() / "routers"


def router_names() -> list[str]:
    root = routers_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())


def router_path(reference: str | Path) -> Path:
    """The directory of router ``reference`` (a store name or a directory); 404 naming the known ones."""
    from slmkit.models import NAME_PATTERN

    path = Path(reference).expanduser()
    if not path.is_dir() and NAME_PATTERN.match(str(reference)) and ".." not in str(reference):
        path = routers_dir() / str(reference)
    if not (path / CONFIG_FILE).is_file():
        known = ", ".join(router_names()) or "none (train one with `slm router train ROUTES.jsonl --name NAME`)"
        raise ModelNotFoundError(f"No router {Path(str(reference)).name!r}. Known routers: {known}.")
    return path


@dataclasses.dataclass
class Decision:
    route: str  # the specialist that answers (the fallback when unsure)
    predicted: str  # the classifier's best route, before the threshold
    confidence: float  # its probability
    fell_back: bool  # confidence < threshold, so the fallback answers
    seconds: float  # embedding + classifier time


class Router:
    """A loaded router. :meth:`decide` is thread-safe (the embedder is used under a lock)."""

    def __init__(self, path: Path, threads: int | None = None):
        from safetensors.numpy import load_file

        from slmkit.embeddings import load_embedding_model

        self.path = Path(path)
        self.name = self.path.name
        try:
            config = json.loads((self.path / CONFIG_FILE).read_text(encoding="utf-8"))
            arrays = load_file(str(self.path / CLASSIFIER_FILE))
            self.routes: list[str] = [str(r) for r in config["routes"]]
            self.threshold = float(config["threshold"])
            self.fallback = str(config["fallback"])
            self.embedding_model = str(config["embedding_model"])
            self.max_tokens = int(config["max_tokens"])
            self.weight = arrays["weight"].astype(np.float32)
            self.bias = arrays["bias"].astype(np.float32)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptModelError(f"The router {self.name} is damaged ({type(exc).__name__}: {exc}). "
                                    "Train it again with `slm router train`.") from exc
        if self.weight.shape[0] != len(self.routes) or self.bias.shape != (len(self.routes),):
            raise CorruptModelError(f"The router {self.name} has {len(self.routes)} routes but a classifier of shape "
                                    f"{self.weight.shape}. Train it again with `slm router train`.")
        self.embedder = load_embedding_model(self.embedding_model, threads=threads)
        self.embedder.model.max_seq_length = self.max_tokens
        if self.weight.shape[1] != self.embedder.dimensions:
            raise CorruptModelError(f"The router {self.name} expects {self.weight.shape[1]}-dimensional embeddings; "
                                    f"{self.embedding_model} makes {self.embedder.dimensions}.")
        self._lock = threading.Lock()

    @property
    def memory_bytes(self) -> int:
        weights = sum(p.numel() * p.element_size() for p in self.embedder.model.parameters())
        return int(weights + self.weight.nbytes + self.bias.nbytes)

    def probabilities(self, prompts: Sequence[str]) -> np.ndarray:
        """(prompts, routes) probabilities."""
        with self._lock:
            vectors = self.embedder.embed([p[:ROUTING_CHARS] for p in prompts])
        return softmax(vectors @ self.weight.T + self.bias)

    def decide(self, prompt: str) -> Decision:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequestError("Nothing to route: the prompt is empty.", param="messages")
        started = time.perf_counter()
        row = self.probabilities([prompt])[0]
        return self._decision(row, time.perf_counter() - started)

    def decide_many(self, prompts: Sequence[str]) -> list[Decision]:
        """Decisions for many prompts in one batch (``seconds`` is the batch time per prompt)."""
        started = time.perf_counter()
        rows = self.probabilities(prompts)
        each = (time.perf_counter() - started) / max(1, len(prompts))
        return [self._decision(row, each) for row in rows]

    def _decision(self, row: np.ndarray, seconds: float) -> Decision:
        best = int(row.argmax())
        confidence = float(row[best])
        fell_back = confidence < self.threshold
        predicted = self.routes[best]
        return Decision(self.fallback if fell_back else predicted, predicted, confidence, fell_back, seconds)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def load_router(reference: str | Path, threads: int | None = None) -> Router:
    """Load router ``reference`` (a name in ``$SLM_HOME/routers`` or a directory)."""
    return Router(router_path(reference), threads=threads)
