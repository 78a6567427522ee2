"""The training loop in-process: accumulation, checkpoints, resume, non-finite loss."""

from __future__ import annotations

import math

import pytest
import torch
from training_helpers import chat_records

from slmkit.data import Example, prepare
from slmkit.engine.torch_backend import load_causal_lm, load_tokenizer
from slmkit.errors import InvalidRequestError
from slmkit.training import NonFiniteLossError, TrainConfig, causal_lm_loss, train
from slmkit.training import checkpoint as ckpt


@pytest.fixture(scope="module")
def prepared(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    examples = [Example(f"x:{i}", messages=r["messages"]) for i, r in enumerate(chat_records(40))]
    return prepare(tokenizer, examples, 64, validation_fraction=0.1)


def fresh_model(path):
    return load_causal_lm(path).train()


def run(path, prepared, checkpoint_dir=None, resume=False, loss_fn=causal_lm_loss, **overrides):
    config = TrainConfig(**{"learning_rate": 3e-3, "batch_size": 4, "micro_batch_size": 4, "max_steps": 8,
                            **overrides})
    model = fresh_model(path)
    result = train(model, prepared.train, loss_fn, config, checkpoint_dir, validation_set=prepared.validation,
                   resume=resume, fingerprint="test")
    return model, result


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir, prepared):
    _, whole = run(tiny_model_dir, prepared, micro_batch_size=4)
    _, split = run(tiny_model_dir, prepared, micro_batch_size=1)
    assert whole.losses[0] > whole.losses[-1]  # it learns
    assert split.losses == pytest.approx(whole.losses, rel=1e-5)


def test_resume_from_a_middle_checkpoint_repeats_the_losses(tiny_model_dir, prepared, tmp_path):
    _, reference = run(tiny_model_dir, prepared)
    _, first = run(tiny_model_dir, prepared, tmp_path / "ck", checkpoint_every=3, keep_checkpoints=5)
    # Throw away what followed step 3, as a kill right after that save would have.
    for later in ckpt.complete_checkpoints(tmp_path / "ck")[1:]:
        import shutil

        shutil.rmtree(later)
    model, resumed = run(tiny_model_dir, prepared, tmp_path / "ck", resume=True)
    assert resumed.resumed_from == 3
    assert resumed.losses == pytest.approx(reference.losses, abs=1e-6)
    assert first.losses == pytest.approx(reference.losses, abs=1e-6)


def test_checkpoint_state_loads_without_pickle_and_round_trips(tiny_model_dir, prepared, tmp_path):
    model, _ = run(tiny_model_dir, prepared, tmp_path / "ck", max_steps=2)
    latest = ckpt.latest_checkpoint(tmp_path / "ck")
    assert latest.name == "step-00000002" and (latest / ckpt.MARKER).is_file()
    state = torch.load(latest / ckpt.STATE_FILE, weights_only=True)
    assert state["step"] == 2 and state["optimizer"]["state"] and state["scheduler"]["last_epoch"] == 2
    weights, _ = ckpt.load_checkpoint(latest)
    for name, parameter in model.named_parameters():
        assert torch.equal(weights[name], parameter.detach())


def test_incomplete_checkpoints_are_skipped_and_cleaned(tiny_model_dir, prepared, tmp_path):
    directory = tmp_path / "ck"
    run(tiny_model_dir, prepared, directory, max_steps=2)
    # A save killed before its rename, and a directory without the completion marker.
    (directory / ".tmp-step-00000004-999").mkdir()
    (directory / "step-00000006").mkdir()
    assert ckpt.latest_checkpoint(directory).name == "step-00000002"
    _, resumed = run(tiny_model_dir, prepared, directory, resume=True, max_steps=4)
    assert resumed.resumed_from == 2
    assert not list(directory.glob(".tmp-*"))


def test_non_finite_steps_in_a_row_stop_and_keep_the_last_good_checkpoint(tiny_model_dir, prepared, tmp_path):
    calls = {"n": 0}

    def exploding_loss(model, batch):
        calls["n"] += 1
        loss = causal_lm_loss(model, batch)
        return loss * float("nan") if calls["n"] > 5 else loss

    directory = tmp_path / "ck"
    with pytest.raises(NonFiniteLossError) as caught:
        run(tiny_model_dir, prepared, directory, loss_fn=exploding_loss, checkpoint_every=2, micro_batch_size=4,
            max_bad_steps=3, max_steps=12)
    message = caught.value.message
    assert "step 8" in message and "nan" in message and "3 non-finite steps in a row" in message
    assert "step-00000006" in message and "--resume" in message
    assert [p.name for p in ckpt.complete_checkpoints(directory)] == ["step-00000004", "step-00000006"]
    for checkpoint in ckpt.complete_checkpoints(directory):
        weights, _ = ckpt.load_checkpoint(checkpoint)
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_an_isolated_non_finite_step_is_skipped_and_counted(tiny_model_dir, prepared, caplog):
    calls = {"n": 0}

    def one_bad_step(model, batch):
        calls["n"] += 1
        loss = causal_lm_loss(model, batch)
        return loss * float("inf") if calls["n"] == 3 else loss

    snapshots = []
    config = TrainConfig(learning_rate=3e-3, batch_size=4, micro_batch_size=4, max_steps=6)
    model = fresh_model(tiny_model_dir)
    first = next(model.parameters())
    result = train(model, prepared.train, one_bad_step, config,
                   progress=lambda event: snapshots.append(first.detach().clone()))
    assert result.skipped_steps == [3] and result.steps == 6 and len(result.losses) == 5
    assert torch.equal(snapshots[2], snapshots[1]), "the skipped step changed no weight"
    assert not torch.equal(snapshots[3], snapshots[2]), "training went on after it"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "Step 3 skipped" in caplog.text


def test_a_loss_spike_is_logged(tiny_model_dir, prepared, caplog):
    calls = {"n": 0}

    def spiking_loss(model, batch):
        calls["n"] += 1
        loss = causal_lm_loss(model, batch)
        return loss * 1000 if calls["n"] == 7 else loss

    _, result = run(tiny_model_dir, prepared, loss_fn=spiking_loss, learning_rate=1e-6, max_steps=8,
                    max_grad_norm=1.0)
    assert result.loss_spikes == [7] and not result.skipped_steps
    assert "Loss spike at step 7" in caplog.text


def test_early_stopping_and_validation_history(tiny_model_dir, prepared):
    _, result = run(tiny_model_dir, prepared, max_steps=30, eval_every=1, early_stopping_patience=1,
                    learning_rate=0.5)
    assert result.validation and all(math.isfinite(v) for _, v in result.validation)
    assert result.stopped_early and result.steps < 30


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path):
    import resource
    import signal

    directory = tmp_path / "ck"
    ckpt.save_checkpoint(directory, 1, {"w": torch.ones(3)}, {"step": 1})
    # A file-size limit makes the next save fail half-way with an OSError, as a full disk would.
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        with pytest.raises(InvalidRequestError, match="Cannot write the checkpoint of step 2") as caught:
            ckpt.save_checkpoint(directory, 2, {"w": torch.ones(100_000)}, {"step": 2})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert "previous checkpoints are intact" in caught.value.message
    assert ckpt.latest_checkpoint(directory).name == "step-00000001"
    assert not list(directory.glob(".tmp-*"))
    weights, state = ckpt.load_checkpoint(directory / "step-00000001")
    assert state["step"] == 1 and torch.equal(weights["w"], torch.ones(3))
