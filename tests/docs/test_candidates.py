"""Copy-constrained extraction: the candidate spans of each field kind, the per-document enum
schema, the tiny model's answers under it, prompt-lookup drafts that leave the output as it was,
and the kind by embedding centroids."""

import json

import jsonschema
import pytest

from slmkit.docs import candidates
from slmkit.docs.classify import classify_pages
from slmkit.docs.extract import build_request, document_candidates, extract_pages, locate
from slmkit.docs.pdf import read_pages
from slmkit.docs.schemas import load_schema
from slmkit.docs.synthetic import TUNE_LAYOUTS

INVOICE = """ACME TRADING LTD                      INVOICE
12 Mill Lane                          Invoice No.: INV-2041
                                      Date: 14 March 2026
Bill to: Bolt Supply BV               PO Number: PO-7781
Consulting hours      3      1.234,50 EUR
TOTAL.................... 1.481,40 EUR
The services were governed by the laws of England and Wales."""


def test_each_kind_finds_its_spans_and_not_the_others():
    pages = [INVOICE]
    assert {"14 March 2026"} == set(candidates.date_candidates(pages))
    assert {"1.234,50 EUR", "1.481,40 EUR"} <= set(candidates.amount_candidates(pages))
    assert "INV-2041" in candidates.id_candidates(pages) and "PO-7781" in candidates.id_candidates(pages)
    assert candidates.currency_candidates(pages) == ["EUR"]
    names = candidates.name_candidates(pages)
    assert "Bolt Supply BV" in names and "ACME TRADING LTD" in names
    assert not any(any(c.isdigit() for c in name) for name in names)  # a PO number is never a name
    assert "England and Wales" in candidates.text_candidates(pages)
    assert candidates.currency_candidates(["Total: $1,234.50"]) == ["$"]
    # the shortest span that is a date, so "10.02.2024" is read day first as printed alone
    assert candidates.date_candidates(["The services start on 10.02.2024 (the Effective Date)."]) == ["10.02.2024"]
    assert candidates.date_candidates(["Either party may terminate with 60 days notice."]) == []
    assert "01, 2024" not in " ".join(candidates.amount_candidates(["Signed May 01, 2024 for $5.00"]))


def test_every_printed_value_of_the_tune_layouts_is_a_candidate_found_in_the_document(synthetic_pdfs):
    tuned = [(p, d) for p, d in synthetic_pdfs if d.layout in TUNE_LAYOUTS[d.kind]]
    assert len(tuned) == sum(map(len, TUNE_LAYOUTS.values()))
    for path, document in tuned:
        schema, pages = load_schema(document.kind), read_pages(path)
        spans = document_candidates(pages, schema)
        for field in schema.fields:
            if field.choices:
                continue
            assert all(locate(span, pages) for span in spans[field.name]), field.name
            printed = document.printed[field.name]
            if printed is not None:  # as the page prints it (a printout's names are in capitals)
                assert printed.casefold() in {s.casefold() for s in spans[field.name]}, (document.layout, field.name)


def test_the_copy_schema_is_an_enum_of_spans_or_null():
    schema = load_schema("invoice")
    generation = schema.generation_schema({"invoice_number": ["INV-1", "PO-2"], "vendor_name": None})
    assert generation["properties"]["invoice_number"] == {"enum": ["INV-1", "PO-2", None]}
    assert generation["properties"]["vendor_name"]["type"] == ["string", "null"]  # no spans: free text
    assert schema.generation_schema()["properties"]["invoice_number"]["type"] == ["string", "null"]


def test_too_many_spans_fall_back_to_free_text(monkeypatch):
    monkeypatch.setattr(candidates, "MAX_CANDIDATES", 3)
    assert candidates.field_candidates([INVOICE], ["text", "date"]) == {"text": None, "date": ["14 March 2026"]}


def test_tiny_model_under_the_copy_constraint_writes_only_document_spans(docs_engine, synthetic_pdfs):
    for path, document in synthetic_pdfs[:3]:
        schema, pages = load_schema(document.kind), read_pages(path)
        result = extract_pages(pages, schema, docs_engine, max_new_tokens=400, with_confidence=False)
        spans = document_candidates(pages, schema)
        answer = json.loads(result["answer"])
        jsonschema.validate(answer, schema.generation_schema(spans))
        for field in schema.fields:
            if not field.choices and answer[field.name] is not None:
                assert answer[field.name] in spans[field.name]
                assert result["fields"][field.name]["source"] is not None


def test_prompt_lookup_drafts_leave_the_extraction_unchanged(docs_model_dir, synthetic_pdfs, tmp_path):
    """On llama.cpp (the engine that drafts constrained requests, each drafted token through the
    grammar), as the batch extractor loads it: 2-token drafts, the same tokens as without."""
    from slmkit.engine import load_engine
    from slmkit.export.gguf import export_gguf
    from slmkit.generate import collect

    gguf = export_gguf(str(docs_model_dir), "f32", tmp_path / "gguf")
    engine = load_engine(str(gguf.path), backend="llamacpp", prefix_cache_tokens=0, prompt_lookup=True)
    try:
        drafted_any = 0
        for path, document in synthetic_pdfs[:2]:
            schema, pages = load_schema(document.kind), read_pages(path)
            assert build_request(pages, schema).prompt_lookup_tokens == 2
            plain = collect(engine.stream(build_request(pages, schema, 120, prompt_lookup_tokens=0)))
            drafted = collect(engine.stream(build_request(pages, schema, 120)))
            assert drafted.token_ids == plain.token_ids
            drafted_any += drafted.stats.draft_tokens
        assert drafted_any > 0
    finally:
        engine.close()


def test_kind_by_embedding_centroids(minilm, synthetic_pdfs):
    for path, document in synthetic_pdfs:
        if document.layout in TUNE_LAYOUTS[document.kind]:
            result = classify_pages(read_pages(path), None, embedder=minilm)
            assert result["kind"] == document.kind and 1 / 3 < result["confidence"] <= 1.0


def test_own_kinds_are_classified_by_the_model(docs_engine, minilm, synthetic_pdfs):
    result = classify_pages(read_pages(synthetic_pdfs[0][0]), docs_engine, kinds=("memo", "letter"), embedder=minilm)
    assert result["kind"] in ("memo", "letter")


@pytest.mark.parametrize("text", ["", "no numbers at all here"])
def test_documents_without_candidates_give_empty_lists(text):
    assert candidates.date_candidates([text]) == [] and candidates.amount_candidates([text]) == []
