"""Request bodies of the OpenAI API subset slmkit serves, validated strictly: wrong types,
out-of-range values and unsupported options are 400s with the offending parameter named.
Unknown fields are ignored, as OpenAI-compatible servers do, so newer SDKs keep working."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from slmkit.engine import MAX_REPETITION_PENALTY, MIN_REPETITION_PENALTY, MIN_TEMPERATURE

Number = Annotated[float, Field(strict=False, allow_inf_nan=False)]
MAX_STOPS = 4
MAX_EMBEDDING_INPUTS = 2048


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: StrictStr | list[TextPart]
    name: StrictStr | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    top_k: StrictInt | None = Field(default=None, ge=0, le=1000)
    repetition_penalty: Number | None = Field(default=None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY)
    frequency_penalty: Number | None = Field(default=None, ge=-2, le=2)
    presence_penalty: Number | None = Field(default=None, ge=-2, le=2)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(default=None, ge=-(2**63), lt=2**63)
    n: StrictInt = Field(default=1, ge=1, le=128)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    logprobs: StrictBool | StrictInt | None = None
    user: StrictStr | None = None

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value):
        if value is not None and 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences are supported")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for an option this server cannot honour, else None."""
        if self.n != 1:
            return "n", "Only n=1 is supported: send several requests for several answers."
        if self.logprobs:
            return "logprobs", "logprobs are not supported by this server."
        if self.frequency_penalty or self.presence_penalty:
            return ("frequency_penalty" if self.frequency_penalty else "presence_penalty",
                    "frequency_penalty and presence_penalty are not supported; use repetition_penalty.")
        return None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=0)
    tools: list[dict] | None = None
    response_format: dict | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.tools:
            return "tools", "Tool calling is not supported by this server."
        return super().unsupported()

    def requested_json_schema(self) -> dict | None:
        """The JSON Schema ``response_format`` asks for (``json_object``: any object), or None
        for plain text; raises ValueError naming what is wrong with the ``response_format``."""
        return response_format_schema(self.response_format)


def response_format_schema(response_format: dict | None) -> dict | None:
    """OpenAI's ``response_format`` as a JSON Schema for the engine: ``{"type": "text"}`` → None,
    ``{"type": "json_object"}`` → any JSON object, ``{"type": "json_schema", "json_schema":
    {"name": ..., "schema": {...}}}`` → that schema."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("response_format json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}.")
        return schema
    raise ValueError(f"response_format type must be text, json_object or json_schema, got {kind!r}.")


class CompletionRequest(SamplingFields):
    prompt: StrictStr | list[StrictStr] = Field(min_length=1)
    echo: StrictBool = False
    suffix: StrictStr | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            return "prompt", "Send one prompt per request (a list of exactly one string is accepted)."
        if self.echo or self.suffix:
            return ("echo" if self.echo else "suffix"), "echo and suffix are not supported."
        return super().unsupported()


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: StrictStr | list[StrictStr]
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: StrictStr | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, value):
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("give at least one string")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} strings per request, got {len(texts)}; split the batch")
        if any(not text for text in texts):
            raise ValueError("strings must not be empty")
        return value
