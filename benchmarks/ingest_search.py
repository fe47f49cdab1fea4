"""Ingest and search on a real corpus, ossrag against the tutorial recipe, in one run (issue 19).

    python benchmarks/ingest_search.py [--corpus DIR] [--skip PART ...] [--floor] [--json]

PARTs (all run unless skipped): `encoders` (fp32 against int8 passages a second on 256 corpus
chunks, the two interleaved, best of 2 rounds, and the cosine between their vectors); `tutorial`
(the tutorial recipe's full ingest); `int8` and `fp32` (ossrag's full ingest with that encoder,
its no-op re-ingest, a one-sentence edit and retrieval on the dev set); `search` (warm search
latencies on the default encoder's store).

Each full ingest runs in a process of its own, so its peak RSS is its own: the model is loaded and
warmed up first, then the clock runs from reading the files to the last write returning, and the
peak RSS is read right after. Wall and CPU seconds (all threads, Milvus Lite's included) are both
reported: on a shared machine CPU seconds move less; the load average is recorded with each side.

- ossrag: `Index.ingest` of a copy of the corpus into a new Milvus Lite store: chunks of at most
  256 tokens with their heading path and an overlap of 32, every token embedded, BM25 terms, the
  in-memory search index and the cross-lingual lexicon (corpus words embedded by
  multilingual-e5-small) built and saved. Then a no-op re-ingest, then one sentence of
  faq/product_faq.md edited and the corpus ingested again (chunks embedded, the ingest's own
  seconds), then the dev set's questions searched (hybrid, k=10; before the edit).
- tutorial: each file split on "# " (`ossrag.eval.retrieval.tutorial_chunks`), each piece
  embedded whole with the same model, so cut at its 256-token window, then inserted with
  `MilvusClient.insert` into a new Milvus Lite collection (dense only, `create_collection` with
  its dimension, as the tutorial does). It embeds with ossrag's fp32 ONNX encoder, the fastest
  fp32 runtime of this model here, all pieces in one call: length-sorted, in batches of 8, the
  least padding there is (batches of 32 pieces in file order pad to 31% more tokens on
  milvus-docs), so the tutorial's time is the lowest it can honestly be.

Tokens embedded: ossrag's are its chunks' MiniLM tokens (heading paths and overlaps included),
plus the lexicon's words in e5's tokens ("query: " prefix and specials included; e5-small has
12 layers to MiniLM's 6); the tutorial's are its pieces' MiniLM tokens after the cut.
--floor adds the pure-embedding floor of issue 2 (ossrag's chunk texts and words embedded alone,
in the ingest's batches: full ingest ÷ floor, target ≤ 1.15); --json prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ossrag.choices import Mode
from ossrag.chunk.chunker import chunk_document
from ossrag.config import load_settings
from ossrag.embed.crosslingual import load_word_encoder, vocabulary
from ossrag.embed.encoders import DEFAULT_ENCODER, ENCODERS, Encoder, MiniLMEmbedder
from ossrag.engine.index import Index
from ossrag.engine.ingest import EMBED_BATCH_CHUNKS
from ossrag.eval.retrieval import RECALL_AT, evaluate, load_items, tutorial_chunks
from ossrag.load.files import Found, discover, load

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OSSRAG_SHARED") or REPO.parent / "shared")  # corpora, eval sets
DEFAULT_CORPUS = SHARED / "corpus" / "milvus-docs"
DEV_SET = SHARED / "eval" / "milvus-docs-dev.jsonl"
SETS = ("heldout", "extra", "fresh")
DEFAULT_QUESTIONS = [
    DEV_SET,
    *(REPO / "benchmarks" / "questions" / f"milvus-docs-{set_}.jsonl" for set_ in SETS),
]
PARTS = ("encoders", "tutorial", "int8", "fp32", "search")
EDITED_FILE = "faq/product_faq.md"
EDIT = ("Milvus is a 100% free open-source project.", "Milvus is a free and open-source project.")
SAMPLE_CHUNKS = 256


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


def tokens(embedder: MiniLMEmbedder, texts: list[str]) -> int:
    """MiniLM tokens the encoder reads for these texts (cut at its window, specials included)."""
    return sum(len(ids) for ids in embedder._token_ids(texts))


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


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


@contextmanager
def clock(into: dict[str, Any], name: str) -> Iterator[None]:
    """Wall and CPU seconds of the block as `{name}_s`, `{name}_cpu_s`, and the load at its end."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield
    into[f"{name}_s"] = round(time.perf_counter() - wall, 2)
    into[f"{name}_cpu_s"] = round(cpu_seconds() - cpu, 2)
    into[f"{name}_load"] = load_average()


