"""Server settings: one flat dataclass, filled from `slm serve` options."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ServerSettings:
    models: list[str] = dataclasses.field(default_factory=lambda: ["smollm2-135m"])
    embedding_models: list[str] = dataclasses.field(default_factory=lambda: ["minilm-l6"])
    host: str = "127.0.0.1"  # loopback unless the operator says otherwise
    port: int = 8000
    api_keys: list[str] = dataclasses.field(default_factory=list)  # empty = no auth
    backend: str = "auto"
    prefill: str = "auto"  # who prefills long prompts on llama.cpp (engine/llamacpp_prefill.py)
    threads: int | None = None
    max_memory_bytes: int | None = None  # budget for loaded models; least recently used unloads first
    max_body_bytes: int = 8 * 1024 * 1024
    max_tokens_limit: int = 4096  # the most a request may ask for
    default_max_tokens: int = 512  # used when a request names no max_tokens
    max_batch_size: int = 8  # sequences decoded together per model
    context_length: int | None = None  # llama.cpp: tokens per request (default: the engine's)
    max_queue: int = 64  # requests waiting beyond the batch before 429
    request_timeout_s: float = 300.0
    write_timeout_s: float = 30.0  # a streaming client that reads nothing this long is cut off
    failed_load_retry_s: float = 30.0  # a model that failed to load is not tried again this soon
    cors_origins: list[str] = dataclasses.field(default_factory=list)  # empty = CORS off
    allowed_hosts: list[str] = dataclasses.field(default_factory=list)  # extra Host names accepted
    drain_timeout_s: float = 10.0
    # LoRA adapters (public id -> adapter reference) served on the first chat model, one shared
    # base in memory; torch backend (engine/torch_backend.py). Requests name the adapter's id.
    adapters: dict[str, str] = dataclasses.field(default_factory=dict)
    router: str | None = None  # a router (slm router train) answering model="auto" (server/routing.py)
    preload: bool = True  # load the first model at start-up (health is 503 until it is ready)
