"""``model: "auto"`` on /v1/chat/completions: a router (``slm serve --router NAME``) picks the
specialist that answers, and the response names it (``route`` field, ``x-slm-route`` header).

The router reads the last user message. Its label decides who answers (see
:mod:`slmkit.router.routes`):

- ``general`` (also when the router is unsure) and model ids: that chat model, exactly as if
  the request had named it (its lazy load, LRU budget and queue bound apply);
- ``kb:NAME``: the knowledge-base route (:mod:`slmkit.server.knowledge`);
- ``docs:SCHEMA``: the document extractor (:func:`slmkit.docs.extract.extract_pages`) on the
  message text, answering the extracted values as JSON;
- ``recommend:NAME``: the recommender NAME (served with ``--model``), given the catalogue items
  the message names (:func:`named_items`), answering the recommended titles one per line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import threading

import anyio
from prometheus_client import Counter

from slmkit.server.errors import HTTPError

AUTO = "auto"
HEADER = "x-slm-route"


class AutoRouter:
    """The server's router, loaded on first use (in a worker thread) and kept."""

    def __init__(self, reference: str, metrics, threads: int | None = None, pool=None):
        self.reference, self.threads, self.pool = reference, threads, pool
        self._router = None
        self._lock = threading.Lock()
        self.decisions = Counter("slm_router_decisions", "Requests with model=auto by the specialist chosen",
                                 ["route", "fell_back"], registry=metrics.registry)

    def router(self):
        from slmkit.router.model import load_router

        with self._lock:
            if self._router is None:
                load = functools.partial(load_router, self.reference, threads=self.threads)
                # Held by the pool as resident: its embedding model counts against --max-memory.
                self._router = self.pool.add_resident(AUTO, load, router_bytes(self.reference)) if self.pool else load()
            return self._router

    async def decide(self, body):
        text = last_user_text(body)
        decision = await anyio.to_thread.run_sync(lambda: self.router().decide(text))
        self.decisions.labels(decision.route, str(decision.fell_back).lower()).inc()
        return decision


def router_bytes(reference: str) -> int:
    """Memory router ``reference`` will take: its embedding model's weights and its classifier."""
    from slmkit.references import resolve_hf
    from slmkit.router.model import CONFIG_FILE, router_path
    from slmkit.server.pool import _estimate_bytes

    path = router_path(reference)
    embedding_model = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("embedding_model", "minilm-l6")
    return _estimate_bytes(resolve_hf(embedding_model).path) + sum(p.stat().st_size for p in path.glob("*.safetensors"))


def last_user_text(body) -> str:
    for message in reversed(body.messages):
        if message.role == "user" and message.text().strip():
            return message.text()
    raise HTTPError(400, 'model "auto" needs a non-empty user message to route.', param="messages")


def route_info(decision) -> dict:
    return {"specialist": decision.route, "confidence": round(decision.confidence, 4),
            "fell_back": decision.fell_back, "predicted": decision.predicted,
            "decision_ms": round(decision.seconds * 1000, 2)}


async def extract(body, text: str, schema_name: str, pool, settings):
    """(lease, chunks, extra) for a ``docs:SCHEMA`` route: the extracted values as JSON text."""
    from slmkit.docs.extract import extract_pages
    from slmkit.docs.schemas import BUILTIN, load_schema
    from slmkit.kb.answer import fixed_stream

    if schema_name not in BUILTIN:
        raise HTTPError(500, f"The router names docs:{schema_name}, which is not a built-in schema.",
                        "server_error", code="bad_route")
    max_tokens = body.max_completion_tokens or body.max_tokens or 256  # the JSON answer's token budget
    if max_tokens > settings.max_tokens_limit:
        raise HTTPError(400, f"max_tokens is {max_tokens}, above this server's limit of {settings.max_tokens_limit}.",
                        param="max_tokens", code="max_tokens_too_large")
    lease = await pool.checkout(pool.chat_ids[0], "chat")
    try:
        result = await anyio.to_thread.run_sync(functools.partial(extract_pages, [text], load_schema(schema_name),
                                                                  lease.engine, max_new_tokens=max_tokens))
    except BaseException:
        lease.release()
        raise
    values = result["values"]
    return lease, fixed_stream(json.dumps(values, ensure_ascii=False)), {"values": values}