# -- the sides, each in a process of its own ---------------------------------------------------


def tutorial_side(corpus: Path) -> dict[str, Any]:
    """The tutorial recipe's full ingest (see the module docstring)."""
    from pymilvus import MilvusClient

    embedder = MiniLMEmbedder(encoder="fp32")
    embedder.embed(["warm up the model"])
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with clock(result, "ingest"):
            docs = [load(f) for f in discover([corpus]) if isinstance(f, Found)]
            pieces = [chunk.text for doc in docs for chunk in tutorial_chunks(doc)]
            vectors = embedder.embed(pieces)
            client = MilvusClient(f"{tmp}/tutorial.db")
            client.create_collection(
                "tutorial", dimension=embedder.dim, metric_type="IP", consistency_level="Strong"
            )
            client.insert(
                "tutorial",
                [
                    {"id": i, "vector": vector.tolist(), "text": text}
                    for i, (text, vector) in enumerate(zip(pieces, vectors, strict=True))
                ],
            )
        result["peak_rss_mb"] = peak_rss_mb()
        client.close()
    result |= {
        "pieces": len(pieces),
        "tokens": tokens(embedder, pieces),
        "tokens_uncut": sum(len(e.ids) for e in embedder._fast_tokenizer.encode_batch(pieces)),
    }
    return result


def ossrag_side(corpus: Path, encoder: Encoder, search: bool, floor: bool) -> dict[str, Any]:
    """ossrag's full ingest with one encoder, then a no-op re-ingest, dev-set retrieval, the
    one-sentence edit; with `search` the warm search latencies, with `floor` the pure-embedding
    floor."""
    embedder = MiniLMEmbedder(encoder=encoder)
    embedder.embed(["warm up the model"])
    load_word_encoder()
    result: dict[str, Any] = {"encoder": encoder}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / corpus.name
        shutil.copytree(corpus, copy)
        settings = load_settings(db=f"{tmp}/bench.db", encoder=encoder)
        index = Index(settings, embedder=embedder)
        with clock(result, "ingest"):
            report = index.ingest([copy])
        result["peak_rss_mb"] = peak_rss_mb()
        result |= {
            "files": report.files_added,
            "chunks": report.chunks_embedded,
            "embed_s": round(report.embed_seconds, 2),
        }
        with clock(result, "noop"):
            noop = index.ingest([copy])
        assert noop.chunks_embedded == 0, "the no-op re-ingest embedded something"

        texts = chunk_texts(copy, embedder)
        words = list(vocabulary(texts))
        word_encoder = load_word_encoder()
        result |= {
            "tokens": tokens(embedder, texts),
            "words": len(words),
            "word_tokens": sum(map(word_encoder.count_tokens, words)) if word_encoder else 0,
        }
        if DEV_SET.exists():
            dev = evaluate(
                "ossrag",
                load_items(DEV_SET),
                lambda query, k: index.search(query, k, "hybrid").passages,
            ).summary()
            result["dev"] = {key: dev[key] for key in ("n", *map(recall, RECALL_AT), "mrr@10")}
        if search:
            result |= search_latencies(index)
        edited = copy / EDITED_FILE
        if edited.is_file() and EDIT[0] in (text := edited.read_text(encoding="utf-8")):
            edited.write_text(text.replace(EDIT[0], EDIT[1], 1), encoding="utf-8")
            with clock(result, "edit_wall"):
                edit = index.ingest([copy])
            result |= {
                "edit_files": edit.files_updated,
                "edit_chunks_embedded": edit.chunks_embedded,
                "edit_chunks_reused": edit.chunks_reused,
                "edit_ingest_s": round(edit.seconds, 3),
            }
        index.close()
        if floor:
            result |= embedding_floor(embedder, texts, words)
    return result


def recall(n: int) -> str:
    return f"recall@{n}"


