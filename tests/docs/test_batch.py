"""Parallel batches: `--workers N` (local processes) and `--ray local` (Ray Data) run the same
per-document function and give the sequential run's index byte for byte, also after a kill -9."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from slmkit.cli import app
from slmkit.docs.batch import Extractor, run_documents
from slmkit.docs.organize import organize
from slmkit.errors import InvalidRequestError

runner = CliRunner()


@pytest.fixture(scope="module")
def inbox(synthetic_pdfs, tmp_path_factory):
    """Five documents (the shorter layouts, so the tiny model's context holds them) and a broken PDF."""
    folder = tmp_path_factory.mktemp("inbox")
    for path, _ in synthetic_pdfs[:5]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    return folder


@pytest.fixture(scope="module")
def sequential(inbox, docs_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    result = runner.invoke(app, ["docs", "organize", str(inbox), str(out), "-m", str(docs_model_dir)])
    assert result.exit_code == 0, result.output
    return out


def _same_output(a, b):
    assert (a / "index.jsonl").read_bytes() == (b / "index.jsonl").read_bytes()
    assert (a / "index.csv").read_bytes() == (b / "index.csv").read_bytes()
    assert sorted(p.relative_to(a) for p in a.rglob("*.pdf")) == sorted(p.relative_to(b) for p in b.rglob("*.pdf"))


def test_workers_give_the_sequential_index_byte_for_byte(inbox, sequential, docs_model_dir, tmp_path):
    result = runner.invoke(app, ["docs", "organize", str(inbox), str(tmp_path), "-m", str(docs_model_dir), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "5 indexed, 0 unchanged, 1 failed" in result.stdout and "broken.pdf" in result.stderr
    _same_output(sequential, tmp_path)


def test_ray_gives_the_sequential_index_byte_for_byte(inbox, sequential, docs_model_dir, tmp_path):
    report = organize(inbox, tmp_path, Extractor(str(docs_model_dir), confidence=False), ray="local", workers=1)
    assert len(report.done) == 5 and list(report.errors) == ["broken.pdf"]
    _same_output(sequential, tmp_path)


def test_extract_with_workers_prints_the_same_records(synthetic_pdfs, docs_model_dir):
    files = [str(p) for p, _ in synthetic_pdfs[:3]]
    runs = [runner.invoke(app, ["docs", "extract", *files, "--schema", "invoice", "-m", str(docs_model_dir), *extra])
            for extra in ([], ["--workers", "2"])]
    records = []
    for result in runs:
        assert result.exit_code == 0, result.output
        records.append([{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in result.stdout.splitlines()])
    assert records[0] == records[1] and len(records[0]) == 3


def test_parallel_runs_need_names_not_a_function(tmp_path):
    with pytest.raises(InvalidRequestError, match="Extractor"):
        list(run_documents([tmp_path / "a.pdf"], lambda pages: {}, workers=2))
    with pytest.raises(InvalidRequestError, match="at least 1"):
        list(run_documents([tmp_path / "a.pdf"], lambda pages: {}, workers=0))


def test_a_killed_parallel_run_resumes_to_the_same_index(inbox, sequential, docs_model_dir, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "slmkit", "docs", "organize", str(inbox), str(out), "-m", str(docs_model_dir),
               "--workers", "2"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = out / "index.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if index.exists() and index.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    written = index.read_text().count("\n")
    os.killpg(process.pid, signal.SIGKILL)  # the command and its workers: one session started above
    process.wait()
    assert 1 <= written < 6
    result = runner.invoke(app, ["docs", "organize", str(inbox), str(out), "-m", str(docs_model_dir)])
    assert result.exit_code == 0, result.output
    _same_output(sequential, out)
