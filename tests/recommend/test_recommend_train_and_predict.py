"""Training a recommender through the one loop, recommending, evaluating, resuming and updating."""

import json

import pytest
from rec_helpers import ITEMS, cyclic_rows, tiny_config, write_csv

from slmkit.errors import InvalidRequestError, ModelNotFoundError


def test_artifact_holds_model_catalogue_histories_and_card(trained):
    from slmkit.artifact import read_card

    files = {p.name for p in trained.path.iterdir()}
    assert {"config.json", "model.safetensors", "catalogue.json", "histories.json", "slm.json"} <= files
    card = read_card(trained.path)
    assert card.stage == "recommend" and card.args["items"] == ITEMS and card.args["users"] == 40
    assert card.metrics["best"]["step"] in {p["step"] for p in card.metrics["validation_curve"]}
    assert [p["step"] for p in trained.curve] == [20, 40, 60]


def test_the_model_learns_the_sequence_pattern_better_than_popularity(trained):
    from slmkit.recommend.evaluate import evaluate_recommender

    report = evaluate_recommender(str(trained.path))
    model, baselines = report["model"], report["baselines"]
    assert model["test"]["hr@10"] >= 0.9 and model["validation"]["hr@10"] >= 0.9
    assert model["test"]["ndcg@10"] > baselines["MostPop"]["test"]["ndcg@10"] + 0.3
    assert set(baselines) == {"MostPop", "Markov-1", "ItemKNN"}
    assert baselines["Markov-1"]["test"]["hr@10"] == 1.0  # the pattern is first-order


def test_recommend_for_a_user_excludes_seen_items_and_has_titles(trained):
    from slmkit.recommend.predict import load_recommender, recommend

    recommender = load_recommender(trained.path)
    history = recommender.histories["u0"]
    result = recommend(recommender, user="u0", k=5)
    assert result.source == "model" and len(result.items) == 5
    assert not {entry["item"] for entry in result.items} & set(history)
    expected_next = f"i{(int(history[-1][1:]) + 1) % ITEMS}"
    if expected_next not in history:
        assert result.items[0]["item"] == expected_next
    assert result.items[0]["title"].startswith("Item number")


def test_recommend_for_a_new_history_and_the_fallbacks(trained):
    from slmkit.recommend.predict import load_recommender, recommend

    recommender = load_recommender(trained.path)
    fresh = recommend(recommender, history=["i3", "i4", "i5", "not-an-item"], k=3)
    assert fresh.items[0]["item"] == "i6" and fresh.unknown_items == ["not-an-item"]
    assert recommend(recommender, history=["i3"], k=3, exclude_seen=False).source == "model"
    popular = recommend(recommender, history=[], k=4)
    counts = recommender.catalogue.popularity
    assert popular.source == "popularity"
    assert [e["score"] for e in popular.items] == sorted(counts, reverse=True)[:4]
    with pytest.raises(ModelNotFoundError, match="Unknown user 'nobody'"):
        recommend(recommender, user="nobody")
    with pytest.raises(InvalidRequestError, match="k must be"):
        recommend(recommender, user="u0", k=0)


def test_existing_name_is_refused_without_resume(trained, monkeypatch):
    from slmkit.errors import ArtifactExistsError
    from slmkit.recommend.train import train_recommender

    monkeypatch.setenv("SLM_HOME", str(trained.path.parent.parent))
    with pytest.raises(ArtifactExistsError, match="--name NEW"):
        train_recommender([trained.path.parent.parent / "log.csv"], "cyc", tiny_config())


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_exactly(tmp_path, slm_home):
    from slmkit.recommend.train import train_recommender

    log = write_csv(tmp_path / "log.csv", cyclic_rows(users=20, length=10))
    whole = train_recommender([log], "whole", tiny_config(max_steps=12, validate_every=4, checkpoint_every=4,
                                                         dropout=0.1))

    def stop_at_6(event):
        if event["step"] == 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_recommender([log], "cut", tiny_config(max_steps=12, validate_every=4, checkpoint_every=4, dropout=0.1),
                          progress=stop_at_6)
    resumed = train_recommender([log], "cut", tiny_config(max_steps=12, validate_every=4, checkpoint_every=4,
                                                          dropout=0.1), resume=True)
    assert resumed.training.resumed_from == 4
    assert len(resumed.training.losses) == 12
    assert resumed.training.losses == pytest.approx(whole.training.losses, abs=1e-6)
    assert [p["hr@10"] for p in resumed.curve] == pytest.approx([p["hr@10"] for p in whole.curve])
    assert resumed.best["step"] == whole.best["step"]


