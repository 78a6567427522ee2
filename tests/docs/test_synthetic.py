"""The synthetic documents: enough varied tune layouts, printed values that read back as the gold
answers, and held-out documents that extending the tune layouts leaves as they were."""

import hashlib
import json
import re

from slmkit.docs.normalize import normalize, same_value
from slmkit.docs.schemas import load_schema
from slmkit.docs.synthetic import HELDOUT_LAYOUTS, TUNE_LAYOUTS, make_documents

# sha256 of the first 160 held-out documents (seed 3, as examples/docs/build_data.py makes them):
# the documents the held-out numbers in docs/documents.md were measured on.
HELDOUT_DIGEST = "8415d32bda009de9c66a76125c3e62ac0353f3546d404f388096793fcffbef5d"


def test_every_kind_has_at_least_three_tune_layouts_none_held_out():
    for kind, names in TUNE_LAYOUTS.items():
        assert len(names) >= 3, kind
        assert not set(names) & set(HELDOUT_LAYOUTS[kind]), kind


def test_every_printed_value_of_the_tune_layouts_reads_back_as_its_gold_answer():
    documents = make_documents(12 * sum(map(len, TUNE_LAYOUTS.values())), TUNE_LAYOUTS, seed=7)
    for document in documents:
        for field in load_schema(document.kind).fields:
            got = normalize(field.kind, document.printed[field.name]) if not field.choices else document.printed[field.name]
            assert same_value(field.kind, got, document.fields[field.name]), (document.layout, field.name)


def test_the_tune_layouts_vary_wordings_and_formats():
    documents = make_documents(24 * sum(map(len, TUNE_LAYOUTS.values())), TUNE_LAYOUTS, seed=7)
    totals = [d.printed["total_amount"] for d in documents if d.kind == "invoice"]
    assert {"US$", "$", "£", "USD", "EUR", "CHF"} <= {re.sub(r"[\d.,' ]", "", total) for total in totals}
    assert any(t.startswith("USD") for t in totals) and any(t.endswith("USD") for t in totals)
    dates = [d.printed["invoice_date"] for d in documents if d.kind == "invoice"]
    assert any(re.fullmatch(r"\d\d/\d\d/\d{4}", day) and int(day[:2]) <= 12 < int(day[3:5]) for day in dates)  # US
    clauses = [d for d in documents if d.layout == "clauses"]
    text = ["\n".join(line[2] for line in d.lines) for d in clauses]
    first_is_provider = [t.index(d.fields["provider_name"]) < t.index(d.fields["client_name"])
                         for d, t in zip(clauses, text, strict=True)]
    assert any(first_is_provider) and not all(first_is_provider)  # parties in either order


def test_extending_the_tune_layouts_leaves_the_held_out_documents_as_they_were():
    digest = hashlib.sha256()
    for document in make_documents(160, HELDOUT_LAYOUTS, 3):
        digest.update(json.dumps([document.kind, document.layout, document.fields, document.printed, document.lines,
                                  document.subject], default=str).encode())
    assert digest.hexdigest() == HELDOUT_DIGEST, "the held-out documents changed: their numbers are no longer comparable"
