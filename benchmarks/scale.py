"""Milvus Lite at scale through ossrag's Store: synthetic chunks, random unit vectors.

    python benchmarks/scale.py [--sizes 10k,100k] [--dim 384] [--queries 100] [--json]

Each size runs in its own process on a fresh store: insert throughput (upserts in batches of
EMBED_BATCH_CHUNKS, flushed every FLUSH_EVERY_CHUNKS as `ossrag ingest` does), the final flush,
search latency p50/p95 (dense, BM25, hybrid) over warm queries in Milvus Lite's engine and then
in ossrag's in-memory search index (with the time to build it from the collection), size on disk
and the process's peak RSS. Texts are ~150 words (about 190 tokens) drawn from a Zipf-distributed
vocabulary, so BM25 has realistic posting lists; vectors are random, so the embedder is not
measured. Hybrid rows name their fusion: Milvus Lite's engine has only Milvus's weighted ranker
(0.6 dense), so both engines are timed with it, and the memory index also with its default
relative fusion (what ossrag searches a Lite store with).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ossrag.engine.ingest import EMBED_BATCH_CHUNKS, FLUSH_EVERY_CHUNKS
from ossrag.records import Chunk
from ossrag.retrieve.retriever import CANDIDATE_DEPTH, DEFAULT_FUSION
from ossrag.store.fusion import WEIGHTED_DENSE_WEIGHT, FusionRule, Weighted
from ossrag.store.milvus import Store

WEIGHTED = Weighted(WEIGHTED_DENSE_WEIGHT)  # the only fusion both engines have
SYLLABLES = "ka lo mi ne ru sa ti vo de pa zu ri mo fe la no gi hu be ta".split()
CHUNKS_PER_DOC = 10


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 5)))))
    return sorted(words)


def texts(n: int, words: list[str], rng: np.random.Generator) -> list[str]:
    ranks = np.minimum(rng.zipf(1.2, size=(n, 150)), len(words)) - 1
    return [" ".join(words[i] for i in row) + "." for row in ranks]


def unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def percentiles(ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
    }


def rss_mb() -> float:
    """This process's current resident set size in MB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1e6


