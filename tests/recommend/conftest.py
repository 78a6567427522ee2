"""Fixtures of the recommender tests: one shared tiny recommender trained on a synthetic log."""

import pytest
from rec_helpers import ITEMS, cyclic_rows, tiny_config, write_csv


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
