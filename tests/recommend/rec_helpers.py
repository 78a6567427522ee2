"""Tiny synthetic behaviour logs and settings for the recommender tests (seconds, no real data)."""

import random
from pathlib import Path

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


def tiny_config(**overrides):
    from slmkit.recommend.train import RecommendConfig

    settings = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_length=16,
                    batch_size=8, micro_batch_size=8, learning_rate=1e-2, max_steps=60, validate_every=20,
                    dropout=0.0, attention_dropout=0.0, checkpoint_every=20)
    settings.update(overrides)
    return RecommendConfig(**settings)
