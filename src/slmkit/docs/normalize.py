"""From the text printed in a document to a comparable value, by well-kept libraries: dates by
dateparser (ISO 8601 out), amounts by price-parser (a float out, either decimal mark), currency
symbols and codes by babel's currency tables (ISO 4217 out)."""

from __future__ import annotations

import functools
import re

# A "$" alone is most often US dollars; babel lists it for several currencies.
PREFERRED_SYMBOLS = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "Fr.": "CHF", "kr": "SEK"}


@functools.cache
def _currency_codes() -> tuple[set[str], dict[str, str]]:
    """ISO 4217 codes babel knows, and symbol → code (English symbols)."""
    from babel.numbers import get_currency_symbol, list_currencies

    codes = set(list_currencies())
    symbols: dict[str, str] = {}
    for code in sorted(codes):
        symbol = get_currency_symbol(code, locale="en")
        if symbol != code:
            symbols.setdefault(symbol, code)
    symbols.update(PREFERRED_SYMBOLS)
    return codes, symbols


def normalize_currency(text: str) -> str | None:
    """``"$"`` → ``"USD"``, ``"eur"`` → ``"EUR"``, ``"1.234,50 EUR"`` → ``"EUR"``; None if none is named."""
    codes, symbols = _currency_codes()
    text = text.strip()
    if text.upper() in codes:
        return text.upper()
    if text in symbols:
        return symbols[text]
    for word in re.findall(r"[A-Za-z]{3}", text):
        if word.upper() in codes and word.isupper():
            return word.upper()
    from price_parser import Price

    found = Price.fromstring(text).currency
    if found:
        return normalize_currency(found) if found != text else symbols.get(found)
    return None


def normalize_amount(text: str) -> float | None:
    """``"1.234,50 EUR"`` → 1234.5, ``"$1,234.50"`` → 1234.5; None when there is no number."""
    from price_parser import Price

    amount = Price.fromstring(text).amount_float
    return round(amount, 2) if amount is not None else None


def normalize_date(text: str) -> str | None:
    """``"14 March 2026"``, ``"03/14/2026"``, ``"14.03.2026"`` → ``"2026-03-14"``; None if not a full date.
    Slashed dates are read month first (US) unless that cannot be a date; dotted ones day first."""
    import dateparser

    settings = {"REQUIRE_PARTS": ["day", "month", "year"]}
    if re.fullmatch(r"\s*\d{1,2}\.\d{1,2}\.\d{4}\s*", text):
        settings["DATE_ORDER"] = "DMY"  # dotted numeric dates are day.month.year where they are used
    parsed = dateparser.parse(text, languages=["en"], settings=settings)
    if parsed is None and re.fullmatch(r"\s*\d{1,2}/\d{1,2}/\d{4}\s*", text):
        parsed = dateparser.parse(text, languages=["en"], settings={**settings, "DATE_ORDER": "DMY"})  # 25/03/2026
    return parsed.date().isoformat() if parsed else None


def normalize(kind: str, text: str | None):
    """The value of a field of ``kind`` printed as ``text`` (None stays None)."""
    if text is None:
        return None
    text = " ".join(text.split())
    if kind == "date":
        return normalize_date(text)
    if kind == "amount":
        return normalize_amount(text)
    if kind == "currency":
        return normalize_currency(text)
    return text or None


def same_value(kind: str, got, want) -> bool:
    """The scoring rule: amounts within 0.005, names case-insensitively, the rest exactly."""
    if got is None or want is None:
        return got is None and want is None
    if kind == "amount":
        try:
            return abs(float(got) - float(want)) < 0.005
        except (TypeError, ValueError):
            return False
    if kind in ("name", "text"):
        return " ".join(str(got).split()).casefold() == " ".join(str(want).split()).casefold()
    return str(got) == str(want)
