"""Fixtures for the export tests: a tiny model that ends its chat turn, and its exports.

The random tiny model never chooses its end-of-turn token by itself, so a copy is edited to
end a turn after a few tokens: the lm_head row of ``<|im_end|>`` becomes a slightly scaled
copy of the row of the token greedy decoding picks at step 3. A stop check then means
something: the export must end the turn on the same step as PyTorch.
"""

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def eot_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from safetensors.torch import load_file, save_file

    from slmkit.engine import GenerationRequest
    from slmkit.engine.torch_backend import TorchEngine
    from slmkit.export.parity import STOP_PROMPT

    folder = tmp_path_factory.mktemp("eot") / "tiny-eot"
    shutil.copytree(tiny_model_dir, folder)
    engine = TorchEngine(folder)
    request = GenerationRequest(messages=[{"role": "user", "content": STOP_PROMPT}], max_new_tokens=8)
    ids = [i for chunk in engine.stream(request) for i in chunk.token_ids]
    eos = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    engine.close()
    weights = load_file(str(folder / "model.safetensors"))
    weights["lm_head.weight"][eos] = weights["lm_head.weight"][ids[3]] * 1.05
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    check = TorchEngine(folder)
    chunks = list(check.stream(request))
    check.close()
    assert chunks[-1].finish_reason == "stop", "the edited model should end its turn"
    return folder


@pytest.fixture(scope="session")
def exports(eot_model_dir, tmp_path_factory) -> dict:
    """GGUF f32, f16, q4_k_m and ONNX fp32, int8 exports of the tiny model, made once."""
    from slmkit.export.gguf import export_gguf
    from slmkit.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("exports")
    made = {}
    for quant in ("f32", "f16", "q4_k_m"):
        made[f"gguf-{quant}"] = export_gguf(str(eot_model_dir), quant, root / f"gguf-{quant}")
    made["onnx-fp32"] = export_onnx(str(eot_model_dir), int8=False, output=root / "onnx")
    made["onnx-int8"] = export_onnx(str(eot_model_dir), int8=True, output=root / "onnx-int8")
    return made
