"""Retrieval: a question in, ranked passages with scores (higher is better) out."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ossrag.choices import FusionName, Mode
from ossrag.embed.crosslingual import reads_foreign
from ossrag.embed.encoders import Embedder
from ossrag.embed.lexical import bm25_terms
from ossrag.embed.rerank import Reranker
from ossrag.records import Passage
from ossrag.store.filters import Filter
from ossrag.store.fusion import (
    RELATIVE_DENSE_WEIGHT,
    WEIGHTED_DENSE_WEIGHT,
    Reciprocal,
    Relative,
    Weighted,
)
from ossrag.store.milvus import Store
from ossrag.store.search import Hit

RRF_K = 60
# Candidates per route before fusion: deeper lists let both signals score more passages
# (dev set, weighted fusion: MRR@10 0.79 at 20, 0.82 at 50, 0.83 at 100; relative fusion, which
# scores every candidate on both routes, ranked the same from 20 to 200).
CANDIDATE_DEPTH = 100
DEFAULT_FUSION = Relative(RELATIVE_DENSE_WEIGHT)
# A translated question is half foreign words to the English embedder, while BM25 reads exactly
# the corpus words it was translated into: lean further on BM25 (held-out Italian questions,
# relative fusion, dense share 0.8 / 0.7 / 0.6 / 0.5: MRR@10 0.531 / 0.615 / 0.663 / 0.653).
TRANSLATED_DENSE_SHIFT = 0.2
RERANK_DEPTH = 20  # first-stage passages a reranker rescores
# Chunks ranked per passage returned: a chunk that touches a better one of its section joins it,
# and the rest of the list must still fill k passages.
MERGE_POOL = 3
EXPECT_BEATEN = 5  # sources listed as ranked above an expected one


@dataclass(frozen=True)
class SearchResult:
    """Passages plus the mode actually used and any notice for the user."""

    passages: list[Passage]
    mode: Mode
    notice: str = ""
    translation: str = ""  # the corpus words a question in another language was searched with


@dataclass(frozen=True)
class Reading:
    """A query as the retriever reads it, once: whether it is in another language than
    English, and its words carried into the corpus's words (the translation; "" if none)."""

    query: str
    foreign: bool = False
    translation: str = ""

    @property
    def text(self) -> str:
        """What both routes read: the query, and its translation (the translation brings the
        corpus's words, the query keeps the terms it already wrote in English; held-out Italian
        questions: R@5 0.57 with the translation alone for dense search, 0.71 with both)."""
        return f"{self.query}\n{self.translation}" if self.translation else self.query


