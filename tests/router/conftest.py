import pytest
from route_data import HELDOUT, TRAIN, write_routes


@pytest.fixture()
def routes_files(tmp_path):
    return write_routes(tmp_path / "train.jsonl", TRAIN), write_routes(tmp_path / "heldout.jsonl", HELDOUT)


@pytest.fixture(scope="module")
def trained_router(tmp_path_factory):
    """A router trained once per module in its own store; returns (store home, router name)."""
    from slmkit.router.train import train_router

    home = tmp_path_factory.mktemp("router-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLM_HOME", str(home))
        train_router([write_routes(home / "train.jsonl", TRAIN)], "demo")
    return home, "demo"
