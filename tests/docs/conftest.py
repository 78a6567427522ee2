import pytest

from slmkit.docs.synthetic import HELDOUT_LAYOUTS, TUNE_LAYOUTS, make_documents, write_pdf

ALL_LAYOUTS = {kind: TUNE_LAYOUTS[kind] + HELDOUT_LAYOUTS[kind] for kind in TUNE_LAYOUTS}


@pytest.fixture(scope="session")
def synthetic_pdfs(tmp_path_factory):
    """One PDF of every layout of every kind, with its Synthetic record: [(path, document)]."""
    folder = tmp_path_factory.mktemp("synthetic")
    made = []
    for index, document in enumerate(make_documents(sum(map(len, ALL_LAYOUTS.values())), ALL_LAYOUTS, seed=11)):
        path = folder / f"{index:02d}-{document.kind}-{document.layout}.pdf"
        write_pdf(document, path)
        made.append((path, document))
    return made


@pytest.fixture(scope="session")
def docs_model_dir(tmp_path_factory):
    """The tiny random Llama with room for a one-page document in its context."""
    from tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-docs") / "tiny-llama", context=2048)


@pytest.fixture(scope="session")
def docs_engine(docs_model_dir):
    from slmkit.engine.torch_backend import TorchEngine

    engine = TorchEngine(docs_model_dir)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def minilm():
    """The bundled sentence embedder (real, small: summaries choose sentences with it)."""
    from slmkit.embeddings import load_embedding_model

    return load_embedding_model("minilm-l6")
