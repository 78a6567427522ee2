"""Fields out of a document: the model copies each field's text under a JSON-schema constraint,
code checks that the text is in the document and normalizes it.

1. The prompt gives the document's text (with its layout) and the fields with their descriptions.
2. The engine generates under :meth:`DocSchema.generation_schema`: every field, in order, as one
   of the document's spans that fit its kind (:mod:`slmkit.docs.candidates`) or null (a choice
   field as one of its choices), so the answer always parses and every string is document text.
3. Each copied string is looked up in the document (case and spacing aside): where it is found
   gives the source (page and character span in that page's text); text that is not in the
   document (possible only for a field without candidates) is dropped to null.
4. The text is normalized by its field's kind (:mod:`slmkit.docs.normalize`): ISO dates,
   numbers, ISO 4217 codes.
5. Confidence is the model's own: the geometric-mean probability of the answer's tokens for that
   field, scored in one teacher-forced pass (unconstrained logits, so a value the grammar forced
   scores low).
6. The values are validated against the user's schema; a value that does not fit is dropped to
   null, so the result's ``values`` always validate.
"""

from __future__ import annotations

import json
import math
import re
import time

from slmkit.docs.normalize import normalize, normalize_currency
from slmkit.docs.schemas import DocSchema
from slmkit.errors import InvalidRequestError

SYSTEM = ("You copy fields out of business documents. Reply with one JSON object. Copy each value exactly as it is "
          "printed in the document. Use null when the document does not give the value.")
MAX_DOCUMENT_CHARS = 6000  # about 2,000 tokens: the start of a longer document is read
# Prompt-lookup drafts per step on greedy requests (engines that honour them; the output is the
# same): values are copied from the prompt, so drafts from it are often right. 2 tokens measured
# best on the tuning layouts (bench/prompt_lookup.py --task extract --split dev).
PROMPT_LOOKUP_TOKENS = 2
MAX_CANDIDATE_CHARS = 80_000  # all fields' spans together, under the engine's 100,000-character schema limit


def visible_pages(pages: list[str]) -> list[str]:
    """The pages as far as the prompt shows them (:data:`MAX_DOCUMENT_CHARS` in all)."""
    out, left = [], MAX_DOCUMENT_CHARS
    for page in pages:
        if left <= 0:
            break
        out.append(page[:left])
        left -= len(page)
    return out


def document_candidates(pages: list[str], schema: DocSchema) -> dict[str, list[str] | None]:
    """Field name → the spans of the visible pages it may take (None: free text, checked after)."""
    from slmkit.docs.candidates import field_candidates

    by_kind = field_candidates(visible_pages(pages), [f.kind for f in schema.fields if not f.choices])
    spans = {f.name: by_kind.get(f.kind) for f in schema.fields if not f.choices}
    # The engine refuses schemas over MAX_SCHEMA_CHARS: the longest lists go back to free text first.
    while sum(len(json.dumps(v, ensure_ascii=False)) for v in spans.values() if v) > MAX_CANDIDATE_CHARS:
        longest = max((n for n, v in spans.items() if v), key=lambda n: len(json.dumps(spans[n], ensure_ascii=False)))
        spans[longest] = None
    return spans


def document_text(pages: list[str]) -> str:
    if len(pages) == 1:
        return pages[0][:MAX_DOCUMENT_CHARS]
    return "\n\n".join(f"--- page {n} ---\n{text}" for n, text in enumerate(pages, 1))[:MAX_DOCUMENT_CHARS]


def build_messages(pages: list[str], schema: DocSchema) -> list[dict]:
    fields = "\n".join(f"- {f.name}: {f.description}" + (f" (one of {', '.join(map(str, f.choices))})" if f.choices
                                                          else "") for f in schema.fields)
    user = f'Document:\n"""\n{document_text(pages)}\n"""\n\nFields:\n{fields}'
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def answer_json(printed: dict) -> str:
    """The answer as the model writes it (the constrained layout is json.dumps' default)."""
    return json.dumps(printed, ensure_ascii=False)


def _squash(text: str) -> tuple[str, list[int]]:
    """``text`` casefolded with whitespace runs made one space, and each kept char's index in ``text``."""
    out, index, space = [], [], False
    for i, char in enumerate(text):
        if char.isspace():
            if not space and out:
                out.append(" ")
                index.append(i)
            space = True
            continue
        out.append(char.casefold())
        index.append(i)
        space = False
    return "".join(out), index


