"""Fast by default: a model with a GGUF runs on llama.cpp unless asked otherwise, and the
store, the CLI and the server say which backend and file serve it."""

import json
from pathlib import Path

import pytest

from slmkit.engine import backend_name, load_engine, serving_plan


def test_built_in_model_is_served_from_a_gguf_without_importing(slm_home):
    from slmkit.references import BUILTIN_INFERENCE_QUANT, builtin_file

    want = f"smollm2-135m-{BUILTIN_INFERENCE_QUANT}/model.gguf" if BUILTIN_INFERENCE_QUANT else \
        builtin_file("smollm2-135m").name
    assert serving_plan("smollm2-135m") == {"backend": "llamacpp", "file": want}
    assert serving_plan("smollm2-135m", "torch")["backend"] == "torch"
    assert not (slm_home / "models").exists(), "answering the plan must not import the model"


def test_plans_follow_the_format(exports, eot_model_dir):
    assert serving_plan(str(exports["gguf-q4_k_m"].path)) == {"backend": "llamacpp", "file": "model.gguf"}
    assert serving_plan(str(eot_model_dir)) == {"backend": "torch", "file": "model.safetensors"}
    assert serving_plan(str(exports["onnx-fp32"].path))["backend"] == "onnxruntime"


def test_backend_names():
    from slmkit.errors import InvalidRequestError

    assert backend_name("llama.cpp") == backend_name("llamacpp") == "llamacpp"
    assert backend_name("auto") == "auto"
    with pytest.raises(InvalidRequestError, match="Available: auto, torch, llamacpp, onnxruntime"):
        backend_name("tensorrt")


def test_models_show_json_has_the_inference_plan(slm_home, eot_model_dir):
    from typer.testing import CliRunner

    from slmkit.cli import app
    from slmkit.export.gguf import export_gguf

    export_gguf(str(eot_model_dir), "q8_0", check=False)
    result = CliRunner().invoke(app, ["models", "show", "tiny-eot-q8_0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["inference"] == {"backend": "llamacpp", "file": "model.gguf"}
    engine = load_engine("tiny-eot-q8_0")
    assert type(engine).__name__ == "LlamaCppEngine"
    engine.close()


def test_v1_models_says_which_backend_and_file_serve(exports, eot_model_dir):
    from fastapi.testclient import TestClient

    from slmkit.server.app import create_app
    from slmkit.server.settings import ServerSettings

    gguf = str(exports["gguf-q4_k_m"].path)
    settings = ServerSettings(models=[gguf, str(eot_model_dir)])
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    # Models given as paths are published under their directory name (no path reaches a client).
    gguf_id, hf_id = Path(gguf).name, eot_model_dir.name
    assert (cards[gguf_id]["backend"], cards[gguf_id]["file"]) == ("llamacpp", "model.gguf")
    assert (cards[hf_id]["backend"], cards[hf_id]["file"]) == ("torch", "model.safetensors")


def test_a_store_model_runs_on_its_own_gguf_export_until_its_weights_change(slm_home, eot_model_dir, tiny_model_dir):
    import shutil

    from slmkit.export.gguf import export_gguf
    from slmkit.models import import_model, store_path

    import_model(eot_model_dir, name="extractor")
    assert serving_plan("extractor")["backend"] == "torch", "no GGUF export yet: the HF weights serve"
    export_gguf("extractor", "q8_0", check=False)
    export_gguf("extractor", "f16", check=False)
    assert serving_plan("extractor") == {"backend": "llamacpp", "file": "extractor-f16/model.gguf"}
    engine = load_engine("extractor")
    assert type(engine).__name__ == "LlamaCppEngine" and engine.model_name == "extractor"
    assert str(engine.path).endswith("extractor-f16/model.gguf"), "the float export is preferred over q8_0"
    engine.close()
    assert serving_plan("extractor", "torch")["backend"] == "torch"
    # Other weights under the same name: the exports are of the old weights and must not serve.
    shutil.rmtree(store_path("extractor"))
    import_model(tiny_model_dir, name="extractor")
    assert serving_plan("extractor")["backend"] == "torch"
