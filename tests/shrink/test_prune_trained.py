"""Structured pruning of a model that has learned something keeps most of it: the perplexity
on held-out text after pruning stays far below where training started."""

import pytest

from slmkit.prune import PruneConfig, default_texts, prune


@pytest.fixture(scope="module")
def trained_tiny(tiny_model_dir, tmp_path_factory):
    """A 4-layer tiny Llama (ordinary initialization) after a few seconds of next-token training
    on Python's documentation, and the same model untrained."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    from slmkit.data import Example, prepare
    from slmkit.engine.torch_backend import load_tokenizer
    from slmkit.training import TrainConfig, causal_lm_loss, train

    tokenizer = load_tokenizer(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    untrained = tmp_path_factory.mktemp("untrained") / "tiny-untrained"
    model.save_pretrained(untrained)
    tokenizer.save_pretrained(untrained)
    model.train()
    calibration, _ = default_texts()
    examples = [Example(f"doc:{i}", text=text) for i, text in enumerate(calibration.split("\n\n")) if text.strip()]
    prepared = prepare(tokenizer, examples, 128, packing=True)
    train(model, prepared.train, causal_lm_loss,
          TrainConfig(learning_rate=3e-3, batch_size=8, micro_batch_size=8, max_steps=60, warmup_steps=5))
    out = tmp_path_factory.mktemp("trained") / "tiny-trained"
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return untrained, out


@pytest.mark.parametrize("config", [PruneConfig(layers=1), PruneConfig(mlp_ratio=0.5), PruneConfig(kv_groups=1),
                                    PruneConfig(hidden_size=48)], ids=["layer", "mlp", "kv", "width"])
def test_pruning_a_trained_model_keeps_most_of_what_it_learned(slm_home, trained_tiny, config):
    config.calibration_tokens = config.evaluation_tokens = 2048
    untrained_dir, trained_dir = trained_tiny
    untrained = prune(str(untrained_dir), config, name="untrained").card.metrics["perplexity_before"]
    metrics = prune(str(trained_dir), config, name="trained").card.metrics
    assert metrics["perplexity_before"] < untrained / 3, "the fixture should have learned something"
    # Measured: 179-193 after pruning for 178 before (and 608 untrained).
    assert metrics["perplexity_after"] < 1.25 * metrics["perplexity_before"]