def locate(value: str, pages: list[str]) -> dict | None:
    """Where ``value`` is printed: ``{"page", "start", "end", "text"}`` (1-based page, character
    span in that page's text), ignoring case and spacing; None when it is not in the document."""
    needle, _ = _squash(value.strip())
    if not needle:
        return None
    for number, page in enumerate(pages, 1):
        hay, index = _squash(page)
        at = hay.find(needle)
        if at >= 0:
            start, end = index[at], index[at + len(needle) - 1] + 1
            return {"page": number, "start": start, "end": end, "text": page[start:end]}
    return None


def value_spans(text: str, names: list[str]) -> dict[str, tuple[int, int]]:
    """Character span of each field's value in the answer JSON (fields come in schema order)."""
    decoder, spans, cursor = json.JSONDecoder(), {}, 0
    for name in names:
        key = json.dumps(name, ensure_ascii=False) + ": "
        at = text.find(key, cursor)
        if at < 0:
            continue
        start = at + len(key)
        _, end = decoder.raw_decode(text, start)
        spans[name], cursor = (start, end), end
    return spans


def token_confidences(engine, prompt_ids: list[int], answer_ids: list[int], text: str,
                      spans: dict[str, tuple[int, int]], logprobs: list[float | None] | None = None) -> dict[str, float]:
    """Geometric-mean probability (under the model's own, unconstrained distribution) of the
    answer tokens that overlap each field's span. ``logprobs``: those the generation reported
    (None for tokens the grammar forced, which were no choice); without them the answer is
    scored again after the prompt."""
    if not answer_ids:
        return {}
    if logprobs is None or len(logprobs) != len(answer_ids):
        logprobs = engine.continuation_logprobs(prompt_ids, [answer_ids])[0] if hasattr(
            engine, "continuation_logprobs") else engine.token_logprobs(prompt_ids + answer_ids)[len(prompt_ids) - 1:]
    tokenizer, ends, decoded = engine.tokenizer, [], ""
    for i in range(len(answer_ids)):
        decoded = tokenizer.decode(answer_ids[: i + 1], skip_special_tokens=True)
        ends.append(len(decoded))
    starts = [0, *ends[:-1]]
    out = {}
    for name, (start, end) in spans.items():
        picked = [lp for lp, s, e in zip(logprobs, starts, ends, strict=False) if s < end and e > start and lp is not None]
        out[name] = round(math.exp(sum(picked) / len(picked)), 4) if picked else 0.0
    return out


def build_request(pages: list[str], schema: DocSchema, max_new_tokens: int = 256, constrained: bool = True,
                  copy: bool = True, prompt_lookup_tokens: int = PROMPT_LOOKUP_TOKENS):
    """The extraction request: greedy, under the generation schema (``constrained``), each string
    field one of the document's spans (``copy``), with prompt-lookup drafts."""
    from slmkit.engine import GenerationRequest, SamplingParams

    json_schema = None
    if constrained:
        json_schema = schema.generation_schema(document_candidates(pages, schema) if copy else None)
    return GenerationRequest(messages=build_messages(pages, schema), max_new_tokens=max_new_tokens,
                             json_schema=json_schema, prompt_lookup_tokens=prompt_lookup_tokens,
                             sampling=SamplingParams(logprobs=True))


def generate_answer(pages: list[str], schema: DocSchema, engine, max_new_tokens: int = 256,
                    constrained: bool = True, copy: bool = True) -> tuple[str, dict, list[int], list[int], list | None]:
    """The model's answer: (text, parsed dict or {} if it is not JSON, prompt ids, answer ids,
    the answer tokens' log-probabilities where the backend reported them)."""
    from slmkit.engine.torch_backend import render_prompt
    from slmkit.generate import collect

    request = build_request(pages, schema, max_new_tokens, constrained, copy)
    result = collect(engine.stream(request))
    prompt_ids = render_prompt(engine.tokenizer, request)
    try:
        parsed = json.loads(result.text)
    except ValueError:
        parsed = {}
    return result.text, parsed if isinstance(parsed, dict) else {}, prompt_ids, result.token_ids, result.logprobs


def extract_pages(pages: list[str], schema: DocSchema, engine, *, constrained: bool = True, copy: bool = True,
                  with_confidence: bool = True, max_new_tokens: int = 256) -> dict:
    """Extract ``schema``'s fields from a document's ``pages``. Returns ``{"values": {field: value},
    "fields": {field: {"value", "confidence", "printed", "source", "note"}}}``; ``values``
    validate against ``schema.schema``. ``copy=False`` lets string fields be any text (checked
    against the document after decoding) instead of one of the document's spans."""
    text, answer, prompt_ids, answer_ids, logprobs = generate_answer(pages, schema, engine, max_new_tokens,
                                                                     constrained, copy)
    spans = value_spans(text, [f.name for f in schema.fields]) if answer else {}
    confidences = token_confidences(engine, prompt_ids, answer_ids, text, spans, logprobs) \
        if with_confidence and spans else {}
    return {**interpret(answer, pages, schema, confidences), "answer": text}


