"""Reading documents into chunks: Markdown, plain text, HTML and PDF.

Each file becomes a list of :class:`Section` (a heading path and its text, a page for PDF),
cleaned of markup and navigation boilerplate, and each section is split into
:class:`ChunkText` pieces of at most ``max_chars`` characters along paragraph boundaries.
PDFs are parsed in a child process with a time and memory cap, because a hostile PDF can
make a parser spin or allocate without bound; a file that fails becomes a
:class:`DocumentError` for that file only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from slmkit.errors import SlmError

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".rst": "text",
            ".html": "html", ".htm": "html", ".pdf": "pdf"}
MAX_FILE_BYTES = 50 * 1024 * 1024
PDF_TIMEOUT_S = 30.0
PDF_MEMORY_BYTES = 1 << 30
# Python's html.parser takes quadratic time on some inputs (1 MB of "<!--", "<a" or "</" runs
# for minutes), so HTML over this size is parsed in the same capped child process as PDFs.
HTML_INLINE_BYTES = 64 * 1024
HTML_TIMEOUT_S = 4.0
MAX_CHUNK_CHARS = 700
# Bump when cleaning or chunking changes, so that re-ingesting rebuilds every document's chunks.
INGEST_VERSION = "2"


class DocumentError(SlmError):
    """One document could not be read; the rest of the batch still ingests."""


@dataclasses.dataclass
class Section:
    titles: list[str]
    text: str
    page: int | None = None


@dataclasses.dataclass
class ChunkText:
    section: str  # title path, "A > B > C"
    text: str
    position: int  # order of the chunk in its document
    page: int | None = None

    @property
    def chunk_id(self) -> str:
        """Stable across re-ingests of the same content: the same document gives the same ids."""
        key = f"{self.position}\x00{self.section}\x00{self.page}\x00{self.text}"
        return hashlib.sha256(key.encode()).hexdigest()[:24]


def find_documents(paths: list[Path]) -> list[tuple[Path, Path]]:
    """Supported files under ``paths`` as (file, root it was found under), sorted, hidden files skipped."""
    found = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            found.append((path.resolve(), path.resolve().parent))
        elif path.is_dir():
            root = path.resolve()
            for file in sorted(root.rglob("*")):
                relative = file.relative_to(root)
                if file.is_file() and file.suffix.lower() in SUFFIXES \
                        and not any(part.startswith(".") for part in relative.parts):
                    found.append((file, root))
        else:
            raise DocumentError(f"{path} does not exist. Give files or folders of .md, .txt, .html or .pdf documents.")
    return found


def read_sections(file: Path, inline: bool = False) -> list[Section]:
    """The sections of one document; raises :class:`DocumentError` if it cannot be read.
    ``inline``: parse here even where a capped child process would be used (inside that child)."""
    kind = SUFFIXES.get(file.suffix.lower())
    if kind is None:
        raise DocumentError(f"{file.name}: unsupported file type; use .md, .txt, .html or .pdf.")
    size = file.stat().st_size
    if size == 0:
        raise DocumentError(f"{file.name}: the file is empty.")
    if size > MAX_FILE_BYTES:
        raise DocumentError(f"{file.name}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit per document.")
    if kind == "pdf":
        return read_pdf_isolated(file)
    data = file.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{file.name}: not valid UTF-8 (byte {exc.start}); convert the file to UTF-8.") from exc
    if kind == "html":
        if len(data) > HTML_INLINE_BYTES and not inline:
            return read_isolated(file, "html", HTML_TIMEOUT_S)
        text = html_to_markdown(text)
    elif kind == "text":
        text = underlined_headings_to_markdown(text)
    return markdown_sections(text, default_title=file.stem)


# --- Markdown and text ---------------------------------------------------------------------

BOLD = re.compile(r"(?<![\w*])\*\*(?=[A-Za-z])([^*\n]+?)(?<=[A-Za-z.!?:])\*\*(?=\s|$|[,.;:!?)])")
# Every pattern here runs in linear time on hostile input (1 MB of "<!--", "[" or spaces): no
# two repeats can match the same characters, and link patterns stop at the next bracket.
HEADING = re.compile(r"^(#{1,6})\s+(\S.*)$")
IMAGE = re.compile(r"!\[([^\]\[\n]*)\]\([^()\n]*\)")
LINK = re.compile(r"\[([^\]\[\n]+)\]\([^()\n]*\)")
UNDERLINE = re.compile(r"^([=\-*~^#])\1{2,}\s*$")
UNDERLINE_LEVELS = {"*": 1, "=": 2, "-": 3, "~": 4, "^": 5, "#": 1}


def underlined_headings_to_markdown(text: str) -> str:
    """Turn reStructuredText-style headings (a line underlined with ===, ---, ***) into # headings."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        match = UNDERLINE.match(following)
        if line.strip() and match and len(following.strip()) >= len(line.strip()) - 2 and not line.startswith(" "):
            out.append("#" * UNDERLINE_LEVELS[match.group(1)] + " " + line.strip())
            index += 2
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


