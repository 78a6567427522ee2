"""slm distill on tiny models: the divergences, the teacher cache, tokenizer checks, both methods."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from slmkit.distill import DistillConfig, TeacherCache, distill, divergence
from slmkit.errors import InvalidRequestError
from slmkit.prune import PruneConfig


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_divergences_match_hand_computed_values():
    """Teacher and student compared on the teacher's top-2 tokens plus "any other token"."""
    student = torch.tensor([[0.5, 2.0, -1.0, 0.5]])
    teacher_full = [0.0, 3.0, 0.5, 1.0]
    teacher_ids = torch.tensor([[1, 3]])
    teacher_logits = torch.tensor([[3.0, 1.0]])
    for temperature in (1.0, 2.0):
        p_all = softmax([v / temperature for v in teacher_full])
        q_all = softmax([v / temperature for v in student[0].tolist()])
        p = [p_all[1], p_all[3], p_all[0] + p_all[2]]
        q = [q_all[1], q_all[3], q_all[0] + q_all[2]]
        forward = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
        reverse = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
        m = [0.3 * pi + 0.7 * qi for pi, qi in zip(p, q, strict=True)]
        jsd = 0.3 * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m, strict=True)) + \
            0.7 * sum(qi * math.log(qi / mi) for qi, mi in zip(q, m, strict=True))
        lse = torch.tensor([math.log(sum(math.exp(v / temperature) for v in teacher_full))])
        for kind, expected in (("forward_kl", forward), ("reverse_kl", reverse), ("jsd", jsd)):
            value = divergence(student, teacher_ids, teacher_logits, lse, kind, temperature, beta=0.3)
            assert value.item() == pytest.approx(expected, rel=1e-4), kind  # float32 arithmetic


def test_mass_outside_the_teacher_top_k_is_penalized():
    """A student that matches the teacher's top-k proportions but puts mass elsewhere is not a
    perfect student (renormalizing both on the top-k would call it one)."""
    teacher = torch.tensor([[4.0, 3.0, -5.0, -5.0]])
    values, ids = teacher.topk(2, dim=-1)
    lse = torch.logsumexp(teacher, dim=-1)
    off_support = torch.tensor([[4.0, 3.0, 6.0, 6.0]])  # same top-2 ratio, most mass elsewhere
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert divergence(teacher, ids, values, lse, kind).abs().item() < 1e-6
        assert divergence(off_support, ids, values, lse, kind).item() > 0.1


def test_divergence_is_zero_when_student_matches_teacher():
    logits = torch.randn(2, 5, 50)
    values, ids = logits.topk(8, dim=-1)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert divergence(logits, ids, values, torch.logsumexp(logits, -1), kind).abs().max() < 1e-5


@pytest.fixture()
def corpus(tmp_path):
    from pydoc_data.topics import topics

    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(topics[name] for name in sorted(topics)[:6]))
    return path


FAST = dict(max_steps=3, batch_size=4, micro_batch_size=4, seq_len=64, top_k=8, validation_fraction=0.1)


def test_logit_distillation_into_a_pruned_student_and_cache_reuse(slm_home, tiny_model_dir, corpus, monkeypatch):
    result = distill(str(tiny_model_dir), None, [corpus], DistillConfig(**FAST), name="student",
                     prune_config=PruneConfig(mlp_ratio=0.5, calibration_tokens=256, evaluation_tokens=256))
    assert result.card.stage == "distill" and [p.name for p in result.card.parents] == ["tiny-llama", "student-pruned"]
    assert result.cache_reused is False and result.teacher_cache.exists()
    assert json.loads((result.path / "config.json").read_text())["intermediate_size"] == 64
    assert len(result.training.losses) == 3 and all(math.isfinite(x) for x in result.training.losses)

    import slmkit.distill as module

    def teacher_must_not_run(*args, **kwargs):
        raise AssertionError("the cached teacher logits should have been reused")

    monkeypatch.setattr(module, "build_teacher_cache", teacher_must_not_run)
    again = distill(str(tiny_model_dir), "student", [corpus], DistillConfig(**FAST), name="student-2")
    assert again.cache_reused is True and again.teacher_cache == result.teacher_cache


def test_cache_lookup_returns_the_teacher_top_k(tiny_model_dir, corpus):
    from slmkit.data import load_examples, prepare
    from slmkit.distill import build_teacher_cache
    from slmkit.engine.torch_backend import load_causal_lm, load_tokenizer

    tokenizer, teacher = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir)
    examples = prepare(tokenizer, load_examples([corpus]), 32, 0.0, 0, True).train[:3]
    cache = build_teacher_cache(teacher, examples, 4, len(tokenizer))
    batch = torch.tensor([examples[1].input_ids])
    ids, logits, lse = cache.batch(batch, torch.ones_like(batch))
    full = teacher(input_ids=batch).logits[0]
    expected_values, expected_ids = full.topk(4, dim=-1)
    assert torch.equal(ids[0], expected_ids) and torch.allclose(logits[0], expected_values, atol=1e-2)
    assert torch.allclose(lse[0], torch.logsumexp(full, dim=-1), atol=1e-4)
    assert TeacherCache.key(examples[0].input_ids) in cache.index


def test_different_tokenizers_point_to_sequence_level(slm_home, tiny_model_dir, corpus, tmp_path):
    from tiny import build_tokenizer

    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_model_dir, foreign)
    build_tokenizer(foreign, vocab_size=500)
    with pytest.raises(InvalidRequestError, match="--method sequence"):
        distill(str(tiny_model_dir), str(foreign), [corpus], DistillConfig(**FAST), name="x")
    assert not (slm_home / "models" / "x").exists()


def test_sequence_level_distillation_saves_the_teacher_answers(slm_home, tiny_model_dir, tmp_path):
    from slmkit.engine.torch_backend import TorchEngine
    from slmkit.generate import generate

    prompts = tmp_path / "prompts.jsonl"
    questions = [f"question {i}" for i in range(8)]
    prompts.write_text("".join(json.dumps({"prompt": q, "completion": "x"}) + "\n" for q in questions))
    config = DistillConfig(method="sequence", max_steps=2, batch_size=2, micro_batch_size=2, max_new_tokens=8,
                           validation_fraction=0.25)
    result = distill(str(tiny_model_dir), str(tiny_model_dir), [prompts], config, name="seq-student")
    assert result.card.stage == "distill" and result.card.args["method"] == "sequence"
    answers = [json.loads(line) for line in Path(result.card.args["teacher_answers"]).read_text().splitlines()]
    teacher = TorchEngine(tiny_model_dir)
    assert [a["messages"][-1]["content"] for a in answers] == [
        generate(teacher, q, max_new_tokens=8).text for q in questions]


def test_cli(slm_home, tiny_model_dir, corpus):
    from typer.testing import CliRunner

    from slmkit.cli import app

    result = CliRunner().invoke(app, ["distill", str(corpus), "--teacher", str(tiny_model_dir), "--student",
                                      str(tiny_model_dir), "--max-steps", "2", "--batch-size", "2", "--seq-len", "64",
                                      "--top-k", "4", "--name", "cli-student", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["name"] == "cli-student" and len(data["losses"]) == 2
