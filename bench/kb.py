"""Knowledge-base index: vector search as a stored matrix (numpy) against its peers, and BM25 in FTS5.

Why the index keeps vectors as float32 blobs searched with numpy rather than sqlite-vec:
this prints the query time of each at several knowledge-base sizes (random unit vectors,
384 dims like minilm-l6), the time to load the matrix from SQLite (paid once per index
change), and whether sqlite-vec can be loaded by this Python at all.
Usage: python bench/kb.py
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DIMS = 384
QUERIES = 50


def timed(fn, repeat: int = QUERIES) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIMS)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def sqlite_vec_connection():
    """A connection with sqlite-vec loaded, or the reason it cannot be."""
    connection = sqlite3.connect(":memory:")
    if not hasattr(connection, "enable_load_extension"):
        return None, "this Python's sqlite3 was built without extension loading"
    import sqlite_vec

    connection.enable_load_extension(True)
    sqlite_vec.load(connection)
    return connection, None


def bench_vectors(count: int) -> dict:
    import torch
    from sentence_transformers import util

    matrix, query = unit_rows(count, 0), unit_rows(1, 1)[0]
    row = {"chunks": count}
    row["numpy_ms"] = 1e3 * timed(lambda: np.argpartition(-(matrix @ query), 10)[:10])
    tensor, query_tensor = torch.from_numpy(matrix), torch.from_numpy(query[None])
    row["st_semantic_search_ms"] = 1e3 * timed(lambda: util.semantic_search(query_tensor, tensor, top_k=10))
    connection, why = sqlite_vec_connection()
    if connection is None:
        row["sqlite_vec_ms"] = None
        row["note"] = why
    else:
        connection.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIMS}])")
        connection.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)",
                               [(i, r.tobytes()) for i, r in enumerate(matrix)])
        sql = "SELECT rowid FROM v WHERE embedding MATCH ? ORDER BY distance LIMIT 10"
        row["sqlite_vec_ms"] = 1e3 * timed(lambda: connection.execute(sql, (query.tobytes(),)).fetchall())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.sqlite"
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, embedding BLOB)")
        db.executemany("INSERT INTO chunks VALUES (?, ?)", [(i, r.tobytes()) for i, r in enumerate(matrix)])
        db.commit()
        row["matrix_load_ms"] = 1e3 * timed(lambda: np.stack([np.frombuffer(b, np.float32) for (b,) in db.execute(
            "SELECT embedding FROM chunks ORDER BY id")]), repeat=3)
        db.close()
    return row


def bench_bm25() -> float:
    """Median ms of an FTS5 BM25 query over the pydoc language-reference topics split in paragraphs."""
    from pydoc_data.topics import topics

    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE VIRTUAL TABLE f USING fts5(section, text, tokenize='porter unicode61')")
    paragraphs = [(key, p) for key, text in topics.items() for p in text.split("\n\n") if p.strip()]
    connection.executemany("INSERT INTO f VALUES (?, ?)", paragraphs)
    sql = "SELECT rowid FROM f WHERE f MATCH ? ORDER BY bm25(f, 2.0, 1.0) LIMIT 30"
    return 1e3 * timed(lambda: connection.execute(sql, ('"generator" OR "return" OR "exception"',)).fetchall()), \
        len(paragraphs)


def main() -> None:
    print("| chunks | numpy matrix (ms) | sentence-transformers semantic_search (ms) | ratio | sqlite-vec vec0 (ms) "
          "| load matrix from SQLite (ms) |")
    print("|---:|---:|---:|---:|---:|---:|")
    notes = set()
    for count in (1_000, 10_000, 100_000):
        row = bench_vectors(count)
        vec = f"{row['sqlite_vec_ms']:.2f}" if row["sqlite_vec_ms"] is not None else "n/a"
        notes.add(row.get("note"))
        print(f"| {count:,} | {row['numpy_ms']:.2f} | {row['st_semantic_search_ms']:.2f} | "
              f"{row['st_semantic_search_ms'] / row['numpy_ms']:.1f}x | {vec} | {row['matrix_load_ms']:.1f} |")
    for note in filter(None, notes):
        print(f"\nsqlite-vec n/a: {note}.")
    bm25_ms, paragraphs = bench_bm25()
    print(f"\nFTS5 BM25 top-30 over {paragraphs:,} paragraphs of pydoc topics: {bm25_ms:.2f} ms per query (median).")


if __name__ == "__main__":
    main()
