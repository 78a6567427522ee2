"""Answer selection by the model's likelihood, the abstention threshold sweep and rule, and
`slm kb eval` over several sets with details and a plot (tiny model, tiny documents)."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from slmkit.errors import InvalidRequestError
from slmkit.kb import select
from slmkit.kb.answer import IDK_MESSAGE, answer_stream, split_sentences
from slmkit.kb.calibrate import choose_threshold, plot_sweep, sweep
from slmkit.kb.evaluate import QAResult, evaluate
from slmkit.kb.retrieve import search

QA = [
    {"question": "How long do refunds take to reach my card?", "answer_keywords": ["14 days"], "source": "guides/billing.md"},
    {"question": "How do I factory-reset the widget?", "answer_keywords": ["paperclip"], "source": "setup.txt"},
    {"question": "How long does the warranty last?", "answer_keywords": ["two years"], "source": "warranty.pdf"},
    {"question": "Who painted the Mona Lisa?", "answer_keywords": [], "source": None},
]


@pytest.fixture()
def qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in QA), encoding="utf-8")
    return path


def test_select_answers_with_a_cited_sentence_copied_from_the_retrieved_chunks(support_kb, tiny_engine):
    question = "How long do refunds take to reach my card?"
    answer = answer_stream(support_kb, [{"role": "user", "content": question}], tiny_engine, mode="select")
    text = "".join(c.text for c in answer.chunks)
    assert not answer.abstained and answer.answered_by == tiny_engine.model_name
    pieces = re.findall(r"(.+?) \[(\d)\](?: |$)", text.strip(), re.S)
    assert 1 <= len(pieces) <= select.ANSWER_SENTENCES and "".join(f"{t} [{n}] " for t, n in pieces).strip() == text.strip()
    # Each piece is a sentence of the chunk it cites (copy enforced by construction, not asked of the model).
    hits = search(support_kb, question, k=5)
    for sentence, cited in pieces:
        assert " ".join(sentence.split()) in [" ".join(s.split()) for s in split_sentences(hits[int(cited) - 1].text)]


def test_select_needs_a_model(support_kb):
    with pytest.raises(InvalidRequestError, match="needs a model"):
        answer_stream(support_kb, [{"role": "user", "content": "How long do refunds take?"}], None, mode="select")


def test_question_likelihood_is_the_mean_logprob_of_the_question_tokens(tiny_engine):
    sentence, question = "Refunds take 14 days.", "How long do refunds take?"
    context = tiny_engine.tokenize(f"Text: {sentence}\n")
    asked = tiny_engine.tokenize(f"Question: {question}")
    expected = np.mean(tiny_engine.token_logprobs(context + asked)[len(context) - 1:])
    assert select.question_likelihood(tiny_engine, question, sentence) == pytest.approx(expected)


def test_repeated_sentences_are_one_candidate():
    texts = ["Refunds take 14 days.", "Refunds  take 14 days.", "The widget is blue.", "Invoices are monthly."]
    candidates = [select.Candidate(n, t, similarity=0.9 - 0.1 * n) for n, t in enumerate(texts)]
    assert [c.text for c in select.distinct(candidates, 3)] == [texts[0], texts[2], texts[3]]


def test_question_likelihoods_scored_together_equal_each_scored_alone(tiny_engine):
    sentences = ["Refunds take 14 days.", "The widget is blue and weighs two kilograms.", "x"]
    together = select.question_likelihoods(tiny_engine, "How long do refunds take?", sentences)
    alone = [select.question_likelihood(tiny_engine, "How long do refunds take?", s) for s in sentences]
    assert together == pytest.approx(alone, abs=1e-4)


def test_ranking_follows_the_likelihood_when_the_embedding_has_no_weight(tiny_engine):
    texts = ["Refunds take 14 days.", "The widget is blue.", "Invoices are sent monthly.", "Warranty: two years."]
    candidates = [select.Candidate(n, t, similarity=0.5 - 0.1 * n) for n, t in enumerate(texts)]
    ranked = select.rank_candidates(tiny_engine, "How long do refunds take?", candidates, {"likelihood": 1.0})
    likelihoods = [c.likelihood for c in ranked]
    assert likelihoods == sorted(likelihoods, reverse=True)
    # With a dominant embedding weight the cosine order wins instead.
    ranked = select.rank_candidates(tiny_engine, "How long do refunds take?", candidates,
                                    {"likelihood": 1.0, "similarity": 100.0})
    assert [c.text for c in ranked] == texts


def test_answer_pmi_is_the_answer_logprob_after_the_question_minus_after_no_question(tiny_engine):
    question, sentences = "How long do refunds take?", ["Refunds take 14 days.", "The widget is blue."]

    def mean_after(prefix: str, sentence: str) -> float:
        prompt, answer = tiny_engine.tokenize(prefix), tiny_engine.tokenize(f" {sentence}")
        return float(np.mean(tiny_engine.token_logprobs(prompt + answer)[len(prompt) - 1:]))

    expected = [mean_after(f"Question: {question}\nAnswer:", s) - mean_after("Answer:", s) for s in sentences]
    assert select.answer_pmis(tiny_engine, question, sentences) == pytest.approx(expected, abs=1e-4)
    ranked = select.rank_candidates(tiny_engine, question, [select.Candidate(n, t, 0.5) for n, t in enumerate(sentences)],
                                    {"pmi": 1.0})
    assert [c.text for c in ranked] == [sentences[int(np.argmax(expected))], sentences[int(np.argmin(expected))]]


def test_candidate_features_columns():
    texts = ["Refunds take 14 days to reach the card.", "The widget is blue.", "Refunds are rare."]
    matrix = select.candidate_features("How long do refunds take to reach my card?", texts, [0, 2, 1],
                                       [0.9, 0.5, 0.7], [-1.0, -3.0, float("-inf")], [0.5, 0.5, 0.5])
    column = {name: matrix[:, i] for i, name in enumerate(select.FEATURES)}
    assert matrix.shape == (3, len(select.FEATURES))
    assert column["similarity"] == pytest.approx(select.standardize([0.9, 0.5, 0.7]))
    assert column["likelihood"][0] > column["likelihood"][1] > column["likelihood"][2]  # -inf is the worst, not nan
    assert list(column["pmi"]) == [0.0, 0.0, 0.0]  # no spread, no signal
    # key terms: refunds, reach, card ("how long", "do", "take", "to", "my" are question or function words)
    assert list(column["overlap"]) == pytest.approx([1.0, 0.0, 1 / 3])
    assert list(column["rank"]) == [0, 1, 2] and list(column["chunk"]) == [0, 2, 1]
    assert column["length"] == pytest.approx(np.log([len(t) for t in texts]))


def test_ranking_by_key_term_overlap_needs_no_model_and_unknown_features_are_refused():
    texts = ["The widget is blue.", "Refunds take 14 days to reach the card."]
    candidates = [select.Candidate(n, t, similarity=0.9 - 0.1 * n) for n, t in enumerate(texts)]
    ranked = select.rank_candidates(None, "How long do refunds take?", candidates, {"overlap": 1.0})
    assert [c.text for c in ranked] == [texts[1], texts[0]]
    with pytest.raises(ValueError, match="Unknown ranking features"):
        select.rank_candidates(None, "How long do refunds take?", candidates, {"bm25": 1.0})


def result(confidence: float, answerable: bool, correct: bool = True, dont_know: bool = False) -> QAResult:
    return QAResult("q", answerable, [], "", False, None, 1.0, confidence=confidence, generated="an answer",
                    generated_correct=correct if answerable else None, said_dont_know=dont_know,
                    retrieval_s=0.1, answer_s=1.0)


def test_the_rule_picks_the_middle_of_the_best_separating_range():
    results = [result(0.50, True), result(0.62, True, correct=False), result(0.30, False), result(0.21, False)]
    threshold = choose_threshold(results)
    assert 0.30 < threshold <= 0.50 and threshold == pytest.approx(0.405, abs=0.006)
    points = {p.threshold: p for p in sweep(results)}
    assert points[0.0].abstention_rate == 0.0 and points[0.0].answer_accuracy == 0.5
    assert points[0.4].abstention_rate == 1.0 and points[0.4].false_abstention_rate == 0.0
    assert points[0.55].false_abstention_rate == 0.5 and points[0.55].answer_accuracy == 0.0


def test_an_answer_saying_it_does_not_know_counts_as_abstaining_at_every_threshold():
    points = sweep([result(0.9, True, correct=False, dont_know=True), result(0.9, False, dont_know=True)])
    assert all(p.abstention_rate == 1.0 and p.false_abstention_rate == 1.0 for p in points)


def test_eval_applies_the_threshold_after_answering(support_kb, qa_file):
    open_door = evaluate(support_kb, qa_file, None, mode="quote", threshold=0.0)
    assert open_door.abstention_rate == 0.0 and open_door.answer_accuracy == 1.0
    shut = evaluate(support_kb, qa_file, None, mode="quote", threshold=1.01)
    assert shut.abstention_rate == 1.0 and shut.false_abstention_rate == 1.0 and shut.answer_accuracy == 0.0
    assert all(r.answer == IDK_MESSAGE and r.generated for r in shut.results)
    # An abstained question costs only retrieval; the answers themselves are the same in both runs.
    assert all(s.latency_s == s.retrieval_s for s in shut.results)
    assert [r.generated_correct for r in shut.results] == [r.generated_correct for r in open_door.results]


def test_plot_writes_a_png(support_kb, qa_file, tmp_path):
    report = evaluate(support_kb, qa_file, None, mode="quote")
    path = plot_sweep([report, report], tmp_path / "img" / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(path.parent.glob(".*tmp*"))


def test_cli_eval_runs_every_set_and_mode_and_writes_details_and_plot(support_kb, qa_file, tmp_path, tiny_model_dir):
    from slmkit.cli import app

    details, plot = tmp_path / "out" / "details.jsonl", tmp_path / "out" / "sweep.png"
    result = CliRunner().invoke(app, ["kb", "eval", support_kb, str(qa_file), support_kb, str(qa_file),
                                      "--mode", "quote,select", "--model", str(tiny_model_dir), "--max-tokens", "4",
                                      "--details", str(details), "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert [s["mode"] for s in summaries] == ["quote", "select", "quote", "select"]
    assert all({"false_abstention_rate", "latency_p95_s", "threshold_chosen_by_rule_on_this_set"} <= set(s)
               for s in summaries)
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    assert len(rows) == 4 * len(QA) and {r["mode"] for r in rows} == {"quote", "select"}
    assert plot.stat().st_size > 1000


def test_cli_eval_names_the_problem_with_unpaired_arguments(support_kb, qa_file):
    from slmkit.cli import app

    result = CliRunner().invoke(app, ["kb", "eval", support_kb, str(qa_file), "other"])
    assert result.exit_code != 0 and "pairs" in str(result.exception)
    result = CliRunner().invoke(app, ["kb", "eval", support_kb, str(qa_file), "--mode", "poetry"])
    assert result.exit_code != 0 and "--mode" in str(result.exception)


def test_cli_ask_says_which_model_answered(support_kb, tiny_model_dir):
    from slmkit.cli import app

    question = "How long do refunds take to reach my card?"
    result = CliRunner().invoke(app, ["kb", "ask", support_kb, question, "--mode", "select", "--model",
                                      str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answered_by"] == tiny_model_dir.name
    quoted = CliRunner().invoke(app, ["kb", "ask", support_kb, question, "--mode", "quote", "--json"])
    assert json.loads(quoted.stdout)["answered_by"] == "quote (no model)"


def test_cli_eval_takes_a_thread_count_and_refuses_zero(support_kb, qa_file, tiny_model_dir):
    from slmkit.cli import app

    result = CliRunner().invoke(app, ["kb", "eval", support_kb, str(qa_file), "--mode", "select", "--model",
                                      str(tiny_model_dir), "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "select"
    refused = CliRunner().invoke(app, ["kb", "eval", support_kb, str(qa_file), "--threads", "0"])
    assert refused.exit_code != 0 and "--threads" in refused.output
