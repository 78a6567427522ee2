"""`model: "kb:NAME"` in /v1/chat/completions: answers grounded in a knowledge base
(`slm kb ingest`), with the cited sources in the response.

It answers as `slm kb ask` does: with the grounded-QA specialist in ``specialist`` mode when the
server serves it (``slm serve --model smollm2-135m-kb``), else with the first chat model in
``select`` mode (the cited documentation sentences it scores best)."""

from __future__ import annotations

import functools

import anyio

from slmkit.errors import ModelNotFoundError
from slmkit.server.errors import HTTPError

PREFIX = "kb:"


def knowledge_base_ids() -> list[str]:
    from slmkit.kb.index import kb_names

    return [PREFIX + name for name in kb_names()]


def check(model_id: str) -> str:
    """The knowledge-base name of ``model_id``; 404 listing the known ones if there is none."""
    name = model_id[len(PREFIX):]
    if model_id not in knowledge_base_ids():
        known = ", ".join(knowledge_base_ids()) or "none (create one with `slm kb ingest NAME PATH`)"
        raise ModelNotFoundError(f"No knowledge base {name!r} on this server. Available: {known}.")
    return name


async def answer(body, pool, settings):
    """(lease of the answering model, :class:`~slmkit.kb.answer.Answer`) for a chat request
    against a knowledge base; the caller releases the lease when the answer is sent."""
    from slmkit.kb.answer import answer_stream

    problem = body.unsupported()
    if problem:
        raise HTTPError(400, problem[1], param=problem[0], code="unsupported_parameter")
    name = check(body.model)
    if not pool.chat_ids:
        raise HTTPError(400, "This server has no chat model to answer with; start it with --model.", param="model")
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
    if max_tokens > settings.max_tokens_limit:
        raise HTTPError(400, f"max_tokens is {max_tokens}, above this server's limit of {settings.max_tokens_limit}.",
                        param="max_tokens", code="max_tokens_too_large")
    from slmkit.kb.specialist import SPECIALIST_NAME, default_mode

    served = [m for m in pool.chat_ids if m == SPECIALIST_NAME or pool.references.get(m) == SPECIALIST_NAME]
    model_id = served[0] if served else pool.chat_ids[0]
    mode = default_mode(SPECIALIST_NAME if served else model_id)
    lease = await pool.checkout(model_id, "chat")
    try:
        embedder = None
        if pool.embedding_ids:
            embedder = _LockedEmbedder(await pool.get(pool.embedding_ids[0], "embedding"),
                                       pool.embedding_lock(pool.embedding_ids[0]))
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        result = await anyio.to_thread.run_sync(functools.partial(
            answer_stream, name, messages, lease.engine, max_new_tokens=max_tokens, embedder=embedder,
            temperature=0.0 if body.temperature is None else float(body.temperature),
            top_p=1.0 if body.top_p is None else float(body.top_p), top_k=body.top_k or 0,
            repetition_penalty=1.0 if body.repetition_penalty is None else float(body.repetition_penalty),
            seed=body.seed, stop=body.stop or None, mode=mode))
    except BaseException:
        lease.release()
        raise
    return lease, result


class _LockedEmbedder:
    """The server's embedding model, used one request at a time (its tokenizer is not thread-safe)."""

    def __init__(self, model, lock):
        self.model, self.lock = model, lock

    def embed(self, texts):
        with self.lock:
            return self.model.embed(texts)
