"""The bundled all-MiniLM-L6-v2 embedding model (small enough for the fast suite)."""

import numpy as np
import pytest

from slmkit.embeddings import load_embedding_model
from slmkit.errors import InvalidRequestError


@pytest.fixture(scope="module")
def minilm():
    return load_embedding_model("minilm-l6")


def test_embeddings_are_unit_vectors_that_rank_by_meaning(minilm):
    vectors = minilm.embed(["How do I reset my password?", "I forgot my login password.", "The cat sat on the mat."])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3


def test_empty_input_is_refused(minilm):
    with pytest.raises(InvalidRequestError):
        minilm.embed([])
