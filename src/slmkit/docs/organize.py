"""``slm docs organize INBOX OUT``: sort a folder of documents by kind and write one index.

For every document under INBOX: classify it, extract its kind's fields, and write a one-line
summary built from those fields. OUT gets ``index.jsonl`` (one object per document: file,
sha256, kind and its confidence, values, summary, or the error that stopped it), ``index.csv``
(the same, flat) and a copy of each document in ``OUT/<kind>/``. INBOX is only read.

Resumable: each document's line is appended to ``index.jsonl`` and flushed as soon as it is
done, so after a crash (even ``kill -9``) a re-run skips every document already indexed with the
same content hash; a changed file, or one that failed, is done again. A half-written last line
is ignored.

Parallel: ``workers`` local processes or a Ray cluster run the documents (each worker loads the
model once); lines are still written in file order, each as soon as it and those before it are
done, so the index is byte-for-byte the sequential one and a kill -9 loses only unfinished work.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from slmkit.docs.summarize import headline
from slmkit.errors import InvalidRequestError

SUFFIXES = (".pdf", ".txt", ".md")


@dataclasses.dataclass
class OrganizeReport:
    done: list[str]  # documents indexed in this run
    skipped: list[str]  # already indexed with the same content
    errors: dict[str, str]  # document → why it could not be read (indexed with its error)
    index: Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_index(path: Path) -> dict[str, dict]:
    """Indexed documents by relative file name; a torn last line (a crash mid-write) is ignored."""
    entries = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            entries[entry["file"]] = entry
    return entries


def organize(inbox: str | Path, out: str | Path, process, progress: Callable[[str, int, int], None] | None = None,
             copy: bool = True, workers: int = 1, ray: str | None = None, load_engine=None) -> OrganizeReport:
    """Index every document under ``inbox`` into ``out``. ``process`` is an
    :class:`~slmkit.docs.batch.Extractor` (or, in this process only, a function pages →
    ``{"kind", "kind_confidence", "values"}``); ``workers``/``ray`` spread the documents over
    local processes or a Ray cluster (:func:`slmkit.docs.batch.run_documents`) with the same
    index bytes as a sequential run."""
    from slmkit.docs.batch import run_documents

    inbox, out = Path(inbox), Path(out)
    if not inbox.is_dir():
        raise InvalidRequestError(f"{inbox} is not a folder. Give the folder of documents to organize.")
    if out.resolve().is_relative_to(inbox.resolve()):
        raise InvalidRequestError(f"{out} is inside {inbox}; pick an output folder outside the inbox.")
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.jsonl"
    known = read_index(index_path)
    files = sorted(p for p in inbox.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    report = OrganizeReport([], [], {}, index_path)
    hashes = {str(p.relative_to(inbox)): file_sha256(p) for p in files}
    keep = {name: e for name, e in known.items() if hashes.get(name) == e.get("sha256") and "error" not in e}
    # Rewrite the index with only what stays valid (no torn line, no stale or failed entry), then append.
    _write_atomically(index_path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in keep.values()))
    todo = [file for file in files if str(file.relative_to(inbox)) not in keep]
    results = run_documents(todo, process, workers=workers, ray=ray, load_engine=load_engine)
    with index_path.open("a", encoding="utf-8") as index:
        for number, file in enumerate(files, 1):
            name = str(file.relative_to(inbox))
            if progress:
                progress(name, number - 1, len(files))
            if name in keep:
                report.skipped.append(name)
                continue
            entry = {"file": name, "sha256": hashes[name]}
            done = next(results)  # in input order, whichever mode produced it
            if "error" in done:
                entry["error"] = done["error"]
                report.errors[name] = done["error"]
            else:
                result = done["result"]
                entry.update(kind=result["kind"], kind_confidence=result.get("kind_confidence"),
                             values=result["values"], summary=headline(result["kind"], result["values"]))
                if copy:
                    (out / result["kind"]).mkdir(exist_ok=True)
                    shutil.copy2(file, out / result["kind"] / file.name)
                report.done.append(name)
            index.write(json.dumps(entry, ensure_ascii=False) + "\n")
            index.flush()
    _write_atomically(out / "index.csv", index_csv(read_index(index_path).values()))
    if progress:
        progress("", len(files), len(files))
    return report


def index_csv(entries) -> str:
    """One row per document: file, kind, confidence, summary, error, then every field seen."""
    entries = list(entries)
    fields = sorted({k for e in entries for k in e.get("values", {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "kind", "kind_confidence", "summary", "error", *fields])
    for e in entries:
        values = e.get("values", {})
        writer.writerow([e["file"], e.get("kind", ""), e.get("kind_confidence", ""), e.get("summary", ""),
                         e.get("error", ""), *("" if values.get(f) is None else values[f] for f in fields)])
    return buffer.getvalue()


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