def test_resume_on_more_data_updates_the_model_and_keeps_item_ids(tmp_path, slm_home):
    from slmkit.artifact import read_card
    from slmkit.recommend.model import Catalogue
    from slmkit.recommend.predict import load_recommender, recommend
    from slmkit.recommend.train import train_recommender

    rows = cyclic_rows(users=20, length=10)
    log = write_csv(tmp_path / "log.csv", rows)
    first = train_recommender([log], "shop", tiny_config(max_steps=20))
    before = Catalogue.read(first.path)
    more = rows + [("u0", "brand-new", 1_800_000_000), ("u99", "i1", 1_800_000_000), ("u99", "i2", 1_800_000_100)]
    write_csv(log, more)
    updated = train_recommender([log], "shop", tiny_config(max_steps=10), resume=True)
    after = Catalogue.read(updated.path)
    assert after.items[:len(before)] == before.items and after.items[-1] == "brand-new"
    card = read_card(updated.path)
    assert card.args["update"] and card.parents[0].content_sha256 == first.card.content_sha256
    recommender = load_recommender("shop")
    assert recommender.histories["u99"] == ["i1", "i2"]
    assert recommend(recommender, user="u99", k=3).items
    assert not list(slm_home.glob("models/.shop*"))  # no staging copy left behind


def test_no_holdout_model_refuses_evaluation(tmp_path, slm_home):
    from slmkit.recommend.evaluate import evaluate_recommender
    from slmkit.recommend.train import train_recommender

    log = write_csv(tmp_path / "log.csv", cyclic_rows(users=10, length=6))
    train_recommender([log], "all", tiny_config(max_steps=2, holdout=False))
    with pytest.raises(InvalidRequestError, match="--holdout"):
        evaluate_recommender("all")


def test_histories_file_is_plain_json(trained):
    data = json.loads((trained.path / "histories.json").read_text())
    assert len(data) == 40 and all(len(items) == 14 for items in data.values())


def test_time_budget_ends_the_run_with_the_best_weights(tmp_path, slm_home):
    from slmkit.recommend.train import train_recommender

    log = write_csv(tmp_path / "log.csv", cyclic_rows(users=20, length=10))
    result = train_recommender([log], "budget", tiny_config(max_steps=10_000, validate_every=50, time_budget_s=1.0))
    assert 1 <= result.training.steps < 10_000 and result.card.metrics["time_budget_reached"]
    assert result.curve[-1]["step"] == result.training.steps and result.curve[-1]["train_seconds"] >= 1.0
    assert result.path.is_dir()


def test_cpu_budget_ends_the_run_too(tmp_path, slm_home):
    from slmkit.recommend.train import train_recommender

    log = write_csv(tmp_path / "log.csv", cyclic_rows(users=20, length=10))
    result = train_recommender([log], "cpu", tiny_config(max_steps=10_000, validate_every=50, cpu_budget_s=1.0))
    assert 1 <= result.training.steps < 10_000 and result.card.metrics["time_budget_reached"]
    assert result.curve[-1]["train_cpu_seconds"] >= 1.0


def test_training_windows_overlap_with_a_shorter_stride():
    from slmkit.recommend.model import FIRST_ITEM, START_ID
    from slmkit.recommend.train import training_examples

    def windows(stride):
        return [[t - FIRST_ITEM for t in e.input_ids[1:]] for e in training_examples([list(range(10))], 4, stride)]

    assert windows(0) == [[6, 7, 8, 9], [2, 3, 4, 5], [0, 1]]  # cut from the end, no overlap
    assert windows(2) == [[6, 7, 8, 9], [4, 5, 6, 7], [2, 3, 4, 5], [0, 1, 2, 3]]  # stops once a window starts at 0
    example = training_examples([[0, 1, 2]], 4)[0]
    assert example.input_ids[0] == START_ID and example.labels[1:] == example.input_ids[1:]