class Retriever:
    """Dense, BM25 or hybrid search over one store (see Store for where the ranking runs).

    Fusion is a weighted sum of scores by default (a convex combination keeps how far apart
    scores are, which rank fusion throws away): "relative" puts BM25 on the scale of the query's
    own ceiling (see store.fusion.Relative), "weighted" is Milvus's WeightedRanker; or "rrf".
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        fusion: FusionName = "relative",
        dense_weight: float | None = None,
        rrf_k: int = RRF_K,
        depth: int = CANDIDATE_DEPTH,
        translate: bool = True,
        reranker: Reranker | None = None,
        rerank_depth: int = RERANK_DEPTH,
    ) -> None:
        self.store = store
        self.translate = translate
        self.reranker = reranker
        self.rerank_depth = rerank_depth
        self.embedder = embedder
        self.fusion = fusion
        self.dense_weight = dense_weight
        self.rrf_k = rrf_k
        self.depth = depth

    def read(self, query: str) -> Reading:
        """Test the query's language and translate it, with the lexicon fetched once. A question
        that reads as English without the corpus's words does with them too (they only discount
        foreign stopwords the corpus uses): it needs no lexicon, loaded or built."""
        foreign = reads_foreign(query)
        lexicon = self.store.lexicon() if self.translate and foreign else None
        if lexicon is not None:
            foreign = reads_foreign(query, lexicon.known)
        translation = lexicon.translate(query, foreign=foreign) if lexicon and foreign else None
        return Reading(query, foreign, translation or "")

    def search(
        self, query: str | Reading, k: int = 5, mode: Mode = "hybrid", where: Filter | None = None
    ) -> SearchResult:
        """The best k passages; neighbouring chunks of one section come back as one passage.
        `where` keeps only passages of the files it accepts (see ossrag.store.filters)."""
        result = self.chunks(query, k * MERGE_POOL, mode, where)
        return replace(result, passages=merge_neighbours(result.passages, k, self.holds_nothing))

    def chunks(
        self, query: str | Reading, k: int, mode: Mode, where: Filter | None = None
    ) -> SearchResult:
        """The best k chunks as stored, each its own passage (search merges and dedupes them)."""
        info = self.store.info()
        if info is None:
            return SearchResult([], mode, "the store is empty: ingest some documents first")
        self.store.ensure(self.embedder.name, self.embedder.dim)
        scope = self.store.scope(where) if where else None
        if scope is not None and not scope.kept:
            return SearchResult([], mode, "no stored file matches the filter")
        notice = ""
        if mode != "dense" and not info.bm25:
            notice = "this Milvus has no BM25 full-text search (needs ≥ 2.5): using dense search"
            mode = "dense"
        reading = query if isinstance(query, Reading) else self.read(query)
        text, translation = reading.text, reading.translation
        first = max(k, self.rerank_depth) if self.reranker else k  # passages from the first stage
        if mode == "bm25":
            hits = self.store.search_bm25(text, first, scope)
        elif mode == "dense":
            hits = self.store.search_dense(self.embedder.embed_query(text), first, scope)
        else:
            vector = self.embedder.embed_query(text)
            depth = max(self.depth, first)
            if self.fusion == "rrf":
                fusion: Reciprocal | Relative | Weighted = Reciprocal(self.rrf_k)
                hits = self.store.search_hybrid(vector, text, first, depth, fusion, scope)
                # RRF gives at most 2/(k+1) (first in both routes): scale that to 1.0.
                hits = [Hit(hit.distance * (self.rrf_k + 1) / 2, hit.entity) for hit in hits]
            else:
                fusion = score_fusion(self.fusion, self.dense_weight, translated=bool(translation))
                hits = self.store.search_hybrid(vector, text, first, depth, fusion, scope)
        passages = [_passage(rank, hit) for rank, hit in enumerate(hits, 1)]
        if self.reranker and passages:
            passages = _rerank(self.reranker, text, passages)
        return SearchResult(passages, mode, notice, translation)

    # -- explaining a ranking (only when asked: the normal path computes none of this) --------

    def routes(
        self, query: str, depth: int, where: Filter | None = None
    ) -> tuple[str, list[Passage], list[Passage]]:
        """(the terms BM25 read, the dense route's chunks, the BM25 route's chunks), each its
        own ranking to `depth` with its own scores (cosine; BM25), among the files `where`
        accepts."""
        text = self.read(query).text
        info = self.store.info()
        scope = self.store.scope(where) if where else None
        if info is None or (scope is not None and not scope.kept):
            return "", [], []
        dense = self.store.search_dense(self.embedder.embed_query(text), depth, scope)
        bm25 = self.store.search_bm25(text, depth, scope) if info.bm25 else []
        return (
            bm25_terms(text),
            [_passage(rank, hit) for rank, hit in enumerate(dense, 1)],
            [_passage(rank, hit) for rank, hit in enumerate(bm25, 1)],
        )

    def explain(
        self,
        query: str,
        result: SearchResult,
        k: int,
        *,
        rewrites: Sequence[str] = (),
        where: Filter | None = None,
    ) -> SearchResult:
        """`result` with each passage's `explain`: its best chunk's rank and score in each
        route (null beyond the candidate depth), the BM25 terms it matched, its fused score,
        the chunks merged into it, and the translation and rewrites searched with. Ranks are
        among the files `where` accepts, as the search was.

        With rewrites, the routes are those of the first query searched."""
        searched = rewrites[1:] if result.translation and rewrites else rewrites or [query]
        first = searched[0]
        terms, dense, bm25 = self.routes(first, self.depth, where)
        fused = self.chunks(first, k * MERGE_POOL, result.mode, where).passages
        dense_at = {p.chunk_id: p for p in dense}
        bm25_at = {p.chunk_id: p for p in bm25}
        wanted = set(terms.split())
        translation = result.translation or self.read(first).translation
        passages = []
        for passage in result.passages:
            d, b = dense_at.get(passage.chunk_id), bm25_at.get(passage.chunk_id)
            matched = wanted & set(bm25_terms(f"{passage.heading}\n{passage.text}").split())
            merged = [
                {"start_line": c.start_line, "end_line": c.end_line, "fused_rank": c.rank}
                for c in fused
                if (c.source, c.heading, c.meta) == (passage.source, passage.heading, passage.meta)
                and passage.start_line <= c.start_line <= c.end_line <= passage.end_line
            ]
            explain = {
                "dense": {"score": round(d.score, 6), "rank": d.rank} if d else None,
                "bm25": {
                    "score": round(b.score, 6) if b else None,
                    "rank": b.rank if b else None,
                    "terms": sorted(matched),
                },
                "fused": round(passage.score, 6),
                "merged_from": merged,
                "translated": translation or None,
                "rewrites": list(rewrites),
            }
            passages.append(replace(passage, explain=explain))
        return replace(result, passages=passages)

    def expect(
        self, query: str, source: str, k: int, mode: Mode = "hybrid", where: Filter | None = None
    ) -> dict[str, Any]:
        """Where `source`'s best chunk ranked in each route, and the sources ranked above it,
        among the files `where` accepts."""
        _, dense, bm25 = self.routes(query, self.depth, where)
        fused = self.chunks(query, self.depth, mode, where).passages
        passages = merge_neighbours(fused, k)
        indexed = any(record.source == source for record in self.store.files().values())
        report: dict[str, Any] = {"source": source, "indexed": indexed}
        for name, ranking in (("dense", dense), ("bm25", bm25), ("fused", fused),
                              ("passages", passages)):  # fmt: skip
            hit = next((p for p in ranking if p.source == source), None)
            above = ranking[: hit.rank - 1] if hit else ranking[:EXPECT_BEATEN]
            beaten: list[dict[str, Any]] = []
            for p in above:
                if p.source != source and all(b["source"] != p.source for b in beaten):
                    beaten.append({"source": p.source, "heading": p.heading,
                                   "rank": p.rank, "score": round(p.score, 6)})  # fmt: skip
            report[name] = {
                "rank": hit.rank if hit else None,
                "score": round(hit.score, 6) if hit else None,
                "of": len(ranking),
                "beaten_by": beaten[:EXPECT_BEATEN],
            }
        return report

    def search_many(
        self,
        queries: Sequence[str | Reading],
        k: int = 5,
        mode: Mode = "hybrid",
        where: Filter | None = None,
    ) -> SearchResult:
        """Search each query and fuse the rankings by reciprocal rank (the first query leads)."""
        results = [self.chunks(query, max(k, self.depth // 2), mode, where) for query in queries]
        fused: dict[str, float] = {}
        by_id: dict[str, Passage] = {}
        for result in results:
            for passage in result.passages:
                fused[passage.chunk_id] = fused.get(passage.chunk_id, 0.0) + 1 / (
                    self.rrf_k + passage.rank
                )
                by_id.setdefault(passage.chunk_id, passage)
        best = (len(results) / (self.rrf_k + 1)) or 1.0
        ranked = sorted(fused, key=lambda chunk: -fused[chunk])
        passages = [
            replace(by_id[chunk], rank=rank, score=fused[chunk] / best)
            for rank, chunk in enumerate(ranked, 1)
        ]
        first = results[0] if results else SearchResult([], mode)
        return SearchResult(
            merge_neighbours(passages, k, self.holds_nothing), first.mode, first.notice
        )

    def holds_nothing(self, source: str, start_line: int, end_line: int) -> bool:
        """Whether no stored chunk of `source` covers any of the lines (they are blank)."""
        return not self.store.chunks_in_range(source, start_line, end_line, 1)


def explain_line(explain: dict[str, Any]) -> str:
    """One line of a passage's explain: "dense #3 0.612 · bm25 #1 12.4 (index, partit) · …"."""

    def route(name: str, part: dict[str, Any] | None) -> str:
        if not part or part.get("rank") is None:
            return f"{name} not in the top {CANDIDATE_DEPTH}"
        return f"{name} #{part['rank']} {part['score']:.3f}"

    bm25 = explain["bm25"]
    terms = f" ({', '.join(bm25['terms'])})" if bm25["terms"] else ""
    lexical = route("bm25", bm25) + terms if bm25["terms"] else "bm25 no term matched"
    parts = [route("dense", explain["dense"]), lexical,
             f"fused {explain['fused']:.3f}"]  # fmt: skip
    if len(explain["merged_from"]) > 1:
        parts.append(f"{len(explain['merged_from'])} chunks merged")
    if explain["translated"]:
        parts.append(f"translated: {explain['translated']}")
    if explain["rewrites"]:
        parts.append(f"rewrites: {' | '.join(explain['rewrites'])}")
    return "   " + " · ".join(parts)


