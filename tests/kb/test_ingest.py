"""Reading documents: each format, cleaning, heading paths, pages, and per-document errors."""

import time

import pytest
from kb_builders import make_pdf, pdf_from_objects

from slmkit.kb.ingest import DocumentError, chunk_sections, find_documents, read_pdf_isolated, read_sections


def test_markdown_sections_keep_their_heading_path(docs):
    sections = read_sections(docs / "guides" / "billing.md")
    titles = [" > ".join(s.titles) for s in sections]
    assert titles == ["Billing", "Billing > Refunds", "Billing > Currencies"]
    assert "14 days" in sections[1].text


def test_python_names_and_operators_survive_markup_cleaning(tmp_path):
    path = tmp_path / "dunder.md"
    path.write_text("# Names\n\n**Note:** __init__ runs after __new__; -1**2 is -1 and f(**kwargs) works.\n")
    [section] = read_sections(path)
    assert section.text == "Note: __init__ runs after __new__; -1**2 is -1 and f(**kwargs) works."


def test_underlined_text_headings_become_sections(docs):
    sections = read_sections(docs / "setup.txt")
    assert [" > ".join(s.titles) for s in sections] == ["Installing the Widget", "Installing the Widget > Resetting"]
    assert "paperclip" in sections[1].text and "=====" not in sections[0].text


def test_html_loses_navigation_scripts_comments_and_hidden_text(docs):
    sections = read_sections(docs / "account.html")
    text = " ".join(s.text for s in sections)
    assert "Change password" in text
    for boilerplate in ("Pricing", "tracking", "color:red", "Copyright", "migrate auth", "hidden promo"):
        assert boilerplate not in text
    assert [" > ".join(s.titles) for s in sections] == ["Account > Passwords"]


def test_pdf_pages_are_numbered(docs):
    sections = read_sections(docs / "warranty.pdf")
    assert [(s.page, s.text) for s in sections] == [(1, "The warranty lasts two years from purchase."),
                                                    (2, "Warranty claims need the original receipt.")]


def test_chunks_split_long_sections_and_have_stable_ids(docs):
    from slmkit.kb.ingest import Section

    long_text = " ".join(f"Sentence number {i} says something about widgets." for i in range(60))
    chunks = chunk_sections([Section(["Guide", "Long"], long_text)], max_chars=300)
    assert len(chunks) > 5 and all(len(c.text) <= 300 for c in chunks)
    assert all(c.section == "Guide > Long" for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    again = chunk_sections([Section(["Guide", "Long"], long_text)], max_chars=300)
    assert [c.chunk_id for c in chunks] == [c.chunk_id for c in again]
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_find_documents_skips_hidden_and_unsupported_files(docs):
    (docs / ".cache").mkdir()
    (docs / ".cache" / "x.md").write_text("# hidden\n\ntext")
    (docs / "image.png").write_bytes(b"\x89PNG")
    names = sorted(f.relative_to(docs).as_posix() for f, _ in find_documents([docs]))
    assert names == ["account.html", "guides/billing.md", "setup.txt", "warranty.pdf"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.pdf", b"", "empty"),
    ("garbage.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\n%%EOF trailing junk \xff\xfe", "PDF"),
    ("not-a-pdf.pdf", b"this is plain text pretending to be a PDF", "PDF"),
    ("latin1.md", "# Caf\u00e9\n\nna\u00efve text".encode("latin-1"), "UTF-8"),
])
def test_hostile_documents_raise_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DocumentError, match=message):
        read_sections(path)


def test_encrypted_pdf_is_refused(tmp_path):
    from pypdf import PdfReader, PdfWriter

    source = tmp_path / "plain.pdf"
    source.write_bytes(make_pdf(["secret roadmap"]))
    writer = PdfWriter()
    writer.append(PdfReader(str(source)))
    writer.encrypt(user_password="hunter2", owner_password="owner")
    with (tmp_path / "locked.pdf").open("wb") as handle:
        writer.write(handle)
    with pytest.raises(DocumentError, match="encrypted"):
        read_sections(tmp_path / "locked.pdf")


def test_pdf_parsing_is_cut_off_after_its_time_limit(tmp_path):
    # With no time allowed, the child cannot answer: it is killed and the file reported.
    path = tmp_path / "slow.pdf"
    path.write_bytes(make_pdf(["x"]))
    with pytest.raises(DocumentError, match="took over"):
        read_pdf_isolated(path, timeout_s=0.0)


def test_decompression_bomb_pdf_is_a_per_document_error(tmp_path):
    import zlib

    bomb = zlib.compress(b"0" * (300 << 20), 9)  # 300 MB of content from a 0.3 MB stream
    stream = b"BT /F1 12 Tf 72 720 Td (x) Tj ET"
    pdf = make_pdf(["x"]).replace(
        f"<< /Length {len(stream)} >>\nstream\n".encode() + stream,
        f"<< /Length {len(bomb)} /Filter /FlateDecode >>\nstream\n".encode() + bomb)
    path = tmp_path / "bomb.pdf"
    path.write_bytes(pdf)
    try:
        sections = read_sections(path)
    except DocumentError:
        return  # refused: over the memory cap or rejected by pypdf's own limits
    assert sum(len(s.text) for s in sections) < 10_000_000  # or read, with pypdf's output cap


def test_entity_expansion_in_html_is_not_performed(tmp_path):
    """A billion-laughs DTD: html.parser never defines custom entities, so the page stays small."""
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    page = (f'<?xml version="1.0"?><!DOCTYPE html [<!ENTITY lol0 "lol">{entities}]>'
            "<html><body><h1>Billing</h1><p>Refunds take &lol9; five days.</p></body></html>")
    path = tmp_path / "laughs.html"
    path.write_text(page)
    started = time.perf_counter()
    text = " ".join(s.text for s in read_sections(path))
    assert time.perf_counter() - started < 5
    assert "Refunds take" in text and text.count("lol") < 100


def test_a_pdf_whose_page_tree_loops_is_a_per_document_error(tmp_path):
    """A page tree that lists itself as its own kid: the child process must not hang or crash the batch."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"]
    path = tmp_path / "loop.pdf"
    path.write_bytes(pdf_from_objects(objects))
    started = time.perf_counter()
    with pytest.raises(DocumentError, match="loop.pdf: not a readable PDF"):
        read_sections(path)
    assert time.perf_counter() - started < 40
