"""Extraction: the post-processing on known answers (grounding, normalizing, sources, schema
fit), the whole path on the tiny model (always schema-valid, nothing invented), classification,
the regex baseline and the scorer."""

import json

import jsonschema
import pytest

from slmkit.docs.classify import KINDS, classify_pages
from slmkit.docs.evaluate import evaluate_docs
from slmkit.docs.extract import extract_pages, interpret, regex_baseline
from slmkit.docs.pdf import read_pages
from slmkit.docs.schemas import from_json_schema, load_schema
from slmkit.errors import InvalidRequestError


def _printed(document, schema):
    return {f.name: document.printed[f.name] for f in schema.fields}


def test_the_printed_answer_gives_the_gold_values_with_sources(synthetic_pdfs):
    for path, document in synthetic_pdfs:
        schema, pages = load_schema(document.kind), read_pages(path)
        result = interpret(_printed(document, schema), pages, schema)
        for field in schema.fields:
            want = document.fields[field.name]
            got = result["values"][field.name]
            assert got == pytest.approx(want) if field.kind == "amount" and want is not None else got == want, \
                (document.layout, field.name, got, want)
            source = result["fields"][field.name]["source"]
            if document.printed[field.name] is not None:
                assert pages[source["page"] - 1][source["start"]:source["end"]] == source["text"]
        jsonschema.validate(result["values"], schema.schema)


def test_text_that_is_not_in_the_document_becomes_null(synthetic_pdfs):
    path, document = next((p, d) for p, d in synthetic_pdfs if d.kind == "invoice")
    schema = load_schema("invoice")
    answer = {**_printed(document, schema), "invoice_number": "INV-NOT-THERE-99", "total_amount": "$999,999.99"}
    result = interpret(answer, read_pages(path), schema)
    assert result["values"]["invoice_number"] is None and result["values"]["total_amount"] is None
    assert "not in the document" in result["fields"]["invoice_number"]["note"]
    assert result["values"]["vendor_name"] == document.fields["vendor_name"]


def test_currency_falls_back_to_the_one_printed_with_the_amount(synthetic_pdfs):
    path, document = next((p, d) for p, d in synthetic_pdfs if d.kind == "invoice")
    schema = load_schema("invoice")
    result = interpret({**_printed(document, schema), "currency": None}, read_pages(path), schema)
    assert result["values"]["currency"] == document.fields["currency"]


def test_a_value_the_user_schema_rejects_is_dropped_and_null_must_be_allowed():
    schema = from_json_schema("mine", {"type": "object", "properties": {
        "code": {"type": ["string", "null"], "pattern": "^[A-Z]{3}-[0-9]+$"}}, "required": ["code"]})
    result = interpret({"code": "abc-1"}, ["Code: abc-1"], schema)
    assert result["values"] == {"code": None} and "does not fit" in result["fields"]["code"]["note"]
    strict = from_json_schema("strict", {"type": "object", "properties": {"code": {"type": "string"}},
                                         "required": ["code"]})
    with pytest.raises(InvalidRequestError, match="Allow null"):
        interpret({"code": None}, ["nothing here"], strict)


def test_user_schema_kinds_and_bad_schemas(tmp_path):
    (tmp_path / "po.json").write_text(json.dumps({"type": "object", "properties": {
        "po_date": {"type": ["string", "null"], "format": "date"}, "amount": {"type": ["number", "null"]},
        "currency": {"type": ["string", "null"]}, "status": {"enum": ["open", "closed", None]},
        "buyer": {"type": ["string", "null"], "x-kind": "name"}}}))
    schema = load_schema(str(tmp_path / "po.json"))
    assert [f.kind for f in schema.fields] == ["date", "amount", "currency", "choice", "name"]
    with pytest.raises(InvalidRequestError, match="built-in name"):
        load_schema("no-such-schema")
    (tmp_path / "bad.json").write_text('{"type": "object", "properties": {"a": {"type": "strin"}}}')
    with pytest.raises(InvalidRequestError, match="not a valid JSON Schema"):
        load_schema(str(tmp_path / "bad.json"))
    (tmp_path / "empty.json").write_text('{"type": "object"}')
    with pytest.raises(InvalidRequestError, match="properties"):
        load_schema(str(tmp_path / "empty.json"))


