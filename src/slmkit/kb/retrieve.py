"""Hybrid retrieval: BM25 (SQLite FTS5) and embedding search, fused by reciprocal rank.

Each list ranks up to ``candidates`` chunks; a chunk's fused score is
``sum(1 / (RRF_K + rank))`` over the lists it appears in (Cormack et al., 2009), so a chunk
both searches agree on rises to the top without calibrating BM25 against cosine scores.
Each hit also carries its cosine similarity to the query, which the answerer uses as the
retrieval confidence.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading

import numpy as np

from slmkit.errors import InvalidRequestError
from slmkit.kb.index import connect, existing_kb_path

RRF_K = 60
CANDIDATES = 30
_STOPWORD_TEXT = """a an and are as at be by can do does for from has have how i if in into is it its of on or
that the their then there these this to was what when where which who why will with you your me my we our"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclasses.dataclass
class Hit:
    id: int  # row id of the chunk in its knowledge base
    file: str
    section: str
    page: int | None
    text: str
    score: float  # fused reciprocal-rank score
    similarity: float  # cosine similarity between query and chunk embeddings
    bm25_rank: int | None  # 1-based rank in the BM25 list, None if absent
    vector_rank: int | None

    def source(self, number: int, snippet_chars: int = 240) -> dict:
        snippet = self.text if len(self.text) <= snippet_chars else self.text[:snippet_chars].rsplit(" ", 1)[0] + "…"
        return {"n": number, "file": self.file, "section": self.section, "page": self.page,
                "score": round(self.score, 5), "similarity": round(self.similarity, 4), "snippet": snippet}


_embedder_lock = threading.Lock()


@functools.cache
def _load_default_embedder():
    from slmkit.embeddings import load_embedding_model

    return load_embedding_model("minilm-l6")


def default_embedder():
    """The bundled minilm-l6 model, loaded once per process."""
    with _embedder_lock:
        return _load_default_embedder()


_matrices: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_matrices_lock = threading.Lock()


def _matrix(connection, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Row ids and the (chunks, dims) embedding matrix, read inside the caller's transaction
    and cached per version of the index (its last update time and chunk count and id range)."""
    version = connection.execute(
        "SELECT (SELECT value FROM meta WHERE key = 'updated_at'), COUNT(*), MIN(id), MAX(id) FROM chunks").fetchone()
    key = (path, *version)
    with _matrices_lock:
        if key in _matrices:
            return _matrices[key]
    rows = connection.execute("SELECT id, embedding FROM chunks ORDER BY id").fetchall()
    if rows:
        value = np.array([r[0] for r in rows], dtype=np.int64), np.stack([np.frombuffer(r[1], dtype=np.float32)
                                                                           for r in rows])
    else:
        value = np.zeros(0, dtype=np.int64), np.zeros((0, 1), dtype=np.float32)
    with _matrices_lock:
        for stale in [k for k in _matrices if k[0] == path]:
            del _matrices[stale]
        if len(_matrices) >= 8:
            _matrices.pop(next(iter(_matrices)))
        _matrices[key] = value
    return value


def fts_query(text: str) -> str | None:
    """An FTS5 OR-query of the words in ``text`` (quoted, so user text is never FTS syntax)."""
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS]
    words = list(dict.fromkeys(words))[:32]
    return " OR ".join(f'"{w}"' for w in words) if words else None


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Fused score of every id in ``rankings`` (each a list of ids, best first)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


def search(name: str, query: str, k: int = 5, embedder=None, candidates: int = CANDIDATES) -> list[Hit]:
    """The ``k`` best chunks of knowledge base ``name`` for ``query``, best first."""
    if not query.strip():
        raise InvalidRequestError("The search query is empty.", param="query")
    if k < 1:
        raise InvalidRequestError(f"k must be >= 1, got {k}.", param="k")
    path = existing_kb_path(name)
    # The query is embedded first, then everything is read in one transaction: one consistent
    # snapshot even while an ingest commits (the matrix, BM25 and the rows all agree).
    query_vector = (embedder or default_embedder()).embed([query])[0]
    connection = connect(path)
    try:
        connection.execute("BEGIN")
        ids, matrix = _matrix(connection, str(path))
        if len(ids) == 0:
            return []
        similarities = matrix @ query_vector
        order = np.argsort(-similarities)[:candidates]
        vector_ranking = [int(ids[i]) for i in order]
        bm25_ranking = []
        match = fts_query(query)
        if match:
            bm25_ranking = [r[0] for r in connection.execute(
                "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts, 2.0, 1.0) LIMIT ?",
                (match, candidates))]
        fused = reciprocal_rank_fusion([bm25_ranking, vector_ranking])
        best = sorted(fused, key=lambda i: -fused[i])[:k]
        rows = {r[0]: r[1:] for r in connection.execute(
            f"SELECT c.id, d.name, c.section, c.page, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
            f"WHERE c.id IN ({','.join('?' * len(best))})", best)}
    finally:
        connection.close()  # ends the read transaction
    similarity_of = dict(zip(ids.tolist(), similarities.tolist(), strict=True))
    return [Hit(i, *rows[i], score=fused[i], similarity=float(similarity_of[i]),
                bm25_rank=bm25_ranking.index(i) + 1 if i in bm25_ranking else None,
                vector_rank=vector_ranking.index(i) + 1 if i in vector_ranking else None) for i in best]

