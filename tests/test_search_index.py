"""The in-memory search index: BM25 and fusion arithmetic, parity with Milvus, freshness."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import EXTRA_CHUNK
from hypothesis import given
from hypothesis import strategies as st

from ossrag.config import Settings
from ossrag.embed.encoders import Embedder
from ossrag.embed.lexical import bm25_terms
from ossrag.engine.index import Index
from ossrag.retrieve.retriever import score_fusion
from ossrag.store.fusion import FusionRule, Reciprocal, Relative, Weighted
from ossrag.store.memory import BM25_B, BM25_K1, SearchIndex
from ossrag.store.milvus import Store


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


# Six rows whose dense order (query [1, 0]), BM25 order ("bucket backup") and every fusion's
# order differ, with no two scores tied: a swap anywhere in a ranking changes the list.
ORDER_ROWS = [
    row("a", [1.0, 0.0], "alpha milvus"),
    row("b", [0.8, 0.6], "bucket bucket backup"),
    row("c", [0.6, 0.8], "bucket copy"),
    row("d", [0.0, 1.0], "bucket backup store backup"),
    row("e", [-0.6, 0.8], "store backup"),
    row("f", [0.28, 0.96], "bucket tool tool"),
]
QUERY_VECTOR, QUERY_TERMS = np.array([1.0, 0.0]), "bucket backup"


@pytest.fixture(scope="module")
def ordered() -> SearchIndex:
    return SearchIndex.from_rows("g1", ORDER_ROWS, dim=2)


def ids(index: SearchIndex, ranked: list[tuple[int, float]]) -> str:
    return "".join(index.rows.row(position)["id"] for position, _ in ranked)


def test_dense_and_bm25_rank_every_row(ordered: SearchIndex) -> None:
    dense = ordered.dense(QUERY_VECTOR, 6)
    assert ids(ordered, dense) == "abcfde"
    assert [score for _, score in dense] == pytest.approx([1.0, 0.8, 0.6, 0.28, 0.0, -0.6])
    assert ids(ordered, ordered.bm25(QUERY_TERMS, 6)) == "bdecf"  # "a" holds no query term
    assert ids(ordered, ordered.dense(QUERY_VECTOR, 3)) == "abc"
    assert ids(ordered, ordered.bm25(QUERY_TERMS, 2)) == "bd"


def reference(index: SearchIndex, fusion: FusionRule, depth: int) -> dict[str, float]:
    """Each fused row's score, computed from the two routes' lists as the fusion defines it."""
    dense = dict(index.dense(QUERY_VECTOR, len(index)))
    bm25 = dict(index.bm25(QUERY_TERMS, len(index)))
    dense_top = [p for p, _ in index.dense(QUERY_VECTOR, depth)]
    bm25_top = [p for p, _ in index.bm25(QUERY_TERMS, depth)]
    # the query's ceiling: "bucket" is in 4 rows of 6, "backup" in 3
    ceiling = (math.log(2.5 / 4.5 + 1) + math.log(3.5 / 3.5 + 1)) * (BM25_K1 + 1)
    fused: dict[str, float] = {}
    for position in {*dense_top, *bm25_top}:
        name = index.rows.row(position)["id"]
        if isinstance(fusion, Reciprocal):
            fused[name] = sum(
                1 / (fusion.k + top.index(position) + 1)
                for top in (dense_top, bm25_top)
                if position in top
            )
        elif isinstance(fusion, Weighted):
            w = fusion.dense_weight
            fused[name] = w * (0.5 + math.atan(dense[position]) / math.pi) * (
                position in dense_top
            ) + (1 - w) * 2 * math.atan(bm25.get(position, 0.0)) / math.pi * (position in bm25_top)
        else:
            w = fusion.dense_weight
            fused[name] = w * (0.5 + math.atan(dense[position]) / math.pi)
            fused[name] += (1 - w) * bm25.get(position, 0.0) / ceiling
    return fused


@pytest.mark.parametrize(
    ("fusion", "depth", "order"),
    [
        (Relative(0.8), 6, "bacfde"),
        (Relative(0.5), 6, "bdcafe"),
        (Relative(0.5), 2, "bda"),  # candidates: dense a, b and BM25 b, d, each scored on both
        (Weighted(0.6), 6, "bdcfae"),
        (Weighted(0.3), 6, "bdcefa"),
        (Weighted(0.6), 2, "bad"),  # a row only one route listed gets only that route's part
        (Reciprocal(60), 6, "bdcefa"),
        (Reciprocal(60), 3, "badce"),
    ],
)
def test_each_fusion_ranks_the_whole_list(
    ordered: SearchIndex, fusion: FusionRule, depth: int, order: str
) -> None:
    ranked = ordered.hybrid(QUERY_VECTOR, QUERY_TERMS, 6, depth, fusion)
    assert ids(ordered, ranked) == order
    expected = reference(ordered, fusion, depth)
    assert [score for _, score in ranked] == pytest.approx([expected[n] for n in order], rel=1e-5)
    top = ordered.hybrid(QUERY_VECTOR, QUERY_TERMS, 3, depth, fusion)
    assert ids(ordered, top) == order[:3]  # the limit cuts the same list


def test_relative_candidates_are_each_routes_hits_only(ordered: SearchIndex) -> None:
    # "alpha" is in row a alone: BM25 adds no other candidate, even below its depth
    assert ids(ordered, ordered.hybrid(QUERY_VECTOR, "alpha", 6, 2, Relative(0.5))) == "ab"
    assert ids(ordered, ordered.hybrid(QUERY_VECTOR, "unknown", 6, 2, Relative(0.5))) == "ab"
    up = np.array([0.0, 1.0])  # dense: d, f first; BM25: a alone, no row it scores 0
    assert ids(ordered, ordered.hybrid(up, "alpha", 6, 2, Relative(0.5))) == "adf"


def test_tied_rows_keep_their_stored_order() -> None:
    twins = SearchIndex.from_rows("g", [row(f"r{n:02d}", [1.0, 0.0], "same") for n in range(40)], 2)
    for fusion in (Relative(0.8), Weighted(0.6), Reciprocal(60)):
        ranked = twins.hybrid(QUERY_VECTOR, "same", 40, 40, fusion)
        assert [twins.rows.row(p)["id"] for p, _ in ranked] == [f"r{n:02d}" for n in range(40)]


def test_an_empty_corpus_and_a_row_without_terms() -> None:
    empty = SearchIndex.from_rows("g", [], dim=2)
    assert len(empty) == 0 and empty.vectors.shape == (0, 2)
    assert empty.dense(QUERY_VECTOR, 5) == [] and empty.bm25("bucket", 5) == []
    assert empty.hybrid(QUERY_VECTOR, "bucket", 5, 5, Relative(0.8)) == []
    # the last row has no terms: BM25 still scores every row, as zero
    rows = [*ORDER_ROWS, row("g", [0.0, -1.0], "")]
    index = SearchIndex.from_rows("g", rows, dim=2)
    assert index.weights.shape[0] == 7
    # the average length counts rows with terms only: 16 terms over 6 rows
    assert dict(named(index, index.bm25("bucket", 7)))["c"] == pytest.approx(
        bm25(tf=1, df=4, n=7, length=2, avgdl=16 / 6), rel=1e-5
    )
    assert ids(index, index.hybrid(QUERY_VECTOR, QUERY_TERMS, 7, 7, Relative(0.8))) == "bacfdge"


def test_the_top_k_are_the_first_k_of_the_whole_ranking() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((60, 4))
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    rows = [
        row(f"r{n}", (v / np.linalg.norm(v)).tolist(), " ".join(rng.choice(words, size=5)))
        for n, v in enumerate(vectors)
    ]
    index = SearchIndex.from_rows("g", rows, dim=4)
    query = np.array([1.0, 0.0, 0.0, 0.0])
    dense, bm25_all = index.dense(query, 60), index.bm25("alpha gamma", 60)
    for k in (1, 2, 5, 17, 59):
        assert index.dense(query, k) == dense[:k], k
        assert index.bm25("alpha gamma", k) == bm25_all[:k], k


def test_bm25_terms_are_lowercased_stemmed_words_without_stopwords() -> None:
    assert bm25_terms("What is the Indexing of Collections? Flushes, FLUSHED!") == (
        "index collect flush flush"
    )
    assert bm25_terms("the of and") == ""


VOCABULARY = ["milvus", "bucket", "backup", "store", "index", "query"]
corpora = st.lists(
    st.tuples(
        st.lists(st.integers(-4, 4), min_size=3, max_size=3).filter(any),
        st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=6),
    ),
    min_size=1,
    max_size=12,
)
fusions = st.one_of(
    st.builds(Relative, st.sampled_from([0.0, 0.3, 0.8, 1.0])),
    st.builds(Weighted, st.sampled_from([0.0, 0.3, 0.6, 1.0])),
    st.builds(Reciprocal, st.integers(1, 60)),
)


@given(
    corpus=corpora,
    query=st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=4),
    fusion=fusions,
    depth=st.integers(1, 12),
    limit=st.integers(1, 12),
)
def test_fused_rankings_are_the_best_rows_by_the_fusions_arithmetic(
    corpus: list[tuple[list[int], list[str]]],
    query: list[str],
    fusion: FusionRule,
    depth: int,
    limit: int,
) -> None:
    rows = [
        row(str(n), (np.array(v) / np.linalg.norm(v)).tolist(), " ".join(t))
        for n, (v, t) in enumerate(corpus)
    ]
    index = SearchIndex.from_rows("g", rows, dim=3)
    vector = np.array([1.0, 0.0, 0.0])
    terms = " ".join(query)
    dense, bm25 = dict(index.dense(vector, len(rows))), dict(index.bm25(terms, len(rows)))
    dense_top = [p for p, _ in index.dense(vector, depth)]
    bm25_top = [p for p, _ in index.bm25(terms, depth)]
    counts = {t: query.count(t) for t in set(query)}
    known = [t for t in counts if any(t in words for _, words in corpus)]
    idf = {t: math.log((len(rows) - df + 0.5) / (df + 0.5) + 1) for t in known if (
        df := sum(t in words for _, words in corpus)) is not None}  # fmt: skip
    ceiling = sum(idf[t] * counts[t] for t in known) * (BM25_K1 + 1) or 1.0
    expected: dict[int, float] = {}
    for p in {*dense_top, *bm25_top}:
        dense_part = 0.5 + math.atan(dense[p]) / math.pi
        if isinstance(fusion, Reciprocal):
            expected[p] = sum(
                1 / (fusion.k + top.index(p) + 1) for top in (dense_top, bm25_top) if p in top
            )
        elif isinstance(fusion, Weighted):
            bm25_part = 2 * math.atan(bm25.get(p, 0.0)) / math.pi
            expected[p] = fusion.dense_weight * dense_part * (p in dense_top)
            expected[p] += (1 - fusion.dense_weight) * bm25_part * (p in bm25_top)
        else:
            expected[p] = fusion.dense_weight * dense_part
            expected[p] += (1 - fusion.dense_weight) * bm25.get(p, 0.0) / ceiling
    ranked = index.hybrid(vector, terms, limit, depth, fusion)
    assert len(ranked) == min(limit, len(expected))
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)  # best first
    for position, score in ranked:
        assert score == pytest.approx(expected[position], rel=1e-4, abs=1e-6)
    left_out = set(expected) - {p for p, _ in ranked}
    assert all(expected[p] <= scores[-1] + 1e-6 for p in left_out)  # none better left out


def test_saved_index_loads_only_for_its_generation(small: SearchIndex, tmp_path: Path) -> None:
    small.save(tmp_path / "ix")
    loaded = SearchIndex.load(tmp_path / "ix", "g1")
    assert loaded is not None and loaded.bm25("bucket", 5) == small.bm25("bucket", 5)
    assert [loaded.rows.row(i) for i in range(3)] == [small.rows.row(i) for i in range(3)]
    assert SearchIndex.load(tmp_path / "ix", "g2") is None
    assert SearchIndex.load(tmp_path / "missing", "g1") is None


def test_a_loaded_index_is_mapped_and_outlives_a_save_over_its_files(
    small: SearchIndex, tmp_path: Path
) -> None:
    small.save(tmp_path / "ix")
    loaded = SearchIndex.load(tmp_path / "ix", "g1")
    assert loaded is not None and isinstance(loaded.vectors.base, np.memmap)  # not read in
    SearchIndex.from_rows("g2", ROWS[:1], dim=2).save(tmp_path / "ix")  # an ingest's new one
    query = np.array([0.6, 0.8], dtype=np.float32)
    assert loaded.dense(query, 3) == small.dense(query, 3)
    assert loaded.bm25("bucket store", 3) == small.bm25("bucket store", 3)
    assert [loaded.rows.row(i) for i in range(3)] == [small.rows.row(i) for i in range(3)]


QUERIES = ["Where is data kept?", "back up the bucket", "similarity metrics", "query nodes"]


def test_memory_index_ranks_like_milvus(index: Index, docs: Path, embedder: Embedder) -> None:
    index.ingest([docs])
    store = index.store
    assert store._search_index() is not None
    every = store.count()

    def rankings(memory: bool, query: str) -> list[list[tuple[str, float]]]:
        """Every route's and fusion's whole list: (chunk id, score), best first."""
        store.memory_index = memory
        vector = embedder.embed_query(query)
        searches = [
            store.search_dense(vector, every),
            store.search_bm25(query, every),
            *(
                store.search_hybrid(vector, query, every, 100, fusion)
                for fusion in (Weighted(0.6), Weighted(0.2), Reciprocal(60), Reciprocal(5))
            ),
        ]
        return [[(hit.entity["id"], hit.distance) for hit in hits] for hits in searches]

    for query in QUERIES:
        ours, theirs = rankings(True, query), rankings(False, query)
        for our_list, their_list in zip(ours, theirs, strict=True):
            assert [chunk for chunk, _ in our_list] == [chunk for chunk, _ in their_list], query
            assert [score for _, score in our_list] == pytest.approx(
                [score for _, score in their_list], rel=1e-4
            )
        store.memory_index = True
        hit = store.search_hybrid(embedder.embed_query(query), query, 1, 100, Weighted(0.6))[0]
        store.memory_index = False
        assert store.get_chunks([hit.entity["id"]]) == [hit.entity]  # every field the same


def test_line_ranges_are_read_from_the_index_as_milvus_reads_them(index: Index, docs: Path) -> None:
    index.ingest([docs])
    store = index.store
    spans = {
        (r["source"], r["start_line"], r["end_line"])
        for r in store.get_chunks(list(store.chunk_ids()))
    }
    assert spans == {
        ("guide/search.md", 3, 10), ("guide/search.md", 12, 14), ("guide/storage.md", 6, 8),
        ("guide/storage.md", 10, 12), ("notes.txt", 1, 3),
    }  # fmt: skip

    def read(memory: bool, source: str, start: int, end: int, limit: int) -> list[dict[str, Any]]:
        store.memory_index = memory
        return store.chunks_in_range(source, start, end, limit)

    for source in {source for source, _, _ in spans}:
        for start, end in [(1, 1), (1, 5), (4, 6), (9, 11), (11, 100), (13, 13), (90, 99)]:
            ours = read(True, source, start, end, 10)
            assert ours == read(False, source, start, end, 10)
            expected = sorted(
                (s, e) for src, s, e in spans if src == source and e >= start and s <= end
            )
            assert [(r["start_line"], r["end_line"]) for r in ours] == expected
        every = read(True, source, 1, 100, 10)
        assert read(True, source, 1, 100, 1) == every[:1]  # the first in line order
    assert read(True, "missing.md", 1, 100, 10) == []


def test_an_ingest_in_progress_leaves_line_ranges_as_searches_see_them(
    index: Index, docs: Path
) -> None:
    index.ingest([docs])
    store = index.store
    before = store.chunks_in_range("notes.txt", 1, 10, 10)
    assert [row["text"] for row in before] == [
        "Plain text notes.\n\nThe cluster has three query nodes."
    ]
    with store.syncing():
        store.delete_docs([before[0]["doc_id"]])  # unflushed, as mid-ingest
        assert store.chunks_in_range("notes.txt", 1, 10, 10) == before
    assert store.chunks_in_range("notes.txt", 1, 10, 10) == []


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
    saved = Path(settings.db) / "ossrag-search" / settings.collection / "index.json"
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
    ix.store.insert_chunks([EXTRA_CHUNK], embedder.embed([EXTRA_CHUNK.embed_text]))
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
    assert score_fusion("weighted", 0.3) == Weighted(0.3)
    assert score_fusion("relative", None, translated=True) == Relative(pytest.approx(0.6))
    assert score_fusion("relative", 0.1, translated=True) == Relative(0.0)
    assert score_fusion("weighted", None, translated=True) == Weighted(0.6)  # Milvus's, as is


def test_a_filter_mask_keeps_only_its_rows_in_every_route_and_fusion(small: SearchIndex) -> None:
    """The mask a filtered search passes (rows of the files it accepts) decides which rows can
    rank; the scores of those rows are those of the unfiltered search."""
    mask = small.rows_of({"doc-b", "doc-c"})
    assert mask.tolist() == [False, True, True]
    vector = np.array([1.0, 0.0], dtype=np.float32)
    assert named(small, small.dense(vector, 3, mask)) == {"b": pytest.approx(0.6), "c": 0.0}
    assert list(named(small, small.dense(vector, 3, mask))) == ["b", "c"]
    assert list(named(small, small.bm25(bm25_terms("store"), 3, mask))) == ["c"]  # not a
    assert list(named(small, small.bm25(bm25_terms("backup"), 3, mask))) == ["b"]  # c scores 0
    terms = bm25_terms("store bucket")
    for fusion in (Weighted(0.6), Relative(0.8)):
        whole = small.hybrid(vector, terms, 3, 100, fusion)
        kept = small.hybrid(vector, terms, 3, 100, fusion, mask)
        assert [p for p, _ in kept] == [p for p, _ in whole if p != 0], fusion
        assert dict(kept) == pytest.approx({p: s for p, s in whole if p != 0}), fusion
    # RRF ranks within the kept rows: b is 1st dense and 2nd BM25, c the reverse: a tie in row order
    rrf = small.hybrid(vector, terms, 3, 100, Reciprocal(60), mask)
    assert rrf == [(1, pytest.approx(1 / 61 + 1 / 62)), (2, pytest.approx(1 / 62 + 1 / 61))]
