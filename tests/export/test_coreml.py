"""`slm export coreml`: a stateful .mlpackage converted by coremltools on Linux.

Core ML cannot run here (it needs macOS), so these tests check what Linux can: the traced
graph coremltools converts equals the PyTorch model, and the package's spec — files, inputs,
outputs, states, the ops that write the cache, and the weight size.
"""

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from slmkit.cli import app

CONTEXT = 64
runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """The tiny Llama exported once through the CLI, as a user would."""
    out = tmp_path_factory.mktemp("coreml") / "tiny-coreml"
    result = runner.invoke(app, ["export", "coreml", str(tiny_model_dir), "-o", str(out),
                                 "--context", str(CONTEXT), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def spec(exported):
    import coremltools as ct

    return ct.utils.load_spec(str(exported[0] / "model.mlpackage"))


@pytest.fixture(scope="module")
def tiny_config(tiny_model_dir):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(tiny_model_dir))


def test_artifact_holds_the_package_tokenizer_and_card(exported, tiny_model_dir):
    out, printed = exported
    package = out / "model.mlpackage"
    assert (package / "Manifest.json").is_file()
    assert (package / "Data/com.apple.CoreML/model.mlmodel").is_file()
    assert (package / "Data/com.apple.CoreML/weights/weight.bin").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    card = json.loads((out / "slm.json").read_text())
    assert card == printed["card"] and printed["path"] == str(out)
    assert card["format"] == "coreml" and card["dtype"] == "float16" and card["stage"] == "export"
    assert card["parents"][0]["path"] == str(tiny_model_dir.resolve())
    assert card["args"]["context"] == CONTEXT
    assert card["metrics"]["runs_here"] is False
    # No staging directory left beside the output.
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_traced_graph_reproduces_pytorch_through_prefill_and_decode(exported):
    check = exported[1]["card"]["metrics"]["trace_check"]
    assert check["passed"] and check["max_abs_logit_diff"] <= 1e-3
    assert check["chunks"] == [7, 1, 1, 4]  # other sizes than the traced 2-token step


def test_spec_declares_the_stateful_interface(spec, tiny_config):
    from coremltools.proto import FeatureTypes_pb2 as ft

    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion >= 9  # iOS 18 / macOS 15: the first with states
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(inputs) == ["inputIds", "causalMask"]
    ranges = {name: [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
              for name, array in inputs.items()}
    assert inputs["inputIds"].dataType == ft.ArrayFeatureType.INT32
    assert ranges["inputIds"] == [(1, 1), (1, CONTEXT)]
    assert inputs["causalMask"].dataType == ft.ArrayFeatureType.FLOAT16
    assert ranges["causalMask"] == [(1, 1), (1, 1), (1, CONTEXT), (1, CONTEXT)]
    outputs = {o.name: o.type.multiArrayType for o in spec.description.output}
    assert list(outputs) == ["logits"] and outputs["logits"].dataType == ft.ArrayFeatureType.FLOAT16
    head_dim = tiny_config.hidden_size // tiny_config.num_attention_heads
    cache = [tiny_config.num_hidden_layers, 1, tiny_config.num_key_value_heads, CONTEXT, head_dim]
    states = {s.name: s.type.stateType.arrayType for s in spec.description.state}
    assert list(states) == ["keyCache", "valueCache"]
    for array in states.values():
        assert list(array.shape) == cache and array.dataType == ft.ArrayFeatureType.FLOAT16
    assert spec.description.metadata.userDefined["slmkit.context_length"] == str(CONTEXT)


def test_every_layer_writes_its_keys_and_values_into_the_state(spec, tiny_config):
    main = spec.mlProgram.functions["main"]
    ops = Counter(op.type for op in main.block_specializations[main.opset].operations)
    layers = tiny_config.num_hidden_layers
    assert ops["write_state"] == 2 * layers and ops["slice_update"] == 2 * layers
    assert ops["read_state"] >= 2 * layers
    assert ops["linear"] == 7 * layers + 1  # q, k, v, o, gate, up, down per layer + lm_head


def test_weights_are_float16_and_sized_like_the_model(exported, tiny_model_dir):
    from safetensors.torch import load_file

    parameters = sum(t.numel() for t in load_file(str(tiny_model_dir / "model.safetensors")).values())
    out, printed = exported
    weights = (out / "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin").stat().st_size
    # 2 bytes per parameter, plus the file's per-tensor headers and 64-byte alignment.
    assert 2 * parameters <= weights <= 2 * parameters * 1.05 + 64 * 1024
    package_bytes = sum(p.stat().st_size for p in (out / "model.mlpackage").rglob("*") if p.is_file())
    assert printed["card"]["metrics"]["mlpackage_size_bytes"] == package_bytes


def test_trace_check_fails_on_a_graph_of_another_model(tiny_model_dir, tmp_path):
    """The check can fail: a decoder traced from different weights does not match."""
    import torch

    from slmkit.export.coreml import check_trace, load_llama, trace_decoder

    model = load_llama(tiny_model_dir)
    other = load_llama(tiny_model_dir)
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    traced, _ = trace_decoder(other, CONTEXT)
    check = check_trace(model, traced, CONTEXT)
    assert not check["passed"] and check["max_abs_logit_diff"] > 1e-3


def test_context_beyond_the_model_is_refused_before_writing(tiny_model_dir, tmp_path):
    from slmkit.errors import InvalidRequestError
    from slmkit.export.coreml import export_coreml

    with pytest.raises(InvalidRequestError, match=r"--context 100000 is outside 1\.\.512"):
        export_coreml(str(tiny_model_dir), output=tmp_path / "x", context=100000)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_never_overwritten(exported, tiny_model_dir):
    from slmkit.errors import ArtifactExistsError
    from slmkit.export.coreml import export_coreml

    out = exported[0]
    before = (out / "slm.json").read_bytes()
    with pytest.raises(ArtifactExistsError, match="it exists"):
        export_coreml(str(tiny_model_dir), output=out, context=8)
    assert (out / "slm.json").read_bytes() == before


def test_help_has_an_example_and_says_where_it_runs():
    result = runner.invoke(app, ["export", "coreml", "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout and "macOS" in result.stdout
