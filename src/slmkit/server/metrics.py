"""Prometheus metrics for `/metrics`, in a registry of the app's own (so tests and several
apps in one process never share counters)."""

from __future__ import annotations

import asyncio
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


GENERATION_ROUTES = {"/v1/chat/completions", "/v1/completions"}


class MetricsMiddleware:
    """Count every response by route and status (401s and 413s from the guard included).

    Latency of generation routes is recorded when the last token is out (see the routes),
    so here it is recorded only for the others.
    """

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def capture(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status["code"])).inc()
            if route not in GENERATION_ROUTES:
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)


class ServerMetrics:
    def __init__(self, pool):
        self.registry = CollectorRegistry()
        self.requests = Counter("slm_requests", "HTTP requests by route and status code", ["route", "status"],
                                registry=self.registry)
        self.prompt_tokens = Counter("slm_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry)
        self.completion_tokens = Counter("slm_completion_tokens", "Completion tokens generated", ["model"],
                                         registry=self.registry)
        self.time_to_first_token = Histogram("slm_time_to_first_token_seconds", "Time to first token", ["model"],
                                             buckets=TTFT_BUCKETS, registry=self.registry)
        self.latency = Histogram("slm_request_latency_seconds", "Request latency (until the last byte)", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        queue = Gauge("slm_queue_depth", "Requests waiting for a batch slot", ["model"], registry=self.registry)
        active = Gauge("slm_active_sequences", "Sequences being decoded", ["model"], registry=self.registry)
        loaded = Gauge("slm_loaded_models", "Models loaded in memory", registry=self.registry)
        memory = Gauge("slm_model_memory_bytes", "Memory held by each loaded model's weights", ["model"],
                       registry=self.registry)
        in_flight = Gauge("slm_requests_in_flight", "Requests holding a batch or queue slot", ["model"],
                          registry=self.registry)
        self._dynamic = (queue, active, loaded, memory, in_flight)
        # Leak detectors for soak runs: both must come back to their idle values after a burst.
        self.event_loop_tasks = Gauge("slm_event_loop_tasks", "asyncio tasks alive on the server's event loop",
                                      registry=self.registry)
        self.threads = Gauge("slm_threads", "Python threads alive in the server process", registry=self.registry)
        self.pool = pool

    def record_generation(self, model: str, stats) -> None:
        self.prompt_tokens.labels(model).inc(stats.prompt_tokens)
        self.completion_tokens.labels(model).inc(stats.completion_tokens)
        if stats.completion_tokens:
            self.time_to_first_token.labels(model).observe(stats.time_to_first_token_s)

    def render(self) -> bytes:
        queue, active, loaded, memory, in_flight = self._dynamic
        for gauge in (queue, active, memory, in_flight):
            gauge.clear()
        for model_id, count in list(self.pool.in_flight.items()):
            in_flight.labels(model_id).set(count)
        snapshot = self.pool.snapshot()
        loaded.set(len(snapshot))
        for model_id, info in snapshot.items():
            memory.labels(model_id).set(info["memory_bytes"])
            queue.labels(model_id).set(info.get("queue_depth", 0))
            active.labels(model_id).set(info.get("active", 0))
        try:
            self.event_loop_tasks.set(len(asyncio.all_tasks()))
        except RuntimeError:  # rendered outside a running loop (tests calling render() directly)
            self.event_loop_tasks.set(0)
        self.threads.set(threading.active_count())
        return generate_latest(self.registry)
