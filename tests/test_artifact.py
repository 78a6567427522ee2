import json

import pytest

from slmkit.artifact import Card, ParentRef, content_hash, finalize_card, read_card, staged_directory
from slmkit.errors import ArtifactExistsError, CorruptModelError


def test_staged_directory_appears_only_when_complete(tmp_path):
    destination = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_directory(destination) as staging:
        (staging / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert not destination.exists()
    assert list(tmp_path.iterdir()) == [], "the temporary directory must be cleaned up"

    with staged_directory(destination) as staging:
        (staging / "a.txt").write_text("done")
    assert (destination / "a.txt").read_text() == "done"


def test_staged_directory_never_overwrites(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("precious")
    with pytest.raises(ArtifactExistsError, match="Delete it or choose another"), staged_directory(tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "keep").read_text() == "precious"


def test_card_round_trip_and_hash(tmp_path):
    (tmp_path / "weights").write_bytes(b"abc")
    card = Card(name="m", stage="finetune", parents=[ParentRef("base", "f" * 64)], args={"lr": 1e-4},
                metrics={"val_loss": 1.5})
    finalize_card(tmp_path, card)
    loaded = read_card(tmp_path)
    assert loaded == card
    assert loaded.content_sha256 == content_hash(tmp_path)
    assert json.loads((tmp_path / "slm.json").read_text())["parents"][0]["name"] == "base"
    before = content_hash(tmp_path)
    (tmp_path / "weights").write_bytes(b"abd")
    assert content_hash(tmp_path) != before


def test_corrupt_card_names_the_file(tmp_path):
    (tmp_path / "slm.json").write_text("{not json")
    with pytest.raises(CorruptModelError, match="slm.json"):
        read_card(tmp_path)


def test_losing_a_race_to_the_same_destination_is_artifact_exists(tmp_path):
    destination = tmp_path / "model"
    with pytest.raises(ArtifactExistsError, match="appeared while"), staged_directory(destination) as staging:
        (staging / "mine").write_text("late")
        destination.mkdir()
        (destination / "theirs").write_text("first")
    assert [p.name for p in destination.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "the losing temp dir is cleaned up"
