"""``slm docs eval GOLD.jsonl``: how well an extractor does on documents with known answers.

A gold file has one JSON object per document: ``file`` (relative to the gold file), ``kind``
(the schema: a built-in name or a schema file) and ``fields`` (the normalized answers, null
where the document gives none). Scores: field accuracy per field and per kind (exact for ids,
dates, codes and choices, |Δ| < 0.005 for amounts, case-insensitive for names and text), schema
validity of every result (after dropping what does not fit) and of the model's raw answer, and
seconds per page. Documents that fail to read or extract count as
all-wrong and are listed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from slmkit.docs.normalize import same_value
from slmkit.docs.schemas import load_schema
from slmkit.errors import InvalidRequestError, SlmError


@dataclasses.dataclass
class DocsEvalReport:
    documents: int
    field_accuracy: float  # over every gold field of every document
    accuracy_by_kind: dict[str, float]
    accuracy_by_field: dict[str, float]  # "kind.field" → accuracy
    schema_valid: float  # share of documents whose values validate against their schema
    answer_valid: float | None  # share whose raw model answer parses and fits the generation schema (None: no model)
    seconds_per_page: float  # extraction (and classification, when scored) time over pages read
    kind_accuracy: float | None  # None when no classifier was given
    failures: list[str]  # "file: why" for documents that could not be read or extracted
    results: list[dict] = dataclasses.field(default_factory=list)  # per document: file, kind, values, correct

    def summary(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "results"}


def read_gold(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InvalidRequestError(f"{path} does not exist. Give a JSONL file of {{\"file\", \"kind\", \"fields\"}} lines.")
    gold = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InvalidRequestError(f"{path.name}:{number}: not JSON ({exc}).") from exc
        if not isinstance(item, dict) or not isinstance(item.get("file"), str) or not isinstance(item.get("kind"), str) \
                or not isinstance(item.get("fields"), dict):
            raise InvalidRequestError(f"{path.name}:{number}: each line needs \"file\" (string), \"kind\" (string) "
                                      "and \"fields\" (object).")
        item["path"] = path.parent / item["file"]
        gold.append(item)
    if not gold:
        raise InvalidRequestError(f"{path.name} has no documents.")
    return gold


def answer_fits(answer: str, schema) -> bool:
    """The model's raw answer is JSON valid against the schema it was asked to fill."""
    from jsonschema import Draft202012Validator

    try:
        parsed = json.loads(answer)
    except ValueError:
        return False
    return not any(Draft202012Validator(schema.generation_schema()).iter_errors(parsed))


def evaluate_docs(gold_file: str | Path, extract: Callable[[list[str], object], dict],
                  classify: Callable[[list[str]], str] | None = None,
                  progress: Callable[[int, int], None] | None = None, limit: int | None = None) -> DocsEvalReport:
    """Score ``extract(pages, schema) -> {"values": {...}}`` (and ``classify(pages) -> kind``, if
    given) on every document of ``gold_file`` (the first ``limit`` ones if given)."""
    from jsonschema import Draft202012Validator

    from slmkit.docs.pdf import read_pages

    gold = read_gold(gold_file)[:limit]
    schemas = {}
    hits, totals = defaultdict(int), defaultdict(int)
    valid = pages_done = kinds_right = answers = answers_valid = 0
    seconds, failures, results = 0.0, [], []
    for index, item in enumerate(gold):
        kind = item["kind"]
        schema = schemas.get(kind) or schemas.setdefault(kind, load_schema(kind))
        values = {}
        try:
            pages = read_pages(item["path"])
            started = time.perf_counter()
            result = extract(pages, schema)
            values = result["values"]
            if "answer" in result:
                answers += 1
                answers_valid += answer_fits(result["answer"], schema)
            if classify is not None:
                kinds_right += classify(pages) == kind
            seconds += time.perf_counter() - started
            pages_done += len(pages)
            valid += not any(Draft202012Validator(schema.schema).iter_errors(values))
        except SlmError as exc:
            failures.append(f"{item['file']}: {exc.message}")
        correct = {}
        for field in schema.fields:
            if field.name not in item["fields"]:
                continue
            correct[field.name] = same_value(field.kind, values.get(field.name), item["fields"][field.name])
            for key in (kind, f"{kind}.{field.name}", "*"):
                totals[key] += 1
                hits[key] += correct[field.name]
        results.append({"file": item["file"], "kind": kind, "values": values, "correct": correct})
        if progress:
            progress(index + 1, len(gold))
    kinds = sorted({item["kind"] for item in gold})
    return DocsEvalReport(
        documents=len(gold), field_accuracy=hits["*"] / max(totals["*"], 1),
        accuracy_by_kind={k: hits[k] / totals[k] for k in kinds if totals[k]},
        accuracy_by_field={k: hits[k] / totals[k] for k in sorted(totals) if "." in k},
        schema_valid=valid / len(gold), answer_valid=answers_valid / answers if answers else None,
        seconds_per_page=seconds / max(pages_done, 1),
        kind_accuracy=kinds_right / len(gold) if classify is not None else None, failures=failures,
        results=results)
