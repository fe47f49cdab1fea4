"""Issue 17's numbers: live sync latency, the MCP search round trip, and filtered search.

    python benchmarks/mcp_watch_filters.py [--only watch|mcp|filters] [--edits 50]
                                           [--burst 500] [--calls 50] [--faq DIR] [--json]

1. watch: the FAQ corpus in a temp folder, watched as `ossrag serve --watch` does
   (ossrag.engine.watch.watch_and_sync, the real embedder, a Milvus Lite store). Each of `--edits`
   edits appends a new word to one file; latency = the end of the sync that follows it minus
   the edit's last write (the sync ends with the search index rebuilt, and a search for the
   word then checks that it is found). Then `--burst` new files written at once: how many syncs
   they cost, and the time from the last write to all of them searchable.
2. mcp: `python -m ossrag mcp` over stdio with the SDK's own client on the FAQ corpus; the
   `search` tool's round trip p50/p95 over `--calls` calls, and the same searches made
   in-process through Index.search for comparison.
3. filters: 5,000 chunks of 100 synthetic files (vectors random, text from a small
   vocabulary: ranking costs as for real text), hybrid search p50/p95 with no filter and with a
   --path filter keeping 5 files (5 % of the chunks), on the Lite in-memory index and on Milvus
   Lite's own engine (the boolean-expression path a Milvus server takes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from common import FAQ, FAQ_QUESTIONS, REPO

from ossrag.config import load_settings
from ossrag.embed.encoders import Vectors
from ossrag.engine.index import Index
from ossrag.engine.watch import Synced, watch_and_sync
from ossrag.records import Chunk, doc_id_for
from ossrag.store.filters import make_filter
from ossrag.store.milvus import FileRecord, Store


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values_ms), 1),
        "p95_ms": round(percentile(values_ms, 0.95), 1),
        "n": len(values_ms),
    }


# --------------------------------------------------------------------------- watch


def bench_watch(work: Path, faq: Path, edits: int, burst: int) -> dict[str, Any]:
    corpus = work / "faq"
    shutil.copytree(faq, corpus)
    index = Index(load_settings(db=str(work / "watch.db")))
    index.ingest([corpus])
    synced: list[Synced] = []
    done = threading.Condition()

    def on_sync(s: Synced) -> None:
        with done:
            synced.append(s)
            done.notify_all()

    def wait_syncs(count: int, timeout: float = 120) -> None:
        with done:
            if not done.wait_for(lambda: len(synced) >= count, timeout):
                raise RuntimeError(f"no sync within {timeout} s")

    stop = threading.Event()
    thread = threading.Thread(
        target=watch_and_sync,
        args=([corpus], lambda: index.ingest([corpus]), on_sync, stop),
        kwargs={"ignore": [work / "watch.db"]},
        daemon=True,
    )
    thread.start()
    wait_syncs(1)  # armed and caught up
    files = sorted(corpus.glob("*.md"))
    latencies = []
    for n in range(edits):
        path = files[n % len(files)]
        word = f"zqedit{n}x"
        before = len(synced)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"\n\nEdit {n}: {word}.\n")
        written = time.time()
        wait_syncs(before + 1)
        latencies.append((synced[before].finished - written) * 1000)
        found = index.search(word, 1, "bm25").passages
        if not found or found[0].source != path.name:
            raise RuntimeError(f"edit {n} not searchable after its sync")
        time.sleep(0.3)
    before = len(synced)
    folder = corpus / "burst"
    folder.mkdir()
    for n in range(burst):
        (folder / f"file{n:03d}.md").write_text(f"# Burst {n}\n\nzqburst{n}x words.\n")
    last_write = time.time()
    wait_syncs(before + 1)
    time.sleep(3.0)  # any further sync the burst causes comes now
    burst_syncs = synced[before:]
    all_in = index.search(f"zqburst{burst - 1}x", 1, "bm25").passages
    stop.set()
    thread.join(30)
    stored = sum(1 for r in index.files() if r.source.startswith("burst/"))
    index.close()
    if stored != burst or not all_in:
        raise RuntimeError(f"burst: {stored} of {burst} files stored")
    return {
        "edit_to_searchable": summary(latencies),
        "burst_files": burst,
        "burst_syncs": len(burst_syncs),
        "burst_last_write_to_searchable_ms": round(
            (burst_syncs[-1].finished - last_write) * 1000, 1
        ),
        "burst_sync_seconds": [round(s.report.seconds, 2) for s in burst_syncs],
    }


# --------------------------------------------------------------------------- MCP


def bench_mcp(work: Path, faq: Path, calls: int) -> dict[str, Any]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    db = work / "mcp.db"
    index = Index(load_settings(db=str(db)))
    index.ingest([faq])
    index.close()
    env = {"PYTHONPATH": str(REPO), "OSSRAG_CONFIG": str(work / "none.toml")}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "ossrag", "mcp", "--db", str(db), "--no-ask"], env=env
    )
    times: list[float] = []

    async def session() -> float:
        started = time.perf_counter()
        async with Client(params) as client:
            ready = time.perf_counter() - started
            await client.call_tool("search", {"query": "warm up", "k": 5})
            for n in range(calls):
                began = time.perf_counter()
                result = await client.call_tool(
                    "search", {"query": FAQ_QUESTIONS[n % len(FAQ_QUESTIONS)]}
                )
                times.append((time.perf_counter() - began) * 1000)
                if result.is_error or len(result.structured_content["passages"]) != 5:
                    raise RuntimeError(f"search failed: {result.content}")
        return ready

    ready = anyio.run(session)
    index = Index(load_settings(db=str(db)))
    index.search("warm up", 5)
    direct = []
    for n in range(calls):
        began = time.perf_counter()
        index.search(FAQ_QUESTIONS[n % len(FAQ_QUESTIONS)], 5)
        direct.append((time.perf_counter() - began) * 1000)
    index.close()
    return {
        "stdio_search_round_trip": summary(times),
        "in_process_search": summary(direct),
        "start_to_ready_s": round(ready, 1),
    }


# --------------------------------------------------------------------------- filters


WORDS = (
    "vector index segment replica query node collection partition schema bucket storage "
    "metric filter search embedding cluster shard flush compaction proxy coordinator channel "
    "timestamp consistency quota backup snapshot analyzer tokenizer growing sealed"
).split()


def synthetic_store(path: Path, dim: int, name: str) -> Store:
    """100 files of 50 chunks each: random unit vectors, text drawn from WORDS."""
    store = Store(str(path), memory_index=True)
    store.ensure(name, dim)
    rng, vectors = random.Random(3), np.random.default_rng(3)
    records = []
    for f in range(100):
        source = f"part{f // 10}/file{f:03d}.md"
        doc_id = doc_id_for("/bench", source)
        chunks = [
            Chunk(f"{doc_id[:24]}{c:08d}", doc_id, source, (f"File {f}", f"Part {c}"),
                  c * 10 + 1, c * 10 + 9, " ".join(rng.choices(WORDS, k=60)))
            for c in range(50)
        ]  # fmt: skip
        matrix: Vectors = vectors.standard_normal((50, dim)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        store.insert_chunks(chunks, matrix)
        records.append(FileRecord(doc_id, "/bench", source, "0" * 64, 1.7e9, 50))
    store.flush()
    store.record_files(records)
    store.flush()
    return store


def bench_filters(work: Path, runs: int) -> dict[str, Any]:
    index = Index(load_settings(db=str(work / "filters.db")))
    embedder = index.embedder
    synthetic_store(work / "filters.db", embedder.dim, embedder.name).close()
    where = make_filter(["part0/file00[0-4].md"])  # 5 of 100 files: 250 of 5,000 chunks
    results: dict[str, Any] = {"chunks": 5000, "kept_chunks": 250}
    queries = [" ".join(random.Random(n).choices(WORDS, k=6)) for n in range(runs)]
    for engine, memory in (("lite_memory_index", True), ("milvus_expression", False)):
        store = Store(str(work / "filters.db"), memory_index=memory)
        index = Index(load_settings(db=str(work / "filters.db")), embedder=embedder, store=store)
        for label, flt in (("no_filter", None), ("filter_5pct", where)):
            index.search(queries[0], 5, "hybrid", where=flt)  # load and build indexes
            times, counts = [], set()
            for query in queries:
                began = time.perf_counter()
                found = index.search(query, 5, "hybrid", where=flt).passages
                times.append((time.perf_counter() - began) * 1000)
                counts.add(len(found))
                if flt is not None and any(not where.accepts(p.source, 0) for p in found):
                    raise RuntimeError("a passage outside the filter")
            results[f"{engine}_{label}"] = {**summary(times), "passages": sorted(counts)}
        index.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["watch", "mcp", "filters"])
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--faq", type=Path, default=FAQ, help="the FAQ corpus folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("pymilvus").setLevel(logging.ERROR)
    if args.only != "filters" and not args.faq.is_dir():
        sys.exit(f"{args.faq} not found: set OSSRAG_SHARED, or pass --faq DIR")
    report: dict[str, Any] = {"load_average_at_start": round(os.getloadavg()[0], 1)}
    with tempfile.TemporaryDirectory(prefix="ossrag-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "filters"):
            report["filters"] = bench_filters(work, 100)
        if args.only in (None, "mcp"):
            report["mcp"] = bench_mcp(work, args.faq, args.calls)
        if args.only in (None, "watch"):
            report["watch"] = bench_watch(work, args.faq, args.edits, args.burst)
    report["load_average_at_end"] = round(os.getloadavg()[0], 1)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for section, values in report.items():
        if not isinstance(values, dict):
            print(f"{section}: {values}")
            continue
        print(f"{section}:")
        for key, value in values.items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
