"""``POST /v1/documents/extract``: :func:`slmkit.docs.extract.extract_pages` over HTTP.

Two body types (the server's body-size limit, host check, API keys and queue bound apply to both,
as everywhere):

- JSON: ``{"model", "schema": "invoice" | {JSON Schema}, "text": "..."}`` or, for a PDF,
  ``"pdf_base64": "..."`` instead of ``text``;
- ``multipart/form-data`` (``curl -F file=@invoice.pdf -F model=... -F schema=invoice``): a
  ``file`` part holding a PDF, ``model``, and ``schema`` as a built-in name or JSON Schema text.

The answer has the same ``values`` (valid against the schema), ``fields`` (value, confidence,
printed text, source) and ``pages`` as ``slm docs extract``. Bad input (both or neither of text
and PDF, bad base64, a file part that is not a PDF, an unreadable or scanned PDF, an unusable
schema) is a 400 naming the parameter; a body over the limit is a 413.
"""

from __future__ import annotations

import base64
import binascii
import functools
import tempfile
from pathlib import Path

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request

from slmkit.server.errors import HTTPError


class DocumentExtractRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    schema_: StrictStr | dict = Field(default="invoice", alias="schema")
    text: StrictStr | None = None
    pdf_base64: StrictStr | None = None


def _pages(body: DocumentExtractRequest) -> list[str]:

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
    return _pdf_pages(data)


def _pdf_pages(data: bytes) -> list[str]:
    from slmkit.docs.pdf import read_pages

    with tempfile.TemporaryDirectory(prefix="slm-doc-") as folder:
        path = Path(folder) / "upload.pdf"
        path.write_bytes(data)
        return read_pages(path)  # isolated child process; DocumentError (400) names the upload


FORM_FIELDS = ("model", "schema", "file")


async def _form_body(request) -> tuple[DocumentExtractRequest, bytes]:
    """The multipart form as a request (schema text parsed) and the uploaded PDF's bytes."""
    import json

    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
    except HTTPException:
        raise  # 413 from the body-size guard
    except Exception as exc:  # starlette's MultiPartException and parser errors: malformed form
        raise HTTPError(400, f"The multipart body could not be read: {str(exc)[:120]}. Send the fields "
                             f"{', '.join(FORM_FIELDS)}.", param="file") from exc
    try:
        unknown = sorted(set(form) - set(FORM_FIELDS))
        if unknown:
            raise HTTPError(400, f"Unknown form field {unknown[0]!r}: send {', '.join(FORM_FIELDS)}.", param=unknown[0])
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPError(400, "Send the PDF as a file part named 'file' (curl -F file=@doc.pdf).", param="file")
        model, schema = form.get("model"), form.get("schema", "invoice")
        if not isinstance(model, str) or not model or not isinstance(schema, str):
            raise HTTPError(400, "Send 'model' (and optionally 'schema') as text fields.", param="model")
        if schema.lstrip().startswith("{"):
            try:
                schema = json.loads(schema)
            except ValueError as exc:
                raise HTTPError(400, "schema is neither a built-in name nor JSON Schema text.", param="schema") from exc
        data = await upload.read()
    finally:
        await form.close()
    if not data.startswith(b"%PDF-"):
        raise HTTPError(400, "The uploaded file is not a PDF (it does not start with %PDF-). Upload a PDF, or send "
                             "plain text as JSON {\"text\": ...}.", param="file")
    return DocumentExtractRequest.model_validate({"model": model, "schema": schema}), data


async def _json_body(request) -> DocumentExtractRequest:
    from fastapi.exceptions import RequestValidationError

    try:
        return DocumentExtractRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


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
    async def extract_document(request: Request):
        from slmkit.docs.extract import extract_pages

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            body, upload = await _form_body(request)
        elif content_type in ("application/json", ""):
            body, upload = await _json_body(request), None
        else:
            raise HTTPError(415, f"Unsupported Content-Type {content_type[:60]!r}: send application/json or "
                                 "multipart/form-data.", param=None)
        schema = _schema(body)
        if upload is not None:
            pages = await anyio.to_thread.run_sync(_pdf_pages, upload)
        else:
            pages = await anyio.to_thread.run_sync(_pages, body)
        lease = await pool.checkout(body.model, "chat")  # queue slot first, engine pinned until done
        try:
            result = await anyio.to_thread.run_sync(functools.partial(extract_pages, pages, schema, lease.engine))
        finally:
            lease.release()
        result.pop("answer", None)
        return {"object": "document.extraction", "model": body.model, "kind": schema.name, **result,
                "pages": len(pages)}
