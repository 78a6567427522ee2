"""slm finetune (LoRA merge, card), slm pretrain (-> slm generate) and slm eval, end to end
on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from training_helpers import write_jsonl
from typer.testing import CliRunner

from slmkit.artifact import content_hash, read_card
from slmkit.cli import app
from slmkit.data import DataError
from slmkit.engine.torch_backend import TorchEngine, load_causal_lm
from slmkit.evaluate import evaluate, first_json_object, load_tasks, score_answer
from slmkit.finetune import FinetuneConfig, finetune
from slmkit.perplexity import perplexity
from slmkit.pretrain import PretrainConfig, pretrain

runner = CliRunner()


def test_lora_merges_into_a_standalone_artifact(model_copy, chat_file, slm_home):
    config = FinetuneConfig(method="lora", max_steps=6, batch_size=4, seq_len=64, keep_adapter=True,
                            learning_rate=1e-2)
    result = finetune(str(model_copy), [chat_file], config, name="tiny-lora")
    path = slm_home / "models" / "tiny-lora"
    assert result.path == path
    # Standalone: plain Llama weights (no adapter keys), loadable without peft, and changed by training.
    merged = load_causal_lm(path)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name in merged.state_dict())
    base = load_causal_lm(model_copy)
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    engine = TorchEngine(path)
    assert engine.count_prompt_tokens(_chat_request()) > 0
    assert (path / "adapter" / "adapter_model.safetensors").is_file()
    card = read_card(path)
    assert card.stage == "finetune" and card.parents[0].content_sha256 == content_hash(model_copy)
    assert card.args["method"] == "lora" and card.args["data_sha256"] and card.args["learning_rate"] == 1e-2
    assert card.metrics["train_loss"] > 0 and card.metrics["validation_loss"] > 0 and card.metrics["steps"] == 6
    assert card.content_sha256 == content_hash(path)
    assert not (slm_home / "runs" / "tiny-lora").exists()


def _chat_request():
    from slmkit.engine import GenerationRequest

    return GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=4)


def test_finetune_refuses_to_overwrite_and_validates_before_training(model_copy, chat_file, slm_home, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    with pytest.raises(DataError, match="bad.jsonl:1"):
        finetune(str(model_copy), [bad], FinetuneConfig(method="full", max_steps=1))
    assert not (slm_home / "models").exists()
    (slm_home / "models" / "taken").mkdir(parents=True)
    result = runner.invoke(app, ["finetune", str(model_copy), str(chat_file), "--name", "taken"])
    assert result.exit_code != 0 and "taken" in str(result.exception)


def test_pretrain_makes_a_model_that_slm_generate_chats_with(tmp_path, slm_home):
    from pydoc_data.topics import topics

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for key in list(topics)[:40]:
        (corpus / f"{key}.txt").write_text(topics[key])
    config = PretrainConfig(preset="tiny", vocab_size=1024, max_steps=12, seq_len=64, batch_size=8,
                            micro_batch_size=8, warmup_steps=2, validation_fraction=0.1)
    result = pretrain([corpus], config, name="docs-lm")
    losses = result.training.losses
    assert sum(losses[-3:]) < sum(losses[:3])  # it learns
    card = read_card(result.path)
    assert card.stage == "pretrain" and card.args["model_config"]["num_hidden_layers"] == 4
    assert 0.3e6 < card.parameters < 2e6
    generated = runner.invoke(app, ["generate", "docs-lm", "What is a for loop?", "-n", "8", "--json"])
    assert generated.exit_code == 0, generated.output
    answer = json.loads(generated.stdout)
    assert answer["completion_tokens"] >= 1 and answer["prompt_tokens"] > 5
    engine = TorchEngine(result.path)
    assert engine.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def test_scores():
    assert score_answer(" Paris. ", "Paris.") == {"exact_match": 1.0, "contains": 1.0}
    assert score_answer("It is Paris.", "Paris") == {"exact_match": 0.0, "contains": 1.0}
    answer = 'Sure: ```json\n{"license": "MIT", "year": 2020}\n```'
    assert first_json_object(answer) == {"license": "MIT", "year": 2020}
    assert score_answer(answer, {"license": "MIT", "year": 2020}) == {"exact_match": 1.0, "json_field_accuracy": 1.0}
    assert score_answer(answer, {"license": "MIT", "year": 2021}) == {"exact_match": 0.0, "json_field_accuracy": 0.5}
    assert score_answer("no json here", {"license": "MIT"}) == {"exact_match": 0.0, "json_field_accuracy": 0.0}


def test_bad_task_files_name_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": "a", "expected": "b"}, {"prompt": "a"}])
    with pytest.raises(DataError, match=r"tasks.jsonl:2: field 'expected'"):
        load_tasks(path)
    path = write_jsonl(tmp_path / "tasks.jsonl", [{"messages": [{"role": "robot", "content": "a"}], "expected": "b"}])
    with pytest.raises(DataError, match=r"tasks.jsonl:1: field 'messages\[0\].role'"):
        load_tasks(path)


def test_eval_scores_a_stored_model_and_writes_its_card(model_copy, slm_home, tmp_path, tiny_engine):
    from slmkit.models import import_model

    import_model(model_copy, name="tiny")
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": "Say hi", "expected": "hi"},
                                                   {"prompt": "Give JSON", "expected": {"a": 1}}])
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    result = evaluate("tiny", data=tasks, text=text, max_new_tokens=8, window=64)
    assert result.tasks.examples == 2 and result.card_updated
    assert result.perplexity.perplexity == pytest.approx(perplexity(tiny_engine, text.read_text(), 64).perplexity,
                                                         rel=1e-4)
    card = read_card(slm_home / "models" / "tiny")
    assert card.metrics["eval"]["tasks.jsonl"]["examples"] == 2
    assert card.metrics["eval"]["perplexity:text.txt"]["window"] == 64
    cli = runner.invoke(app, ["eval", "tiny", "--data", str(tasks), "-n", "8", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["tasks"]["results"][0]["answer"] == result.tasks.results[0]["answer"]
