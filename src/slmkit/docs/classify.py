"""What kind of document this is (``invoice``, ``contract``, ``ticket`` or the caller's own list).

Two ways, chosen by what the caller has:

- with a sentence embedder (``minilm-l6``) and built-in kinds: the kind whose **centroid** is
  nearest, the centroids being the mean embedding of synthetic documents of the tune layouts
  (:mod:`slmkit.docs.synthetic`, the layouts the extractor is trained on); confidence is the
  softmax of the cosine similarities at temperature :data:`TEMPERATURE`. No generation, ~20 ms.
- otherwise (the caller's own kinds, or no embedder): the model picks one kind under an enum
  constraint, and its confidence is the probability it gives that answer in one teacher-forced
  pass (geometric mean over its tokens, as for fields).
"""

from __future__ import annotations

import functools
import json

from slmkit.docs.extract import document_text, token_confidences, value_spans

KINDS = ("invoice", "contract", "ticket")
SYSTEM = "You sort business documents by kind. Reply with one JSON object."
REFERENCE_DOCUMENTS = 30  # synthetic documents per centroid
REFERENCE_SEED = 1  # examples/docs/build_data.py's train seed: the same documents the extractor trains on
TEMPERATURE = 0.05  # cosine similarities are close together; this spreads them into a probability


def build_messages(pages: list[str], kinds=KINDS) -> list[dict]:
    user = f'Document:\n"""\n{document_text(pages)}\n"""\n\nKinds: {", ".join(kinds)}'
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def answer_json(kind: str) -> str:
    return json.dumps({"kind": kind})


@functools.lru_cache(maxsize=4)
def centroids(embedder) -> dict:
    """Kind → unit mean embedding of :data:`REFERENCE_DOCUMENTS` synthetic documents of that kind
    in the tune layouts (text as drawn on the page, line by line)."""
    import numpy as np

    from slmkit.docs.synthetic import TUNE_LAYOUTS, make_documents

    documents = make_documents(REFERENCE_DOCUMENTS * len(TUNE_LAYOUTS), TUNE_LAYOUTS, REFERENCE_SEED)
    vectors = embedder.embed(["\n".join(line[2] for line in d.lines if line[2] != "RECT") for d in documents])
    out = {}
    for kind in TUNE_LAYOUTS:
        mean = vectors[[i for i, d in enumerate(documents) if d.kind == kind]].mean(axis=0)
        out[kind] = mean / np.linalg.norm(mean)
    return out


def classify_by_embedding(pages: list[str], embedder, kinds=KINDS) -> dict:
    """``{"kind", "confidence"}`` by the nearest centroid (built-in kinds only)."""
    import numpy as np

    known = centroids(embedder)
    vector = embedder.embed([document_text(pages)])[0]
    similarities = np.array([float(known[kind] @ vector) for kind in kinds])
    weights = np.exp((similarities - similarities.max()) / TEMPERATURE)
    best = int(np.argmax(similarities))
    return {"kind": kinds[best], "confidence": round(float(weights[best] / weights.sum()), 4)}


def classify_pages(pages: list[str], engine, kinds=KINDS, embedder=None) -> dict:
    """``{"kind": one of kinds, "confidence": its probability}``: by embedding centroids when an
    ``embedder`` is given and every kind is built in, else by the model (``engine``)."""
    if embedder is not None and set(kinds) <= set(KINDS):
        return classify_by_embedding(pages, embedder, tuple(kinds))
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
