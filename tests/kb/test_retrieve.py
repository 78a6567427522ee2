"""Hybrid retrieval: rank fusion, each search covering the other's misses, hostile query text."""

import pytest

from slmkit.errors import InvalidRequestError
from slmkit.kb.index import ingest
from slmkit.kb.retrieve import fts_query, reciprocal_rank_fusion, search


def test_reciprocal_rank_fusion_rewards_agreement():
    scores = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[4] == pytest.approx(1 / 63)
    assert sorted(scores, key=lambda i: -scores[i]) == [1, 3, 2, 4]


@pytest.fixture()
def catalog(slm_home, tmp_path):
    root = tmp_path / "catalog"
    root.mkdir()
    # An exact code that only a lexical search can match, and a paraphrase only embeddings can.
    (root / "errors.md").write_text("# Error codes\n\nError ZX-4411 means the sync token expired; sign in again.\n")
    (root / "travel.md").write_text("# Travel\n\nYou can bring your dog on board if it stays in a carrier.\n")
    (root / "food.md").write_text("# Food\n\nThe cafeteria serves soup, salad and sandwiches at noon.\n")
    (root / "hours.md").write_text("# Opening hours\n\nThe office opens at nine and closes at five.\n")
    ingest("catalog", [root])
    return "catalog"


def test_lexical_match_on_a_rare_code(catalog):
    [hit] = search(catalog, "what is ZX-4411", k=1)
    assert hit.file == "errors.md" and hit.bm25_rank == 1


def test_semantic_match_without_shared_words(catalog):
    [hit] = search(catalog, "may I travel with my puppy", k=1)
    assert hit.file == "travel.md" and hit.vector_rank == 1 and hit.similarity > 0.3


def test_hits_are_sorted_by_fused_score_with_sources(catalog):
    hits = search(catalog, "when does the office close", k=4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].file == "hours.md" and hits[0].section == "Opening hours"
    source = hits[0].source(1)
    assert set(source) >= {"n", "file", "section", "page", "score", "snippet"}


@pytest.mark.parametrize("query", ['"unbalanced', "NEAR(a b) AND OR NOT", "col:val *", "^ - + ( )", "日本語の質問"])
def test_query_text_is_never_fts_syntax(catalog, query):
    search(catalog, query, k=2)  # no sqlite3.OperationalError


def test_fts_query_quotes_words_and_drops_stopwords():
    assert fts_query('What is the "sync" token?') == '"sync" OR "token"'
    assert fts_query("the of and") is None


def test_empty_query_is_refused(catalog):
    with pytest.raises(InvalidRequestError):
        search(catalog, "   ")
