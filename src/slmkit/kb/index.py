"""The knowledge-base index: one SQLite file per knowledge base, ``$SLM_HOME/kb/NAME.sqlite``.

Tables: ``documents`` (source path, content hash), ``chunks`` (title path, page, position,
text, embedding as float32 bytes) and ``chunks_fts`` (FTS5 over title and text, for BM25).
Vectors are kept as a plain matrix in the ``chunks`` table and searched with numpy: at the
sizes a support knowledge base has (thousands of chunks), a brute-force matrix product is
as fast as sqlite-vec's ``vec0`` scan and needs no extension loaded (``bench/kb.py``
measures both). An ingest embeds first and then writes everything in one transaction, so a
crash leaves the previous index as it was; a new knowledge base is built in a temporary file
and renamed into place.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from slmkit.artifact import file_sha256
from slmkit.errors import InvalidRequestError, ModelNotFoundError
from slmkit.kb.ingest import INGEST_VERSION, ChunkText, DocumentError, chunk_sections, find_documents, read_sections
from slmkit.models import check_name, slm_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL, ingested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL, document_id INTEGER NOT NULL REFERENCES documents(id),
    section TEXT NOT NULL, page INTEGER, position INTEGER NOT NULL, text TEXT NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(section, text, tokenize='porter unicode61');
"""
EMBEDDING_MODEL = "minilm-l6"
Progress = Callable[[str, int, int], None]


def kb_dir() -> Path:
    return slm_home() / "kb"


def kb_path(name: str) -> Path:
    return kb_dir() / f"{check_name(name)}.sqlite"


def kb_names() -> list[str]:
    root = kb_dir()
    return sorted(p.stem for p in root.glob("*.sqlite")) if root.is_dir() else []


def existing_kb_path(name: str) -> Path:
    path = kb_path(name)
    if not path.is_file():
        known = ", ".join(kb_names()) or "none yet"
        raise ModelNotFoundError(f"No knowledge base named {name!r} (known: {known}). "
                                 f"Create it with: slm kb ingest {name} ./docs")
    return path


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


@dataclasses.dataclass
class IngestReport:
    name: str
    path: Path
    added: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    chunks_embedded: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class _Pending:
    path: str
    name: str
    sha256: str
    size_bytes: int
    chunks: list[ChunkText]


def ingest(name: str, paths: list[Path], embedder=None, progress: Progress | None = None) -> IngestReport:
    """Add or update the documents under ``paths`` in knowledge base ``name`` (created if new).

    Unchanged files (same SHA-256) are skipped; changed ones are re-chunked and re-embedded;
    files that were ingested from under ``paths`` before and are gone now are removed. A file
    that cannot be read is reported in ``errors`` and the rest still ingest.
    """
    started = time.perf_counter()
    target = kb_path(name)
    report = IngestReport(name, target)
    files = find_documents([Path(p) for p in paths])
    if not files:
        raise InvalidRequestError(f"No .md, .txt, .html or .pdf documents under {', '.join(map(str, paths))}.")
    new = not target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    if new:  # a private temp file per ingest: concurrent first ingests never share a half-written file
        handle, name_tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        os.close(handle)
        work = Path(name_tmp)
        work.unlink()  # SQLite creates it afresh
    else:
        work = target
    connection = connect(work)
    try:
        connection.executescript(SCHEMA)
        known = dict(connection.execute("SELECT path, sha256 FROM documents").fetchall())
        version = connection.execute("SELECT value FROM meta WHERE key = 'ingest_version'").fetchone()
        if known and (version is None or version[0] != INGEST_VERSION):
            known = {path: "" for path in known}  # chunked by an older slmkit: redo them all
        pending = _read_changed(files, known, report, progress)
        vectors = _embed(pending, embedder, progress)
        report.chunks_embedded = len(vectors)
        roots = {str(root) for _, root in files} | {str(file) for file, _ in files}
        gone = [p for p in known if p not in {str(f) for f, _ in files} and _under_any(p, roots)]
        _write(connection, pending, vectors, gone, report, progress)
    except BaseException:
        connection.close()
        if new:
            for leftover in (work, work.with_name(work.name + "-journal")):
                leftover.unlink(missing_ok=True)
        raise
    connection.close()
    if new:
        os.replace(work, target)
    report.seconds = time.perf_counter() - started
    return report


