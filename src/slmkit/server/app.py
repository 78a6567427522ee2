"""The FastAPI application: routes translate between OpenAI's API and slmkit's engines."""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import time
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from slmkit.errors import SlmError
from slmkit.server import knowledge
from slmkit.server.errors import HTTPError, error_response, slm_error_response
from slmkit.server.generation import build_engine_request, complete, iterate, new_id, stream_events, timings, usage
from slmkit.server.metrics import MetricsMiddleware, ServerMetrics
from slmkit.server.pool import ModelPool
from slmkit.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from slmkit.server.security import LOOPBACK_HOSTS, GuardMiddleware
from slmkit.server.settings import ServerSettings

log = logging.getLogger("slmkit.server")
STATIC = Path(__file__).parent / "static"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    pool = ModelPool(settings)
    metrics = ServerMetrics(pool)
    state = {"ready": not settings.preload, "load_error": None}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # Streams wait for tokens in worker threads; allow many at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(64, 4 * settings.max_queue)
        task = None
        if settings.preload and pool.chat_ids:
            async def preload():
                try:
                    await pool.get(pool.chat_ids[0])
                    state["ready"] = True
                except Exception as exc:  # noqa: BLE001 - reported by /health and the log
                    state["load_error"] = exc
                    log.exception("could not load %s", pool.chat_ids[0])
            import asyncio

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
        snapshot = pool.snapshot()
        if state["load_error"] is not None:
            return JSONResponse({"status": "error", "message": "The default model failed to load."}, status_code=503)
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        if not all(info["healthy"] for info in snapshot.values()):
            return JSONResponse({"status": "error", "message": "An engine stopped."}, status_code=503)
        return {"status": "ok", "loaded_models": list(snapshot)}

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def web_chat():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/v1/models")
    async def list_models():
        ids = pool.all_ids() + knowledge.knowledge_base_ids()
        return {"object": "list", "data": [_model_card(m, pool) for m in ids]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id.startswith(knowledge.PREFIX):
            knowledge.check(model_id)
        elif model_id not in pool.all_ids():
            pool.check(model_id, "chat")
        return _model_card(model_id, pool)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        return await _generate(body, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        return await _generate(body, chat=False)

    async def _generate(body, chat: bool):
        if chat and body.model.startswith(knowledge.PREFIX):
            answering_model, answer = await knowledge.answer(body, pool, settings)
            pool.acquire(answering_model)
            extra = {"sources": answer.sources, "abstained": answer.abstained}
            return await _respond(body, answer.chunks, chat=True, counted_model=answering_model, extra=extra)
        engine = await pool.get(body.model, "chat")
        request = await anyio.to_thread.run_sync(functools.partial(build_engine_request, body, engine, settings, chat=chat))
        pool.acquire(body.model)
        try:
            chunks = engine.stream(request)  # raises 400s before any work
        except BaseException:
            pool.release(body.model)
            raise
        return await _respond(body, chunks, chat=chat, counted_model=body.model)

    async def _respond(body, chunks, *, chat: bool, counted_model: str, extra: dict | None = None):
        """Stream or collect ``chunks`` in OpenAI's format; releases ``counted_model``'s slot at the end."""
        started = time.perf_counter()
        route = "/v1/chat/completions" if chat else "/v1/completions"

        def finished(stats):
            metrics.record_generation(counted_model, stats)
            metrics.latency.labels(route).observe(time.perf_counter() - started)

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _released_after(pool, counted_model, stream_events(
                iterate(chunks, settings.request_timeout_s), chat=chat, model=body.model,
                include_usage=include_usage, on_finish=finished, extra_first=extra))
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        try:
            text, reason, stats = await complete(iterate(chunks, settings.request_timeout_s))
        finally:
            pool.release(counted_model)
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
        model_id = body.model or (pool.embedding_ids[0] if pool.embedding_ids else "")
        model = await pool.get(model_id, "embedding")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if body.dimensions is not None and body.dimensions != model.dimensions:
            raise HTTPError(400, f"{model_id} makes {model.dimensions}-dimensional vectors; dimensions cannot change.",
                            param="dimensions")
        vectors = await anyio.to_thread.run_sync(model.embed, texts)
        tokens = await anyio.to_thread.run_sync(model.count_tokens, texts)
        data = []
        for index, vector in enumerate(vectors):
            if body.encoding_format == "base64":
                encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            else:
                encoded = vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return {"object": "list", "data": data, "model": model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


async def _released_after(pool, model_id, events):
    """Keep a streaming request counted against the model's queue until its last event."""
    try:
        async for event in events:
            yield event
    finally:
        pool.release(model_id)


def _model_card(model_id: str, pool: ModelPool) -> dict:
    if model_id.startswith(knowledge.PREFIX):
        kind = "knowledge_base"
    else:
        kind = "embedding" if model_id in pool.embedding_ids else "chat"
    card = {"id": model_id, "object": "model", "created": pool.created, "owned_by": "slmkit", "kind": kind,
            "loaded": model_id in pool.loaded}
    if kind == "chat":  # which backend and file serve it (issue 19)
        card.update(_serving(model_id, pool))
    return card


def _serving(model_id: str, pool: ModelPool) -> dict:
    from slmkit.engine import serving_plan

    try:
        plan = serving_plan(model_id, pool.settings.backend)
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
        return error_response(400, f"Invalid value for {param or 'the body'}: {first.get('msg', 'invalid')}.",
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
