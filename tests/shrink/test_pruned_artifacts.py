"""A pruned model is an ordinary artifact: it chats, exports to GGUF and ONNX with the same
answers on llama.cpp and ONNX Runtime, and serves, even when width pruning left its heads
wider than hidden_size / heads."""

import json

from slmkit.engine import GenerationRequest, load_engine
from slmkit.prune import PruneConfig, prune


def test_a_width_and_depth_pruned_model_chats_exports_and_serves(slm_home, tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from slmkit.export.gguf import export_gguf
    from slmkit.export.onnx import export_onnx
    from slmkit.server.app import create_app
    from slmkit.server.settings import ServerSettings

    result = prune(str(tiny_model_dir), PruneConfig(layers=1, kv_groups=1, hidden_size=48, mlp_ratio=0.5,
                                                    calibration_tokens=512, evaluation_tokens=512), name="shrunk")
    config = json.loads((result.path / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["head_dim"]) == (48, 2, 16)

    request = GenerationRequest(prompt="The quick brown fox jumps over", max_new_tokens=16)
    torch_engine = load_engine("shrunk", backend="torch")
    want = [(c.text, c.token_ids) for c in torch_engine.stream(request)]
    chat = list(torch_engine.stream(GenerationRequest(messages=[{"role": "user", "content": "Hi"}], max_new_tokens=4)))
    assert chat[-1].stats.completion_tokens == 4
    torch_engine.close()

    exported = export_gguf("shrunk", "f32", tmp_path / "shrunk-gguf")
    gguf_engine = load_engine(str(exported.path), backend="llamacpp")
    got = [(c.text, c.token_ids) for c in gguf_engine.stream(request)]
    gguf_engine.close()
    assert got == want
    onnx_engine = load_engine(str(export_onnx("shrunk", int8=False, output=tmp_path / "shrunk-onnx").path),
                              backend="onnxruntime")
    assert [(c.text, c.token_ids) for c in onnx_engine.stream(request)] == want
    onnx_engine.close()

    with TestClient(create_app(ServerSettings(models=["shrunk"], default_max_tokens=8)),
                    base_url="http://127.0.0.1:8000") as client:
        reply = client.post("/v1/chat/completions",
                            json={"model": "shrunk", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 5
