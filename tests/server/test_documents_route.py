"""POST /v1/documents/extract: values valid against the schema from text or a PDF upload (base64
in JSON, or a multipart file part); bad input is a 400 naming the parameter, and the route is
behind the API key, host check, body limit and queue bound like the rest."""

import base64
import json
import time

import httpx
import jsonschema
import pytest

from conftest import LiveServer

KEY = "doc-key"

SCHEMA = {"type": "object", "properties": {"number": {"type": ["string", "null"], "x-kind": "id",
                                                      "description": "the invoice number"}}}


def test_text_document_gives_values_valid_against_the_schema(server, model_id):
    response = httpx.post(server.url + "/v1/documents/extract", timeout=120,
                          json={"model": model_id, "schema": SCHEMA, "text": "Invoice No: 42\nTotal: $10.00"})
    assert response.status_code == 200, response.text
    body = response.json()
    jsonschema.validate(body["values"], SCHEMA)
    assert body["object"] == "document.extraction" and body["pages"] == 1
    entry = body["fields"]["number"]
    assert entry["value"] is None or entry["source"]["text"].casefold() in "invoice no: 42\ntotal: $10.00"


def test_scanned_pdf_upload_is_a_400_saying_ocr_is_not_included(server, model_id):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50, style="F")
    upload = base64.b64encode(bytes(pdf.output())).decode()
    response = httpx.post(server.url + "/v1/documents/extract", timeout=120,
                          json={"model": model_id, "schema": SCHEMA, "pdf_base64": upload})
    assert response.status_code == 400 and "OCR is not included" in response.json()["error"]["message"]


@pytest.mark.parametrize("body,param", [
    ({"text": "a", "pdf_base64": "AAAA"}, "text"), ({}, "text"), ({"pdf_base64": "%%%"}, "pdf_base64"),
    ({"text": "a", "schema": "nope"}, "schema"), ({"text": "a", "schema": {"type": "object"}}, None),
])
def test_bad_input_is_400(server, model_id, body, param):
    response = httpx.post(server.url + "/v1/documents/extract", json={"model": model_id, **body})
    assert response.status_code == 400, response.text
    if param:
        assert response.json()["error"]["param"] == param
    assert "Traceback" not in response.text and json.loads(response.text)["error"]["message"]


def _pdf_bytes(lines=("Invoice No: 42", "Total: $10.00")):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "", 11)
    for n, line in enumerate(lines):
        pdf.text(20, 20 + 8 * n, line)
    return bytes(pdf.output())


def test_multipart_pdf_upload_gives_values_valid_against_the_schema(server, model_id):
    response = httpx.post(server.url + "/v1/documents/extract", timeout=120,
                          files={"file": ("invoice.pdf", _pdf_bytes(), "application/pdf")},
                          data={"model": model_id, "schema": json.dumps(SCHEMA)})
    assert response.status_code == 200, response.text
    body = response.json()
    jsonschema.validate(body["values"], SCHEMA)
    assert body["pages"] == 1 and body["kind"] == "schema" and set(body["fields"]) == {"number"}


@pytest.fixture(scope="module")
def guarded(long_tiny_model_dir):
    """A server with a key, a 64 KB body limit and a queue of one, on the 4096-context tiny model
    (streams long enough to hold the queue while an upload is read)."""
    from slmkit.server.settings import ServerSettings

    settings = ServerSettings(models=[str(long_tiny_model_dir)], embedding_models=[], api_keys=[KEY],
                              max_body_bytes=64 * 1024, max_batch_size=1, max_queue=1, max_tokens_limit=4096)
    with LiveServer(settings) as live:
        live.model_id = long_tiny_model_dir.name
        yield live


def _upload(live, model_id, content=None, key=KEY, **options):
    headers = {"Authorization": f"Bearer {key}", **options.pop("headers", {})}
    files = {"file": ("doc.pdf", _pdf_bytes() if content is None else content, "application/pdf")}
    return httpx.post(live.url + "/v1/documents/extract", headers=headers, timeout=120,
                      files=options.pop("files", files),
                      data=options.pop("data", {"model": model_id, "schema": json.dumps(SCHEMA)}))


def test_multipart_is_guarded_like_json(guarded):
    model_id = guarded.model_id
    assert _upload(guarded, model_id).status_code == 200
    assert _upload(guarded, model_id, key="wrong").status_code == 401
    assert _upload(guarded, model_id, headers={"Host": "evil.example"}).status_code == 403
    started = time.perf_counter()
    big = _upload(guarded, model_id, content=b"%PDF-1.4\n" + b"0" * (200 * 1024))
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("options,param", [
    ({"content": b"PK\x03\x04 a zip, not a pdf"}, "file"),
    ({"files": {"other": ("x.pdf", b"%PDF-1.4", "application/pdf")}}, "other"),
    ({"data": {"schema": "invoice"}}, "model"),
    ({"data": {"model": "M", "schema": "nope"}}, "schema"),
    ({"data": {"model": "M", "schema": "{not json"}}, "schema"),
    ({"content": b"%PDF-1.4 broken"}, None),
])
def test_bad_uploads_are_400_naming_the_part(guarded, options, param):
    model_id = guarded.model_id
    if "data" in options and options["data"].get("model") == "M":
        options["data"]["model"] = model_id
    if "files" in options:
        options["data"] = {"model": model_id}
    response = _upload(guarded, model_id, **options)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"] and (param is None or error["param"] == param)
    if options.get("content", b"").startswith(b"PK"):
        assert "not a PDF" in error["message"]


def test_form_urlencoded_is_refused(guarded):
    model_id = guarded.model_id
    response = httpx.post(guarded.url + "/v1/documents/extract", headers={"Authorization": f"Bearer {KEY}"},
                          data={"model": model_id, "text": "Invoice 1"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["error"]["message"]


def test_a_full_queue_answers_429_to_an_upload(guarded):
    model_id = guarded.model_id
    body = {"model": model_id, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4000, "stream": True,
            "temperature": 0}
    headers = {"Authorization": f"Bearer {KEY}"}
    streams = [httpx.stream("POST", guarded.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)
               for _ in range(2)]
    opened = [s.__enter__() for s in streams]
    try:
        refused = _upload(guarded, model_id)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    finally:
        for stream, response in zip(streams, opened, strict=True):
            response.close()
            stream.__exit__(None, None, None)
    deadline = time.time() + 10
    while guarded.pool.in_flight[model_id] and time.time() < deadline:
        time.sleep(0.05)
    assert _upload(guarded, model_id).status_code == 200
