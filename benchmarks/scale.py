"""Milvus Lite at scale through ossrag's Store: synthetic chunks, random unit vectors.

    python benchmarks/scale.py [--sizes 10k,100k] [--dim 384] [--queries 100] [--json]

Each size runs in its own process on a fresh store: insert throughput (upserts in batches of
EMBED_BATCH_CHUNKS, flushed every FLUSH_EVERY_CHUNKS as `ossrag ingest` does), the final flush,
search latency p50/p95 (dense, BM25, hybrid) over warm queries, size on disk and the process's
peak RSS. Texts are ~150 words (about 190 tokens) drawn from a Zipf-distributed vocabulary, so
BM25 has realistic posting lists; vectors are random, so the embedder is not measured.
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

from ossrag.ingest import EMBED_BATCH_CHUNKS, FLUSH_EVERY_CHUNKS
from ossrag.models import Chunk
from ossrag.retrieval import CANDIDATE_DEPTH, DEFAULT_RANKER
from ossrag.store import Store

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


def run_one(size: int, dim: int, queries: int, flush_every: int, work: Path) -> dict[str, Any]:
    """Fill one fresh store with `size` chunks and measure it (runs in a child process)."""
    rng = np.random.default_rng(size)
    words = vocabulary(20_000, rng)
    db = work / "scale.db"
    store = Store(str(db))
    info = store.ensure("synthetic", dim)
    insert_s = 0.0
    unflushed = 0
    for start in range(0, size, EMBED_BATCH_CHUNKS):
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
    started = time.perf_counter()
    store.flush()
    flush_s = time.perf_counter() - started

    query_vectors = unit_vectors(queries + 5, dim, rng)
    query_texts = [" ".join(rng.choice(words[:2000], size=3)) for _ in range(queries + 5)]
    latency: dict[str, list[float]] = {"dense": [], "bm25": [], "hybrid": []}
    for q in range(queries + 5):
        for mode in latency:
            started = time.perf_counter()
            if mode == "dense":
                hits = store.search_dense(query_vectors[q], 10)
            elif mode == "bm25":
                hits = store.search_bm25(query_texts[q], 10)
            else:
                hits = store.search_hybrid(
                    query_vectors[q], query_texts[q], 10, CANDIDATE_DEPTH, DEFAULT_RANKER
                )
            if q >= 5:  # the first queries warm caches
                latency[mode].append((time.perf_counter() - started) * 1000)
            assert hits, f"{mode} search found nothing"
    rows = store.count()
    store.close()
    disk = sum(p.stat().st_size for p in db.rglob("*") if p.is_file())
    return {
        "chunks": size,
        "rows": rows,
        "flush_every": flush_every,
        "bm25": info.bm25,
        "insert_rows_per_s": round(size / insert_s, 1),
        "insert_s": round(insert_s, 2),
        "flush_s": round(flush_s, 3),
        "search_ms": {mode: percentiles(ms) for mode, ms in latency.items()},
        "disk_mb": round(disk / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: measure one size
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    if args.one:
        with tempfile.TemporaryDirectory(prefix="ossrag-scale-") as tmp:
            print(
                json.dumps(run_one(args.one, args.dim, args.queries, args.flush_every, Path(tmp)))
            )
        return
    results = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        command = [sys.executable, __file__, "--one", str(size), "--dim", str(args.dim)]
        command += ["--queries", str(args.queries), "--flush-every", str(args.flush_every)]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"error: size {size} failed: {child.stderr.strip().splitlines()[-1:]}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        if not args.json:
            print_row(results[-1], header=len(results) == 1)
    if args.json:
        print(json.dumps({"dim": args.dim, "queries": args.queries, "results": results}, indent=2))


def print_row(r: dict[str, Any], header: bool) -> None:
    if header:
        print(
            f"{'chunks':>9} {'insert/s':>9} {'flush s':>8} {'dense p50/p95':>14} "
            f"{'bm25 p50/p95':>14} {'hybrid p50/p95':>15} {'disk MB':>8} {'peak RSS MB':>12}"
        )
    s = r["search_ms"]
    cols = [f"{s[m]['p50']:.1f}/{s[m]['p95']:.1f}" for m in ("dense", "bm25", "hybrid")]
    print(
        f"{r['chunks']:>9,} {r['insert_rows_per_s']:>9,.0f} {r['flush_s']:>8.2f} {cols[0]:>14} "
        f"{cols[1]:>14} {cols[2]:>15} {r['disk_mb']:>8.1f} {r['peak_rss_mb']:>12.0f}"
    )


if __name__ == "__main__":
    main()
