"""Turn OpenAI request bodies into engine requests, and engine chunks into OpenAI responses.

The HTTP handlers stay thin: this module holds the translation, the engine holds the work.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio

from slmkit.engine import Chunk, GenerationRequest, GenerationStats, SamplingParams
from slmkit.errors import ContextLengthExceededError, SlmError
from slmkit.server.errors import HTTPError, error_body, slm_error_body

_END = object()


def build_engine_request(body, engine, settings, *, chat: bool) -> GenerationRequest:
    """Validate limits and produce the engine request (raises 400s before any work)."""
    problem = body.unsupported()
    if problem:
        raise HTTPError(400, problem[1], param=problem[0], code="unsupported_parameter")
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        raise HTTPError(400, f"max_tokens is {max_tokens}, above this server's limit of {settings.max_tokens_limit}.",
                        param="max_tokens", code="max_tokens_too_large")
    sampling = SamplingParams(
        temperature=1.0 if body.temperature is None else float(body.temperature),
        top_p=1.0 if body.top_p is None else float(body.top_p),
        top_k=body.top_k or 0,
        repetition_penalty=1.0 if body.repetition_penalty is None else float(body.repetition_penalty),
        seed=body.seed,
    )
    if chat:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        request = GenerationRequest(messages=messages, stop=body.stop or [], sampling=sampling,
                                    json_schema=requested_json_schema(body))
    else:
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        if not prompt:
            raise HTTPError(400, "prompt must not be empty.", param="prompt")
        request = GenerationRequest(prompt=prompt, stop=body.stop or [], sampling=sampling)
    _refuse_far_too_long(request, engine, chat)
    if max_tokens is None:
        # No limit asked for: cap at the server default and at what the context has room for.
        prompt_tokens = engine.count_prompt_tokens(request)
        room = engine.context_length - prompt_tokens
        if room < 1:
            raise ContextLengthExceededError(
                f"The prompt takes {prompt_tokens} tokens, {prompt_tokens - engine.context_length + 1} more than fit "
                f"in the model's context of {engine.context_length} tokens with room for an answer. Shorten it.",
                param="messages" if chat else "prompt")
        max_tokens = min(settings.default_max_tokens, room)
    request.max_new_tokens = max_tokens
    return request


def start_generation(body, engine, settings, *, chat: bool) -> Iterator[Chunk]:
    """Validate ``body`` and start the engine stream (blocking: run it in a worker thread).

    Rendering the chat template and tokenizing happen here, so every 400 (bad values, a
    template that rejects the messages, a prompt over the context) is raised before any
    byte of the response is sent."""
    request = build_engine_request(body, engine, settings, chat=chat)
    return engine.stream(request)


PROMPT_CHARS_SAFETY = 4  # a prompt this many times longer than could possibly fit is refused untokenized


def _refuse_far_too_long(request: GenerationRequest, engine, chat: bool) -> None:
    """Refuse a prompt that cannot fit the context without tokenizing it.

    No token covers more characters than the longest vocabulary entry, so a prompt longer
    than ``context x longest x PROMPT_CHARS_SAFETY`` characters is over the context whatever
    the tokenizer does. Tokenizing 8 MB takes ~17 s of CPU (measured on the tiny test
    tokenizer), which one request must not be able to make the server spend."""
    longest = _longest_token_chars(engine)
    if not longest:
        return
    chars = sum(len(m["content"]) for m in request.messages) if chat else len(request.prompt)
    if chars > engine.context_length * longest * PROMPT_CHARS_SAFETY:
        raise ContextLengthExceededError(
            f"The prompt is {chars} characters, far more than fit in the model's context of {engine.context_length} "
            "tokens. Shorten it.", param="messages" if chat else "prompt")


def _longest_token_chars(engine) -> int:
    cached = getattr(engine, "_slm_longest_token_chars", None)
    if cached is None:
        tokenizer = getattr(engine, "tokenizer", None)
        try:
            cached = max((len(token) for token in tokenizer.get_vocab()), default=0) if tokenizer else 0
        except Exception:  # noqa: BLE001 - a tokenizer without a vocabulary listing: no shortcut
            cached = 0
        engine._slm_longest_token_chars = cached
    return cached


async def collect_unless_disconnected(http_request, chunks: AsyncIterator[Chunk]):
    """:func:`complete`, cancelled (and the generation with it) if the client hangs up first."""
    outcome: dict = {}
    async with anyio.create_task_group() as group:
        async def watch() -> None:
            while (await http_request.receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            outcome["result"] = await complete(chunks)
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group's exception group
            outcome["error"] = exc
        finally:
            group.cancel_scope.cancel()
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise HTTPError(499, "The client closed the connection.", code="client_closed_request")
    return outcome["result"]


def requested_json_schema(body) -> dict | None:
    """The schema of the body's ``response_format`` (compiled by the engine: a bad one is a 400 there)."""
    try:
        return body.requested_json_schema()
    except ValueError as exc:
        raise HTTPError(400, str(exc), param="response_format", code="invalid_value") from exc


