"""The FastAPI application: routes translate between OpenAI's API and slmkit's engines."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import math
import time
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from slmkit.errors import SlmError
from slmkit.server import knowledge, recommendations, routing
from slmkit.server.errors import HTTPError, error_response, slm_error_response
from slmkit.server.generation import (
    collect_unless_disconnected,
    iterate,
    new_id,
    start_generation,
    stream_events,
    timings,
    usage,
)
from slmkit.server.metrics import MetricsMiddleware, ServerMetrics
from slmkit.server.pool import Lease, ModelPool
from slmkit.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from slmkit.server.security import LOOPBACK_HOSTS, GuardMiddleware
from slmkit.server.settings import ServerSettings

log = logging.getLogger("slmkit.server")
STATIC = Path(__file__).parent / "static"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def create_app(settings: ServerSettings | None = None, on_fatal=None) -> FastAPI:
    """The application. ``on_fatal(exc)`` is called if the first model cannot be loaded at
    start-up (``slm serve`` uses it to exit with the reason instead of answering 503 forever)."""
    settings = settings or ServerSettings()
    pool = ModelPool(settings)
    recommenders = recommendations.Recommenders(pool, settings.threads)
    metrics = ServerMetrics(pool)
    auto_router = routing.AutoRouter(settings.router, metrics, settings.threads, pool) if settings.router else None
    state = {"ready": not (settings.preload and pool.chat_ids), "load_error": None}  # nothing to preload: ready

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # Streams wait for tokens in worker threads; allow many at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(64, 4 * settings.max_queue)
        task = None
        if settings.preload and pool.chat_ids:
            async def preload():
                try:
                    await pool.preload(pool.chat_ids[0])
                    state["ready"] = True
                except Exception as exc:  # noqa: BLE001 - reported by /health and the log
                    state["load_error"] = exc
                    log.error("could not load %s: %s", pool.chat_ids[0], getattr(exc, "message", exc))
                    if on_fatal is not None:
                        on_fatal(exc)

            task = asyncio.create_task(preload())
        yield
        if task:
            task.cancel()
        await anyio.to_thread.run_sync(pool.close)

    app = FastAPI(title="slmkit", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible API for small language models served by slmkit.")
    app.state.pool, app.state.metrics, app.state.settings = pool, metrics, settings
    _install_error_handlers(app, settings)

    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(GuardMiddleware, api_keys=settings.api_keys, max_body_bytes=settings.max_body_bytes,
                       loopback_only_hosts=settings.host in LOOPBACK_HOSTS, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the guard's refusals too

    @app.get("/health", include_in_schema=True)
    async def health():
        if state["load_error"] is not None:
            return JSONResponse({"status": "error", "message": "The default model failed to load."}, status_code=503)
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        reloading = pool.revive()
        if reloading:
            return JSONResponse({"status": "reloading", "message": "An engine stopped; it is being loaded again.",
                                 "models": reloading}, status_code=503)
        return {"status": "ok", "loaded_models": list(pool.snapshot())}

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def web_chat():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/v1/models")
    async def list_models():
        ids = pool.all_ids() + knowledge.knowledge_base_ids() + ([routing.AUTO] if auto_router else [])
        return {"object": "list", "data": [_model_card(m, pool) for m in ids]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id.startswith(knowledge.PREFIX):
            knowledge.check(model_id)
        elif model_id not in pool.all_ids():
            model_id = pool.resolve_id(model_id, "chat")
        return _model_card(model_id, pool)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, http_request: Request):
        return await _generate(body, http_request, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http_request: Request):
        return await _generate(body, http_request, chat=False)

    async def _generate(body, http_request: Request, chat: bool):
        if chat and body.model == routing.AUTO and auto_router is not None:
            return await _routed(body, http_request)
        if chat and body.model.startswith(knowledge.PREFIX):
            lease, answer = await knowledge.answer(body, pool, settings)
            extra = {"sources": answer.sources, "abstained": answer.abstained}
            return await _respond(body, http_request, answer.chunks, chat=True, lease=lease, extra=extra)
        # The slot is taken first; template rendering and tokenizing (which can take seconds
        # on a huge prompt) then run in a worker thread, never on the event loop.
        lease = await pool.checkout(body.model, "chat")
        try:
            chunks = await anyio.to_thread.run_sync(functools.partial(start_generation, body, lease.engine, settings,
                                                                      chat=chat))
        except BaseException:
            lease.release()
            raise
        return await _respond(body, http_request, chunks, chat=chat, lease=lease, extra=None)

    async def _routed(body, http_request: Request):
        """``model: "auto"``: the router's specialist answers; the response names it (server/routing.py)."""
        decision = await auto_router.decide(body)
        routed = routing.plan(decision, pool)
        extra = {"route": routing.route_info(decision)}
        text = routing.last_user_text(body)
        if routed.kind == "knowledge_base":
            body.model = knowledge.PREFIX + routed.target
            lease, answer = await knowledge.answer(body, pool, settings)
            chunks = answer.chunks
            extra.update(sources=answer.sources, abstained=answer.abstained)
        elif routed.kind == "extractor":
            body.model = f"docs:{routed.target}"
            lease, chunks, more = await routing.extract(body, text, routed.target, pool, settings)
            extra.update(more)
        elif routed.kind == "recommender":
            body.model = f"recommend:{routed.target}"
            lease, chunks, more = await routing.recommend_named(body, text, routed.target, pool, recommenders)
            extra.update(more)
        else:
            body.model = routed.target
            lease = await pool.checkout(body.model, "chat")
            try:
                chunks = await anyio.to_thread.run_sync(functools.partial(start_generation, body, lease.engine,
                                                                          settings, chat=True))
            except BaseException:
                lease.release()
                raise
        response = await _respond(body, http_request, chunks, chat=True, lease=lease, extra=extra)
        if isinstance(response, dict):
            response = JSONResponse(response)
        response.headers[routing.HEADER] = decision.route
        return response

    async def _respond(body, http_request: Request, chunks, *, chat: bool, lease: Lease, extra: dict | None):
        """Stream or collect ``chunks`` in OpenAI's format; releases the lease at the end."""
        started = time.perf_counter()
        route = "/v1/chat/completions" if chat else "/v1/completions"

        def finished(stats):
            metrics.record_generation(lease.model_id, stats)
            metrics.latency.labels(route).observe(time.perf_counter() - started)

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _released_after(lease, stream_events(
                iterate(chunks, settings.request_timeout_s), chat=chat, model=body.model,
                include_usage=include_usage, on_finish=finished, extra_first=extra))
            return TimedStreamingResponse(events, write_timeout_s=settings.write_timeout_s, cleanup=lease.release,
                                          media_type="text/event-stream", headers=SSE_HEADERS)
        try:
            text, reason, stats = await collect_unless_disconnected(
                http_request, iterate(chunks, settings.request_timeout_s))
        except (SlmError, HTTPError):
            raise
        except Exception as exc:
            log.error("generation failed", exc_info=exc)
            raise HTTPError(500, "The generation failed on the server.", "server_error", code="internal_error") from None
        finally:
            lease.release()
        finished(stats)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                      "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        return {"id": new_id("chatcmpl" if chat else "cmpl"), "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": body.model, "choices": [choice], "usage": usage(stats),
                "timings": timings(stats), **(extra or {})}

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest):
        name = body.model or (pool.embedding_ids[0] if pool.embedding_ids else "")
        lease = await pool.checkout(name, "embedding")
        try:
            model = lease.engine
            texts = [body.input] if isinstance(body.input, str) else body.input
            if body.dimensions is not None and body.dimensions != model.dimensions:
                raise HTTPError(400, f"{lease.model_id} makes {model.dimensions}-dimensional vectors; dimensions "
                                     "cannot change.", param="dimensions")
            vectors, tokens = await anyio.to_thread.run_sync(_embed, model, pool.embedding_lock(lease.model_id), texts)
        finally:
            lease.release()
        data = []
        for index, vector in enumerate(vectors):
            if body.encoding_format == "base64":
                encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            else:
                encoded = vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return {"object": "list", "data": data, "model": lease.model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    recommendations.register(app, pool, recommenders)  # POST /v1/recommendations
    from slmkit.server import documents

    documents.register(app, pool)  # POST /v1/documents/extract
    return app


def _embed(model, lock, texts: list[str]):
    """Vectors and token count in one go, one request at a time per model (the tokenizer is
    not safe to share between threads)."""
    with lock:
        return model.embed(texts), model.count_tokens(texts)


async def _released_after(lease: Lease, events):
    """Keep a streaming request counted against the model's queue until its last event."""
    try:
        async for event in events:
            yield event
    finally:
        with contextlib.suppress(BaseException):
            await events.aclose()
        lease.release()


class TimedStreamingResponse(StreamingResponse):
    """A streaming response whose every write must finish within ``write_timeout_s``: a client
    that stops reading is cut off, and its generation cancelled, instead of holding a slot."""

    def __init__(self, content, *, write_timeout_s: float, cleanup=None, **kwargs):
        super().__init__(content, **kwargs)
        self.write_timeout_s, self.cleanup = write_timeout_s, cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # also when the client left before the first byte and nothing was iterated
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()
            if self.cleanup is not None:
                self.cleanup()

    async def stream_response(self, send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            # One cancel scope for the whole stream, armed only while a write is pending (the
            # wait for the model's next token may be long): a new scope per token cost ~75 us
            # of the event loop's time per token, which at 8 streams competes with llama.cpp.
            clock = asyncio.get_running_loop().time  # anyio's clock on asyncio, without its lookup per call
            with anyio.CancelScope() as write:
                async for chunk in self.body_iterator:
                    data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
                    write.deadline = clock() + self.write_timeout_s
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    write.deadline = math.inf
            if write.cancelled_caught:
                log.warning("a streaming client read nothing for %.0f s; closing its stream", self.write_timeout_s)
                return  # the response stays incomplete: the server closes the connection
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.body_iterator.aclose()


def _model_card(model_id: str, pool: ModelPool) -> dict:
    if model_id.startswith(knowledge.PREFIX):
        kind = "knowledge_base"
    elif model_id == routing.AUTO:
        kind = "router"
    else:
        kind = ("embedding" if model_id in pool.embedding_ids
                else "recommender" if model_id in pool.recommender_ids else "chat")
    card = {"id": model_id, "object": "model", "created": pool.created, "owned_by": "slmkit", "kind": kind,
            "loaded": model_id in pool.loaded}
    if kind == "chat":  # which backend and file serve it (issue 19)
        card.update(_serving(model_id, pool))
    return card


def _serving(model_id: str, pool: ModelPool) -> dict:
    from slmkit.engine import serving_plan

    try:
        plan = serving_plan(pool.references.get(model_id, model_id), pool.settings.backend)
    except SlmError:
        return {}
    return {"backend": plan["backend"], "file": plan["file"]}


def _install_error_handlers(app: FastAPI, settings: ServerSettings) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return error_response(400, "The request body is not valid JSON.", code="invalid_json")
        if not location and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
            return error_response(400, "The request body must be a JSON object with the documented fields.",
                                  code="invalid_body")
        param = ".".join(location) or None
        detail = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return error_response(400, f"Invalid value for {param or 'the body'}: {detail}.",
                              param=param, code="invalid_value")

    @app.exception_handler(SlmError)
    async def slm_error(request, exc: SlmError):
        if exc.http_status >= 500:
            log.error("model error: %s", exc.message)
        return slm_error_response(exc)

    @app.exception_handler(HTTPError)
    async def http_error(request, exc: HTTPError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request, exc: StarletteHTTPException):
        messages = {404: ("No such route.", "not_found"), 405: ("Method not allowed on this route.", None),
                    413: (f"Request body is larger than the limit of {settings.max_body_bytes} bytes.",
                          "request_too_large")}
        message, code = messages.get(exc.status_code, ("Bad request.", None))
        return error_response(exc.status_code, message, code=code)

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "Internal server error.", "server_error", code="internal_error")


def _version() -> str:
    from slmkit import __version__

    return __version__
