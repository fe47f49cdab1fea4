"""Passage embedding speed: ONNX Runtime (what ingest uses) vs PyTorch, on the same corpus chunks.

    python benchmarks/passage_encoder.py [--corpus DIR] [--chunks 512] [--batches 8,16,32]
        [--rounds 2] [--json]

Samples chunks of the corpus as ingest makes them, then embeds them with sentence-transformers
(PyTorch) and with ossrag's ONNX encoder at each passage batch size, the two interleaved in each
round. Prints passages/s, time relative to PyTorch (the best round of each), and how far the
vectors are apart (lowest cosine between the two backends' vectors of a chunk).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ingest_search import chunk_texts  # this folder is on sys.path when run as a script

from ossrag.embed import encoders as embeddings
from ossrag.embed.encoders import MiniLMEmbedder, SentenceTransformerEmbedder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "milvus-docs"


def sample_chunks(corpus: Path, embedder: MiniLMEmbedder, n: int) -> list[str]:
    """n chunk texts of the corpus, as ingest embeds them, seeded."""
    texts = chunk_texts(corpus, embedder)
    return random.Random(0).sample(texts, min(n, len(texts)))


def timed(embed: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = embed(texts)
    return time.perf_counter() - started, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--batches", default="8,16,32", help="ONNX passage batch sizes to time")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"error: corpus {args.corpus} not found (pass --corpus DIR)")
    batches = [int(b) for b in args.batches.split(",")]

    embedder = MiniLMEmbedder()
    texts = sample_chunks(args.corpus, embedder, args.chunks)
    tokens = [embedder.count_tokens(text) for text in texts]

    def pytorch(batch: list[str]) -> np.ndarray:
        return SentenceTransformerEmbedder.embed(embedder, batch)

    def onnx_at(size: int) -> Callable[[list[str]], np.ndarray]:
        def embed(batch: list[str]) -> np.ndarray:
            embeddings.PASSAGE_BATCH = size
            return embedder.embed(batch)

        return embed

    shipped = embeddings.PASSAGE_BATCH
    pytorch(texts[:8])  # load PyTorch's model
    onnx_at(shipped)(texts[:8])  # and the ONNX encoder (exported now if not cached)
    seconds: dict[str, list[float]] = {"pytorch": []} | {f"onnx_{b}": [] for b in batches}
    lowest_cosine = 1.0
    for _ in range(args.rounds):
        elapsed, reference = timed(pytorch, texts)
        seconds["pytorch"].append(elapsed)
        for size in batches:
            elapsed, vectors = timed(onnx_at(size), texts)
            seconds[f"onnx_{size}"].append(elapsed)
            lowest_cosine = min(lowest_cosine, float((vectors * reference).sum(axis=1).min()))
    embeddings.PASSAGE_BATCH = shipped

    best = {name: min(times) for name, times in seconds.items()}
    result = {
        "corpus": str(args.corpus),
        "chunks": len(texts),
        "mean_tokens": round(float(np.mean(tokens)), 1),
        "shipped_batch": shipped,
        "passages_per_s": {name: round(len(texts) / s, 1) for name, s in best.items()},
        "time_vs_pytorch": {name: round(s / best["pytorch"], 3) for name, s in best.items()},
        "lowest_cosine": round(lowest_cosine, 7),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['chunks']} chunks of {args.corpus} ({result['mean_tokens']} tokens on "
          f"average), best of {args.rounds} rounds")  # fmt: skip
    for name in seconds:
        mark = " (shipped)" if name == f"onnx_{shipped}" else ""
        print(f"  {name:10s} {result['passages_per_s'][name]:6.1f} passages/s   "
              f"{result['time_vs_pytorch'][name]:.3f}x PyTorch's time{mark}")  # fmt: skip
    print(f"  lowest cosine between the backends' vectors: {result['lowest_cosine']}")


if __name__ == "__main__":
    main()
