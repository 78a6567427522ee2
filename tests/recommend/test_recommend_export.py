"""A recommender exports with the existing ONNX exporter and scores the same in ONNX Runtime."""

import numpy as np
import torch


def test_onnx_export_gives_the_same_item_scores(trained, tmp_path):
    import onnxruntime as ort

    from slmkit.export.onnx import ONNX_FILE, export_onnx, past_names
    from slmkit.recommend.model import FIRST_ITEM, START_ID, score_histories
    from slmkit.recommend.predict import load_recommender

    exported = export_onnx(str(trained.path), output=tmp_path / "cyc-onnx", check=False)
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