def markdown_sections(text: str, default_title: str) -> list[Section]:
    """Split Markdown at headings, keeping the path of enclosing headings for each part."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        content = clean_text("\n".join(body))
        if content:
            sections.append(Section([t for _, t in stack] or [default_title], content))
        body.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            title = match.group(2).rstrip().rstrip("#").rstrip() or match.group(2).strip()
            stack.append((level, strip_inline_markdown(title)))
        else:
            body.append(line)
    flush()
    return sections


def strip_inline_markdown(text: str) -> str:
    text = IMAGE.sub(r"\1", text)  # images keep only their alt text
    text = LINK.sub(r"\1", text)  # links keep their label
    # Bold markers only around words: "__init__", "x**2" and "**kwargs" are content, not markup.
    return BOLD.sub(r"\1", text).strip()


def strip_comments(text: str) -> str:
    """``text`` without ``<!-- ... -->`` comments; an unclosed one hides the rest, as in HTML.
    A scan, not a regex: a lazy ``<!--.*?-->`` takes quadratic time on many unclosed openers."""
    parts, position = [], 0
    while (start := text.find("<!--", position)) >= 0:
        parts.append(text[position:start])
        end = text.find("-->", start + 4)
        if end < 0:
            return "".join(parts)
        position = end + 3
    parts.append(text[position:])
    return "".join(parts)


def clean_text(text: str) -> str:
    """Drop HTML comments and link targets, normalize whitespace, keep paragraph breaks."""
    text = strip_comments(text)  # hidden comments are not document text
    text = strip_inline_markdown(text)
    text = text.replace("\x00", "")
    text = "\n".join(line.rstrip(" \t") for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# --- HTML ----------------------------------------------------------------------------------

BOILERPLATE_TAGS = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe",
                    "svg", "template", "button"]
# Text a reader never sees (hidden, zero-size, white on white) is a classic prompt-injection carrier.
HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0|"
                          r"(?<![-\w])color\s*:\s*(white|#fff\b|#ffffff|rgb\(\s*255\s*,\s*255\s*,\s*255\s*\))", re.I)


def html_to_markdown(html: str) -> str:
    """Main text of a page as Markdown headings and paragraphs, without navigation or hidden parts."""
    from bs4 import BeautifulSoup, Comment

    soup = BeautifulSoup(html, "html.parser")
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    for tag in soup.find_all(BOILERPLATE_TAGS):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": ["navigation", "banner", "contentinfo"]}):
        tag.decompose()
    for tag in soup.find_all(style=HIDDEN_STYLE):
        tag.decompose()
    for tag in soup.find_all(hidden=True):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    for level in range(1, 7):
        for tag in root.find_all(f"h{level}"):
            tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    for tag in root.find_all(["p", "div", "li", "pre", "tr", "br", "section", "table", "blockquote"]):
        tag.insert_before("\n\n" if tag.name not in ("li", "br", "tr") else "\n")
    text = root.get_text()
    return re.sub(r"[ \t]+", " ", text)


# --- PDF -----------------------------------------------------------------------------------


def read_pdf_texts(file: Path, layout: bool = False) -> list[str]:
    """Text of every page of a PDF, in this process (the isolated child calls it): pypdf's plain
    extraction, or its layout mode (columns and key-value boxes kept on their lines) for
    ``slm docs``. Encrypted, malformed or unparsable files are a :class:`DocumentError`."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(file))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{file.name}: the PDF is encrypted; save an unencrypted copy and use that.")
        mode = {"extraction_mode": "layout"} if layout else {}
        return [page.extract_text(**mode) or "" for page in reader.pages]
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError,
            NotImplementedError, OSError, ZeroDivisionError) as exc:
        message = str(exc).split("\n")[0][:200]
        raise DocumentError(f"{file.name}: not a readable PDF ({type(exc).__name__}: {message}).") from exc


def read_pdf_pages(file: Path) -> list[Section]:
    """Pages of a PDF as sections titled by the file name (runs inside the isolated child)."""
    texts = [clean_text(text) for text in read_pdf_texts(file)]
    return [Section([file.stem], text, page=number) for number, text in enumerate(texts, start=1) if text]


