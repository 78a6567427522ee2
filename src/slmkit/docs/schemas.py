"""What to extract: a JSON Schema of fields, built in (``invoice``, ``contract``, ``ticket``) or
written by the user.

Each field has a *kind* that says how its printed text is normalized and compared: ``id`` (kept
as printed), ``date`` (ISO 8601), ``amount`` (a number), ``currency`` (ISO 4217), ``name``
(compared case-insensitively), ``text``, or ``choice`` (one of the schema's ``enum``). The kind
comes from ``x-kind`` when a schema gives one, else from the field's JSON Schema: ``format:
date`` → date, ``type: number`` → amount, an ``enum`` → choice, a name ending in ``currency`` →
currency, else text. A field's ``description`` is what the model is told to look for.

Fields should allow ``null``: a value the document does not give is null, never invented.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from slmkit.errors import InvalidRequestError

KINDS = ("id", "date", "amount", "currency", "name", "text", "choice")
MAX_VALUE_CHARS = 120  # the longest text the model may copy for one field


def _field(kind: str, description: str, json_type: str = "string") -> dict:
    return {"type": [json_type, "null"], "x-kind": kind, "description": description,
            **({"format": "date"} if kind == "date" else {})}


BUILTIN = {
    "invoice": {
        "title": "invoice", "type": "object",
        "properties": {
            "invoice_number": _field("id", "the invoice's own number (not a PO, order or customer number)"),
            "invoice_date": _field("date", "the date the invoice was issued"),
            "due_date": _field("date", "the date payment is due"),
            "vendor_name": _field("name", "the company that issued the invoice"),
            "customer_name": _field("name", "the company billed"),
            "total_amount": _field("amount", "the total to pay, tax included (not the subtotal or the tax)", "number"),
            "currency": _field("currency", "the currency of the total"),
        },
    },
    "contract": {
        "title": "contract", "type": "object",
        "properties": {
            "provider_name": _field("name", "the party providing the services"),
            "client_name": _field("name", "the party receiving the services"),
            "effective_date": _field("date", "the date the contract takes effect (not the signing date)"),
            "end_date": _field("date", "the date the contract ends"),
            "contract_value": _field("amount", "the total fee or value of the contract", "number"),
            "currency": _field("currency", "the currency of the contract value"),
            "governing_law": _field("text", "the law or jurisdiction that governs the contract"),
        },
    },
    "ticket": {
        "title": "ticket", "type": "object",
        "properties": {
            "ticket_id": _field("id", "the ticket or case identifier (not an order number)"),
            "customer_name": _field("name", "the customer who opened the ticket"),
            "opened_date": _field("date", "the date the ticket was opened"),
            "priority": {"enum": ["Low", "Normal", "High", "Urgent", None], "x-kind": "choice",
                         "description": "the ticket's priority"},
            "product": _field("text", "the product the ticket is about"),
            "subject": _field("text", "the ticket's subject line"),
        },
    },
}
for _schema in BUILTIN.values():
    _schema["required"] = list(_schema["properties"])
    _schema["additionalProperties"] = False


@dataclasses.dataclass
class Field:
    name: str
    kind: str
    description: str
    spec: dict  # the field's own JSON Schema

    @property
    def choices(self) -> list | None:
        return self.spec.get("enum")


@dataclasses.dataclass
class DocSchema:
    name: str  # "invoice", or the file's stem
    schema: dict  # the JSON Schema every result's values validate against
    fields: list[Field]

    def generation_schema(self, candidates: dict[str, list[str] | None] | None = None) -> dict:
        """What the model writes: every field, in order, as the text printed in the document (or
        null); a choice field as one of its choices. With ``candidates`` (field name → the
        document's spans it may take, :mod:`slmkit.docs.candidates`), a string field is one of
        its spans or null, so the model can only write document text. Normalizing comes after,
        in code."""
        properties = {}
        for field in self.fields:
            spans = (candidates or {}).get(field.name)
            if field.choices:
                properties[field.name] = {"enum": list(field.choices) + ([None] if None not in field.choices else [])}
            elif spans is not None:
                properties[field.name] = {"enum": [*spans, None]}
            else:
                properties[field.name] = {"type": ["string", "null"], "maxLength": MAX_VALUE_CHARS}
        return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def field_kind(name: str, spec: dict) -> str:
    kind = spec.get("x-kind")
    if kind is not None:
        if kind not in KINDS:
            raise InvalidRequestError(f"Field {name}: x-kind must be one of {', '.join(KINDS)}, got {kind!r}.")
        return kind
    types = spec.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "enum" in spec:
        return "choice"
    if spec.get("format") in ("date", "date-time"):
        return "date"
    if "number" in types or "integer" in types:
        return "amount"
    if name.lower().endswith("currency"):
        return "currency"
    return "text"


def load_schema(name_or_path: str) -> DocSchema:
    """A built-in schema by name, or a JSON Schema file (an object with ``properties``)."""
    if name_or_path in BUILTIN:
        return from_json_schema(name_or_path, BUILTIN[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise InvalidRequestError(f"No schema {name_or_path!r}: give a built-in name ({', '.join(BUILTIN)}) "
                                  "or a JSON Schema file.")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequestError(f"{path.name} is not a JSON file: {exc}") from exc
    return from_json_schema(path.stem, schema)


def from_json_schema(name: str, schema: dict) -> DocSchema:
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        raise InvalidRequestError(f"Schema {name}: a JSON Schema object with a non-empty \"properties\" object is "
                                  "needed, e.g. {\"type\": \"object\", \"properties\": {\"total\": {\"type\": "
                                  "[\"number\", \"null\"]}}}.")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequestError(f"Schema {name} is not a valid JSON Schema: {exc.message}") from exc
    fields = []
    for field_name, spec in schema["properties"].items():
        if not isinstance(spec, dict):
            raise InvalidRequestError(f"Schema {name}: property {field_name} must be an object.")
        fields.append(Field(field_name, field_kind(field_name, spec), spec.get("description", field_name.replace("_", " ")),
                            spec))
    return DocSchema(name, schema, fields)
