"""An :class:`~slmkit.engine.Engine` that talks to a running slmkit (or any OpenAI-compatible)
server, so `slm chat --url` and other callers work the same against a local or remote model."""

from __future__ import annotations

import json
from collections.abc import Iterator

from slmkit.engine import Chunk, GenerationRequest, GenerationStats
from slmkit.errors import InvalidRequestError, ModelNotFoundError, SlmError


class RemoteEngine:
    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, timeout_s: float = 600):
        import httpx

        self.base = url.rstrip("/")
        if not self.base.endswith("/v1"):
            self.base += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=timeout_s)
        self.model_name = model or self._first_model()
        self.context_length = 0  # unknown on the client; the server checks it
        self.load_time_s = 0.0

    def _first_model(self) -> str:
        models = self._json("GET", "/models")["data"]
        chat = [m["id"] for m in models if m.get("kind", "chat") == "chat"]
        if not chat:
            raise ModelNotFoundError(f"The server at {self.base} offers no chat model.")
        return chat[0]

    def _json(self, method: str, path: str, **kwargs) -> dict:
        import httpx

        try:
            response = self.http.request(method, self.base + path, **kwargs)
        except httpx.HTTPError as exc:
            raise SlmError(f"Cannot reach the server at {self.base}: {exc}. Is `slm serve` running?") from exc
        if response.status_code >= 400:
            raise _server_error(response.status_code, response.text)
        return response.json()

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        import httpx

        request.validate()
        if request.json_schema is not None and request.messages is None:
            raise InvalidRequestError("A JSON schema needs chat messages: the server's /v1/completions takes no "
                                      "response_format. Send messages instead of a prompt.", param="json_schema")
        body = {"model": self.model_name, "stream": True, "stream_options": {"include_usage": True},
                "max_tokens": request.max_new_tokens, "stop": request.stop or None,
                "temperature": request.sampling.temperature, "top_p": request.sampling.top_p,
                "seed": request.sampling.seed}
        if request.json_schema is not None:
            # OpenAI's structured-output field; the server compiles it into the same grammar mask.
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": request.json_schema}}
        if request.messages is not None:
            body["messages"], path = request.messages, "/chat/completions"
        else:
            body["prompt"], path = request.prompt, "/completions"
        try:
            with self.http.stream("POST", self.base + path, json=body) as response:
                if response.status_code >= 400:
                    raise _server_error(response.status_code, response.read().decode(errors="replace"))
                yield from _chunks(response.iter_lines())
        except httpx.HTTPError as exc:
            raise SlmError(f"The connection to {self.base} failed: {exc}") from exc

    def close(self) -> None:
        self.http.close()


def _chunks(lines: Iterator[str]) -> Iterator[Chunk]:
    reason, stats = None, GenerationStats()
    for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            raise SlmError(event["error"].get("message", "the server reported an error"))
        if event.get("usage"):
            stats.prompt_tokens = event["usage"]["prompt_tokens"]
            stats.completion_tokens = event["usage"]["completion_tokens"]
        for choice in event.get("choices", []):
            text = choice.get("delta", {}).get("content") or choice.get("text") or ""
            if text:
                yield Chunk(text=text)
            if choice.get("finish_reason"):
                reason = choice["finish_reason"]
                timing = event.get("timings") or {}
                stats.time_to_first_token_s = timing.get("time_to_first_token_s", 0.0)
                stats.total_s = timing.get("total_s", 0.0)
    yield Chunk(text="", finish_reason=reason or "stop", stats=stats)


def _server_error(status: int, text: str) -> SlmError:
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text[:200]
    if status == 404:
        return ModelNotFoundError(message)
    if status in (400, 413):
        return InvalidRequestError(message)
    return SlmError(f"The server answered {status}: {message}")
