"""Behaviour logs → per-user item sequences, and the item catalogue.

A log is one interaction per row: ``user, item, timestamp`` (optionally ``rating`` and an
event type). Accepted files:

- CSV (``.csv``) or TSV (any other suffix, or a tab in the first line) with a header naming
  the columns (``user``/``user_id``, ``item``/``item_id``, ``timestamp``/``time``; RecBole's typed
  headers such as ``user_id:token`` work too);
- MovieLens ``u.data``-style files without a header: ``user item rating timestamp`` (4 columns)
  or ``user item timestamp`` (3 columns), tab-separated;
- JSONL (``.jsonl``): one object per line with ``user``, ``item`` and ``timestamp`` keys.

Timestamps are numbers (seconds) or ISO 8601 strings. A bad row raises
:class:`~slmkit.data.DataError` naming ``file:line`` and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from slmkit.data import DataError

USER_COLUMNS = ("user", "user_id", "userid", "customer_id", "visitor_id")
ITEM_COLUMNS = ("item", "item_id", "itemid", "movie_id", "movieid", "product_id")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime", "date")
RATING_COLUMNS = ("rating", "score")
EVENT_COLUMNS = ("event", "event_type", "action")
TITLE_COLUMNS = ("title", "movie_title", "name", "item_name")


@dataclasses.dataclass
class Interaction:
    user: str
    item: str
    timestamp: float
    rating: float | None = None
    event: str | None = None


def read_logs(paths: Sequence[str | Path]) -> list[Interaction]:
    """Every interaction in ``paths`` (files read in the given order, rows in file order)."""
    rows: list[Interaction] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: no such file. Pass a CSV/TSV/JSONL log or a MovieLens u.data file.")
        rows.extend(_read_jsonl(path) if path.suffix == ".jsonl" else _read_delimited(path))
    if not rows:
        raise DataError(f"{', '.join(str(p) for p in paths)}: no interactions found. Each row needs user, item, "
                        "timestamp.")
    return rows


def _text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # MovieLens 100k's u.item is latin-1


def _read_jsonl(path: Path) -> Iterable[Interaction]:
    for number, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg}). Each line must be one object such as "
                            '{"user": "u1", "item": "i9", "timestamp": 1700000000}.') from exc
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object with user, item and timestamp keys.")
        fields = {_column_kind(str(k)): v for k, v in record.items()}
        yield _interaction(fields, where)


def _column_kind(name: str) -> str | None:
    name = name.split(":", 1)[0].strip().lower()  # RecBole: "user_id:token"
    for kind, names in (("user", USER_COLUMNS), ("item", ITEM_COLUMNS), ("timestamp", TIME_COLUMNS),
                        ("rating", RATING_COLUMNS), ("event", EVENT_COLUMNS)):
        if name in names:
            return kind
    return None


def _read_delimited(path: Path) -> Iterable[Interaction]:
    text = _text(path)
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = "," if path.suffix == ".csv" or ("\t" not in first and "," in first) else "\t"
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str | None] | None = None
    for row in reader:
        number = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{number}"
        if header is None:
            kinds = [_column_kind(cell) for cell in row]
            if "user" in kinds or "item" in kinds:
                missing = [k for k in ("user", "item", "timestamp") if k not in kinds]
                if missing:
                    raise DataError(f"{where}: the header has no {' or '.join(missing)} column. Name the columns "
                                    "user, item, timestamp (optional: rating, event).")
                header = kinds
                continue
            if len(row) not in (3, 4):
                raise DataError(f"{where}: {len(row)} columns and no header. Without a header a row must be "
                                "user, item, timestamp or user, item, rating, timestamp (MovieLens u.data); "
                                "otherwise add a header line naming the columns.")
            header = ["user", "item", "timestamp"] if len(row) == 3 else ["user", "item", "rating", "timestamp"]
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} columns, expected {len(header)} like the first row "
                            f"(delimiter {'comma' if delimiter == ',' else 'tab'}).")
        yield _interaction({kind: cell for kind, cell in zip(header, row, strict=True) if kind}, where)


def _interaction(fields: dict, where: str) -> Interaction:
    user, item = fields.get("user"), fields.get("item")
    for kind, value in (("user", user), ("item", item)):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where}: missing {kind}. Every row needs user, item and timestamp.")
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise DataError(f"{where}: {kind} must be a string or an integer, got {value!r}.")
    rating = fields.get("rating")
    rating = _number(rating, "rating", where) if rating not in (None, "") else None
    event = fields.get("event")
    return Interaction(str(user).strip(), str(item).strip(), parse_timestamp(fields.get("timestamp"), where), rating,
                       str(event) if event not in (None, "") else None)


def _number(value, what: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} {value!r} is not a number.") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {what} {value!r} is not a finite number.")
    return number


def parse_timestamp(value, where: str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 string (naive times count as UTC)."""
    if value is None or value == "":
        raise DataError(f"{where}: missing timestamp. Give seconds since 1970 or an ISO 8601 time "
                        "(2024-05-01T12:00:00).")
    if isinstance(value, bool):
        raise DataError(f"{where}: timestamp must be a number or an ISO 8601 string, got {value!r}.")
    if isinstance(value, (int, float)):
        return _number(value, "timestamp", where)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _number(number, "timestamp", where)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{where}: timestamp {text!r} is neither a number nor an ISO 8601 time "
                        "(e.g. 2024-05-01T12:00:00).") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def user_sequences(rows: Sequence[Interaction]) -> dict[str, list[str]]:
    """Each user's items in time order; equal timestamps keep their order in the log."""
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    for position, row in enumerate(rows):
        by_user.setdefault(row.user, []).append((row.timestamp, position, row.item))
    return {user: [item for _, _, item in sorted(events)] for user, events in by_user.items()}


def read_titles(path: str | Path) -> dict[str, str]:
    """Item titles: MovieLens ``u.item`` (``id|title|...``), a CSV/TSV with item and title
    columns (RecBole's ``.item`` too), or JSONL with ``item`` and ``title`` keys."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file. Pass the item metadata file (e.g. MovieLens u.item) or leave it out.")
    lines = _text(path).splitlines()
    titles: dict[str, str] = {}
    if path.suffix == ".jsonl":
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON ({exc.msg}).") from exc
            if not isinstance(record, dict) or "item" not in record or "title" not in record:
                raise DataError(f'{path}:{number}: expected an object like {{"item": "i9", "title": "..."}}.')
            titles[str(record["item"])] = str(record["title"])
        return titles
    first = next((line for line in lines if line.strip()), "")
    delimiter = "|" if "|" in first and "\t" not in first else ("\t" if "\t" in first else ",")
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    item_col, title_col = 0, 1
    for row in reader:
        number = reader.line_num
        if not row:
            continue
        names = [cell.split(":", 1)[0].strip().lower() for cell in row]
        if number == 1 and any(n in ITEM_COLUMNS for n in names):
            item_col = next(i for i, n in enumerate(names) if n in ITEM_COLUMNS)
            title_col = next((i for i, n in enumerate(names) if n in TITLE_COLUMNS), None)
            if title_col is None:
                raise DataError(f"{path}:1: the header has no title column (title, movie_title or name).")
            continue
        if len(row) <= max(item_col, title_col):
            raise DataError(f"{path}:{number}: expected item id and title columns, got {len(row)} column(s).")
        titles[row[item_col].strip()] = row[title_col].strip()
    return titles