def search_latencies(index: Index) -> dict[str, Any]:
    """Warm search latencies over real questions and over section headings."""
    qs = questions(DEFAULT_QUESTIONS)
    heads = headings(index, 100)
    started = time.perf_counter()  # the ingest built the in-memory index: this loads little
    index.search("warm up the search path")
    first_search_s = time.perf_counter() - started
    hybrid = latencies(index, qs, "hybrid")
    dense = latencies(index, qs, "dense")
    heading_hybrid = latencies(index, heads, "hybrid")
    return {
        "first_search_s": round(first_search_s, 3),
        "questions": len(qs),
        "question_words_median": float(np.median([len(q.split()) for q in qs])),
        "search_hybrid_ms": percentiles(hybrid),
        "search_dense_ms": percentiles(dense),
        "headings": len(heads),
        "heading_words_median": float(np.median([len(h.split()) for h in heads])),
        "heading_search_hybrid_ms": percentiles(heading_hybrid),
        "search_load": load_average(),
    }


def embedding_floor(embedder: MiniLMEmbedder, texts: list[str], words: list[str]) -> dict[str, Any]:
    """The chunk texts ingest embedded, in its batch size, and the lexicon's words, alone."""
    started = time.perf_counter()
    for start in range(0, len(texts), EMBED_BATCH_CHUNKS):
        embedder.embed(texts[start : start + EMBED_BATCH_CHUNKS])
    chunks_s = time.perf_counter() - started
    started = time.perf_counter()
    if (encoder := load_word_encoder()) is not None:
        encoder.encode_many(words)
    words_s = time.perf_counter() - started
    return {"floor_chunks_s": round(chunks_s, 2), "floor_words_s": round(words_s, 2)}


def encoder_speeds(corpus: Path) -> dict[str, Any]:
    """fp32 against int8 on SAMPLE_CHUNKS corpus chunks (ingest's batches), interleaved."""
    embedders = {name: MiniLMEmbedder(encoder=name) for name in ENCODERS}
    chunks = chunk_texts(corpus, embedders["fp32"])
    texts = random.Random(0).sample(chunks, min(SAMPLE_CHUNKS, len(chunks)))
    for embedder in embedders.values():
        embedder.embed(texts[:8])
    best = dict.fromkeys(ENCODERS, float("inf"))
    vectors = {}
    for _ in range(2):
        for name, embedder in embedders.items():
            started = time.perf_counter()
            vectors[name] = embedder.embed(texts)
            best[name] = min(best[name], time.perf_counter() - started)
    cosine = (vectors["fp32"] * vectors["int8"]).sum(axis=1).astype(float)
    return {
        "sample_chunks": len(texts),
        "sample_tokens": tokens(embedders["fp32"], texts),
        "passages_per_s": {name: round(len(texts) / s, 1) for name, s in best.items()},
        "int8_speedup": round(best["fp32"] / best["int8"], 2),
        "cosine_fp32_int8": {"mean": round(cosine.mean(), 4), "min": round(cosine.min(), 4)},
        "load": load_average(),
    }


# -- the run -----------------------------------------------------------------------------------