def expect_lines(report: dict[str, Any]) -> list[str]:
    """Retriever.expect as text: a line per route, then what ranked above."""
    if not report["indexed"]:
        return [f"expected {report['source']}: no such file in the index (sources are paths "
                "relative to the ingested folder, as `ossrag search` shows them)"]  # fmt: skip
    lines = [f"expected {report['source']}:"]
    for name in ("dense", "bm25", "fused", "passages"):
        part = report[name]
        where = (
            f"#{part['rank']} of {part['of']} ({part['score']:.3f})"
            if part["rank"]
            else f"not in the top {part['of']}"
        )
        above = ", ".join(f"{b['source']} #{b['rank']} {b['score']:.3f}" for b in part["beaten_by"])
        lines.append(f"  {name:8} {where}" + (f"; above it: {above}" if above else ""))
    return lines


def score_fusion(
    fusion: FusionName, dense_weight: float | None, *, translated: bool = False
) -> Relative | Weighted:
    """The score fusion ("relative" or "weighted") with its dense share: the given one, else the
    fusion's default; relative fusion takes TRANSLATED_DENSE_SHIFT off it for a question searched
    with its translation (Milvus's weighted ranker, whose atan flattens BM25, is left as it is)."""
    if fusion != "relative":
        return Weighted(WEIGHTED_DENSE_WEIGHT if dense_weight is None else dense_weight)
    weight = RELATIVE_DENSE_WEIGHT if dense_weight is None else dense_weight
    if translated:
        weight = max(0.0, weight - TRANSLATED_DENSE_SHIFT)
    return Relative(weight)