def _under_any(path: str, roots: set[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _display_name(file: Path, root: Path) -> str:
    return file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name


def _read_changed(files, known: dict[str, str], report: IngestReport, progress: Progress | None) -> list[_Pending]:
    pending = []
    for done, (file, root) in enumerate(files, start=1):
        name = _display_name(file, root)
        if progress:
            progress(f"Reading {name}", done, len(files))
        sha = file_sha256(file)
        if known.get(str(file)) == sha:
            report.unchanged.append(name)
            continue
        try:
            chunks = chunk_sections(read_sections(file))
        except DocumentError as exc:
            report.errors[name] = exc.message
            continue
        except OSError as exc:
            report.errors[name] = f"{name}: cannot read the file ({exc.strerror})."
            continue
        if not chunks:
            report.errors[name] = f"{name}: no text found (a scanned PDF needs OCR first)."
            continue
        (report.updated if str(file) in known else report.added).append(name)
        pending.append(_Pending(str(file), name, sha, file.stat().st_size, chunks))
    return pending


def chunk_embedding_text(section: str, text: str) -> str:
    return f"{section}\n{text}"


def _embed(pending: list[_Pending], embedder, progress: Progress | None) -> np.ndarray:
    texts = [chunk_embedding_text(c.section, c.text) for doc in pending for c in doc.chunks]
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    if embedder is None:
        from slmkit.kb.retrieve import default_embedder

        embedder = default_embedder()
    batch = 64
    parts = []
    for start in range(0, len(texts), batch):
        if progress:
            progress("Embedding chunks", start, len(texts))
        parts.append(embedder.embed(texts[start:start + batch]))
    if progress:
        progress("Embedding chunks", len(texts), len(texts))
    return np.concatenate(parts).astype(np.float32)


def _write(connection, pending: list[_Pending], vectors: np.ndarray, gone: list[str], report: IngestReport,
           progress: Progress | None) -> None:
    """All changes in one transaction: either the new index or the previous one, never a mix."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        for path in gone:
            name = connection.execute("SELECT name FROM documents WHERE path = ?", (path,)).fetchone()[0]
            _delete_document(connection, path)
            report.removed.append(name)
        row = 0
        for done, doc in enumerate(pending, start=1):
            _delete_document(connection, doc.path)
            cursor = connection.execute(
                "INSERT INTO documents (path, name, sha256, size_bytes, ingested_at) VALUES (?, ?, ?, ?, ?)",
                (doc.path, doc.name, doc.sha256, doc.size_bytes, time.time()))
            document_id = cursor.lastrowid
            for chunk in doc.chunks:
                cursor = connection.execute(
                    "INSERT INTO chunks (chunk_id, document_id, section, page, position, text, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (chunk.chunk_id, document_id, chunk.section, chunk.page, chunk.position, chunk.text,
                     vectors[row].tobytes()))
                connection.execute("INSERT INTO chunks_fts (rowid, section, text) VALUES (?, ?, ?)",
                                   (cursor.lastrowid, chunk.section, chunk.text))
                row += 1
            if progress:
                progress(f"Indexing {doc.name}", done, len(pending))
        dims = str(vectors.shape[1]) if len(vectors) else None
        connection.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_model', ?)", (EMBEDDING_MODEL,))
        connection.execute("INSERT OR REPLACE INTO meta VALUES ('ingest_version', ?)", (INGEST_VERSION,))
        if dims:
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('dimensions', ?)", (dims,))
        connection.execute("INSERT OR REPLACE INTO meta VALUES ('updated_at', ?)", (str(time.time()),))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _delete_document(connection, path: str) -> None:
    row = connection.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
    if row is None:
        return
    ids = [r[0] for r in connection.execute("SELECT id FROM chunks WHERE document_id = ?", row)]
    connection.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(i,) for i in ids])
    connection.execute("DELETE FROM chunks WHERE document_id = ?", row)
    connection.execute("DELETE FROM documents WHERE id = ?", row)


@dataclasses.dataclass
class KbInfo:
    name: str
    path: Path
    documents: int
    chunks: int
    size_bytes: int
    embedding_model: str | None
    updated_at: float | None


def kb_info(name: str) -> KbInfo:
    path = existing_kb_path(name)
    connection = connect(path)
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        documents = connection.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = connection.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise InvalidRequestError(f"{path} is not a readable knowledge base ({exc}); delete it with "
                                  f"`slm kb rm {name}` and ingest again.") from exc
    finally:
        connection.close()
    updated = meta.get("updated_at")
    return KbInfo(name, path, documents, chunks, path.stat().st_size, meta.get("embedding_model"),
                  float(updated) if updated else None)


def list_kbs() -> list[KbInfo]:
    return [kb_info(name) for name in kb_names()]


def kb_documents(name: str) -> list[dict]:
    """Each document of ``name``: display name, source path, hash, chunk count."""
    connection = connect(existing_kb_path(name))
    try:
        rows = connection.execute(
            "SELECT d.name, d.path, d.sha256, d.size_bytes, COUNT(c.id) FROM documents d "
            "LEFT JOIN chunks c ON c.document_id = d.id GROUP BY d.id ORDER BY d.name").fetchall()
    finally:
        connection.close()
    return [{"name": n, "path": p, "sha256": s, "size_bytes": b, "chunks": c} for n, p, s, b, c in rows]


def remove_kb(name: str) -> Path:
    path = existing_kb_path(name)
    path.unlink()
    for suffix in ("-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return path