def interpret(answer: dict, pages: list[str], schema: DocSchema, confidences: dict | None = None) -> dict:
    """Steps 3, 4 and 6 on the model's ``answer`` (field → printed text or None)."""
    fields = {}
    for field in schema.fields:
        printed = answer.get(field.name)
        printed = printed if isinstance(printed, str) else None
        entry = {"value": None, "confidence": (confidences or {}).get(field.name, 0.0), "printed": printed,
                 "source": None, "note": None}
        if printed is not None:
            entry["source"] = locate(printed, pages)
            if entry["source"] is None and field.kind != "choice":
                entry["note"] = "the model's text is not in the document; dropped"
            else:
                entry["value"] = normalize(field.kind if field.kind != "choice" else "text", printed)
                if entry["value"] is None:
                    entry["note"] = f"could not read {printed!r} as a {field.kind}"
        fields[field.name] = entry
    _currency_from_amounts(schema, fields)
    values = {name: entry["value"] for name, entry in fields.items()}
    _fit_schema(schema, values, fields)
    return {"values": values, "fields": fields}


def _currency_from_amounts(schema: DocSchema, fields: dict) -> None:
    """A currency field left empty takes the currency printed with an amount field."""
    for field in schema.fields:
        if field.kind != "currency" or fields[field.name]["value"] is not None:
            continue
        for other in schema.fields:
            printed = fields[other.name]["printed"]
            if other.kind == "amount" and printed and fields[other.name]["source"]:
                code = normalize_currency(printed)
                if code:
                    fields[field.name].update(value=code, source=fields[other.name]["source"],
                                              note=f"from the currency printed with {other.name}")
                    break


def _fit_schema(schema: DocSchema, values: dict, fields: dict) -> None:
    """Drop values the user's schema rejects to null; refuse a schema that rejects null too."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema.schema)
    for error in validator.iter_errors(values):
        name = error.path[0] if error.path else None
        if name in values and values[name] is not None:
            fields[name]["note"] = f"{values[name]!r} does not fit the schema ({error.message}); dropped"
            values[name] = fields[name]["value"] = None
    problems = list(validator.iter_errors(values))
    if problems:
        raise InvalidRequestError(f"Schema {schema.name} rejects null for {'/'.join(map(str, problems[0].path)) or 'the result'}"
                                  f" ({problems[0].message}); a value the document does not give is null. "
                                  "Allow null in that field's type, e.g. [\"string\", \"null\"].")


def extract_file(path, schema: DocSchema, engine, **options) -> dict:
    """:func:`extract_pages` on a file: adds ``file``, ``kind`` (the schema's name), ``pages`` and ``seconds``."""
    from pathlib import Path

    from slmkit.docs.pdf import read_pages

    started = time.perf_counter()
    pages = read_pages(path)
    result = extract_pages(pages, schema, engine, **options)
    return {"file": Path(path).name, "kind": schema.name, **result, "pages": len(pages),
            "seconds": round(time.perf_counter() - started, 3)}


# The labels a developer would write down for the built-in fields, without looking at any layout.
BASELINE_LABELS = {
    "invoice_number": r"invoice\s*(?:no\.?|number|#)", "invoice_date": r"(?:invoice\s+)?date", "due_date": r"due\s*date|due",
    "vendor_name": r"from|vendor|seller", "customer_name": r"bill\s*to|customer|sold\s*to", "total_amount": r"total|amount\s*due",
    "currency": r"currency", "provider_name": r"provider", "client_name": r"client|customer",
    "effective_date": r"effective\s*date", "end_date": r"end\s*date|expiry\s*date", "contract_value": r"value|fee",
    "governing_law": r"governing\s*law|law", "ticket_id": r"ticket\s*(?:id|#|no\.?)?|case\s*id",
    "opened_date": r"opened|created|date", "priority": r"priority", "product": r"product", "subject": r"subject",
}


def regex_baseline(pages: list[str], schema: DocSchema) -> dict:
    """The regex-only peer of the benchmark, no model: for each field, the text after the first
    ``Label:`` (or ``Label ....``) of :data:`BASELINE_LABELS` (or the field's name), up to a column
    gap or the line's end; then the same checks and normalizing as the model's answer."""
    text = "\n".join(pages)
    answer = {}
    for field in schema.fields:
        label = BASELINE_LABELS.get(field.name, r"\s*".join(map(re.escape, field.name.split("_"))))
        match = re.search(rf"(?im)(?:^|\s)(?:{label})\s*[:#.\-]*\s+(\S.*?)(?:\s{{3,}}|$)", text)
        answer[field.name] = match.group(1).strip() if match else None
    return interpret(answer, pages, schema)
