"""The local store and model references."""

import shutil

import pytest

from slmkit.errors import (
    ArtifactExistsError,
    CorruptModelError,
    InvalidRequestError,
    ModelNotFoundError,
    UnsafeModelFileError,
)
from slmkit.models import get_model, import_model, lineage, list_models, remove_model
from slmkit.references import resolve, resolve_hf


def test_import_list_show_remove(slm_home, tiny_model_dir):
    stored = import_model(tiny_model_dir, name="tiny")
    assert stored.card.stage == "import" and stored.card.architecture == "LlamaForCausalLM"
    from transformers import AutoModelForCausalLM

    assert stored.card.parameters == AutoModelForCausalLM.from_pretrained(tiny_model_dir).num_parameters()
    assert stored.card.source["sha256"] and stored.card.content_sha256
    assert [m.name for m in list_models()] == ["tiny"]
    assert [c.name for c in lineage("tiny")] == ["tiny"]
    assert resolve("tiny").path == stored.path
    with pytest.raises(ArtifactExistsError, match="slm models rm tiny"):
        import_model(tiny_model_dir, name="tiny")
    remove_model("tiny")
    assert list_models() == []
    with pytest.raises(ModelNotFoundError):
        get_model("tiny")


def test_lineage_follows_parents(slm_home, tiny_model_dir):
    from slmkit.artifact import ParentRef, read_card, write_card

    base = import_model(tiny_model_dir, name="base")
    child = import_model(tiny_model_dir, name="child")
    card = read_card(child.path)
    card.stage, card.parents = "finetune", [ParentRef("base", base.card.content_sha256)]
    write_card(child.path, card)
    assert [(c.name, c.stage) for c in lineage("child")] == [("child", "finetune"), ("base", "import")]


def test_unknown_name_lists_known_ones(slm_home):
    with pytest.raises(ModelNotFoundError) as info:
        resolve("no-such-model")
    assert "smollm2-135m" in info.value.message and "minilm-l6" in info.value.message


@pytest.mark.parametrize("name", ["../evil", "a/b", "/abs", "..", ".hidden", "x" * 200])
def test_unsafe_store_names_are_rejected(slm_home, tiny_model_dir, name):
    with pytest.raises(InvalidRequestError):
        import_model(tiny_model_dir, name=name)
    assert not slm_home.exists() or not any(slm_home.rglob("config.json"))


def test_pickle_weights_are_refused(tmp_path, slm_home):
    (tmp_path / "model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UnsafeModelFileError):
        resolve(tmp_path / "model.bin")
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(UnsafeModelFileError, match="pickle"):
        import_model(folder, name="p")


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(CorruptModelError, match="no config.json"):
        resolve(tmp_path)


def test_hf_reference_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        resolve("hf:HuggingFaceTB/SmolLM2-135M-Instruct")


def test_hf_reference_found_in_cache(tmp_path, monkeypatch, tiny_model_dir):
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--tiny" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert resolve("hf:org/tiny").path == snapshot.resolve()


def test_builtin_embedding_model_resolves_to_its_package(slm_home):
    resolved = resolve_hf("minilm-l6")
    assert (resolved.path / "model.safetensors").exists()
    assert not slm_home.exists(), "an HF-format built-in needs no import"