# Whether a file's lines start..end hold no chunk: a chunker covers every non-blank line of a
# section, so between two chunks of one section such lines are blank.
HoldsNothing = Callable[[str, int, int], bool]
_HEADING_LINE = re.compile(r" {0,3}#{1,6}(\s|$)")
_UNDERLINE = re.compile(r"\s*([=\-~^\"'`#*+.:_])\1{2,}\s*")


def merge_neighbours(
    passages: Sequence[Passage], k: int, holds_nothing: HoldsNothing | None = None
) -> list[Passage]:
    """The first k passages of a ranking, each chunk that continues a better-ranked one of the
    same section (same file, heading and metadata) joined to it, and each chunk whose text a
    better-ranked chunk elsewhere already holds left out.

    A chunk continues another when their line ranges touch or overlap, or, given
    `holds_nothing`, when only lines that hold no chunk (blank lines) lie between them and the
    later one does not open a section of its own (a heading repeated further down the file).

    Evidence that a long section spreads over two chunks then comes back whole, in one passage
    with the union of their line ranges (blank lines between them included) and the better
    chunk's rank, id and score (held-out set: R@1 0.729 -> 0.750, R@5 0.875 -> 0.896); the k
    passages cover more of the corpus. Text that pages share (a FAQ answer that tutorials
    include, one table under four index types) is said once, at its best-ranked place: 16 of the
    100 dev, held-out and extra questions had such a repeat in their top 10 (their recall and MRR
    are unchanged).
    """
    groups: list[list[Passage]] = []
    said: list[str] = []  # the texts kept so far, whitespace collapsed
    for passage in passages:
        text = " ".join(passage.text.split())
        touching = [group for group in groups if _continues(passage, group, holds_nothing)]
        if touching:  # join the best of them; a chunk that bridges two groups joins them too
            for other in touching[1:]:
                touching[0].extend(other)
                groups.remove(other)
            touching[0].append(passage)
        elif any(text in earlier for earlier in said):
            continue
        elif len(groups) == k:
            break
        else:
            groups.append([passage])
        said.append(text)
    return [_joined(rank, group) for rank, group in enumerate(groups, 1)]


