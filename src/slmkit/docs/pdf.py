"""Document text, page by page, with its layout kept: PDFs through pypdf's layout mode (columns,
key-value boxes and fixed-width printouts stay on their lines), plain text files as one page.

PDFs are parsed in a child process capped in time and memory, as the knowledge base does, so a
hostile PDF (a decompression bomb, a looping page tree) fails alone. A PDF with no text layer
(a scan) is an error that says OCR is not included.
"""

from __future__ import annotations

import re
from pathlib import Path

from slmkit.kb.ingest import PDF_TIMEOUT_S, DocumentError, read_pdf_layout_isolated, read_pdf_texts

TEXT_SUFFIXES = (".txt", ".md")


def squeeze(text: str) -> str:
    """Layout text made compact: trailing spaces dropped, runs of 4+ spaces cut to 3 (columns
    stay apart), blank-line runs cut to one."""
    lines = [re.sub(r" {4,}", "   ", line.rstrip()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def read_pages(path: str | Path, isolated: bool = True) -> list[str]:
    """The text of each page of ``path`` (a .pdf, or a .txt/.md file read as one page)."""
    file = Path(path)
    if not file.is_file():
        raise DocumentError(f"{file} does not exist or is not a file. Give .pdf or .txt documents.")
    suffix = file.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        try:
            return [squeeze(file.read_text(encoding="utf-8"))]
        except UnicodeDecodeError as exc:
            raise DocumentError(f"{file.name}: not UTF-8 text ({exc.reason}); save it as UTF-8.") from exc
    if suffix != ".pdf":
        raise DocumentError(f"{file.name}: unsupported file type; give .pdf, .txt or .md documents.")
    pages = read_pdf_isolated(file) if isolated else read_pdf_text(file)
    if not any(page.strip() for page in pages):
        raise DocumentError(f"{file.name}: the PDF has no text layer (a scanned image?). OCR is not included in "
                            "slmkit: run it through an OCR tool such as ocrmypdf first, then extract from its output.")
    return pages


def read_pdf_text(file: Path) -> list[str]:
    """Layout text of every page (in this process)."""
    return [squeeze(text) for text in read_pdf_texts(file, layout=True)]


def read_pdf_isolated(file: Path, timeout_s: float = PDF_TIMEOUT_S) -> list[str]:
    """:func:`read_pdf_text` in a fresh interpreter capped at ``timeout_s`` and 1 GB (the knowledge
    base's isolated reader, in layout mode)."""
    return [squeeze(text) for text in read_pdf_layout_isolated(file, timeout_s)]
