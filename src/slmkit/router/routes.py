"""Routes files and route labels.

A routes file is JSONL, one example per line: ``{"prompt": "...", "route": "LABEL"}``. A label
names the specialist that should answer (see :func:`specialist`):

- ``general``: the server's general chat model (also the answer when the router is unsure);
- ``kb:NAME``: the knowledge base NAME (``slm kb ingest``), answered through its model;
- ``docs:SCHEMA``: the document extractor with a built-in schema (``invoice``, ``contract``,
  ``ticket``) on the message text, answering JSON;
- ``recommend:NAME``: the recommender NAME, given the items named in the prompt;
- any other name: a chat model (or LoRA adapter) the server serves under that id.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from slmkit.errors import InvalidRequestError

GENERAL = "general"
KINDS = {"kb:": "knowledge_base", "docs:": "extractor", "recommend:": "recommender"}
MAX_LABEL_CHARS = 128
MAX_PROMPT_CHARS = 100_000


@dataclasses.dataclass(frozen=True)
class RouteExample:
    prompt: str
    route: str


def specialist(label: str) -> tuple[str, str]:
    """(kind, target) of a route label: ``("general", "")``, ``("knowledge_base", NAME)``,
    ``("extractor", SCHEMA)``, ``("recommender", NAME)`` or ``("chat", MODEL_ID)``."""
    if label == GENERAL:
        return "general", ""
    for prefix, kind in KINDS.items():
        if label.startswith(prefix):
            return kind, label[len(prefix):]
    return "chat", label


def read_routes(paths: Sequence[str | Path]) -> list[RouteExample]:
    """Every example of the routes files, in order; errors name file:line and the fix."""
    examples = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InvalidRequestError(f"Routes file {path} does not exist. Give a JSONL file of "
                                      '{"prompt": ..., "route": ...} lines.')
        with path.open(encoding="utf-8", errors="strict") as handle:
            try:
                lines = list(handle)
            except UnicodeDecodeError as exc:
                raise InvalidRequestError(f"{path} is not UTF-8 text ({exc.reason}). Save it as UTF-8.") from exc
        for number, line in enumerate(lines, 1):
            if line.strip():
                examples.append(_example(json_line(line, f"{path}:{number}"), f"{path}:{number}"))
    if not examples:
        raise InvalidRequestError(f"No routes in {', '.join(str(p) for p in paths)}: each line should be "
                                  '{"prompt": "...", "route": "..."}.')
    return examples


def json_line(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"{where}: not valid JSON ({exc.msg}). Each line must be one JSON object.") from exc
    if not isinstance(row, dict):
        raise InvalidRequestError(f'{where}: expected a JSON object like {{"prompt": "...", "route": "..."}}.')
    return row


def _example(row: dict, where: str) -> RouteExample:
    prompt, route = row.get("prompt"), row.get("route")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequestError(f"{where}: 'prompt' must be a non-empty string.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(f"{where}: 'prompt' is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}.")
    if not isinstance(route, str) or not route.strip() or len(route) > MAX_LABEL_CHARS:
        raise InvalidRequestError(f"{where}: 'route' must be a non-empty string of at most {MAX_LABEL_CHARS} "
                                  "characters naming the specialist (general, kb:NAME, docs:SCHEMA, "
                                  "recommend:NAME or a model id).")
    return RouteExample(prompt, route.strip())
