"""Crash safety of `ossrag ingest`: kill -9 at a random moment, re-run, compare with a clean ingest.

    python benchmarks/crash_trials.py [--trials 10] [--files 300] [--seed 1] [--json]

A corpus of small markdown files is ingested once cleanly (the reference store). Each trial then
starts `ossrag ingest` on a fresh store, sends SIGKILL after a random delay, runs `ossrag ingest`
again to completion, and checks the store: exactly the reference's chunks, every stored field
equal (doc id, source, heading, line range, text, metadata, BM25 terms, and the vector to within
1e-5, since a chunk re-embedded in another batch gets other padding), no duplicate rows, a
manifest that matches the reference and the chunks actually stored, and a search that returns
the reference's top hit.

Only trials whose kill landed mid-ingest count: some chunks stored, not all (read from the killed
store before the re-run). A kill before the first write, or an ingest that finished before the
kill, tests nothing and is reported apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ossrag.embed.encoders import DEFAULT_ENCODER, Embedder, MiniLMEmbedder
from ossrag.retrieve.retriever import Retriever
from ossrag.store.milvus import CHUNK_FIELDS, Store

WORDS = (
    "segment index vector query node cluster replica shard bucket flush compaction partition "
    "schema field collection search filter metric distance embedding storage memory disk cache "
    "log stream channel timestamp consistency load release insert delete upsert backup restore"
).split()
QUERY = "compaction of sealed segments after a flush"


@dataclass
class Snapshot:
    """What a store holds, reduced to what a clean ingest determines."""

    rows: int  # count(*), which counts duplicate primary keys twice
    chunks: dict[str, dict[str, Any]]  # id -> every stored field but the vector
    vectors: dict[str, np.ndarray]  # id -> dense vector
    manifest: dict[str, tuple[str, str, int]]  # doc_id -> (source, sha256, chunks)
    top_hit: str  # chunk id of the best hybrid hit for QUERY


@dataclass
class Trial:
    trial: int
    kill_after_s: float
    killed_rc: int | None  # None if the run had finished before the kill
    stored_at_kill: int  # chunks in the store right after the kill
    outcome: str  # "mid-ingest" (counts), "before writing" or "finished first"
    rerun_rc: int
    rerun_s: float
    ok: bool
    problems: list[str]


def make_corpus(root: Path, files: int, seed: int) -> Path:
    """`files` short markdown files (one or two chunks each) of pseudo-random prose."""
    rng = random.Random(seed)
    for n in range(files):
        path = root / f"part{n % 10}" / f"doc{n:04d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        paragraphs = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))).capitalize() + "."
            for _ in range(rng.randint(1, 3))
        ]
        path.write_text(f"# Document {n}\n\n" + "\n\n".join(paragraphs) + "\n")
    return root


def ingest_command(corpus: Path, db: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from ossrag.cli.app import main; main()",
        "ingest",
        str(corpus),
        "--db",
        str(db),
        "--json",
    ]


def clean_env(home: Path) -> dict[str, str]:
    """The environment without the user's OSSRAG_* settings or config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSSRAG_")}
    env["OSSRAG_CONFIG"] = str(home / "no-config.toml")
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run_ingest(corpus: Path, db: Path, env: dict[str, str]) -> tuple[int, float]:
    started = time.perf_counter()
    done = subprocess.run(ingest_command(corpus, db), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ingest into {db} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.returncode, time.perf_counter() - started


def killed_ingest(
    corpus: Path, db: Path, env: dict[str, str], delay: float
) -> tuple[int | None, float]:
    """Start an ingest and SIGKILL it after `delay` seconds: (exit code if it ended first, how
    long it ran)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        ingest_command(corpus, db), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return proc.wait(timeout=delay), time.perf_counter() - started
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None, delay


def stored_chunks(db: Path) -> int:
    """How many chunks a (killed) store holds; 0 if it was never created."""
    if not db.exists():
        return 0
    store = Store(str(db))
    try:
        return len(store.chunk_ids()) if store.info() is not None else 0
    finally:
        store.close()


def snapshot(db: Path, embedder: Embedder) -> Snapshot:
    store = Store(str(db))
    try:
        store.ensure(embedder.name, embedder.dim)
        ids = list(store.chunk_ids())
        fields = [*CHUNK_FIELDS, "terms", "dense"]
        rows = store.client.get(store.collection, ids=ids, output_fields=fields)
        vectors = {row["id"]: np.asarray(row.pop("dense"), dtype=np.float32) for row in rows}
        chunks = {row["id"]: {f: row.get(f) for f in fields if f != "dense"} for row in rows}
        manifest = {
            doc_id: (record.source, record.sha256, record.chunks)
            for doc_id, record in store.files().items()
        }
        hits = Retriever(store, embedder).search(QUERY, 3).passages
        top = hits[0].chunk_id if hits else ""
        return Snapshot(store.count(), chunks, vectors, manifest, top)
    finally:
        store.close()


def compare(got: Snapshot, want: Snapshot) -> list[str]:
    """Every way `got` differs from the reference; empty when the store is exactly right."""
    problems = []
    if got.rows != len(got.chunks):
        problems.append(f"{got.rows} rows for {len(got.chunks)} distinct chunk ids (duplicates)")
    missing, extra = want.chunks.keys() - got.chunks.keys(), got.chunks.keys() - want.chunks.keys()
    if missing or extra:
        problems.append(f"{len(missing)} chunks missing, {len(extra)} unexpected")
    both = want.chunks.keys() & got.chunks.keys()
    for field in next(iter(want.chunks.values()), {}):
        changed = [i for i in both if got.chunks[i][field] != want.chunks[i][field]]
        if changed:
            problems.append(f"{len(changed)} chunks with a different {field}")
    moved = [i for i in both if not np.allclose(got.vectors[i], want.vectors[i], rtol=0, atol=1e-5)]
    if moved:
        problems.append(f"{len(moved)} chunks with a different vector")
    if got.manifest != want.manifest:
        problems.append(f"manifest differs: {len(got.manifest)} vs {len(want.manifest)} files")
    per_doc: dict[str, int] = {}
    for chunk in got.chunks.values():
        per_doc[chunk["doc_id"]] = per_doc.get(chunk["doc_id"], 0) + 1
    wrong = [d for d, (_, _, n) in got.manifest.items() if per_doc.get(d, 0) != n]
    orphans = per_doc.keys() - got.manifest.keys()
    if wrong or orphans:
        problems.append(f"manifest vs chunks: {len(wrong)} wrong counts, {len(orphans)} orphans")
    if got.top_hit != want.top_hit:
        problems.append("search does not return the reference's top hit")
    return problems


def run_trials(
    work: Path, trials: int, files: int, seed: int, embedder: Embedder, log: bool = True
) -> dict[str, Any]:
    """The reference ingest, then `trials` kill-and-rerun trials; a JSON-ready summary."""
    rng = random.Random(seed)
    env = clean_env(work)
    corpus = make_corpus(work / "corpus", files, seed)
    _, reference_s = run_ingest(corpus, work / "reference.db", env)
    reference = snapshot(work / "reference.db", embedder)
    if log:
        print(
            f"reference: {files} files, {len(reference.chunks)} chunks, {reference_s:.1f} s",
            file=sys.stderr,
        )
    results = []
    last_run_s = reference_s  # the machine's speed drifts: scale delays by the latest full run
    for n in range(1, trials + 1):
        db = work / f"trial{n}.db"
        delay = round(rng.uniform(0.05, 0.85) * last_run_s, 2)
        killed_rc, ran_s = killed_ingest(corpus, db, env, delay)
        stored = stored_chunks(db)
        if killed_rc is not None:
            outcome = "finished first"
        elif stored == 0:
            outcome = "before writing"
        else:  # a kill after the last write but before the manifest still counts
            outcome = "mid-ingest"
        rerun_rc, rerun_s = run_ingest(corpus, db, env)
        last_run_s = ran_s if killed_rc is not None else rerun_s
        problems = compare(snapshot(db, embedder), reference)
        trial = Trial(
            n, delay, killed_rc, stored, outcome, rerun_rc, round(rerun_s, 2), not problems,
            problems,
        )  # fmt: skip
        results.append(trial)
        if log:
            state = "ok" if trial.ok else "FAIL: " + "; ".join(problems)
            print(
                f"trial {n:2d}: kill at {delay:5.2f}s ({outcome}, {stored} chunks stored), "
                f"re-run {rerun_s:5.1f}s: {state}"
            )
    return {
        "files": files,
        "chunks": len(reference.chunks),
        "reference_ingest_s": round(reference_s, 2),
        "trials": [asdict(t) for t in results],
        "mid_ingest": sum(t.outcome == "mid-ingest" for t in results),
        "passed": sum(t.ok and t.outcome == "mid-ingest" for t in results),
        "failed": sum(not t.ok for t in results),  # of any outcome
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.ERROR)
    embedder = MiniLMEmbedder(encoder=DEFAULT_ENCODER)  # what `ossrag ingest` builds a store with
    with tempfile.TemporaryDirectory(prefix="ossrag-crash-") as tmp:
        summary = run_trials(Path(tmp), args.trials, args.files, args.seed, embedder, not args.json)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        other = len(summary["trials"]) - summary["mid_ingest"]
        print(
            f"{summary['passed']}/{summary['mid_ingest']} kills mid-ingest left a store equal to "
            f"the reference in every field ({other} trials killed before writing or finished "
            f"first, not counted; {summary['failed']} failed in all; {summary['files']} files, "
            f"{summary['chunks']} chunks, clean ingest {summary['reference_ingest_s']} s)"
        )
    sys.exit(0 if summary["failed"] == 0 and summary["mid_ingest"] else 1)


if __name__ == "__main__":
    main()