async def iterate(chunks: Iterator[Chunk], timeout_s: float) -> AsyncIterator[Chunk]:
    """Pull chunks from an engine stream without blocking the event loop.

    Streams that can be awaited (:class:`slmkit.engine.streams.ChunkStream`) are read on the
    loop; other iterators are read through a worker thread, one hop per chunk. If the consumer
    goes away (client disconnect, cancellation), the engine stream is closed, which frees its
    batch slot.
    """
    deadline = time.monotonic() + timeout_s
    awaitable = hasattr(chunks, "__anext__")
    try:
        while True:
            if awaitable:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
            else:
                chunk = await anyio.to_thread.run_sync(next, chunks, _END)
                if chunk is _END:
                    return
            yield chunk
            if time.monotonic() > deadline:
                raise HTTPError(504, f"Generation took longer than the server's limit of {timeout_s:.0f} s.",
                                "timeout_error", code="timeout")
    finally:
        chunks.close()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(stats: GenerationStats | None) -> dict:
    prompt = stats.prompt_tokens if stats else 0
    completion = stats.completion_tokens if stats else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def timings(stats: GenerationStats | None) -> dict:
    if not stats:
        return {}
    return {"time_to_first_token_s": round(stats.time_to_first_token_s, 4),
            "decode_tokens_per_s": round(stats.decode_tokens_per_s, 2), "total_s": round(stats.total_s, 4)}


_TEXT = "\u0000slmkit-token-text\u0000"  # a placeholder no model text can equal (NUL is escaped in JSON)


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def stream_events(chunks: AsyncIterator[Chunk], *, chat: bool, model: str, include_usage: bool,
                        on_finish, extra_first: dict | None = None) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.

    An error after the first byte cannot change the status code any more, so it is sent as
    an ``error`` event before ``[DONE]``.
    """
    response_id, created = new_id("chatcmpl" if chat else "cmpl"), int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choice: dict, **more) -> str:
        return sse({"id": response_id, "object": kind, "created": created, "model": model,
                    "choices": [choice] if choice is not None else [], **more})

    try:
        if chat:
            yield event({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                         "logprobs": None}, **(extra_first or {}))
        # A token's event is the same JSON each time but for its text: written once around a
        # placeholder and filled in per token (json.dumps of the whole dict per token was most
        # of the event loop's time per streamed token).
        piece = {"delta": {"content": _TEXT}} if chat else {"text": _TEXT}
        head, tail = event({"index": 0, **piece, "finish_reason": None, "logprobs": None}).rsplit(
            json.dumps(_TEXT), 1)
        stats = None
        async for chunk in chunks:
            stats = chunk.stats or stats
            if chunk.text:
                yield head + json.dumps(chunk.text, ensure_ascii=False) + tail
            if chunk.finish_reason:
                on_finish(stats)
                last = {"delta": {}} if chat else {"text": ""}
                yield event({"index": 0, **last, "finish_reason": chunk.finish_reason, "logprobs": None},
                            timings=timings(stats))
        if include_usage:
            yield event(None, usage=usage(stats))
    except HTTPError as exc:
        yield sse(error_body(exc.message, exc.error_type, exc.param, exc.code))
    except SlmError as exc:
        yield sse(slm_error_body(exc))
    except Exception:  # noqa: BLE001 - the client gets an error event; details stay in the server log
        import logging

        logging.getLogger("slmkit.server").exception("generation failed mid-stream")
        yield sse(error_body("The generation failed on the server.", "server_error", None, "internal_error"))
    yield sse("[DONE]")


async def complete(chunks: AsyncIterator[Chunk]) -> tuple[str, str, GenerationStats | None]:
    parts, reason, stats = [], "stop", None
    async for chunk in chunks:
        parts.append(chunk.text)
        reason = chunk.finish_reason or reason
        stats = chunk.stats or stats
    return "".join(parts), reason, stats
