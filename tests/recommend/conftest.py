"""Tiny synthetic behaviour logs for the recommender tests (seconds, no real data)."""

import random
from pathlib import Path

import pytest

ITEMS = 24


def cyclic_rows(users: int = 40, length: int = 14, seed: int = 0, first_user: int = 0) -> list[tuple]:
    """Users who walk the catalogue in steps of one (item i is followed by item i+1 mod ITEMS),
    from a random start: the next item is predictable from the last one, so a sequential model
    (and Markov-1) should find it, while popularity cannot."""
    rng = random.Random(seed)
    rows = []
    for user in range(first_user, first_user + users):
        start = rng.randrange(ITEMS)
        for step in range(length):
            rows.append((f"u{user}", f"i{(start + step) % ITEMS}", 1_700_000_000 + 60 * step))
    rng.shuffle(rows)  # a log is not sorted by user; the timestamps give the order
    return rows


def write_csv(path: Path, rows) -> Path:
    path.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return path


@pytest.fixture()
def cyclic_log(tmp_path) -> Path:
    return write_csv(tmp_path / "log.csv", cyclic_rows())


@pytest.fixture()
def titles_file(tmp_path) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(f'{{"item": "i{n}", "title": "Item number {n}"}}\n' for n in range(ITEMS)))
    return path


def tiny_config(**overrides):
    from slmkit.recommend.train import RecommendConfig

    settings = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_length=16,
                    batch_size=8, micro_batch_size=8, learning_rate=1e-2, max_steps=60, validate_every=20,
                    dropout=0.0, attention_dropout=0.0, checkpoint_every=20)
    settings.update(overrides)
    return RecommendConfig(**settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny recommender trained on the cyclic log, shared by the read-only tests."""
    import os

    home = tmp_path_factory.mktemp("rec-home")
    log = write_csv(home / "log.csv", cyclic_rows())
    titles = home / "items.jsonl"
    titles.write_text("".join(f'{{"item": "i{n}", "title": "Item number {n}"}}\n' for n in range(ITEMS)))
    old = os.environ.get("SLM_HOME")
    os.environ["SLM_HOME"] = str(home)
    try:
        from slmkit.recommend.train import train_recommender

        result = train_recommender([log], "cyc", tiny_config(), items_file=titles)
    finally:
        if old is None:
            os.environ.pop("SLM_HOME", None)
        else:
            os.environ["SLM_HOME"] = old
    return result