def _continues(passage: Passage, group: list[Passage], holds_nothing: HoldsNothing | None) -> bool:
    head = group[0]
    if (passage.source, passage.heading, passage.meta) != (head.source, head.heading, head.meta):
        return False
    start = min(p.start_line for p in group)
    end = max(p.end_line for p in group)
    if passage.start_line <= end + 1 and passage.end_line >= start - 1:
        return True  # touching or overlapping
    if holds_nothing is None:
        return False
    if passage.start_line > end:  # after the group, blank lines end+1 .. start-1 between
        later, gap = passage, (end + 1, passage.start_line - 1)
    else:
        later = min(group, key=lambda p: p.start_line)
        gap = (passage.end_line + 1, start - 1)
    return not _opens_section(later.text) and holds_nothing(passage.source, *gap)


def _opens_section(text: str) -> bool:
    """Whether a chunk's text starts with a heading (ATX, setext or reStructuredText title)."""
    lines = text.split("\n", 2)
    if _HEADING_LINE.match(lines[0]):
        return True
    return len(lines) > 1 and bool(_UNDERLINE.fullmatch(lines[1]))


def _joined(rank: int, group: list[Passage]) -> Passage:
    """One passage from neighbouring chunks: their texts in line order, overlap said once, the
    blank lines between them kept."""
    best = min(group, key=lambda p: p.rank)
    ordered = sorted(group, key=lambda p: (p.start_line, p.end_line))
    lines, end = ordered[0].text.split("\n"), ordered[0].end_line
    for chunk in ordered[1:]:
        if chunk.end_line <= end:
            continue  # nothing beyond what the text already holds
        more = chunk.text.split("\n")
        repeated = end - chunk.start_line + 1  # lines both chunks hold (overlap), if any
        if 0 < repeated < len(more) and lines[-repeated:] == more[:repeated]:
            more = more[repeated:]
        lines += [""] * -repeated + more  # -repeated blank lines lie between, if any
        end = chunk.end_line
    return replace(
        best,
        rank=rank,
        start_line=ordered[0].start_line,
        end_line=end,
        text="\n".join(lines),
    )


def _rerank(reranker: Reranker, question: str, passages: list[Passage]) -> list[Passage]:
    """`passages` in the reranker's order, its scores replacing the first stage's."""
    scores = reranker.score(question, [f"{p.heading}\n{p.text}" for p in passages])
    order = np.argsort(-scores, kind="stable")
    return [
        replace(passages[i], rank=rank, score=float(scores[i])) for rank, i in enumerate(order, 1)
    ]


def _passage(rank: int, hit: Hit) -> Passage:
    return passage_from_row(rank, float(hit.distance), hit.entity)


def passage_from_row(rank: int, score: float, entity: dict[str, Any]) -> Passage:
    """A Passage from a stored chunk row (the store's CHUNK_FIELDS)."""
    return Passage(
        rank=rank,
        score=score,
        chunk_id=entity["id"],
        source=entity["source"],
        heading=entity["heading"],
        start_line=int(entity["start_line"]),
        end_line=int(entity["end_line"]),
        text=entity["text"],
        meta=entity.get("meta") or {},
    )
