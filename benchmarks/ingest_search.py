"""Ingest and search speed on a real corpus (issue 2's numbers), in one process.

    python benchmarks/ingest_search.py [--corpus DIR] [--questions SET.jsonl ...] [--headings 100]
                                       [--json]

Prints: full ingest ÷ pure embedding of what it embeds (target ≤ 1.15): the chunk texts, and the
corpus words that the cross-lingual lexicon embeds with multilingual-e5-small; no-op re-ingest ÷
full ingest (≤ 0.05); warm search latency embed + hybrid (p50 ≤ 15 ms, p95 ≤ 30 ms) and embed +
dense over real questions (the dev, held-out, extra and fresh sets: 140 questions, English and
Italian, a median of 13 words), each searched once; hybrid latency over section headings
(terse, a few words) reported apart; peak RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ossrag.choices import Mode
from ossrag.chunk.chunker import chunk_document
from ossrag.config import load_settings
from ossrag.embed.crosslingual import load_word_encoder, vocabulary
from ossrag.embed.encoders import MiniLMEmbedder
from ossrag.engine.index import Index
from ossrag.engine.ingest import EMBED_BATCH_CHUNKS
from ossrag.load.files import Found, discover, load

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "milvus-docs"
SETS = ("heldout", "extra", "fresh")
DEFAULT_QUESTIONS = [
    REPO.parent / "shared" / "eval" / "milvus-docs-dev.jsonl",
    *(REPO / "benchmarks" / "questions" / f"milvus-docs-{set_}.jsonl" for set_ in SETS),
]


def chunk_texts(corpus: Path, embedder: MiniLMEmbedder) -> list[str]:
    """What ingest embeds for each chunk of the corpus (heading path + text), in order."""
    docs = [load(f) for f in discover([corpus]) if isinstance(f, Found)]
    return [
        chunk.embed_text
        for doc in docs
        for chunk in chunk_document(
            doc, max_tokens=embedder.max_tokens, count_tokens=embedder.count_tokens
        )
    ]


def questions(sets: list[Path]) -> list[str]:
    """The distinct questions of the question sets that exist, in order."""
    found: list[str] = []
    for path in sets:
        if path.exists():
            found += [json.loads(line)["question"] for line in path.read_text().splitlines()]
    return list(dict.fromkeys(found))


def headings(index: Index, n: int) -> list[str]:
    """Up to n distinct section headings of the corpus (the last part of each heading path)."""
    rows = index.store.client.query(
        index.store.collection, filter='heading != ""', output_fields=["heading"], limit=5000
    )
    return sorted({row["heading"].split(" › ")[-1] for row in rows})[:n]


def latencies(index: Index, queries: list[str], mode: Mode) -> list[float]:
    """Milliseconds per search of each query (k=5), in order."""
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, 5, mode)
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentiles(ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--questions", type=Path, nargs="+", default=DEFAULT_QUESTIONS)
    parser.add_argument("--headings", type=int, default=100, help="heading queries timed apart")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"error: corpus {args.corpus} not found (pass --corpus DIR)")
    logging.getLogger("pymilvus").setLevel(logging.ERROR)

    embedder = MiniLMEmbedder()
    embedder.embed(["warm up the model"])
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(load_settings(db=f"{tmp}/bench.db"), embedder=embedder)

        started = time.perf_counter()
        report = index.ingest([args.corpus])
        full_s = time.perf_counter() - started

        started = time.perf_counter()
        noop = index.ingest([args.corpus])
        noop_s = time.perf_counter() - started
        assert noop.chunks_embedded == 0, "re-ingest embedded something"

        # The pure-embedding floor: the very chunk texts ingest embedded, in its batch size.
        texts = chunk_texts(args.corpus, embedder)
        started = time.perf_counter()
        for start in range(0, len(texts), EMBED_BATCH_CHUNKS):
            embedder.embed(texts[start : start + EMBED_BATCH_CHUNKS])
        chunks_s = time.perf_counter() - started
        words = list(vocabulary(texts))
        started = time.perf_counter()
        if (encoder := load_word_encoder()) is not None:
            encoder.encode(words)
        words_s = time.perf_counter() - started
        embed_s = chunks_s + words_s

        qs = questions(args.questions)
        if not qs:
            sys.exit("error: no question set found (pass --questions SET.jsonl)")
        heads = headings(index, args.headings)
        started = time.perf_counter()  # the first search builds the in-memory search index
        index.search("warm up the search path")
        first_search_s = time.perf_counter() - started
        hybrid = latencies(index, qs, "hybrid")
        dense = latencies(index, qs, "dense")
        heading_hybrid = latencies(index, heads, "hybrid")
        index.close()

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, Any] = {
        "corpus": str(args.corpus),
        "files": report.files_added,
        "chunks": report.chunks_embedded,
        "full_ingest_s": round(full_s, 2),
        "pure_embedding_s": round(embed_s, 2),
        "embedding_chunks_s": round(chunks_s, 2),
        "embedding_words_s": round(words_s, 2),
        "words": len(words),
        "ingest_over_embedding": round(full_s / embed_s, 3),
        "noop_reingest_s": round(noop_s, 3),
        "noop_over_full": round(noop_s / full_s, 4),
        "first_search_s": round(first_search_s, 3),
        "questions": len(qs),
        "question_words_median": float(np.median([len(q.split()) for q in qs])),
        "search_hybrid_ms": percentiles(hybrid),
        "search_dense_ms": percentiles(dense),
        "headings": len(heads),
        "heading_words_median": float(np.median([len(h.split()) for h in heads])),
        "heading_search_hybrid_ms": percentiles(heading_hybrid),
        "peak_rss_mb": round(peak_rss_mb),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"corpus            {result['corpus']} ({result['files']} files, {result['chunks']} chunks)"
    )
    print(f"full ingest       {full_s:.1f} s; pure embedding {embed_s:.1f} s ({chunks_s:.1f} s "
          f"chunks, {words_s:.1f} s {len(words)} words); ratio {result['ingest_over_embedding']} "
          "(target ≤ 1.15)")  # fmt: skip
    print(f"no-op re-ingest   {noop_s:.2f} s; ratio {result['noop_over_full']} (target ≤ 0.05)")
    print(f"first search      {first_search_s:.2f} s (builds the in-memory search index)")
    h, d = result["search_hybrid_ms"], result["search_dense_ms"]
    print(f"search hybrid     p50 {h['p50']} ms, p95 {h['p95']} ms over {len(qs)} questions "
          f"(median {result['question_words_median']:g} words; "
          "target p50 ≤ 15, p95 ≤ 30)")  # fmt: skip
    print(f"search dense      p50 {d['p50']} ms, p95 {d['p95']} ms, the same questions")
    t = result["heading_search_hybrid_ms"]
    print(f"headings, hybrid  p50 {t['p50']} ms, p95 {t['p95']} ms over {len(heads)} section "
          f"headings (median {result['heading_words_median']:g} words)")  # fmt: skip
    print(f"peak RSS          {result['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
