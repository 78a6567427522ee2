"""`slm docs` driven as a user would."""

import json

from typer.testing import CliRunner

from slmkit.cli import app

runner = CliRunner()


def test_extract_prints_one_valid_object_per_document_and_names_a_bad_one(docs_model_dir, synthetic_pdfs, tmp_path):
    import jsonschema

    from slmkit.docs.schemas import load_schema

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 nothing here")
    files = [str(synthetic_pdfs[0][0]), str(broken), str(synthetic_pdfs[1][0])]
    result = runner.invoke(app, ["docs", "extract", *files, "--schema", "invoice", "-m", str(docs_model_dir)])
    assert result.exit_code == 1
    assert "broken.pdf" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == [synthetic_pdfs[0][0].name, synthetic_pdfs[1][0].name]
    for record in records:
        jsonschema.validate(record["values"], load_schema("invoice").schema)
        assert set(record["fields"]) == set(record["values"]) and record["pages"] == 1


def test_extract_to_a_file_and_eval(docs_model_dir, synthetic_pdfs, tmp_path):
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["docs", "extract", str(synthetic_pdfs[2][0]), "-m", str(docs_model_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["kind"] in ("invoice", "contract", "ticket") and 0 <= record["kind_confidence"] <= 1
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"file": str(p), "kind": d.kind, "fields": d.fields}) + "\n"
                            for p, d in synthetic_pdfs[:2]))
    result = runner.invoke(app, ["docs", "eval", str(gold), "-m", str(docs_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["documents"] == 2 and summary["schema_valid"] == 1.0 and summary["kind_accuracy"] is not None
    assert summary["answer_valid"] == 1.0  # the constrained raw answers themselves fit the schema
    assert 0 <= summary["field_accuracy"] <= 1 and summary["seconds_per_page"] > 0


def test_unknown_schema_is_one_line_naming_the_built_ins(docs_model_dir, synthetic_pdfs):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "slmkit", "docs", "extract", str(synthetic_pdfs[0][0]), "--schema",
                           "nope", "-m", str(docs_model_dir)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "invoice, contract, ticket" in done.stderr and "Traceback" not in done.stderr
