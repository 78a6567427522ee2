"""The spans of a document a field could take: what extraction lets the model choose from.

Each string field of the generation schema becomes an ``enum`` of these spans (or null), so
constrained decoding can only write text the document contains, and the model's job is a choice
between a few typed spans instead of free copying. Candidates by field kind:

- ``date``: the spans dateparser's ``search_dates`` finds that read as a full date;
- ``amount``: runs of money-looking tokens (digits, a currency symbol or code) that end in cents
  or carry a currency and that price-parser reads as a number;
- ``currency``: ISO 4217 codes and currency symbols printed in the document (babel's tables);
- ``id``: tokens of 3+ characters with a digit in them (``INV-204``, ``#5521``, ``A72292``), not
  part of a date;
- ``name``: word spans without digits that start with a capital letter;
- ``text``: any word span of a clause.

Spans never cross a column gap (two or more spaces), a dot leader, a label separator (``: ``,
`` - ``) or a bracket, and come in document order without repeats.
"""

from __future__ import annotations

import functools
import re

MAX_WORDS = {"name": 6, "text": 8}
MAX_CANDIDATES = 1500  # beyond this a field falls back to a plain string (checked against the document after)
_CLAUSE_SPLIT = re.compile(r"\s{2,}|\.{3,}|:\s|\s[-–|]\s|[()\[\]{}<>\"“”;]")
_EDGE = ",;:!?'\""


def clauses(pages: list[str]) -> list[str]:
    """The pieces of every line between column gaps, leaders, label separators and brackets."""
    out = []
    for page in pages:
        for line in page.splitlines():
            out += [piece.strip() for piece in _CLAUSE_SPLIT.split(line) if piece.strip()]
    return out


def _unique(spans) -> list[str]:
    return list(dict.fromkeys(span for span in spans if span))


def _word_spans(clause: str, max_words: int) -> list[str]:
    """Every run of up to ``max_words`` words; a span that ends in sentence punctuation also
    comes without it (``Ltd.`` at a sentence's end may or may not be part of the name)."""
    words = clause.split()
    spans = []
    for start in range(len(words)):
        for end in range(start + 1, min(start + max_words, len(words)) + 1):
            span = " ".join(words[start:end]).strip(_EDGE)
            spans.append(span)
            if span.endswith("."):
                spans.append(span.rstrip("."))
    return spans


def name_candidates(pages: list[str]) -> list[str]:
    return _unique(span for clause in clauses(pages) for span in _word_spans(clause, MAX_WORDS["name"])
                   if span[:1].isupper() and not any(c.isdigit() for c in span))


def text_candidates(pages: list[str]) -> list[str]:
    return _unique(span for clause in clauses(pages) for span in _word_spans(clause, MAX_WORDS["text"]))


def _tokens(pages: list[str]) -> list[str]:
    return [word.strip(_EDGE + ".()[]{}<>") for clause in clauses(pages) for word in clause.split()]


def id_candidates(pages: list[str]) -> list[str]:
    """Tokens of 3+ characters with a digit that are not part of a printed date (a ``18`` or
    ``14-Sep-2024`` is a date, not a number of anything)."""
    in_dates = {word.strip(_EDGE + ".") for span in date_candidates(pages) for word in span.split()}
    return _unique(token for token in _tokens(pages)
                   if len(token) >= 3 and any(c.isdigit() for c in token) and token not in in_dates)


@functools.cache
def _currency_marks() -> frozenset[str]:
    from slmkit.docs.normalize import _currency_codes

    codes, symbols = _currency_codes()
    return frozenset(codes) | frozenset(s for s in symbols if not s.isalpha())


def _money_like(token: str) -> bool:
    return any(c.isdigit() for c in token) or token in _currency_marks()


def amount_candidates(pages: list[str]) -> list[str]:
    """Runs of up to three money-like tokens (and their sub-runs) with a digit that price-parser
    reads as an amount: ``$1,234.50``, ``1.234,50 EUR``, ``CHF 12'345.00``, ``1 234,50 EUR``."""
    from price_parser import Price

    spans = []
    for clause in clauses(pages):
        words = clause.split()
        for start in range(len(words)):
            for end in range(start + 1, min(start + 3, len(words)) + 1):
                run = words[start:end]
                # a comma ends an amount written in words ("May 01, 2024" is no amount of 2,024)
                if not all(_money_like(w.strip(_EDGE)) for w in run) or any(w[-1] in _EDGE for w in run[:-1]):
                    break
                span = " ".join(run).strip(_EDGE).rstrip(".")
                # Money is printed with its cents or its currency; a bare "3" or "2024" is a
                # quantity or a year.
                money = re.search(r"\d[.,]\d{2}$", span) or any(w.strip(_EDGE) in _currency_marks() for w in run)
                if money and Price.fromstring(span).amount is not None:
                    spans.append(span)
    return _unique(spans)


def currency_candidates(pages: list[str]) -> list[str]:
    """Codes and symbols as printed: a standalone ``EUR``, or the ``$`` of ``$1,234.50``."""
    from price_parser import Price

    marks, spans = _currency_marks(), []
    for token in _tokens(pages):
        if token in marks and (not token.isalpha() or token.isupper()):
            spans.append(token)
        elif any(c.isdigit() for c in token):
            found = Price.fromstring(token).currency
            if found and found in token and found in marks:
                spans.append(found)
    return _unique(spans)


def date_candidates(pages: list[str]) -> list[str]:
    """Spans dateparser finds in each clause that normalize to a full date."""
    from dateparser.search import search_dates

    from slmkit.docs.normalize import normalize_date

    spans = []
    settings = {"REQUIRE_PARTS": ["day", "month", "year"]}
    for clause in clauses(pages):
        if not any(c.isdigit() for c in clause):
            continue
        for text, _ in search_dates(clause, languages=["en"], settings=settings) or []:
            text = text.strip(_EDGE + ".")
            # "60 days" is a relative date, not a printed one: a date has a day and a year at least.
            if len(re.findall(r"\d+", text)) < 2 or normalize_date(text) is None:
                continue
            # The shortest span that is still a full date: "on 14 May 2026" → "14 May 2026" (and
            # "on 10.02.2024" → "10.02.2024", which normalize reads day first only on its own).
            words = text.split()
            while len(words) > 1 and normalize_date(" ".join(words[1:])) is not None:
                words = words[1:]
            while len(words) > 1 and normalize_date(" ".join(words[:-1])) is not None:
                words = words[:-1]
            spans.append(" ".join(words))
    return _unique(spans)


BY_KIND = {"date": date_candidates, "amount": amount_candidates, "currency": currency_candidates,
           "id": id_candidates, "name": name_candidates, "text": text_candidates}


def field_candidates(pages: list[str], kinds) -> dict[str, list[str] | None]:
    """Candidates for each field kind in ``kinds`` (each kind computed once); None for a kind
    with no candidate rule (``choice``) or with more than :data:`MAX_CANDIDATES`."""
    out = {}
    for kind in dict.fromkeys(kinds):
        spans = BY_KIND[kind](pages) if kind in BY_KIND else None
        out[kind] = spans if spans is None or len(spans) <= MAX_CANDIDATES else None
    return out
