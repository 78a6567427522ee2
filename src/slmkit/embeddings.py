"""Sentence embeddings (``minilm-l6`` by default) for retrieval and ``/v1/embeddings``.

Runs the model through sentence-transformers, which applies the pooling and normalization
the model was trained with (read from the model's own files, nothing downloaded).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from slmkit.errors import CorruptModelError, InvalidRequestError
from slmkit.loading import MODEL_BUILD_LOCK

MAX_BATCH = 2048


class EmbeddingModel:
    def __init__(self, path: Path, model_name: str | None = None, threads: int | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        started = time.perf_counter()
        self.path = Path(path)
        self.model_name = model_name or self.path.name
        try:
            with MODEL_BUILD_LOCK:
                self.model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CorruptModelError(f"Cannot load the embedding model in {path}: {exc}") from exc
        self.dimensions = self.model.get_embedding_dimension()
        self.context_length = int(self.model.max_seq_length)
        self.load_time_s = time.perf_counter() - started
        self._lock = threading.Lock()

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.model.tokenizer(texts, truncation=True)["input_ids"])

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (texts past the context are truncated)."""
        if not texts:
            raise InvalidRequestError("Nothing to embed: give at least one string.", param="input")
        if len(texts) > MAX_BATCH:
            raise InvalidRequestError(f"At most {MAX_BATCH} strings per call, got {len(texts)}.", param="input")
        with self._lock:
            vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32)


def load_embedding_model(reference: str = "minilm-l6", threads: int | None = None) -> EmbeddingModel:
    from slmkit.references import resolve_hf

    resolved = resolve_hf(reference)
    return EmbeddingModel(resolved.path, model_name=resolved.name, threads=threads)
