"""`slm docs organize`: one index of every document, unchanged files skipped on a re-run, a bad
PDF reported by name while the rest goes on, the inbox never changed."""

import csv
import hashlib
import json
import shutil

from typer.testing import CliRunner

from slmkit.cli import app
from slmkit.docs.organize import organize
from slmkit.docs.summarize import headline as summarize


def _tree_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_organize_indexes_skips_and_leaves_the_inbox_alone(docs_model_dir, synthetic_pdfs, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path, _ in synthetic_pdfs[:3]:
        shutil.copy(path, inbox / path.name)
    (inbox / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    before = _tree_hashes(inbox)
    out = tmp_path / "sorted"
    result = CliRunner().invoke(app, ["docs", "organize", str(inbox), str(out), "-m", str(docs_model_dir)])
    assert result.exit_code == 0, result.output
    assert "broken.pdf" in result.stderr and "3 indexed" in result.stdout
    entries = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert sorted(e["file"] for e in entries) == sorted(before)
    broken = next(e for e in entries if e["file"] == "broken.pdf")
    assert "error" in broken and "values" not in broken
    for entry in entries:
        if "error" not in entry:
            assert (out / entry["kind"] / entry["file"]).exists() and entry["summary"].endswith(".")
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert len(rows) == 4 and {"file", "kind", "summary"} <= set(rows[0])
    assert _tree_hashes(inbox) == before

    again = CliRunner().invoke(app, ["docs", "organize", str(inbox), str(out), "-m", str(docs_model_dir)])
    assert "0 indexed, 3 unchanged, 1 failed" in again.stdout  # the broken one is tried again


def test_a_torn_index_line_and_a_changed_file_are_redone(synthetic_pdfs, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for path, _ in synthetic_pdfs[:2]:
        shutil.copy(path, inbox / path.name)
    calls = []

    def process(pages):
        calls.append(pages[0][:20])
        return {"kind": "invoice", "kind_confidence": 1.0, "values": {"invoice_number": "1"}}

    organize(inbox, out, process)
    assert len(calls) == 2
    index = out / "index.jsonl"
    lines = index.read_text().splitlines()
    index.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed mid-write
    organize(inbox, out, process)
    assert len(calls) == 3  # only the torn one again
    shutil.copy(synthetic_pdfs[5][0], inbox / synthetic_pdfs[0][0].name)  # content changed
    organize(inbox, out, process)
    assert len(calls) == 4 and len(index.read_text().splitlines()) == 2


def test_summaries_name_who_what_and_how_much():
    text = summarize("invoice", {"invoice_number": "INV-7", "vendor_name": "Acme Ltd", "customer_name": "Bolt BV",
                                 "invoice_date": "2026-01-05", "total_amount": 1234.5, "currency": "EUR", "due_date": None})
    assert text == "Invoice INV-7 from Acme Ltd to Bolt BV dated 2026-01-05 for 1,234.50 EUR."
    assert summarize("ticket", {"ticket_id": "T1", "customer_name": "Anna Rossi", "priority": "High",
                                "subject": "Login fails"}) == "High ticket T1 from Anna Rossi - Login fails."
    assert summarize("contract", {"provider_name": None}) == "Contract."
