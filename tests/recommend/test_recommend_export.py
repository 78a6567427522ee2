"""A recommender exports with the existing ONNX exporter and scores the same in ONNX Runtime."""

import numpy as np
import torch


def test_onnx_export_gives_the_same_item_scores(trained, tmp_path):
    import onnxruntime as ort

    from slmkit.export.onnx import ONNX_FILE, export_onnx, past_names
    from slmkit.recommend.model import FIRST_ITEM, START_ID, score_histories
    from slmkit.recommend.predict import load_recommender

    exported = export_onnx(str(trained.path), output=tmp_path / "cyc-onnx")  # with the parity check
    parity = exported.card.metrics["parity"]
    assert parity["kind"] == "item_scores" and parity["passed"], parity
    assert parity["top10_identical"] == parity["histories"] and parity["max_abs_difference"] <= 1e-3
    assert (exported.path / "catalogue.json").read_text() == (trained.path / "catalogue.json").read_text()
    assert not (exported.path / "histories.json").exists()  # users' behaviour data stays behind
    recommender = load_recommender(trained.path)
    config = recommender.model.config
    history = [recommender.catalogue.index[i] + FIRST_ITEM for i in ("i3", "i4", "i5")]
    want = score_histories(recommender.model, [history], recommender.max_length)[0]

    session = ort.InferenceSession(str(exported.path / ONNX_FILE), providers=["CPUExecutionProvider"])
    head = config.hidden_size // config.num_attention_heads
    feeds = {"input_ids": np.array([[START_ID, *history]], dtype=np.int64)}
    for name in past_names(config.num_hidden_layers):
        feeds[name] = np.zeros((1, config.num_key_value_heads, 0, head), dtype=np.float32)
    logits = session.run(["logits"], feeds)[0]
    got = torch.from_numpy(logits[0, -1, FIRST_ITEM:])
    assert torch.allclose(got, want, atol=1e-4)
    assert int(got.argmax()) == int(want.argmax()) == recommender.catalogue.index["i6"]


def test_int8_export_is_checked_on_item_scores(trained, tmp_path):
    from slmkit.export.onnx import export_onnx

    exported = export_onnx(str(trained.path), int8=True, output=tmp_path / "cyc-onnx-int8")
    parity = exported.card.metrics["parity"]
    assert parity["kind"] == "item_scores" and 0 <= parity["top10_overlap"] <= 1
    assert parity["passed"] == (parity["top10_overlap"] >= 0.8)


def test_a_broken_export_fails_the_item_score_check(trained, tmp_path):
    """The check can fail: an ONNX file from another recommender does not match this one's scores."""
    from safetensors.torch import load_file, save_file

    from slmkit.export import item_score_parity
    from slmkit.export.onnx import ONNX_FILE, export_onnx

    exported = export_onnx(str(trained.path), output=tmp_path / "good", check=False)
    import shutil

    other = tmp_path / "other"
    shutil.copytree(trained.path, other)
    weights = load_file(str(other / "model.safetensors"))
    save_file({k: v + 0.05 * torch.randn_like(v) for k, v in weights.items()}, str(other / "model.safetensors"))
    assert item_score_parity(trained.path, exported.path / ONNX_FILE, quantized=False)["passed"]
    assert not item_score_parity(other, exported.path / ONNX_FILE, quantized=False)["passed"]