def test_tiny_model_results_always_validate_and_invent_nothing(docs_engine, synthetic_pdfs):
    for path, document in synthetic_pdfs[:4]:
        schema, pages = load_schema(document.kind), read_pages(path)
        result = extract_pages(pages, schema, docs_engine, max_new_tokens=400)
        jsonschema.validate(json.loads(result["answer"]), schema.generation_schema())
        jsonschema.validate(result["values"], schema.schema)
        for field in schema.fields:
            entry = result["fields"][field.name]
            assert 0.0 <= entry["confidence"] <= 1.0
            if entry["value"] is not None and field.kind != "choice":  # a choice need not be printed
                assert entry["source"] is not None and entry["source"]["page"] == 1


def test_classify_picks_a_kind_with_a_confidence(docs_engine, synthetic_pdfs):
    result = classify_pages(read_pages(synthetic_pdfs[0][0]), docs_engine)
    assert result["kind"] in KINDS and 0.0 <= result["confidence"] <= 1.0


def _gold_file(synthetic_pdfs, tmp_path, broken=False):
    lines = [{"file": str(path), "kind": doc.kind, "fields": doc.fields} for path, doc in synthetic_pdfs]
    if broken:
        (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 nothing")
        lines.append({"file": "broken.pdf", "kind": "invoice", "fields": {"invoice_number": "1"}})
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return tmp_path / "gold.jsonl"


def test_scorer_gives_one_for_right_answers_and_less_for_the_regex_baseline(synthetic_pdfs, tmp_path):
    by_text = {read_pages(path)[0]: doc for path, doc in synthetic_pdfs}
    oracle = lambda pages, schema: interpret(_printed(by_text[pages[0]], schema), pages, schema)  # noqa: E731
    gold = _gold_file(synthetic_pdfs, tmp_path, broken=True)
    report = evaluate_docs(gold, oracle, classify=lambda pages: by_text[pages[0]].kind)
    right = len(synthetic_pdfs)
    assert report.documents == right + 1 and report.failures and "broken.pdf" in report.failures[0]
    assert report.field_accuracy == pytest.approx((report.field_accuracy * 0 + sum(
        len(d.fields) for _, d in synthetic_pdfs)) / (sum(len(d.fields) for _, d in synthetic_pdfs) + 1))
    assert report.accuracy_by_kind["contract"] == 1.0 and report.accuracy_by_kind["ticket"] == 1.0
    assert report.kind_accuracy == pytest.approx(right / (right + 1))
    assert report.answer_valid is None  # no model answer to check
    baseline = evaluate_docs(_gold_file(synthetic_pdfs, tmp_path), lambda pages, schema: regex_baseline(pages, schema))
    assert baseline.schema_valid == 1.0 and baseline.field_accuracy < 1.0


def test_answer_fits_checks_the_raw_answer():
    from slmkit.docs.evaluate import answer_fits

    schema = load_schema("ticket")
    good = dict.fromkeys((f.name for f in schema.fields), None)
    assert answer_fits(json.dumps(good), schema)
    assert not answer_fits(json.dumps({**good, "priority": "Whenever"}), schema)
    assert not answer_fits('{"ticket_id": "T1"', schema) and not answer_fits("Sure! Here it is:", schema)


def test_gold_file_errors_name_the_line(tmp_path):
    (tmp_path / "gold.jsonl").write_text('{"file": "a.pdf", "kind": "invoice", "fields": {}}\n{"file": 3}\n')
    with pytest.raises(InvalidRequestError, match="gold.jsonl:2"):
        evaluate_docs(tmp_path / "gold.jsonl", regex_baseline)
