"""`slm export ...`, `slm generate --backend ...` and `slm bench`, driven as a user would."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from slmkit.cli import app

runner = CliRunner()


def test_export_gguf_then_generate_on_llamacpp_answers_like_torch(eot_model_dir, tmp_path):
    out = tmp_path / "tiny-f16"
    result = runner.invoke(app, ["export", "gguf", str(eot_model_dir), "--quant", "f16", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)["card"]
    assert card["format"] == "gguf" and card["metrics"]["parity"]["passed"]
    answers = {}
    for backend, model in (("llamacpp", out), ("torch", eot_model_dir)):
        done = runner.invoke(app, ["generate", str(model), "What is the capital of France?", "-n", "16",
                                   "--backend", backend, "--json"])
        assert done.exit_code == 0, done.output
        answers[backend] = json.loads(done.stdout)
    assert answers["llamacpp"]["text"] == answers["torch"]["text"]
    assert answers["llamacpp"]["finish_reason"] == answers["torch"]["finish_reason"]


def test_export_onnx_int8_prints_a_parity_summary(eot_model_dir, tmp_path):
    result = runner.invoke(app, ["export", "onnx", str(eot_model_dir), "--int8", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "parity passed" in result.stdout and "perplexity" in result.stdout


def test_bad_quant_is_one_line_error_and_exit_1(eot_model_dir, tmp_path):
    done = subprocess.run([sys.executable, "-m", "slmkit", "export", "gguf", str(eot_model_dir), "--quant", "q9",
                           "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("error: Unknown GGUF quant type 'q9'") and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", [["export", "gguf"], ["export", "onnx"], ["export", "docker"], ["bench"]])
def test_help_has_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout


def test_bench_measures_rows_in_one_run_with_chart(tiny_model_dir, tmp_path):
    chart = tmp_path / "bench.png"
    result = runner.invoke(app, ["bench", str(tiny_model_dir), "--formats",
                                 "torch-fp32,gguf-f16,peer-llama-cpp-q4_k_m,onnx-fp32", "--tokens", "16",
                                 "--workdir", str(tmp_path), "--chart", str(chart), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["row"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"torch-fp32", "gguf-f16", "peer-llama-cpp-q4_k_m", "onnx-fp32"}
    for row in rows.values():
        assert row["decode_tokens_per_s"] > 0 and row["peak_rss_bytes"] > 0 and row["size_bytes"] > 0
    # One perplexity implementation: the float formats agree with PyTorch.
    assert rows["gguf-f16"]["perplexity"] == pytest.approx(rows["torch-fp32"]["perplexity"], rel=5e-3)
    assert rows["onnx-fp32"]["perplexity"] == pytest.approx(rows["torch-fp32"]["perplexity"], rel=1e-3)
    assert rows["peer-llama-cpp-q4_k_m"]["perplexity"] is None
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["gguf-f32", "onnx-fp32"])
def test_slm_eval_text_perplexity_runs_on_the_export_backends(exports, eot_model_dir, tmp_path, kind):
    """Issue 7's `slm eval perplexity MODEL --text FILE` is `slm eval MODEL --text FILE --backend B`."""
    from slmkit.export.parity import held_out_text

    text = tmp_path / "held-out.txt"
    text.write_text(held_out_text(2000))
    backend = {"gguf-f32": "llamacpp", "onnx-fp32": "onnxruntime"}[kind]
    scores = {}
    for name, model, use in (("export", exports[kind].path, backend), ("torch", eot_model_dir, "torch")):
        done = runner.invoke(app, ["eval", str(model), "--text", str(text), "--window", "128", "--backend", use,
                                   "--json"])
        assert done.exit_code == 0, done.output
        scores[name] = json.loads(done.stdout)
    export_ppl = scores["export"]["perplexity"]["perplexity"]
    assert export_ppl == pytest.approx(scores["torch"]["perplexity"]["perplexity"], rel=1e-3)
