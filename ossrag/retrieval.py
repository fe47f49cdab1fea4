"""Retrieval: a question in, ranked passages with scores (higher is better) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ossrag.config import Mode
from ossrag.embeddings import Embedder
from ossrag.models import Passage
from ossrag.store import Hit, Store

RRF_K = 60
CANDIDATE_DEPTH = 40  # per route, before fusion


@dataclass(frozen=True)
class SearchResult:
    """Passages plus the mode actually used and any notice for the user."""

    passages: list[Passage]
    mode: Mode
    notice: str = ""


class Retriever:
    """Dense, BM25 or hybrid (RRF-fused in Milvus) search over one store."""

    def __init__(
        self, store: Store, embedder: Embedder, rrf_k: int = RRF_K, depth: int = CANDIDATE_DEPTH
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.rrf_k = rrf_k
        self.depth = depth

    def search(self, query: str, k: int = 5, mode: Mode = "hybrid") -> SearchResult:
        info = self.store.info()
        if info is None:
            return SearchResult([], mode, "the store is empty: run `ossrag ingest PATH` first")
        self.store.ensure(self.embedder.name, self.embedder.dim)
        notice = ""
        if mode != "dense" and not info.bm25:
            notice = "this Milvus has no BM25 full-text search (needs ≥ 2.5): using dense search"
            mode = "dense"
        if mode == "bm25":
            hits = self.store.search_bm25(query, k)
        elif mode == "dense":
            hits = self.store.search_dense(self.embedder.embed_query(query), k)
        else:
            vector = self.embedder.embed_query(query)
            hits = self.store.search_hybrid(
                vector, query, k, depth=max(self.depth, k), rrf_k=self.rrf_k
            )
            # RRF gives at most 2/(k+1) (first in both routes): scale that to 1.0.
            hits = [Hit(hit.distance * (self.rrf_k + 1) / 2, hit.entity) for hit in hits]
        return SearchResult([_passage(rank, hit) for rank, hit in enumerate(hits, 1)], mode, notice)


def _passage(rank: int, hit: Hit) -> Passage:
    entity: dict[str, Any] = hit.entity
    return Passage(
        rank=rank,
        score=float(hit.distance),
        chunk_id=entity["id"],
        source=entity["source"],
        heading=entity["heading"],
        start_line=int(entity["start_line"]),
        end_line=int(entity["end_line"]),
        text=entity["text"],
        meta=entity.get("meta") or {},
    )