def in_child(argv: list[str]) -> dict[str, Any]:
    """Run one side in a fresh Python process; its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    corpus = str(args.corpus)
    result: dict[str, Any] = {"corpus": corpus, "default_encoder": DEFAULT_ENCODER}
    if "encoders" not in args.skip:
        result["encoders"] = encoder_speeds(args.corpus)
    if "tutorial" not in args.skip:
        result["tutorial"] = in_child(["--side", "tutorial", "--corpus", corpus])
    for encoder in sorted(ENCODERS, key=lambda name: name != DEFAULT_ENCODER):
        if encoder in args.skip:
            continue
        extra = ["--search"] if encoder == DEFAULT_ENCODER and "search" not in args.skip else []
        extra += ["--floor"] if args.floor and encoder == DEFAULT_ENCODER else []
        result[encoder] = in_child(["--side", encoder, "--corpus", corpus, *extra])
    ours, tutorial = result.get(DEFAULT_ENCODER), result.get("tutorial")
    if ours and tutorial:
        result["ingest_over_tutorial"] = round(ours["ingest_s"] / tutorial["ingest_s"], 3)
        result["ingest_cpu_over_tutorial"] = round(
            ours["ingest_cpu_s"] / tutorial["ingest_cpu_s"], 3
        )
        result["rss_over_tutorial"] = round(ours["peak_rss_mb"] / tutorial["peak_rss_mb"], 3)
    return result


def show(result: dict[str, Any]) -> None:
    """The result as lines of text."""
    print(f"corpus            {result['corpus']}")
    if speeds := result.get("encoders"):
        per_s, cos = speeds["passages_per_s"], speeds["cosine_fp32_int8"]
        print(f"encoders          fp32 {per_s['fp32']} passages/s, int8 {per_s['int8']} "
              f"({speeds['int8_speedup']}x), {speeds['sample_chunks']} chunks; cosine mean "
              f"{cos['mean']}, min {cos['min']} (load {speeds['load']})")  # fmt: skip
    if t := result.get("tutorial"):
        print(f"tutorial ingest   {t['ingest_s']} s ({t['ingest_cpu_s']} s CPU), {t['pieces']} "
              f"pieces, {t['tokens']} tokens embedded ({t['tokens_uncut']} before the cut), "
              f"peak RSS {t['peak_rss_mb']} MB (load {t['ingest_load']})")  # fmt: skip
    for encoder in ENCODERS:
        if not (o := result.get(encoder)):
            continue
        mark = " (default)" if encoder == result["default_encoder"] else ""
        print(f"ossrag {encoder:5s}      {o['ingest_s']} s ({o['ingest_cpu_s']} s CPU; embedding "
              f"{o['embed_s']} s), {o['files']} files, {o['chunks']} chunks, {o['tokens']} "
              f"tokens + {o['words']} words ({o['word_tokens']} e5 tokens), peak RSS "
              f"{o['peak_rss_mb']} MB (load {o['ingest_load']}){mark}")  # fmt: skip
        print(f"  no-op re-ingest {o['noop_s']} s")
        if "edit_ingest_s" in o:
            print(f"  one-sentence edit of {EDITED_FILE}: chunks embedded "
                  f"{o['edit_chunks_embedded']}, reused {o['edit_chunks_reused']}, ingest "
                  f"{o['edit_ingest_s']} s (target ≤ 2 chunks, ≤ 0.5 s)")  # fmt: skip
        if dev := o.get("dev"):
            cells = ", ".join(f"R@{n} {dev[recall(n)]}" for n in RECALL_AT)
            print(f"  dev set (n={dev['n']:g}, hybrid): {cells}, MRR@10 {dev['mrr@10']}")
        if "floor_chunks_s" in o:
            floor = o["floor_chunks_s"] + o["floor_words_s"]
            print(f"  pure embedding {floor:.1f} s ({o['floor_chunks_s']} s chunks, "
                  f"{o['floor_words_s']} s words): ingest ÷ floor "
                  f"{o['ingest_s'] / floor:.3f} (target ≤ 1.15)")  # fmt: skip
        if "search_hybrid_ms" in o:
            h, d, t = o["search_hybrid_ms"], o["search_dense_ms"], o["heading_search_hybrid_ms"]
            print(f"  search hybrid p50 {h['p50']} ms, p95 {h['p95']} ms; dense p50 {d['p50']}, "
                  f"p95 {d['p95']} over {o['questions']} questions (median "
                  f"{o['question_words_median']:g} words); headings hybrid p50 {t['p50']}, p95 "
                  f"{t['p95']} over {o['headings']} (load {o['search_load']})")  # fmt: skip
    if "ingest_over_tutorial" in result:
        print(f"full ingest ({result['default_encoder']}) ÷ tutorial recipe: "
              f"{result['ingest_over_tutorial']} wall, {result['ingest_cpu_over_tutorial']} CPU "
              f"(target ≤ 0.6); peak RSS {result['rss_over_tutorial']}x (target ≤ 1)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--skip", nargs="+", choices=PARTS, default=[], metavar="PART")
    parser.add_argument("--floor", action="store_true", help="time the pure-embedding floor too")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--side", choices=["tutorial", *ENCODERS], help=argparse.SUPPRESS)
    parser.add_argument("--search", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"error: corpus {args.corpus} not found (pass --corpus DIR)")
    logging.getLogger("pymilvus").setLevel(logging.ERROR)
    side: Callable[[], dict[str, Any]] | None = None
    if args.side == "tutorial":
        side = lambda: tutorial_side(args.corpus)  # noqa: E731
    elif args.side:
        side = lambda: ossrag_side(args.corpus, args.side, args.search, args.floor)  # noqa: E731
    if side is not None:
        print(json.dumps(side()))
        return
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)


if __name__ == "__main__":
    main()