def pdf_child_main() -> None:
    """Entry point of the isolated reader: ``python -c ... FILE KIND`` prints one JSON result.
    KIND: ``pdf`` or ``html`` (sections, for the knowledge base) or ``pdf-layout`` (page texts in
    layout mode, for ``slm docs``)."""
    import sys

    file, kind = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "pdf")

    def read() -> dict:
        if kind == "pdf-layout":
            return {"pages": read_pdf_texts(file, layout=True)}
        sections = read_pdf_pages(file) if kind == "pdf" else read_sections(file, inline=True)
        return {"sections": [dataclasses.asdict(s) for s in sections]}

    write_child_result(file, kind.split("-")[0].upper(), read)


def write_child_result(file: Path, label: str, read) -> None:
    """In the isolated child: cap memory, run ``read()`` and print its dict as JSON, or
    ``{"error": message}`` for a bad file (any failure on hostile input is the file's error)."""
    import json
    import resource
    import sys

    resource.setrlimit(resource.RLIMIT_AS, (PDF_MEMORY_BYTES, PDF_MEMORY_BYTES))
    try:
        result = read()
    except DocumentError as exc:
        result = {"error": exc.message}
    except MemoryError:
        result = {"error": f"{file.name}: reading the {label} needed more than {PDF_MEMORY_BYTES >> 20} MB; "
                           "it is likely malformed or a decompression bomb."}
    except Exception as exc:  # a parser bug on hostile input must not take down the batch
        reason = "it decompresses past pypdf's size limit (a decompression bomb?)" \
            if type(exc).__name__ == "LimitReachedError" else f"the {label} parser failed ({type(exc).__name__})"
        result = {"error": f"{file.name}: {reason}."}
    sys.stdout.write(json.dumps(result))


def read_pdf_isolated(file: Path, timeout_s: float = PDF_TIMEOUT_S) -> list[Section]:
    """Parse a PDF in a child process capped at ``timeout_s`` seconds and 1 GB of memory."""
    return read_isolated(file, "pdf", timeout_s)


def read_pdf_layout_isolated(file: Path, timeout_s: float = PDF_TIMEOUT_S) -> list[str]:
    """:func:`read_pdf_texts` in layout mode, in the capped child process (for ``slm docs``)."""
    return run_in_child("slmkit.kb.ingest:pdf_child_main", file, ["pdf-layout"], "PDF", timeout_s)["pages"]


def read_isolated(file: Path, kind: str, timeout_s: float) -> list[Section]:
    """Parse ``file`` (``pdf`` or ``html``) in a child process capped at ``timeout_s`` seconds
    and 1 GB of memory."""
    result = run_in_child("slmkit.kb.ingest:pdf_child_main", file, [kind], kind.upper(), timeout_s)
    return [Section(**section) for section in result["sections"]]


def run_in_child(entry: str, file: Path, args: list[str], label: str, timeout_s: float) -> dict:
    """Run ``entry`` (``module:function``, which ends with :func:`write_child_result`) on
    ``file`` in a fresh interpreter and return its JSON result; a timeout, a crash or the
    child's error is a :class:`DocumentError` naming the file.

    A fresh interpreter rather than a fork: forking a process that runs torch's thread pools
    can crash the child, and multiprocessing's spawn/forkserver re-import the caller's main
    script. Starting Python and the parser costs about half a second per file.
    """
    import json
    import subprocess
    import sys

    module, function = entry.split(":")
    code = f"from {module} import {function}; {function}()"
    try:
        done = subprocess.run([sys.executable, "-c", code, str(file), *args], capture_output=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DocumentError(f"{file.name}: reading the {label} took over {timeout_s:.0f} s; it is likely malformed "
                            "or hostile.") from exc
    try:
        result = json.loads(done.stdout)
    except ValueError as exc:
        raise DocumentError(f"{file.name}: the {label} reader crashed (exit code {done.returncode}); "
                            "the file is likely malformed.") from exc
    if "error" in result:
        raise DocumentError(result["error"])
    return result


# --- chunking ------------------------------------------------------------------------------


def split_long(paragraph: str, max_chars: int) -> list[str]:
    """Split one paragraph at sentence ends (or spaces) into pieces of at most ``max_chars``."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces, current = [], ""
    for sentence in re.split(r"(?<=[.!?:])\s+", paragraph):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def chunk_sections(sections: list[Section], max_chars: int = MAX_CHUNK_CHARS) -> list[ChunkText]:
    """Pack each section's paragraphs into chunks of at most ``max_chars``; chunks never span sections."""
    chunks: list[ChunkText] = []
    for section in sections:
        title = " > ".join(section.titles)
        current = ""
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", section.text) if p.strip()]
        for paragraph in (piece for p in paragraphs for piece in split_long(p, max_chars)):
            if current and len(current) + 2 + len(paragraph) > max_chars:
                chunks.append(ChunkText(title, current, len(chunks), section.page))
                current = paragraph
            else:
                current = f"{current}\n\n{paragraph}" if current else paragraph
        if current:
            chunks.append(ChunkText(title, current, len(chunks), section.page))
    return chunks
