"""slm prune on tiny models: what is removed, the shapes that result, and that the result is
an ordinary artifact."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from slmkit.cli import app
from slmkit.errors import InvalidRequestError
from slmkit.prune import PruneConfig, measure, prune


def weights(path):
    return load_file(str(path / "model.safetensors"))


def test_structured_pruning_writes_a_smaller_model_that_runs(slm_home, tiny_model_dir):
    from slmkit.engine.torch_backend import TorchEngine
    from slmkit.generate import generate

    before = weights(tiny_model_dir)
    result = prune(str(tiny_model_dir), PruneConfig(layers=1, kv_groups=1, mlp_ratio=0.5, calibration_tokens=1024,
                                                    evaluation_tokens=1024), name="small")
    config = json.loads((result.path / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["intermediate_size"] == 64
    assert config["num_key_value_heads"] == 1 and config["num_attention_heads"] == 2 and config["head_dim"] == 16
    after = weights(result.path)
    assert after["model.layers.0.mlp.gate_proj.weight"].shape == (64, 64)
    assert after["model.layers.0.self_attn.q_proj.weight"].shape == (32, 64)
    assert after["model.layers.0.self_attn.k_proj.weight"].shape == (16, 64)
    assert after["model.layers.0.self_attn.o_proj.weight"].shape == (64, 32)
    assert sum(v.numel() for v in after.values()) == result.card.parameters < result.card.metrics["parameters_before"]
    assert {k: v.shape for k, v in weights(tiny_model_dir).items()} == {k: v.shape for k, v in before.items()}, \
        "the input artifact is never modified"
    assert result.card.stage == "prune" and result.card.parents[0].content_sha256
    assert len(result.card.metrics["removed_layers"]) == 1
    engine = TorchEngine(result.path)
    assert generate(engine, "Hello", max_new_tokens=5).stats.completion_tokens == 5


def test_the_least_influential_layer_is_the_one_removed(slm_home, tiny_model_dir):
    from slmkit.engine.torch_backend import load_causal_lm, load_tokenizer
    from slmkit.prune import calibration_batch, default_texts

    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    stats = measure(model, calibration_batch(tokenizer, default_texts()[0], 1024))
    keep = int(stats["influence"].argmax())
    result = prune(str(tiny_model_dir), PruneConfig(layers=1, calibration_tokens=1024, evaluation_tokens=512), name="l")
    kept_weight = weights(result.path)["model.layers.0.mlp.down_proj.weight"]
    assert torch.equal(kept_weight, weights(tiny_model_dir)[f"model.layers.{keep}.mlp.down_proj.weight"])


def test_width_pruning_of_unused_channels_keeps_the_outputs(slm_home, tiny_model_dir, tmp_path):
    """Channels nothing writes to are the least active; dropping them must leave the logits as
    they were, which also checks the RMSNorm rescale (the same energy over fewer channels)."""
    from slmkit.engine.torch_backend import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    unused = torch.arange(48, 64)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, unused] = 0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[unused] = 0
            layer.mlp.down_proj.weight[unused] = 0
    source = tmp_path / "narrowable"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    result = prune(str(source), PruneConfig(hidden_size=48, calibration_tokens=1024, evaluation_tokens=512),
                   name="narrow")
    config = json.loads((result.path / "config.json").read_text())
    assert config["hidden_size"] == 48 and config["num_attention_heads"] == 4 and config["head_dim"] == 16
    after = weights(result.path)
    assert after["model.embed_tokens.weight"].shape == (len(tokenizer), 48)
    assert after["model.layers.0.self_attn.q_proj.weight"].shape == (64, 48)
    assert after["model.layers.0.self_attn.o_proj.weight"].shape == (48, 64)
    assert after["model.layers.1.mlp.down_proj.weight"].shape == (48, 128)
    assert after["model.norm.weight"].shape == (48,)
    ids = torch.tensor([tokenizer("def f(x): return x + 1", add_special_tokens=False)["input_ids"]])
    narrow = load_causal_lm(result.path)
    with torch.no_grad():
        torch.testing.assert_close(narrow(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert result.card.metrics["perplexity_after"] == pytest.approx(result.card.metrics["perplexity_before"], rel=1e-3)


@pytest.mark.parametrize("method,pattern", [("magnitude", "unstructured"), ("wanda", "unstructured"), ("wanda", "2:4")])
def test_unstructured_sparsity(slm_home, tiny_model_dir, method, pattern):
    config = PruneConfig(sparsity=0.5, method=method, pattern=pattern, calibration_tokens=512, evaluation_tokens=512)
    result = prune(str(tiny_model_dir), config, name=f"s-{method}-{pattern[0]}")
    assert result.card.metrics["block_weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    weight = weights(result.path)["model.layers.0.mlp.up_proj.weight"]
    original = weights(tiny_model_dir)["model.layers.0.mlp.up_proj.weight"]
    if pattern == "2:4":
        assert ((weight.view(weight.shape[0], -1, 4) == 0).sum(dim=-1) == 2).all()
    if method == "magnitude":
        kept, dropped = original[weight != 0].abs(), original[weight == 0].abs()
        per_row_ok = all(original[r][weight[r] != 0].abs().min() >= original[r][weight[r] == 0].abs().max()
                         for r in range(weight.shape[0]))
        assert per_row_ok and kept.numel() == dropped.numel()


@pytest.mark.parametrize("config", [PruneConfig(), PruneConfig(layers=2), PruneConfig(kv_groups=2),
                                    PruneConfig(mlp_ratio=0), PruneConfig(sparsity=0.3, pattern="2:4"),
                                    PruneConfig(hidden_size=30), PruneConfig(hidden_size=128),
                                    PruneConfig(sparsity=0.5, method="random")])
def test_bad_settings_are_clear_errors(slm_home, tiny_model_dir, config):
    with pytest.raises(InvalidRequestError):
        prune(str(tiny_model_dir), config, name="bad")
    assert not (slm_home / "models" / "bad").exists()


def test_cli(slm_home, tiny_model_dir):
    result = CliRunner().invoke(app, ["prune", str(tiny_model_dir), "--mlp-ratio", "0.5", "--name", "cli-pruned",
                                      "--calibration-tokens", "512", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["name"] == "cli-pruned" and data["metrics"]["parameters_after"] < data["metrics"]["parameters_before"]


@pytest.mark.slow
def test_pruning_two_layers_of_smollm2_keeps_it_sensible(slm_home):
    result = prune("smollm2-135m", PruneConfig(layers=2, calibration_tokens=1024, evaluation_tokens=1024),
                   name="smol-28")
    metrics = result.card.metrics
    assert metrics["perplexity_after"] < 2 * metrics["perplexity_before"], metrics