async def recommend_named(body, text: str, name: str, pool, recommenders, k: int = 5):
    """(lease, chunks, extra) for a ``recommend:NAME`` route: the titles recommended after the
    items the message names (the most popular ones when it names none)."""
    from slmkit.kb.answer import fixed_stream
    from slmkit.recommend.predict import recommend
    from slmkit.server.pool import Lease

    model_id = recommenders.resolve(name)
    pool.acquire(model_id)  # the slot first: a recommender in use is never evicted
    lease = Lease(pool, model_id, None)
    try:
        recommender = await anyio.to_thread.run_sync(recommenders.get, model_id)
        history = named_items(text, recommender.catalogue)
        result = await anyio.to_thread.run_sync(lambda: recommend(recommender, history=history, k=k))
    except BaseException:
        lease.release()
        raise
    lines = [entry["title"] or entry["item"] for entry in result.items]
    answer = "\n".join(lines) if lines else "I have nothing to recommend."
    return lease, fixed_stream(answer), {"recommendations": result.items, "named_items": history}


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.casefold()))


def title_forms(title: str) -> list[str]:
    """A catalogue title as people write it: "Usual Suspects, The" is also "The Usual Suspects"."""
    forms = [title]
    match = re.match(r"^(.*), (The|A|An)$", title.strip())
    if match:
        forms.append(f"{match.group(2)} {match.group(1)}")
    return [f for f in (_norm(f) for f in forms) if len(f) >= 3]


def named_items(text: str, catalogue, cutoff: float = 0.85) -> list[str]:
    """The catalogue items ``text`` names, in the order it names them.

    A title (or item id) found whole in the text counts, longest titles first so "Star Wars"
    does not also match "Star"; if none is found, every run of as many words as a title has is
    compared with it by difflib (ratio >= ``cutoff``), so "the Copper Pann" still finds "Copper Pan"."""
    normalized = f" {_norm(text)} "
    forms = {}
    for item in catalogue.items:
        for form in title_forms(catalogue.titles.get(item) or "") + [_norm(item)]:
            if form:
                forms.setdefault(form, item)
    found: list[tuple[int, str]] = []
    taken = [False] * len(normalized)
    for form in sorted(forms, key=len, reverse=True):
        for match in re.finditer(rf"(?<= ){re.escape(form)}(?= )", normalized):
            span = range(match.start(), match.end())
            if not any(taken[i] for i in span):
                for i in span:
                    taken[i] = True
                found.append((match.start(), forms[form]))
    if not found:
        found = _close_matches(normalized.split(), forms, cutoff)
    return list(dict.fromkeys(item for _, item in sorted(found)))


def _close_matches(words: list[str], forms: dict[str, str], cutoff: float) -> list[tuple[int, str]]:
    found = []
    matcher = difflib.SequenceMatcher(autojunk=False)
    for form, item in forms.items():
        size = form.count(" ") + 1
        matcher.set_seq2(form)
        best = (cutoff, None)
        for start in range(max(1, len(words) - size + 1)):
            matcher.set_seq1(" ".join(words[start:start + size]))
            if matcher.real_quick_ratio() >= best[0] and matcher.quick_ratio() >= best[0]:
                ratio = matcher.ratio()
                if ratio >= best[0]:
                    best = (ratio, start)
        if best[1] is not None:
            found.append((best[1], item))
    return found


@dataclasses.dataclass
class Routed:
    """What the chat route needs to answer a routed request."""

    decision: object
    kind: str  # "chat" (body.model now names the model), "knowledge_base", "extractor", "recommender"
    target: str


def plan(decision, pool) -> Routed:
    """Where ``decision`` sends the request on this server."""
    from slmkit.router.routes import specialist

    kind, target = specialist(decision.route)
    if kind == "general":
        if not pool.chat_ids:
            raise HTTPError(400, "This server has no chat model to answer with; start it with --model.", param="model")
        return Routed(decision, "chat", pool.chat_ids[0])
    if kind == "chat":
        return Routed(decision, "chat", pool.resolve_id(target, "chat"))
    return Routed(decision, kind, target)
