"""Ingest and search speed on a real corpus (issue 2's numbers), in one process.

    python benchmarks/ingest_search.py [--corpus DIR] [--queries 200] [--json]

Prints: full ingest ÷ pure embedding of what it embeds (target ≤ 1.15): the chunk texts, and the
corpus words that the cross-lingual lexicon embeds with multilingual-e5-small; no-op re-ingest ÷
full ingest (≤ 0.05), warm search latency embed + hybrid (p50 ≤ 15 ms, p95 ≤ 30 ms), peak RSS.
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

import numpy as np

from ossrag.chunking import chunk_document
from ossrag.config import load_settings
from ossrag.crosslingual import load_word_encoder, vocabulary
from ossrag.embeddings import MiniLMEmbedder
from ossrag.index import Index
from ossrag.ingest import EMBED_BATCH_CHUNKS
from ossrag.loaders import Found, discover, load

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "milvus-docs"
DEFAULT_QUESTIONS = REPO.parent / "shared" / "eval" / "milvus-docs-dev.jsonl"


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


def queries(index: Index, questions: Path, n: int) -> list[str]:
    """The eval questions, then distinct section headings of the corpus, up to n queries."""
    found = []
    if questions.exists():
        found = [json.loads(line)["question"] for line in questions.read_text().splitlines()]
    rows = index.store.client.query(
        index.store.collection, filter='heading != ""', output_fields=["heading"], limit=5000
    )
    for heading in sorted({row["heading"].split(" › ")[-1] for row in rows}):
        if len(found) >= n:
            break
        found.append(heading)
    return found[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--queries", type=int, default=200)
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

        qs = queries(index, DEFAULT_QUESTIONS, args.queries)
        started = time.perf_counter()  # the first search builds the in-memory search index
        index.search("warm up the search path")
        first_search_s = time.perf_counter() - started
        latencies = []
        for q in qs:
            started = time.perf_counter()
            index.search(q, 5, "hybrid")
            latencies.append((time.perf_counter() - started) * 1000)
        dense = []
        for q in qs:
            started = time.perf_counter()
            index.search(q, 5, "dense")
            dense.append((time.perf_counter() - started) * 1000)
        index.close()

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
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
        "queries": len(qs),
        "search_hybrid_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 2),
            "p95": round(float(np.percentile(latencies, 95)), 2),
        },
        "search_dense_ms": {
            "p50": round(float(np.percentile(dense, 50)), 2),
            "p95": round(float(np.percentile(dense, 95)), 2),
        },
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
    print(f"search hybrid     p50 {h['p50']} ms, p95 {h['p95']} ms over {len(qs)} queries "
          "(target p50 ≤ 15, p95 ≤ 30)")  # fmt: skip
    print(f"search dense      p50 {d['p50']} ms, p95 {d['p95']} ms")
    print(f"peak RSS          {result['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
