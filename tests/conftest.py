import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama in HF format, built once per test session. Never modify it."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from slmkit.engine.torch_backend import TorchEngine

    return TorchEngine(tiny_model_dir)


@pytest.fixture()
def slm_home(tmp_path, monkeypatch) -> Path:
    """An empty model store for one test."""
    home = tmp_path / "slm-home"
    monkeypatch.setenv("SLM_HOME", str(home))
    return home