def run_one(
    size: int, dim: int, queries: int, flush_every: int, max_rss_mb: float, work: Path
) -> dict[str, Any]:
    """Fill one fresh store with `size` chunks and measure it (runs in a child process).

    Inserting stops early when the process passes `max_rss_mb`; the store is then measured at
    the size it reached, and the result says so.
    """
    rng = np.random.default_rng(size)
    words = vocabulary(20_000, rng)
    db = work / "scale.db"
    store = Store(str(db), memory_index=False)  # first measure Milvus Lite's own engine
    info = store.ensure("synthetic", dim)
    insert_s = 0.0
    unflushed = 0
    inserted = 0
    stopped_by_memory = False
    for start in range(0, size, EMBED_BATCH_CHUNKS):
        if max_rss_mb and rss_mb() > max_rss_mb:
            stopped_by_memory = True
            break
        n = min(EMBED_BATCH_CHUNKS, size - start)
        batch = [
            Chunk(
                id=f"c{start + i:09d}",
                doc_id=f"d{(start + i) // CHUNKS_PER_DOC:08d}",
                source=f"docs/file{(start + i) // CHUNKS_PER_DOC:08d}.md",
                heading_path=("Guide", f"Section {(start + i) % CHUNKS_PER_DOC}"),
                start_line=1,
                end_line=20,
                text=text,
            )
            for i, text in enumerate(texts(n, words, rng))
        ]
        vectors = unit_vectors(n, dim, rng)
        started = time.perf_counter()
        store.insert_chunks(batch, vectors)
        unflushed += n
        if flush_every and unflushed >= flush_every:
            store.flush()
            unflushed = 0
        insert_s += time.perf_counter() - started
        inserted += n
        if inserted % 50_000 < n:
            print(
                f"{inserted:,} rows, {insert_s:.0f} s inserting, RSS {rss_mb():,.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    started = time.perf_counter()
    store.flush()
    flush_s = time.perf_counter() - started

    query_vectors = unit_vectors(queries + 5, dim, rng)
    query_texts = [" ".join(rng.choice(words[:2000], size=3)) for _ in range(queries + 5)]
    milvus_ms = search_latency(store, query_vectors, query_texts, WEIGHTED)
    store.memory_index = True
    started = time.perf_counter()
    assert store._search_index() is not None
    index_build_s = time.perf_counter() - started
    memory_ms = search_latency(store, query_vectors, query_texts, WEIGHTED)
    memory_ms["hybrid relative"] = search_latency(
        store, query_vectors, query_texts, DEFAULT_FUSION
    )["hybrid"]
    rows = store.count()
    store.close()
    disk = sum(p.stat().st_size for p in db.rglob("*") if p.is_file())
    return {
        "chunks": inserted,
        "rows": rows,
        "stopped_by_memory": stopped_by_memory,
        "flush_every": flush_every,
        "bm25": info.bm25,
        "insert_rows_per_s": round(inserted / insert_s, 1),
        "insert_s": round(insert_s, 2),
        "flush_s": round(flush_s, 3),
        "search_ms": milvus_ms,
        "memory_index_build_s": round(index_build_s, 2),
        "memory_index_search_ms": memory_ms,
        "disk_mb": round(disk / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def search_latency(
    store: Store, vectors: np.ndarray, texts: list[str], fusion: FusionRule
) -> dict[str, dict[str, float]]:
    """p50/p95 of dense, BM25 and hybrid (`fusion`) top-10 searches; the first 5 queries only
    warm up."""
    latency: dict[str, list[float]] = {"dense": [], "bm25": [], "hybrid": []}
    for q, (vector, text) in enumerate(zip(vectors, texts, strict=True)):
        for mode in latency:
            started = time.perf_counter()
            if mode == "dense":
                hits = store.search_dense(vector, 10)
            elif mode == "bm25":
                hits = store.search_bm25(text, 10)
            else:
                hits = store.search_hybrid(vector, text, 10, CANDIDATE_DEPTH, fusion)
            if q >= 5:
                latency[mode].append((time.perf_counter() - started) * 1000)
            assert hits, f"{mode} search found nothing"
    return {mode: percentiles(ms) for mode, ms in latency.items()}


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k", help="comma-separated: 10k,100k,200k,1m")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--flush-every",
        type=int,
        default=FLUSH_EVERY_CHUNKS,
        help="flush after this many chunks, as ingest does (0: once, at the end)",
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=16.0,
        help="stop inserting past this resident memory and measure the size reached (0: no limit)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: measure one size
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    if args.one:
        with tempfile.TemporaryDirectory(prefix="ossrag-scale-") as tmp:
            print(
                json.dumps(
                    run_one(
                        args.one,
                        args.dim,
                        args.queries,
                        args.flush_every,
                        args.max_rss_gb * 1000,
                        Path(tmp),
                    )
                )
            )
        return
    results = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        command = [sys.executable, __file__, "--one", str(size), "--dim", str(args.dim)]
        command += ["--queries", str(args.queries), "--flush-every", str(args.flush_every)]
        command += ["--max-rss-gb", str(args.max_rss_gb)]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if child.returncode != 0:
            sys.exit(f"error: size {size} failed with exit code {child.returncode}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        if not args.json:
            print_row(results[-1], header=len(results) == 1)
    if args.json:
        print(json.dumps({"dim": args.dim, "queries": args.queries, "results": results}, indent=2))


def print_row(r: dict[str, Any], header: bool) -> None:
    if header:
        print(
            f"{'chunks':>9} {'insert/s':>9} {'flush s':>8} {'engine':>7} {'dense p50/p95':>14} "
            f"{'bm25 p50/p95':>14} {'hybrid p50/p95':>15} {'fusion':>9} {'build s':>8} "
            f"{'disk MB':>8} {'peak RSS MB':>12}"
        )
    limit = " (memory limit reached)" if r.get("stopped_by_memory") else ""
    rows = [
        ("lite", r["search_ms"], "hybrid", "weighted"),
        ("memory", r["memory_index_search_ms"], "hybrid", "weighted"),
        ("memory", r["memory_index_search_ms"], "hybrid relative", "relative"),
    ]
    for engine, s, hybrid, fusion in rows:
        dense, bm25 = (
            [f"{s[m]['p50']:.1f}/{s[m]['p95']:.1f}" for m in ("dense", "bm25")]
            if fusion == "weighted"
            else ["", ""]  # the same searches as the row above
        )
        cols = [dense, bm25, f"{s[hybrid]['p50']:.1f}/{s[hybrid]['p95']:.1f}"]
        build = f"{r['memory_index_build_s']:.2f}" if engine == "memory" else ""
        print(
            f"{r['chunks']:>9,} {r['insert_rows_per_s']:>9,.0f} {r['flush_s']:>8.2f} "
            f"{engine:>7} {cols[0]:>14} {cols[1]:>14} {cols[2]:>15} {fusion:>9} {build:>8} "
            f"{r['disk_mb']:>8.1f} {r['peak_rss_mb']:>12.0f}{limit}"
        )


if __name__ == "__main__":
    main()
