"""The in-memory search index: BM25 and fusion arithmetic, parity with Milvus, freshness."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ossrag.config import Settings
from ossrag.embeddings import Embedder
from ossrag.index import Index
from ossrag.models import Chunk
from ossrag.retrieval import score_fusion
from ossrag.search_index import BM25_B, BM25_K1, Reciprocal, Relative, SearchIndex, Weighted
from ossrag.store import Store


def row(chunk_id: str, dense: list[float], terms: str, text: str = "") -> dict[str, Any]:
    return {
        "id": chunk_id, "doc_id": f"doc-{chunk_id}", "source": f"{chunk_id}.md",
        "heading": "Guide › Ünïcode", "start_line": 3, "end_line": 9,
        "text": text or terms, "meta": {"page": 2}, "dense": dense, "terms": terms,
    }  # fmt: skip


ROWS = [
    row("a", [1.0, 0.0], "milvus store data data", "Milvus stores data — “quoted” ✓"),
    row("b", [0.6, 0.8], "bucket backup"),
    row("c", [0.0, 1.0], "store bucket"),
]


def bm25(tf: int, df: int, n: int, length: float, avgdl: float) -> float:
    idf = math.log((n - df + 0.5) / (df + 0.5) + 1)
    return idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * length / avgdl))


@pytest.fixture
def small() -> SearchIndex:
    return SearchIndex.from_rows("g1", ROWS, dim=2)


def named(index: SearchIndex, ranked: list[tuple[int, float]]) -> dict[str, float]:
    return {index.rows.row(position)["id"]: score for position, score in ranked}


def test_rows_come_back_as_stored(small: SearchIndex) -> None:
    first = small.rows.row(0)
    assert first == {k: v for k, v in ROWS[0].items() if k not in ("dense", "terms")}
    assert [small.rows.row(i)["id"] for i in range(len(small))] == ["a", "b", "c"]


def test_bm25_scores_follow_the_formula(small: SearchIndex) -> None:
    avgdl = (4 + 2 + 2) / 3
    hits = named(small, small.bm25("data store", 10))
    assert hits["a"] == pytest.approx(bm25(2, 1, 3, 4, avgdl) + bm25(1, 2, 3, 4, avgdl), rel=1e-5)
    assert hits["c"] == pytest.approx(bm25(1, 2, 3, 2, avgdl), rel=1e-5)
    assert "b" not in hits  # no query term: not a hit at all
    assert small.bm25("unknown words", 10) == []


def test_dense_ranks_by_inner_product(small: SearchIndex) -> None:
    ranked = small.dense(np.array([0.0, 1.0]), 2)
    assert list(named(small, ranked)) == ["c", "b"]
    assert ranked[1][1] == pytest.approx(0.8)


def test_weighted_fusion_normalises_as_milvus_does(small: SearchIndex) -> None:
    vector = np.array([1.0, 0.0])
    dense = named(small, small.dense(vector, 3))
    sparse = named(small, small.bm25("bucket", 3))
    fused = named(small, small.hybrid(vector, "bucket", 3, 3, Weighted(0.6)))
    for chunk in "abc":
        expected = 0.6 * (0.5 + math.atan(dense[chunk]) / math.pi)
        expected += 0.4 * 2 * math.atan(sparse.get(chunk, 0.0)) / math.pi
        assert fused[chunk] == pytest.approx(expected, rel=1e-5)


def test_reciprocal_fusion_counts_only_each_routes_top_depth(small: SearchIndex) -> None:
    fused = named(small, small.hybrid(np.array([1.0, 0.0]), "bucket", 3, 2, Reciprocal(60)))
    # dense top 2: a, b; bm25 top 2: b, c (tied scores keep row order).
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})


def test_relative_fusion_scores_bm25_as_a_share_of_the_querys_ceiling(small: SearchIndex) -> None:
    vector = np.array([1.0, 0.0])
    dense = named(small, small.dense(vector, 3))
    sparse = named(small, small.bm25("bucket bucket store", 3))
    # the query's ceiling: each term's idf × (k1 + 1), as often as the query holds it
    idf = math.log((3 - 2 + 0.5) / (2 + 0.5) + 1)  # "bucket" and "store" are both in 2 of 3 rows
    ceiling = 3 * idf * (BM25_K1 + 1)
    fused = named(small, small.hybrid(vector, "bucket bucket store", 3, 3, Relative(0.8)))
    for chunk in "abc":
        expected = 0.8 * (0.5 + math.atan(dense[chunk]) / math.pi)
        expected += 0.2 * sparse.get(chunk, 0.0) / ceiling
        assert fused[chunk] == pytest.approx(expected, rel=1e-5)
    assert max(fused.values()) <= 1.0


def test_relative_fusion_gives_each_candidate_both_scores(small: SearchIndex) -> None:
    vector = np.array([1.0, 0.0])
    # depth 1: dense keeps "a" only, BM25 keeps "b" only; neither is scored as missing the other.
    relative = named(small, small.hybrid(vector, "backup", 3, 1, Relative(0.5)))
    weighted = named(small, small.hybrid(vector, "backup", 3, 1, Weighted(0.5)))
    assert set(relative) == set(weighted) == {"a", "b"}
    assert relative["b"] > 0.5 * (0.5 + math.atan(0.6) / math.pi)  # b's dense score counts
    assert weighted["b"] < 0.5  # Milvus counts only the routes that listed b
    assert relative["a"] == pytest.approx(0.5 * (0.5 + math.atan(1.0) / math.pi))


def test_saved_index_loads_only_for_its_generation(small: SearchIndex, tmp_path: Path) -> None:
    small.save(tmp_path / "ix")
    loaded = SearchIndex.load(tmp_path / "ix", "g1")
    assert loaded is not None and loaded.bm25("bucket", 5) == small.bm25("bucket", 5)
    assert [loaded.rows.row(i) for i in range(3)] == [small.rows.row(i) for i in range(3)]
    assert SearchIndex.load(tmp_path / "ix", "g2") is None
    assert SearchIndex.load(tmp_path / "missing", "g1") is None


QUERIES = ["Where is data kept?", "back up the bucket", "similarity metrics", "query nodes"]


def test_memory_index_ranks_like_milvus(index: Index, docs: Path, embedder: Embedder) -> None:
    index.ingest([docs])
    store = index.store
    assert store._search_index() is not None

    def ranking(memory: bool, query: str) -> tuple[list[dict[str, Any]], list[str]]:
        store.memory_index = memory
        vector = embedder.embed_query(query)
        hybrid = store.search_hybrid(vector, query, 3, 100, Weighted(0.6))
        dense = store.search_dense(vector, 3)
        return [h.entity for h in hybrid], [h.entity["id"] for h in dense]

    for query in QUERIES:
        (ours, our_dense), (theirs, their_dense) = ranking(True, query), ranking(False, query)
        assert ours[0] == theirs[0], query  # same chunk, every field the same
        assert our_dense == their_dense, query


def test_milvus_fuses_relative_searches_with_its_weighted_ranker(
    index: Index, docs: Path, embedder: Embedder
) -> None:
    index.ingest([docs])
    store = index.store
    store.memory_index = False  # rank in Milvus, which has no relative fusion
    vector = embedder.embed_query(QUERIES[1])
    relative = store.search_hybrid(vector, QUERIES[1], 3, 100, Relative(0.8))
    weighted = store.search_hybrid(vector, QUERIES[1], 3, 100, Weighted(0.6))
    assert relative and [(h.entity["id"], h.distance) for h in relative] == [
        (h.entity["id"], h.distance) for h in weighted
    ]


def test_edits_and_deletions_are_searched_at_once(index: Index, docs: Path) -> None:
    index.ingest([docs])
    assert "three query nodes" in index.search("how many query nodes", k=1).passages[0].text
    (docs / "notes.txt").write_text("The cluster now runs seven query nodes.\n", encoding="utf-8")
    index.ingest([docs])
    texts = [p.text for p in index.search("how many query nodes", k=5).passages]
    assert any("seven query nodes" in text for text in texts)
    assert not any("three query nodes" in text for text in texts)
    (docs / "notes.txt").unlink()
    index.ingest([docs])
    assert not any("query nodes" in p.text for p in index.search("query nodes", k=5).passages)


def test_ingest_saves_the_index_and_a_new_process_loads_it(
    settings: Settings, embedder: Embedder, docs: Path
) -> None:
    first = Index(settings, embedder=embedder)
    first.ingest([docs])  # no search: the ingest itself leaves the index ready
    generation = first.store.info().generation  # type: ignore[union-attr]
    first.close()
    saved = Path(settings.db) / "ossrag-search" / settings.collection / "index.npz"
    assert saved.exists() and generation
    again = Store(settings.db, settings.collection)
    try:
        assert SearchIndex.load(saved.parent, generation) is not None
        assert again._search_index() is not None
        assert again._search_index().generation == generation  # type: ignore[union-attr]
    finally:
        again.close()


def test_unflushed_writes_are_searched_in_milvus_and_a_crash_retires_the_saved_index(
    settings: Settings, embedder: Embedder, docs: Path
) -> None:
    ix = Index(settings, embedder=embedder)
    ix.ingest([docs])
    ix.search("bucket")  # builds and saves the index
    before = ix.store.info().generation  # type: ignore[union-attr]
    chunk = ix.search("back up the bucket", k=1).passages[0]
    extra = Chunk(
        id="extra",
        doc_id="d-extra",
        source="extra.md",
        heading_path=("Extra",),
        start_line=1,
        end_line=1,
        text="Zebras guard the archive vault.",
    )
    ix.store.insert_chunks([extra], embedder.embed([extra.embed_text]))
    assert ix.store._search_index() is None  # writing: Milvus answers
    assert ix.search("zebras archive vault", k=1).passages[0].chunk_id == "extra"
    ix.close()  # "crash": no flush
    again = Index(settings, embedder=embedder)
    try:
        assert again.store.info().generation != before  # type: ignore[union-attr]
        assert again.search("zebras archive vault", k=1).passages[0].chunk_id == "extra"
        assert again.store._search_index() is not None
        assert again.search("back up the bucket", k=1).passages[0].chunk_id == chunk.chunk_id
    finally:
        again.close()


def test_score_fusion_defaults_and_the_lean_for_translated_questions() -> None:
    assert score_fusion("relative", None) == Relative(0.8)
    assert score_fusion("weighted", None) == Weighted(0.6)
    assert score_fusion("relative", 0.5) == Relative(0.5)
    assert score_fusion("relative", None, translated=True) == Relative(pytest.approx(0.6))
    assert score_fusion("relative", 0.1, translated=True) == Relative(0.0)
    assert score_fusion("weighted", None, translated=True) == Weighted(0.6)  # Milvus's, as is
