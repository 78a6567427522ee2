"""`slm kb eval`: metrics computed from real runs on the tiny fixtures, and QA-file errors."""

import json

import pytest

from slmkit.errors import InvalidRequestError
from slmkit.kb.evaluate import evaluate, keywords_present, read_qa
from slmkit.kb.index import ingest

QA = [
    {"question": "How long do refunds take to reach my card?", "answer_keywords": ["14 days"], "source": "guides/billing.md"},
    {"question": "How do I factory-reset the widget?", "answer_keywords": ["paperclip"], "source": ["setup.txt", "x.md"]},
    {"question": "How long does the warranty last?", "answer_keywords": ["two years"], "source": "warranty.pdf"},
    {"question": "Who painted the Mona Lisa?", "answer_keywords": [], "source": None},
]


def write_qa(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_eval_in_quote_mode_scores_retrieval_answers_and_abstention(slm_home, docs, tmp_path):
    ingest("support", [docs])
    report = evaluate("support", write_qa(tmp_path / "qa.jsonl", QA), None, mode="quote")
    assert (report.answerable, report.unanswerable) == (3, 1)
    assert report.recall_at_1 == 1.0 and report.recall_at_5 == 1.0
    assert report.answer_accuracy == 1.0 and report.abstention_rate == 1.0 and report.false_abstention_rate == 0.0
    assert report.latency_p95_s >= report.latency_p50_s > 0
    assert [r.correct for r in report.results] == [True, True, True, None]


def test_eval_with_a_model_counts_wrong_answers(slm_home, docs, tmp_path, tiny_engine):
    ingest("support", [docs])
    report = evaluate("support", write_qa(tmp_path / "qa.jsonl", QA), tiny_engine, max_new_tokens=4)
    # A random 2-layer model cannot write "14 days": accuracy drops, retrieval and abstention do not.
    assert report.answer_accuracy < 1.0 and report.recall_at_5 == 1.0 and report.abstention_rate == 1.0
    assert report.model == tiny_engine.model_name


def test_keyword_match_is_case_insensitive_and_needs_all():
    assert keywords_present("It raises a KeyError.", ["keyerror"])
    assert not keywords_present("It raises a KeyError.", ["KeyError", "missing"])


def test_bad_qa_lines_name_their_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "ok?", "answer_keywords": [], "source": null}\n{"answer_keywords": []}\n')
    with pytest.raises(InvalidRequestError, match="qa.jsonl:2"):
        read_qa(path)
    path.write_text("\n")
    with pytest.raises(InvalidRequestError, match="no questions"):
        read_qa(path)
