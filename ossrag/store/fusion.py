"""How a hybrid search joins its dense and BM25 routes: the rules both backends apply (the Milvus
server with its rankers, the in-memory index in numpy) and their default weights."""

from __future__ import annotations

from dataclasses import dataclass

# Default dense shares, measured over the dev and held-out sets (benchmarks/retrieval.py): Milvus's
# weighted fusion peaks near 0.6 (its atan leaves BM25 little range), Relative near 0.8.
WEIGHTED_DENSE_WEIGHT = 0.6
RELATIVE_DENSE_WEIGHT = 0.8


@dataclass(frozen=True)
class Weighted:
    """Milvus's WeightedRanker with norm_score: IP → ½ + atan(s)/π, BM25 → 2·atan(s)/π."""

    dense_weight: float


@dataclass(frozen=True)
class Reciprocal:
    """Milvus's RRFRanker: Σ 1/(k + rank) over the routes a row appears in."""

    k: int


@dataclass(frozen=True)
class Relative:
    """Dense IP normalised as Milvus does (½ + atan(s)/π) plus BM25 as a share of the query's own
    ceiling, Σ idf·(k1+1) over its terms, weighted; every candidate of either route gets both.

    Milvus's atan squeezes BM25 scores of 15 and 30 to 0.96 and 0.98, so among the candidates
    BM25 barely ranks; a share of the ceiling keeps them apart, and stays comparable across
    short and long queries.
    """

    dense_weight: float


FusionRule = Weighted | Reciprocal | Relative  # how a hybrid search joins its two routes
