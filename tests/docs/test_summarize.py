"""`slm docs summarize`: parties from the extraction, the subject and section gists chosen from the
document's own sentences, long documents section by section; the coverage metric."""

import json

from typer.testing import CliRunner

from slmkit.cli import app
from slmkit.docs.pdf import read_pages
from slmkit.docs.summarize import combine, coverage, gists, lead_summary, sentences, split_sections, summarize_pages

TOPICS = {
    "PAYMENT TERMS": ["The client pays every invoice within thirty days of receipt.",
                      "Late payments carry interest of two percent per month.",
                      "Invoices are paid by bank transfer to the provider's account.",
                      "The weather in the harbour was grey that morning."],
    "CONFIDENTIALITY": ["Each party keeps the other party's confidential information secret.",
                        "Confidential information is not disclosed to third parties without consent.",
                        "The duty of confidentiality survives the end of this agreement.",
                        "A small dog slept under the reception desk."],
    "TERMINATION": ["Either party may terminate this agreement with ninety days written notice.",
                    "The agreement terminates at once if a party becomes insolvent.",
                    "On termination the client pays for the services already delivered.",
                    "Lunch is served in the canteen at noon."],
}


def _squeezed(text):
    return " ".join(text.split()).casefold()


def _long_pages(copies=4):
    """A contract of 3 * copies pages, one topic per page under its heading, padded to look long."""
    pages = []
    for round_ in range(copies):
        for heading, lines in TOPICS.items():
            pages.append(f"{heading}\n\n" + "\n".join(lines) + f"\n\nClause {round_ + 1} of this agreement ends here.")
    return pages


def test_sections_split_at_headings_and_pages():
    sections = split_sections(_long_pages(2))
    assert [s.title for s in sections] == list(TOPICS) * 2
    assert [s.page for s in sections] == [1, 2, 3, 4, 5, 6]
    text = "# Intro\n" + "Some words here. " * 20 + "\n# Fees\n" + "The fee is due monthly. " * 20
    assert [s.title for s in split_sections([text])] == ["Intro", "Fees"]
    assert sentences("Total   $10.00\nThe client pays. Late fees apply to all.") == \
        ["The client pays.", "Late fees apply to all."]


def test_each_gist_is_a_sentence_of_its_section_on_its_topic(minilm):
    sections = split_sections(_long_pages(1))
    calls = []
    found = gists(sections, minilm, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    for section, gist in zip(sections, found, strict=True):
        assert gist["gist"] in TOPICS[section.title][:3]  # never the off-topic line, never another section's
    subject, chosen = combine(found, max_gists=2)
    assert subject in [g["gist"] for g in found] and len(chosen) == 2
    assert [g["page"] for g in chosen] == sorted(g["page"] for g in chosen)


def test_summary_of_a_synthetic_document_copies_only_document_text(docs_engine, minilm, synthetic_pdfs):
    path, document = next((p, d) for p, d in synthetic_pdfs if d.kind == "ticket")
    pages = read_pages(path)
    from slmkit.docs.schemas import load_schema

    result = summarize_pages(pages, docs_engine, minilm, load_schema("ticket"))
    whole = _squeezed("\n".join(pages))
    assert result["kind"] == "ticket" and result["summary"].startswith(("Ticket", "Low", "Normal", "High", "Urgent"))
    assert result["subject"] and _squeezed(result["subject"]) in whole  # chosen, not written
    for party in result["parties"]:
        assert _squeezed(party["name"]) in whole and party["source"]["page"] == 1
    assert result["section_count"] == 1 and result["summary"].endswith(result["subject"])


def test_long_document_is_summarized_section_by_section(docs_engine, minilm, tmp_path):
    from fpdf import FPDF

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_font("Helvetica", "", 11)
    for page in _long_pages(4):
        pdf.add_page()
        for n, line in enumerate(page.splitlines()):
            pdf.text(20, 20 + 7 * n, line)
    pdf.output(str(tmp_path / "long.pdf"))
    pages = read_pages(tmp_path / "long.pdf")
    assert len(pages) == 12
    from slmkit.docs.schemas import load_schema

    calls = []
    result = summarize_pages(pages, docs_engine, minilm, load_schema("contract"), max_gists=3,
                             progress=lambda done, total: calls.append(done))
    assert result["section_count"] == 12 and calls == list(range(1, 13))
    assert len(result["sections"]) == 3
    for section in result["sections"]:
        assert section["gist"] in TOPICS[section["title"]][:3] and section["gist"] in result["summary"]


def test_coverage_counts_names_and_subject_words():
    score = coverage("Invoice from Acme  Ltd to Bolt BV. Subject: Consulting hours 3",
                     ["ACME Ltd", "Bolt BV", "Crane plc"], "Consulting hours, Software licence")
    assert score["parties"] == 2 / 3 and score["subject"] == 2 / 4 and score["words"] == 11
    assert lead_summary(["one two\nthree", "four five"], 4) == "one two three four"


def test_cli_summarize_prints_json(docs_model_dir, synthetic_pdfs):
    path = next(p for p, d in synthetic_pdfs if d.kind == "contract")
    result = CliRunner().invoke(app, ["docs", "summarize", str(path), "--schema", "contract", "-m", str(docs_model_dir),
                                      "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["file"] == path.name and record["kind"] == "contract" and record["summary"].startswith("Contract")


def test_a_stated_subject_comes_first():
    from slmkit.docs.summarize import stated_subject

    assert stated_subject(["From: Anna\nSubject: [T-1] Printer not detected\nHello"]) == "[T-1] Printer not detected"
    assert stated_subject(["SERVICE AGREEMENT\nAgreement no. 7\nThis agreement is signed today."]) == "SERVICE AGREEMENT"
    assert stated_subject(["Total   $10.00\nThe client pays on time."]) is None


def test_the_subject_is_what_not_who(minilm):
    from slmkit.docs.summarize import names_someone, stated_subject

    # a help-desk export: the label and the value in two columns of one line
    assert stated_subject(["Ticket ID:   #4471\nSummary:     Printer not detected on network\n"]) == \
        "Printer not detected on network"
    # a vendor's name in capitals heads an invoice: not its title
    assert stated_subject(["SUNRISE FOODS PLC\n12 Mill Lane\n"], ["Sunrise Foods plc"]) is None
    assert names_someone("Attn: Liam Moreau", []) and names_someone("Maple Electric plc", ["Maple Electric plc"])
    assert not names_someone("Printer not detected on network", ["Maple Electric plc"])
    page = ("Maple Electric plc\nAttn: Liam Moreau\nE-mail: liam.moreau@example.com\n"
            "Maple Electric plc supplies the printer installation service.\nPrinter installation and network setup")
    subject, _ = combine(gists(split_sections([page]), minilm, parties=["Maple Electric plc"]))
    assert subject == "Printer installation and network setup"


def test_the_same_name_for_both_parties_is_given_once():
    from slmkit.docs.schemas import load_schema
    from slmkit.docs.summarize import distinct_parties, headline

    schema = load_schema("invoice")
    values = {f.name: None for f in schema.fields} | {"invoice_number": "A1", "vendor_name": "Acme Ltd",
                                                      "customer_name": "ACME  Ltd"}
    kept = distinct_parties(schema, values)
    assert kept["vendor_name"] == "Acme Ltd" and kept["customer_name"] is None
    assert headline("invoice", kept) == "Invoice A1 from Acme Ltd."
    assert distinct_parties(schema, values | {"customer_name": "Bolt BV"}) == values | {"customer_name": "Bolt BV"}
