"""``POST /v1/documents/extract``: :func:`slmkit.docs.extract.extract_pages` over HTTP.

The body is JSON (the server's body-size limit and API keys apply as everywhere):
``{"model", "schema": "invoice" | {JSON Schema}, "text": "..."}`` or, for a PDF,
``"pdf_base64": "..."`` instead of ``text``. The answer has the same ``values`` (valid against
the schema), ``fields`` (value, confidence, printed text, source) and ``pages`` as
``slm docs extract``. Bad input (both or neither of text and PDF, bad base64, an unreadable or
scanned PDF, an unusable schema) is a 400 naming the parameter.
"""

from __future__ import annotations

import base64
import binascii
import functools
import tempfile
from pathlib import Path

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from slmkit.server.errors import HTTPError


class DocumentExtractRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    schema_: StrictStr | dict = Field(default="invoice", alias="schema")
    text: StrictStr | None = None
    pdf_base64: StrictStr | None = None


def _pages(body: DocumentExtractRequest) -> list[str]:
    from slmkit.docs.pdf import read_pages

    if (body.text is None) == (body.pdf_base64 is None):
        raise HTTPError(400, "Give exactly one of text or pdf_base64.", param="text")
    if body.text is not None:
        if not body.text.strip():
            raise HTTPError(400, "text is empty.", param="text")
        return [body.text]
    try:
        data = base64.b64decode(body.pdf_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPError(400, "pdf_base64 is not valid base64.", param="pdf_base64") from exc
    with tempfile.TemporaryDirectory(prefix="slm-doc-") as folder:
        path = Path(folder) / "upload.pdf"
        path.write_bytes(data)
        return read_pages(path)  # isolated child process; DocumentError (400) names the upload


def _schema(body: DocumentExtractRequest):
    from slmkit.docs.schemas import BUILTIN, from_json_schema, load_schema

    if isinstance(body.schema_, str):
        if body.schema_ not in BUILTIN:
            raise HTTPError(400, f"Unknown schema {body.schema_!r}: use {', '.join(BUILTIN)} or a JSON Schema object.",
                            param="schema")
        return load_schema(body.schema_)
    return from_json_schema("schema", body.schema_)


def register(app, pool) -> None:
    @app.post("/v1/documents/extract")
    async def extract_document(body: DocumentExtractRequest):
        from slmkit.docs.extract import extract_pages

        schema = _schema(body)
        pages = await anyio.to_thread.run_sync(_pages, body)
        lease = await pool.checkout(body.model, "chat")  # queue slot first, engine pinned until done
        try:
            result = await anyio.to_thread.run_sync(functools.partial(extract_pages, pages, schema, lease.engine))
        finally:
            lease.release()
        result.pop("answer", None)
        return {"object": "document.extraction", "model": body.model, "kind": schema.name, **result,
                "pages": len(pages)}
