"""Hostile text and concurrent use: pathological Markdown/HTML is reported within seconds,
concurrent first ingests never publish a half-written index, and a search reads one
consistent snapshot while an ingest commits."""

import threading
import time

import pytest

from slmkit.kb.index import ingest, kb_documents, kb_path
from slmkit.kb.ingest import DocumentError, chunk_sections, read_sections
from slmkit.kb.retrieve import default_embedder, search

MB = 1_000_000
PATHOLOGICAL = {"comments": "<!--" * (MB // 4), "brackets": "[" * MB, "open-links": "[a](" * (MB // 4),
                "images": "![" * (MB // 2), "heading-spaces": "# a" + " " * MB + "x", "start-tags": "<a" * (MB // 2),
                "end-tags": "</" * (MB // 2), "declarations": "<!" * (MB // 2), "instructions": "<?" * (MB // 2)}


@pytest.mark.parametrize("suffix", [".md", ".html"])
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_documents_are_handled_within_5_seconds(tmp_path, name, suffix):
    path = tmp_path / f"{name}{suffix}"
    path.write_text(PATHOLOGICAL[name])
    started = time.perf_counter()
    try:
        chunk_sections(read_sections(path))
    except DocumentError as exc:
        assert path.name in exc.message  # reported for this file only
    assert time.perf_counter() - started < 5


def test_markdown_cleaning_still_keeps_labels_and_drops_comments(tmp_path):
    path = tmp_path / "page.md"
    path.write_text("# Guide ##\n\nSee [the manual](https://x.example/m) and ![a logo](logo.png).<!-- hidden -->\n"
                    "Trailing   \nspaces.\n<!-- unclosed comment hides the rest\nsecret")
    (section,) = read_sections(path)
    assert section.titles == ["Guide"]
    assert section.text == "See the manual and a logo.\nTrailing\nspaces."


class SlowEmbedder:
    """The real embedder, slowed down so that two ingests overlap."""

    def __init__(self, delay_s):
        self.model, self.delay_s = default_embedder(), delay_s

    def embed(self, texts):
        time.sleep(self.delay_s)
        return self.model.embed(texts)


def test_concurrent_first_ingests_never_publish_a_half_written_index(slm_home, tmp_path):
    sets = []
    for n in range(3):
        folder = tmp_path / f"set{n}"
        folder.mkdir()
        for i in range(4):
            (folder / f"doc{i}.md").write_text(f"# Topic {n}-{i}\n\n" + f"Paragraph {i} of set {n} about widgets. " * 40)
        sets.append(folder)
    errors, reports = [], []

    def run(folder):
        try:
            reports.append(ingest("shared", [folder], embedder=SlowEmbedder(0.2)))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(folder,)) for folder in sets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(reports) == 3
    documents = kb_documents("shared")
    assert len(documents) == 4 and all(d["chunks"] > 0 for d in documents)
    assert len({d["path"].rsplit("/", 2)[-2] for d in documents}) == 1, "one ingest's documents, not a mix"
    assert not [p for p in kb_path("shared").parent.iterdir() if p.name.endswith(".partial")]
    assert search("shared", "widgets paragraph", k=2)


def test_search_reads_one_snapshot_while_an_ingest_commits(slm_home, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.md").write_text(f"# Widget {i}\n\nWidget model {i} has a blue button and a red light.\n")
    ingest("live", [folder])
    real = default_embedder()

    class ChangingEmbedder:
        """Embeds the query, and meanwhile an ingest removes half of the documents."""

        def embed(self, texts):
            for i in range(3):
                (folder / f"doc{i}.md").unlink()
            ingest("live", [folder])
            return real.embed(texts)

    hits = search("live", "widget button", k=6, embedder=ChangingEmbedder())
    assert sorted(h.file for h in hits) == [f"doc{i}.md" for i in range(3, 6)]
