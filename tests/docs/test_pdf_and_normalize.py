"""Reading documents (layout text, scans, broken files) and normalizing printed values."""

import pytest

from slmkit.docs.normalize import normalize, normalize_amount, normalize_currency, normalize_date, same_value
from slmkit.docs.pdf import read_pages
from slmkit.kb.ingest import DocumentError


def test_every_printed_value_is_in_the_layout_text(synthetic_pdfs):
    from slmkit.docs.extract import locate

    for path, document in synthetic_pdfs:
        pages = read_pages(path)
        for name, printed in document.printed.items():
            if printed is not None:
                found = locate(printed, pages)
                assert found is not None, (path.name, name, printed)
                assert " ".join(found["text"].split()).casefold() == " ".join(printed.split()).casefold()
                assert pages[found["page"] - 1][found["start"]:found["end"]] == found["text"]


def test_layout_keeps_columns_on_their_line(synthetic_pdfs):
    path, document = next((p, d) for p, d in synthetic_pdfs if d.layout == "classic")
    text = read_pages(path)[0]
    vendor_line = next(line for line in text.splitlines() if document.fields["vendor_name"] in line)
    assert "INVOICE" in vendor_line  # drawn at the same height, far right


def test_scanned_pdf_says_ocr_is_not_included(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 60, style="F")  # an image-only page: no text layer
    pdf.output(str(tmp_path / "scan.pdf"))
    with pytest.raises(DocumentError, match="OCR is not included"):
        read_pages(tmp_path / "scan.pdf")


@pytest.mark.parametrize("content", [b"", b"%PDF-1.7\n garbage", b"not a pdf at all"])
def test_broken_pdf_is_an_error_naming_the_file(tmp_path, content):
    (tmp_path / "broken.pdf").write_bytes(content)
    with pytest.raises(DocumentError, match="broken.pdf"):
        read_pages(tmp_path / "broken.pdf")


def test_text_files_and_unsupported_types(tmp_path):
    (tmp_path / "note.txt").write_text("Invoice No: 42\n\n\n\nTotal:      $10.00   \n", encoding="utf-8")
    assert read_pages(tmp_path / "note.txt") == ["Invoice No: 42\n\nTotal:   $10.00"]
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    with pytest.raises(DocumentError, match="unsupported file type"):
        read_pages(tmp_path / "sheet.xlsx")


@pytest.mark.parametrize("text,iso", [("14 March 2026", "2026-03-14"), ("March 14, 2026", "2026-03-14"),
                                      ("2026-03-14", "2026-03-14"), ("25/03/2026", "2026-03-25"),
                                      ("05.08.2025", "2025-08-05"), ("14-Mar-2026", "2026-03-14"),
                                      ("March 2026", None), ("soon", None)])
def test_dates(text, iso):
    assert normalize_date(text) == iso


@pytest.mark.parametrize("text,amount,code", [("$1,234.50", 1234.5, "USD"), ("1.234,50 EUR", 1234.5, "EUR"),
                                              ("£12.00", 12.0, "GBP"), ("CHF 12'345.00", 12345.0, "CHF"),
                                              ("1 234,50 EUR", 1234.5, "EUR"), ("12.5", 12.5, None)])
def test_amounts_and_currencies(text, amount, code):
    assert normalize_amount(text) == amount
    assert normalize_currency(text) == code


def test_currency_symbols_and_codes():
    assert [normalize_currency(t) for t in ["$", "£", "eur", "CHF", "nothing"]] == ["USD", "GBP", "EUR", "CHF", None]


def test_generated_gold_is_what_normalizing_the_printed_text_gives(synthetic_pdfs):
    from slmkit.docs.schemas import load_schema

    for _, document in synthetic_pdfs:
        for field in load_schema(document.kind).fields:
            value = normalize("text" if field.kind == "choice" else field.kind, document.printed[field.name])
            assert same_value(field.kind, value, document.fields[field.name]), (document.layout, field.name)


def test_scoring_rules():
    assert same_value("amount", 10.004, 10.0) and not same_value("amount", 10.006, 10.0)
    assert same_value("name", "ACME  Ltd", "acme ltd") and not same_value("id", "inv-1", "INV-1")
    assert same_value("date", None, None) and not same_value("date", "2026-01-01", None)
