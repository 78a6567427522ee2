"""The index file: incremental re-ingest, crash safety, hostile batches, list/show/rm."""

import sqlite3

import pytest

from slmkit.errors import ModelNotFoundError
from slmkit.kb.index import ingest, kb_documents, kb_info, kb_names, kb_path, list_kbs, remove_kb
from slmkit.kb.retrieve import search


def test_ingest_every_format_then_search_finds_each(slm_home, docs):
    report = ingest("support", [docs])
    assert sorted(report.added) == ["account.html", "guides/billing.md", "setup.txt", "warranty.pdf"]
    assert report.errors == {} and report.chunks_embedded >= 6
    assert kb_path("support").is_file() and kb_names() == ["support"]
    for query, expected in [("refund to my card", "guides/billing.md"), ("factory reset paperclip", "setup.txt"),
                            ("change my password", "account.html"), ("how long is the warranty", "warranty.pdf")]:
        assert search("support", query, k=3)[0].file == expected, query
    page = [h for h in search("support", "receipt for warranty claims", k=5) if h.file == "warranty.pdf"][0]
    assert page.page == 2


def test_reingest_updates_only_changed_files(slm_home, docs):
    first = ingest("support", [docs])
    same = ingest("support", [docs])
    assert same.chunks_embedded == 0 and sorted(same.unchanged) == sorted(first.added)
    chunk_ids = _chunk_ids("support")

    (docs / "setup.txt").write_text("Installing the Widget\n=====================\n\nPair it over Bluetooth now.\n")
    (docs / "guides" / "billing.md").unlink()
    changed = ingest("support", [docs])
    assert changed.updated == ["setup.txt"] and changed.removed == ["guides/billing.md"]
    assert changed.chunks_embedded == 1  # only the one chunk of the changed file was embedded
    assert sorted(d["name"] for d in kb_documents("support")) == ["account.html", "setup.txt", "warranty.pdf"]
    kept = {i for file, i in chunk_ids if file in ("account.html", "warranty.pdf")}
    assert kept <= {i for _, i in _chunk_ids("support")}  # untouched documents keep their chunk ids
    assert search("support", "bluetooth pairing", k=1)[0].file == "setup.txt"
    assert all(h.file != "guides/billing.md" for h in search("support", "refunds", k=5))


def _chunk_ids(name):
    connection = sqlite3.connect(kb_path(name))
    rows = connection.execute("SELECT d.name, c.chunk_id FROM chunks c JOIN documents d ON d.id = c.document_id")
    result = rows.fetchall()
    connection.close()
    return result


def test_crash_mid_ingest_leaves_the_previous_index_intact(slm_home, docs):
    ingest("support", [docs])
    before = _chunk_ids("support")
    (docs / "setup.txt").write_text("Installing\n==========\n\nNew pairing text.\n")
    (docs / "new.md").write_text("# New\n\nA brand new page about shipping times.\n")

    def crash(step, done, total):
        if step.startswith("Indexing") and done == 1:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        ingest("support", [docs], progress=crash)
    assert _chunk_ids("support") == before
    assert search("support", "factory reset paperclip", k=1)[0].file == "setup.txt"
    retry = ingest("support", [docs])  # the next run picks up both changes
    assert retry.updated == ["setup.txt"] and retry.added == ["new.md"]


def test_crash_during_first_ingest_leaves_no_knowledge_base(slm_home, docs):
    def crash(step, done, total):
        if step.startswith("Indexing"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest("fresh", [docs], progress=crash)
    assert kb_names() == [] and not any((slm_home / "kb").iterdir())


def test_bad_documents_are_reported_and_the_rest_ingests(slm_home, docs):
    (docs / "empty.pdf").write_bytes(b"")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage without objects")
    (docs / "latin1.txt").write_bytes("na\u00efve".encode("latin-1"))
    (docs / "blank.md").write_text("\n\n   \n")
    report = ingest("support", [docs])
    assert set(report.errors) == {"empty.pdf", "broken.pdf", "latin1.txt", "blank.md"}
    assert "UTF-8" in report.errors["latin1.txt"] and "empty" in report.errors["empty.pdf"]
    assert len(report.added) == 4 and kb_info("support").documents == 4


def test_list_show_rm_and_unknown_names(slm_home, docs):
    ingest("support", [docs])
    [info] = list_kbs()
    assert (info.name, info.documents, info.embedding_model) == ("support", 4, "minilm-l6")
    with pytest.raises(ModelNotFoundError, match="known: support"):
        search("nope", "anything")
    remove_kb("support")
    assert kb_names() == []
    with pytest.raises(ModelNotFoundError):
        kb_info("support")
    with pytest.raises(Exception, match="Invalid"):
        ingest("../escape", [docs])


def test_kill_9_mid_ingest_leaves_the_previous_index_usable(slm_home, docs):
    import os
    import subprocess
    import sys

    ingest("support", [docs])
    before = _chunk_ids("support")
    (docs / "setup.txt").write_text("Installing\n==========\n\nNew pairing text.\n")
    (docs / "new.md").write_text("# New\n\nA brand new page about shipping times.\n")
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from slmkit.kb.index import ingest\n"
        "def die(step, done, total):\n"
        "    if step.startswith('Indexing') and done == 1:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "ingest('support', [Path(sys.argv[1])], progress=die)\n")
    result = subprocess.run([sys.executable, "-c", script, str(docs)], env={**os.environ, "SLM_HOME": str(slm_home)},
                            capture_output=True, timeout=300)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert _chunk_ids("support") == before
    assert search("support", "factory reset paperclip", k=1)[0].file == "setup.txt"


def test_a_newer_chunker_rebuilds_every_document(slm_home, docs, monkeypatch):
    import slmkit.kb.index as index

    ingest("support", [docs])
    before = sorted(_chunk_ids("support"))
    monkeypatch.setattr(index, "INGEST_VERSION", "test-next")
    report = ingest("support", [docs])
    assert len(report.updated) == 4 and report.unchanged == []
    assert sorted(_chunk_ids("support")) == before  # same content, same chunk ids, no duplicates
    assert ingest("support", [docs]).chunks_embedded == 0
