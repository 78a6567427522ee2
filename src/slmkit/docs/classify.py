"""What kind of document this is (``invoice``, ``contract``, ``ticket`` or the caller's own list):
the model picks one kind under an enum constraint, and its confidence is the probability it gives
that answer in one teacher-forced pass (geometric mean over its tokens, as for fields)."""

from __future__ import annotations

import json

from slmkit.docs.extract import document_text, token_confidences, value_spans

KINDS = ("invoice", "contract", "ticket")
SYSTEM = "You sort business documents by kind. Reply with one JSON object."


def build_messages(pages: list[str], kinds=KINDS) -> list[dict]:
    user = f'Document:\n"""\n{document_text(pages)}\n"""\n\nKinds: {", ".join(kinds)}'
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def answer_json(kind: str) -> str:
    return json.dumps({"kind": kind})


def classify_pages(pages: list[str], engine, kinds=KINDS) -> dict:
    """``{"kind": one of kinds, "confidence": probability of that answer}``."""
    from slmkit.engine import GenerationRequest
    from slmkit.engine.torch_backend import render_prompt
    from slmkit.generate import collect

    schema = {"type": "object", "properties": {"kind": {"enum": list(kinds)}}, "required": ["kind"],
              "additionalProperties": False}
    request = GenerationRequest(messages=build_messages(pages, kinds), max_new_tokens=24, json_schema=schema)
    result = collect(engine.stream(request))
    kind = json.loads(result.text)["kind"]
    prompt_ids = render_prompt(engine.tokenizer, request)
    spans = value_spans(result.text, ["kind"])
    confidence = token_confidences(engine, prompt_ids, result.token_ids, result.text, spans)["kind"]
    return {"kind": kind, "confidence": confidence}
