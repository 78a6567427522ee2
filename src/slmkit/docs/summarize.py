"""``slm docs summarize FILE``: a short summary naming the parties and the subject of a document.

Nothing in a summary is written by the model. Free generation from a 135M model drifts: it
invents names, numbers and topics that are not in the document (the ``free`` row of
``bench/docs.py --summaries`` measures how often it misses the real ones). So:

- **Parties and key facts** come from the extraction (:mod:`slmkit.docs.extract`): text the model
  copied under a JSON constraint and code found in the document, normalized. The first sentence
  is built from those fields (:func:`headline`, also ``slm docs organize``'s summary column).
- **The subject and each section's gist** are sentences chosen from the document itself
  (extractive), copied verbatim, so a summary can be incomplete but never says something the
  document does not. The subject is the document's own statement of it when it has one — a
  ``Subject:``/``Re:``/``Regarding:`` line, else a title (a Markdown heading or an all-caps line
  of two or more words) on the first page; otherwise the most central sentence. A section's gist
  is its most central sentence: every candidate is embedded with minilm-l6 and the one most
  similar to the rest (highest mean cosine) wins. Chosen on the tune layouts' ``dev`` split
  (subject words present: centrality alone 0.03, with stated subjects first 0.42); the held-out
  numbers are in docs/documents.md.

Long documents (hundreds of pages) are split into sections — at headings (Markdown ``#``, short
all-caps lines, numbered headings such as ``4. Term``) or else page by page — and summarized
section by section (``progress`` is called per section), then combined: the headline, the
subject, and the gists of the ``max_gists`` sections closest to the whole, in document order.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

# Per kind: the pieces of the headline, each shown when its fields were found ({money:FIELD} is an
# amount with the document's currency).
HEADLINE_PARTS = {
    "invoice": ["Invoice {invoice_number}", "from {vendor_name}", "to {customer_name}", "dated {invoice_date}",
                "for {money:total_amount}", "due {due_date}"],
    "contract": ["Contract between {provider_name}", "and {client_name}", "from {effective_date}", "to {end_date}",
                 "worth {money:contract_value}", "under the law of {governing_law}"],
    "ticket": ["{priority} ticket {ticket_id}", "from {customer_name}", "about {product}", "opened {opened_date}",
               "- {subject}"],
}
MIN_SENTENCE_WORDS = 2  # words of 3+ letters in a candidate sentence
MAX_SENTENCE_CHARS = 300
MIN_SECTION_CHARS = 200  # shorter sections join the one before
HEAD_PAGES = 2  # parties are named at the start: the extraction reads the first pages only


@dataclasses.dataclass
class Section:
    title: str  # the heading, or "page N"
    page: int  # 1-based page the section starts on
    text: str


def headline(kind: str, values: dict) -> str:
    """One sentence naming who, what and how much, from the extracted fields (no generation)."""
    found = {k: v for k, v in values.items() if v is not None}
    parts = HEADLINE_PARTS.get(kind, [f"{kind.capitalize()}:", *(f"{k} {{{k}}}" for k in found)])
    pieces = []
    for part in parts:
        names = re.findall(r"\{(?:money:)?(\w+)\}", part)
        if not names or not all(n in found for n in names):
            if part == parts[0]:
                pieces.append(kind.capitalize())
            continue
        for name in names:
            value = found[name]
            text = f"{value:,.2f} {found.get('currency', '')}".strip() if f"{{money:{name}}}" in part else str(value)
            part = part.replace(f"{{money:{name}}}", text).replace(f"{{{name}}}", text)
        pieces.append(part)
    return " ".join(pieces) + "."


HEADING = re.compile(r"^(?:#{1,6}\s+\S.*|[A-Z][A-Z0-9 &,'()/-]{3,60}|\d+(?:\.\d+)*\.?\s+[A-Z][\w ,'&/-]{1,60}\.?)$")


def split_sections(pages: list[str]) -> list[Section]:
    """Sections at headings, else one per page; a section under ``MIN_SECTION_CHARS`` joins the previous one."""
    sections: list[Section] = []
    for number, page in enumerate(pages, 1):
        current = Section(f"page {number}", number, "")
        for line in page.splitlines():
            stripped = line.strip()
            if HEADING.match(stripped) and len(stripped.split()) <= 8 and current.text.strip():
                sections.append(current)
                current = Section(stripped.lstrip("#").strip(), number, "")
            elif HEADING.match(stripped) and not current.text.strip():
                current.title = stripped.lstrip("#").strip()
            current.text += line + "\n"
        sections.append(current)
    merged: list[Section] = []
    for section in sections:
        if merged and len(merged[-1].text.strip()) < MIN_SECTION_CHARS:
            merged[-1].text += section.text
        elif section.text.strip():
            merged.append(section)
    return merged or [Section("page 1", 1, "")]


def sentences(text: str) -> list[str]:
    """Candidate sentences of layout text: split at line ends, column gaps (3+ spaces) and
    sentence ends; runs of spaces squeezed; fragments with fewer than ``MIN_SENTENCE_WORDS`` words
    or mostly digits (amounts, dates, ids) dropped, unless nothing else is left."""
    pieces = []
    for line in text.splitlines():
        for column in re.split(r" {3,}|\t", line.strip().lstrip("#").strip()):
            pieces += [p.strip() for p in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", column) if p.strip()]
    pieces = [" ".join(p.split())[:MAX_SENTENCE_CHARS] for p in pieces]
    wordy = [p for p in pieces if len(re.findall(r"[A-Za-z]{3,}", p)) >= MIN_SENTENCE_WORDS
             and sum(c.isdigit() for c in p) <= 0.2 * len(p)]
    return wordy or pieces


SUBJECT_LINE = re.compile(r"^(?:subject|re|regarding|concerning|title|about|topic|summary|issue|short description)\s*:\s*"
                          r"(\S.*)$", re.IGNORECASE)
TITLE_LINE = re.compile(r"^(?:#{1,6}\s+\S.*|[A-Z][A-Z&,'()/-]*(?: [A-Z&,'()/-]+)+)$")


def stated_subject(pages: list[str], parties: list[str] = ()) -> str | None:
    """The subject as the document states it: a Subject/Re/Regarding line on the first pages, else
    the first title on the first page (a Markdown heading or an all-caps line of 2+ words)."""
    head = [s for page in pages[:HEAD_PAGES] for s in sentences(page)]
    # also whole lines, spaces squeezed: a help-desk export puts the label and the value in two columns
    head += [" ".join(line.split()) for page in pages[:HEAD_PAGES] for line in page.splitlines()]
    for candidate in head:
        match = SUBJECT_LINE.match(candidate)
        if match:
            return match.group(1)
    for candidate in sentences(pages[0]) if pages else []:
        if TITLE_LINE.match(candidate) and len(candidate.split()) <= 8 and not any(
                " ".join(name.split()).casefold() == candidate.casefold() for name in parties):  # a name in capitals
            return candidate.lstrip("#").strip()
    return None


def central(candidates: list[str], vectors) -> tuple[str, object]:
    """The candidate most similar on average to the others (first on a tie) and the mean vector."""
    import numpy as np

    centroid = vectors.mean(axis=0)
    scores = vectors @ centroid  # mean cosine to the others, up to a constant (unit vectors)
    return candidates[int(np.argmax(scores))], centroid


# "Attn: Liam Moreau", "Assignee: David Silva": an optional label, then 2-4 capitalized words only
NAME_LIKE = re.compile(r"^(?:[\w .'/-]+:\s*)?(?:[A-Z][\w'.-]*\s+){1,3}[A-Z][\w'.-]*$")


def names_someone(sentence: str, names: list[str]) -> bool:
    """Whether ``sentence`` is about who rather than what: it names one of the parties, gives an
    e-mail address or is only a (labelled) name."""
    squeezed = " ".join(sentence.split()).casefold()
    return ("@" in sentence or bool(NAME_LIKE.match(" ".join(sentence.split())))
            or any(" ".join(name.split()).casefold() in squeezed for name in names))


def gists(sections: list[Section], embedder, progress: Callable[[int, int], None] | None = None,
          parties: list[str] = ()) -> list[dict]:
    """Per section: ``{"title", "page", "gist", "vector"}`` (the section's mean sentence vector).
    A sentence that names one of ``parties`` is a gist only when nothing else is left."""
    out = []
    for index, section in enumerate(sections):
        every = sentences(section.text)
        candidates = [c for c in every if c.lstrip("#").strip() != section.title] or every  # the heading is the title
        candidates = [c for c in candidates if not names_someone(c, list(parties))] or candidates
        if candidates:
            vectors = embedder.embed(candidates)
            gist, centroid = central(candidates, vectors)
            out.append({"title": section.title, "page": section.page, "gist": gist, "vector": centroid})
        if progress:
            progress(index + 1, len(sections))
    return out


def combine(section_gists: list[dict], max_gists: int = 3) -> tuple[str, list[dict]]:
    """The subject (the gist closest to the whole document) and the ``max_gists`` gists closest to
    the whole, in document order."""
    import numpy as np

    if not section_gists:
        return "", []
    vectors = np.stack([g["vector"] for g in section_gists])
    whole = vectors.mean(axis=0)
    scores = vectors @ whole
    subject = section_gists[int(np.argmax(scores))]["gist"]
    keep = sorted(np.argsort(-scores, kind="stable")[:max_gists].tolist())
    return subject, [section_gists[i] for i in keep]


def distinct_parties(schema, values: dict) -> dict:
    """``values`` with a name field that repeats an earlier one (case aside) set to None: when the
    extraction gives one span as both vendor and customer, one of them is wrong, and a summary
    saying "from X to X" states it; it names X once."""
    out, seen = dict(values), set()
    for field in schema.fields:
        name = out[field.name] if field.kind == "name" else None
        if name is not None and " ".join(name.split()).casefold() in seen:
            out[field.name] = None
        elif name is not None:
            seen.add(" ".join(name.split()).casefold())
    return out


def summarize_pages(pages: list[str], engine, embedder, schema=None, *, max_gists: int = 3,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Summary of a document's ``pages``. ``schema`` (a :class:`~slmkit.docs.schemas.DocSchema`)
    or, when None, the document's classified kind says which fields to extract. Returns ``{"kind",
    "parties": [{"field", "name", "source"}], "subject", "sections": [{"title", "page", "gist"}],
    "summary"}``."""
    from slmkit.docs.classify import classify_pages
    from slmkit.docs.extract import extract_pages
    from slmkit.docs.schemas import load_schema

    head = pages[:HEAD_PAGES]
    if schema is None:
        schema = load_schema(classify_pages(head, engine, embedder=embedder)["kind"])
    extracted = extract_pages(head, schema, engine, with_confidence=False)
    values = distinct_parties(schema, extracted["values"])
    parties = [{"field": f.name, "name": values[f.name], "source": extracted["fields"][f.name]["source"]}
               for f in schema.fields if f.kind == "name" and values[f.name] is not None]
    sections = split_sections(pages)
    central_subject, chosen = combine(gists(sections, embedder, progress, [p["name"] for p in parties]), max_gists)
    subject = stated_subject(pages, [p["name"] for p in parties]) or central_subject
    text = headline(schema.name, values)
    if subject:
        text += f" Subject: {subject}"
    if len(sections) > 1:
        text += " " + " ".join(f"[{g['title']}] {g['gist']}" for g in chosen if g["gist"] != subject)
    return {"kind": schema.name, "values": extracted["values"], "parties": parties, "subject": subject,
            "sections": [{k: g[k] for k in ("title", "page", "gist")} for g in chosen],
            "section_count": len(sections), "summary": text.strip()}


def lead_summary(pages: list[str], words: int) -> str:
    """The naive peer: the document's first ``words`` words (the lead baseline of summarization)."""
    return " ".join(" ".join(pages).split()[:words])


STOPWORDS = {"the", "and", "for", "with", "from", "after", "when", "not", "our", "your", "since", "per", "to", "of",
             "on", "at", "in", "a", "an", "is"}


def coverage(summary: str, parties: list[str], subject: str) -> dict:
    """How much of what a summary must say it says: ``parties`` (share of the gold names present,
    case and spacing aside) and ``subject`` (share of the gold subject's content words present)."""
    squeezed = " ".join(summary.casefold().split())
    names = [p for p in parties if p]
    found = sum(" ".join(p.casefold().split()) in squeezed for p in names)
    words = {w for w in re.findall(r"[a-z0-9]+", subject.casefold()) if w not in STOPWORDS and len(w) > 2}
    present = set(re.findall(r"[a-z0-9]+", squeezed))
    return {"parties": found / len(names) if names else 1.0,
            "subject": len(words & present) / len(words) if words else 1.0,
            "words": len(summary.split())}
