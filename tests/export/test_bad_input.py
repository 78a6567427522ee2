"""Bad input to the exporters and the new backends: a clear SlmError, fast, no file left behind."""

import json
import os
import shutil
import struct
import time

import pytest

from slmkit.engine import load_engine
from slmkit.errors import CorruptModelError, InvalidRequestError, UnsafeModelFileError


def test_unknown_quant_type_is_refused_before_any_work(eot_model_dir, tmp_path):
    from slmkit.export.gguf import export_gguf

    started = time.perf_counter()
    with pytest.raises(InvalidRequestError, match="q4_k_m"):
        export_gguf(str(eot_model_dir), "q3_xyz", tmp_path / "out")
    assert time.perf_counter() - started < 1.0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exporter", ["gguf", "onnx", "coreml"])
def test_architecture_the_format_cannot_hold_is_refused(eot_model_dir, tmp_path, exporter):
    from slmkit.export.coreml import export_coreml
    from slmkit.export.gguf import export_gguf
    from slmkit.export.onnx import export_onnx

    source = tmp_path / "gpt2ish"
    shutil.copytree(eot_model_dir, source)
    config = json.loads((source / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (source / "config.json").write_text(json.dumps(config))
    out = tmp_path / "exports"
    out.mkdir()
    with pytest.raises(InvalidRequestError, match="Llama-architecture"):
        if exporter == "gguf":
            export_gguf(str(source), "f16", out / "x")
        elif exporter == "onnx":
            export_onnx(str(source), output=out / "x")
        else:
            export_coreml(str(source), output=out / "x")
    assert list(out.iterdir()) == []


def test_failure_mid_export_leaves_no_partial_directory(eot_model_dir, tmp_path):
    """The tokenizer check fails after the staging directory exists: it must vanish."""
    from slmkit.export.gguf import export_gguf

    source = tmp_path / "odd-tokenizer"
    shutil.copytree(eot_model_dir, source)
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Whitespace"}
    (source / "tokenizer.json").write_text(json.dumps(tokenizer))
    out = tmp_path / "exports"
    out.mkdir()
    with pytest.raises(InvalidRequestError, match="byte-level"):
        export_gguf(str(source), "q8_0", out / "x")
    assert list(out.iterdir()) == []


def test_rows_too_short_for_any_quant_block_are_refused(eot_model_dir, tmp_path):
    from slmkit.export.gguf import export_gguf

    source = tmp_path / "odd-width"
    shutil.copytree(eot_model_dir, source)
    config = json.loads((source / "config.json").read_text())
    config["intermediate_size"] = 100
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidRequestError, match="--quant f16"):
        export_gguf(str(source), "q4_0", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _gguf_header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


@pytest.mark.parametrize("make", [
    lambda good: good[: len(good) // 2],  # truncated: tensor data past the end
    lambda good: good[:4],  # only the magic
    lambda good: _gguf_header(2**63, 2**63) + good[24:],  # absurd counts
    lambda good: b"NOPE" + good[4:],  # not GGUF at all
])
def test_corrupt_gguf_is_rejected_fast_by_the_llamacpp_backend(exports, tmp_path, make):
    good = (exports["gguf-f16"].path / "model.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(make(good))
    started = time.perf_counter()
    with pytest.raises(CorruptModelError):
        load_engine(str(bad), backend="llamacpp")
    assert time.perf_counter() - started < 1.0


def test_truncated_onnx_is_rejected(exports, tmp_path):
    folder = tmp_path / "onnx"
    shutil.copytree(exports["onnx-fp32"].path, folder)
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    with pytest.raises(CorruptModelError):
        load_engine(str(folder))


def _onnx_with_external(folder, location: str):
    """A one-node ONNX model whose weight lives in an external file named ``location``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [weight])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "a/../../secret.bin", "/etc/passwd", "link.bin"])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    from slmkit.export.onnx import check_onnx_file

    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(tmp_path / "secret.bin", folder / "link.bin")  # a symlink leading out of the folder
    path = _onnx_with_external(folder, location)
    with pytest.raises(UnsafeModelFileError):
        check_onnx_file(path)


def test_onnx_external_data_inside_the_folder_is_accepted_and_checked_for_length(tmp_path):
    from slmkit.export.onnx import check_onnx_file

    path = _onnx_with_external(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    check_onnx_file(path)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(CorruptModelError, match="past the end"):
        check_onnx_file(path)



def _patch_tokens_array_type(good: bytes, item_type: int) -> bytes:
    """The tokenizer.ggml.tokens array re-typed (strings → ``item_type``), nothing else changed."""
    key = b"tokenizer.ggml.tokens"
    at = good.index(key) + len(key)
    assert struct.unpack("<II", good[at : at + 8]) == (9, 8)  # an array of strings
    return good[: at + 4] + struct.pack("<I", item_type) + good[at + 8 :]


@pytest.mark.parametrize("item_type", [4, 12, 99])  # uint32, float64, no such type
def test_gguf_with_a_mistyped_vocabulary_is_rejected_fast(exports, tmp_path, item_type):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_patch_tokens_array_type((exports["gguf-f16"].path / "model.gguf").read_bytes(), item_type))
    started = time.perf_counter()
    with pytest.raises(CorruptModelError):
        load_engine(str(bad), backend="llamacpp")
    assert time.perf_counter() - started < 1.0
