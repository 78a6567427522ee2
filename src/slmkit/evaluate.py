"""``slm eval``: score a model on tasks and measure its perplexity, on any backend.

Tasks are JSONL lines ``{"prompt": str | "messages": [...], "expected": str | object}``.
Each prompt is answered greedily through the engine (so every backend is scored the same
way) and compared with ``expected``:

- **exact_match** — the answer equals ``expected`` (whitespace-normalized); for an object,
  the answer's JSON object has every expected field with the expected value;
- **contains** — ``expected`` (a string) appears in the answer;
- **json_field_accuracy** — for an object, the share of its fields the answer's JSON
  object gets right (0 when the answer holds no JSON object).

Perplexity comes from :func:`slmkit.perplexity.perplexity`, the one implementation. Scores
of a stored model are written into its card.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from slmkit.data import DataError, check_messages, parse_json_object
from slmkit.perplexity import PerplexityResult


@dataclasses.dataclass
class Task:
    source: str  # file:line
    expected: str | dict
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None


@dataclasses.dataclass
class TaskScores:
    examples: int
    exact_match: float
    contains: float | None  # over string-expected tasks; None when there are none
    json_field_accuracy: float | None  # over object-expected tasks; None when there are none
    results: list[dict]  # per task: source, answer, expected, scores


@dataclasses.dataclass
class EvalResult:
    model: str
    backend: str
    tasks: TaskScores | None = None
    perplexity: PerplexityResult | None = None
    card_updated: bool = False


def load_tasks(path: str | Path) -> list[Task]:
    """Read and validate a task file; errors name file, line and field."""
    from slmkit.data import read_utf8

    path = Path(path)
    if not path.is_file():
        raise DataError(f"No such task file: {path}")
    tasks = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        record = parse_json_object(line, where)
        expected = record.get("expected")
        if not (isinstance(expected, str) and expected.strip()) and not (isinstance(expected, dict) and expected):
            raise DataError(f"{where}: field 'expected' must be a non-empty string or JSON object.")
        if "messages" in record:
            tasks.append(Task(where, expected, messages=check_messages(record["messages"], where, need_assistant=False)))
        elif isinstance(record.get("prompt"), str) and record["prompt"].strip():
            tasks.append(Task(where, expected, prompt=record["prompt"]))
        else:
            raise DataError(f"{where}: field 'prompt' must be a non-empty string (or give 'messages').")
    if not tasks:
        raise DataError(f"{path} holds no tasks.")
    return tasks


def first_json_object(text: str) -> dict | None:
    """The first JSON object in ``text`` (models often wrap it in prose or code fences)."""
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char == "{":
            try:
                value, _ = decoder.raw_decode(text[start:])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def score_answer(answer: str, expected: str | dict) -> dict[str, float]:
    """The metrics that apply to one answer."""
    if isinstance(expected, dict):
        found = first_json_object(answer) or {}
        right = sum(1 for key, value in expected.items() if key in found and found[key] == value)
        return {"exact_match": float(right == len(expected)), "json_field_accuracy": right / len(expected)}
    normalized = " ".join(answer.split())
    target = " ".join(expected.split())
    return {"exact_match": float(normalized == target), "contains": float(target in normalized)}


def _mean(results: list[dict], metric: str) -> float | None:
    values = [r["scores"][metric] for r in results if metric in r["scores"]]
    return sum(values) / len(values) if values else None


def score_tasks(engine, tasks: list[Task], max_new_tokens: int = 64, raw: bool = False,
                progress: Callable[[int, int], None] | None = None) -> TaskScores:
    """Answer every task greedily with ``engine`` and score the answers."""
    from slmkit.engine import GenerationRequest
    from slmkit.generate import collect

    results = []
    for done, task in enumerate(tasks, start=1):
        if task.messages is not None:
            request = GenerationRequest(messages=task.messages, max_new_tokens=max_new_tokens)
        elif raw:
            request = GenerationRequest(prompt=task.prompt, max_new_tokens=max_new_tokens)
        else:
            request = GenerationRequest(messages=[{"role": "user", "content": task.prompt}], max_new_tokens=max_new_tokens)
        answer = collect(engine.stream(request)).text
        results.append({"source": task.source, "answer": answer, "expected": task.expected,
                        "scores": score_answer(answer, task.expected)})
        if progress:
            progress(done, len(tasks))
    return TaskScores(len(results), _mean(results, "exact_match") or 0.0, _mean(results, "contains"),
                      _mean(results, "json_field_accuracy"), results)


def evaluate(model: str, data: str | Path | None = None, text: str | Path | None = None, backend: str = "auto",
             max_new_tokens: int = 64, window: int = 512, raw: bool = False, write_to_card: bool = True,
             progress: Callable[[str, int, int], None] | None = None) -> EvalResult:
    """Score ``model`` on the task file ``data`` and/or its perplexity on the text file ``text``."""
    from slmkit.engine import load_engine
    from slmkit.perplexity import perplexity

    if data is None and text is None:
        raise DataError("Nothing to evaluate: give a task file (--data) and/or a text file (--text).")
    tasks = load_tasks(data) if data is not None else None
    if text is not None and not Path(text).is_file():
        raise DataError(f"No such text file: {text}")
    engine = load_engine(model, backend=backend, max_batch_size=1)  # one task at a time
    result = EvalResult(engine.model_name, backend)
    try:
        if tasks is not None:
            result.tasks = score_tasks(engine, tasks, max_new_tokens, raw,
                                       progress and (lambda done, total: progress("tasks", done, total)))
        if text is not None:
            from slmkit.data import read_utf8

            result.perplexity = perplexity(engine, read_utf8(Path(text)), window,
                                           progress=progress and (lambda done, total: progress("perplexity", done, total)))
    finally:
        engine.close()
    if write_to_card:
        result.card_updated = record_in_card(model, result, data, text)
    return result


def record_in_card(model: str, result: EvalResult, data, text) -> bool:
    """Write the scores into the card of ``model`` when it is an artifact in the store."""
    from slmkit.artifact import file_sha256, read_card, write_card
    from slmkit.models import models_dir
    from slmkit.references import resolve

    resolved = resolve(model)
    if resolved.format != "hf" or resolved.path.parent.resolve() != models_dir().resolve():
        return False
    card = read_card(resolved.path)
    if card is None:
        return False
    evals = card.metrics.setdefault("eval", {})
    if result.tasks is not None:
        scores = {k: v for k, v in dataclasses.asdict(result.tasks).items() if k != "results"}
        evals[Path(data).name] = {**scores, "data_sha256": file_sha256(Path(data)), "backend": result.backend}
    if result.perplexity is not None:
        evals[f"perplexity:{Path(text).name}"] = {**dataclasses.asdict(result.perplexity),
                                                  "text_sha256": file_sha256(Path(text)), "backend": result.backend}
    write_card(resolved.path, card)
    return True
