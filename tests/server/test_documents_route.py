"""POST /v1/documents/extract: values valid against the schema from text or a PDF upload; bad
input is a 400 naming the parameter, and the route is behind the API key like the rest."""

import base64
import json

import httpx
import jsonschema
import pytest

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
