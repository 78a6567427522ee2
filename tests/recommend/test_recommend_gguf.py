"""A recommender exports to GGUF: llama.cpp loads it, reads the catalogue as its vocabulary and
scores the next item like PyTorch; the check behind that can fail."""

import json
import shutil

import numpy as np
import pytest
import torch


def _perturbed_copy(source, folder):
    """The same recommender with every weight moved a little: other scores, same catalogue."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    weights = load_file(str(folder / "model.safetensors"))
    generator = torch.Generator().manual_seed(1)
    save_file({k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in weights.items()},
              str(folder / "model.safetensors"))
    return folder


def test_gguf_export_loads_in_llama_cpp_and_scores_like_pytorch(trained, tmp_path):
    from slmkit.engine.llamacpp_backend import open_llama
    from slmkit.errors import InvalidRequestError
    from slmkit.export.gguf import GGUF_FILE, export_gguf
    from slmkit.recommend.model import FIRST_ITEM, START_ID, score_histories
    from slmkit.recommend.predict import load_recommender

    exported = export_gguf(str(trained.path), "f32", tmp_path / "cyc-f32")  # with the parity check
    parity = exported.card.metrics["parity"]
    assert parity["kind"] == "item_scores" and parity["passed"], parity
    assert parity["max_abs_difference"] <= parity["tolerance"] and parity["top10_rank_score_gap"] <= parity["tolerance"]
    assert parity["file_vocabulary_match"]
    assert exported.card.format == "gguf" and exported.card.dtype == "f32"
    assert (exported.path / "catalogue.json").read_text() == (trained.path / "catalogue.json").read_text()
    assert not (exported.path / "histories.json").exists()  # users' behaviour data stays behind

    recommender = load_recommender(trained.path)
    catalogue = recommender.catalogue
    history = [catalogue.index[i] + FIRST_ITEM for i in ("i3", "i4", "i5")]
    want = score_histories(recommender.model, [history], recommender.max_length)[0]
    llm = open_llama(exported.path / GGUF_FILE, n_ctx=64, logits_all=True, verbose=False)
    try:
        assert llm.n_vocab() == len(catalogue) + FIRST_ITEM
        # The file's own vocabulary: item i is token i + 2, its text the item's id.
        assert llm._model.token_get_text(catalogue.index["i6"] + FIRST_ITEM) == "i6"
        assert llm.token_bos() == START_ID
        llm.eval([START_ID, *history])
        got = torch.from_numpy(np.array(llm.scores[len(history)])[FIRST_ITEM:])
    finally:
        llm.close()
    assert torch.allclose(got, want, atol=1e-3)
    assert int(got.argmax()) == int(want.argmax()) == catalogue.index["i6"]
    with pytest.raises(InvalidRequestError, match="GGUF export of a recommender"):
        load_recommender(exported.path / GGUF_FILE)  # says what the file is, not "no catalogue.json"


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_k_m"])
def test_smaller_gguf_types_are_checked_by_their_rule(trained, tmp_path, quant):
    from slmkit.export.gguf import export_gguf
    from slmkit.export.gguf_items import ITEM_SCORE_TOLERANCE

    parity = export_gguf(str(trained.path), quant, tmp_path / f"cyc-{quant}").card.metrics["parity"]
    assert parity["kind"] == "item_scores" and parity["file_vocabulary_match"]
    if quant == "f16":
        tolerance = ITEM_SCORE_TOLERANCE["f16"]
        assert parity["tolerance"] == tolerance and parity["passed"], parity
        assert parity["max_abs_difference"] <= tolerance and parity["top10_rank_score_gap"] <= tolerance
    else:
        assert parity["tolerance"] is None and parity["passed"] == (parity["top10_overlap"] >= 0.8)


def test_the_item_score_check_fails_against_a_gguf_of_other_weights(trained, tmp_path):
    from slmkit.export import item_score_parity
    from slmkit.export.gguf import GGUF_FILE, export_gguf
    from slmkit.export.gguf_items import ITEM_SCORE_TOLERANCE

    other = _perturbed_copy(trained.path, tmp_path / "other")
    gguf_file = export_gguf(str(other), "f32", tmp_path / "other-f32", check=False).path / GGUF_FILE
    tolerance = ITEM_SCORE_TOLERANCE["f32"]
    assert item_score_parity(other, gguf_file, quantized=False, tolerance=tolerance)["passed"]
    failed = item_score_parity(trained.path, gguf_file, quantized=False, tolerance=tolerance)
    assert not failed["passed"] and failed["max_abs_difference"] > ITEM_SCORE_TOLERANCE["f32"]


def test_the_vocabulary_check_fails_when_the_catalogue_differs(trained, tmp_path):
    from slmkit.export.gguf import GGUF_FILE, export_gguf
    from slmkit.export.gguf_items import gguf_item_parity

    gguf_file = export_gguf(str(trained.path), "f32", tmp_path / "cyc-f32", check=False).path / GGUF_FILE
    renamed = tmp_path / "renamed"
    shutil.copytree(trained.path, renamed)
    catalogue = json.loads((renamed / "catalogue.json").read_text())
    catalogue["items"][0] = "renamed-item"
    (renamed / "catalogue.json").write_text(json.dumps(catalogue))
    result = gguf_item_parity(renamed, gguf_file, "f32", threads=1)
    assert not result["file_vocabulary_match"] and not result["passed"]
    assert result["top10_identical"] == result["histories"]  # same weights: only the vocabulary differs


def test_an_item_named_like_a_special_token_is_refused_before_writing(trained, tmp_path):
    from slmkit.errors import InvalidRequestError
    from slmkit.export.gguf import export_gguf

    clash = tmp_path / "clash"
    shutil.copytree(trained.path, clash)
    catalogue = json.loads((clash / "catalogue.json").read_text())
    catalogue["items"][3] = "<pad>"
    (clash / "catalogue.json").write_text(json.dumps(catalogue))
    with pytest.raises(InvalidRequestError, match=r"\['<pad>'\] cannot be GGUF tokens"):
        export_gguf(str(clash), "f16", tmp_path / "clash-f16")
    assert not (tmp_path / "clash-f16").exists()


def test_slm_export_gguf_of_a_recommender_prints_the_item_check(trained, tmp_path):
    from typer.testing import CliRunner

    from slmkit.cli import app

    result = CliRunner().invoke(app, ["export", "gguf", str(trained.path), "--quant", "q8_0", "-o",
                                      str(tmp_path / "cyc-q8"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "next-item scores of 32 random histories" in result.stdout and "passed" in result.stdout


def test_llama_cpp_tokenizes_item_ids_and_survives_other_text(trained, tmp_path):
    """Devices feed token ids, but llama.cpp's tokenizer on this vocabulary must not abort the
    process on text (SentencePiece's type did: std::out_of_range); run apart so an abort is a failure."""
    import subprocess
    import sys

    from slmkit.export.gguf import GGUF_FILE, export_gguf
    from slmkit.recommend.model import FIRST_ITEM, PAD_ID
    from slmkit.recommend.predict import load_recommender

    gguf_file = export_gguf(str(trained.path), "f16", tmp_path / "cyc-f16", check=False).path / GGUF_FILE
    script = ("import sys; from slmkit.engine.llamacpp_backend import open_llama; "
              "llm = open_llama(sys.argv[1], n_ctx=64, verbose=False); "
              "print(llm.tokenize(b'i3', add_bos=False), llm.tokenize(b'hello, world', add_bos=False)); llm.close()")
    done = subprocess.run([sys.executable, "-c", script, str(gguf_file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    item, text = done.stdout.strip().splitlines()[-1].split("] [")
    assert item == f"[{load_recommender(trained.path).catalogue.index['i3'] + FIRST_ITEM}"
    assert set(text.rstrip("]").split(", ")) == {str(PAD_ID)}  # unknown text is the unknown token: padding
