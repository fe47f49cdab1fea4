"""Crash safety of `ossrag ingest`: kill -9 at a random moment, re-run, compare with a clean ingest.

    python benchmarks/crash_trials.py [--trials 10] [--files 300] [--seed 1] [--json]

A corpus of small markdown files is ingested once cleanly (the reference store). Each trial then
starts `ossrag ingest` on a fresh store, sends SIGKILL after a random delay, runs `ossrag ingest`
again to completion, and checks the store: exactly the reference's chunk ids and texts, no
duplicate rows, a manifest that matches the reference and the chunks actually stored, and a
search that returns the reference's top hit.
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

from ossrag.embeddings import Embedder, MiniLMEmbedder
from ossrag.retrieval import Retriever
from ossrag.store import Store

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
    chunks: dict[str, tuple[str, str, str]]  # id -> (doc_id, source, text)
    manifest: dict[str, tuple[str, str, int]]  # doc_id -> (source, sha256, chunks)
    top_hit: str  # chunk id of the best hybrid hit for QUERY


@dataclass
class Trial:
    trial: int
    kill_after_s: float
    killed_rc: int | None  # None if the run had finished before the kill
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
        "from ossrag.cli import main; main()",
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


def snapshot(db: Path, embedder: Embedder) -> Snapshot:
    store = Store(str(db))
    try:
        store.ensure(embedder.name, embedder.dim)
        ids = list(store.chunk_ids())
        rows = store.get_chunks(ids)
        chunks = {row["id"]: (row["doc_id"], row["source"], row["text"]) for row in rows}
        manifest = {
            doc_id: (record.source, record.sha256, record.chunks)
            for doc_id, record in store.files().items()
        }
        hits = Retriever(store, embedder).search(QUERY, 3).passages
        return Snapshot(store.count(), chunks, manifest, hits[0].chunk_id if hits else "")
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
    changed = [i for i in want.chunks.keys() & got.chunks.keys() if got.chunks[i] != want.chunks[i]]
    if changed:
        problems.append(f"{len(changed)} chunks with different text or source")
    if got.manifest != want.manifest:
        problems.append(f"manifest differs: {len(got.manifest)} vs {len(want.manifest)} files")
    per_doc: dict[str, int] = {}
    for doc_id, _, _ in got.chunks.values():
        per_doc[doc_id] = per_doc.get(doc_id, 0) + 1
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
        rerun_rc, rerun_s = run_ingest(corpus, db, env)
        last_run_s = ran_s if killed_rc is not None else rerun_s
        problems = compare(snapshot(db, embedder), reference)
        trial = Trial(n, delay, killed_rc, rerun_rc, round(rerun_s, 2), not problems, problems)
        results.append(trial)
        if log:
            state = "ok" if trial.ok else "FAIL: " + "; ".join(problems)
            when = "done before kill" if killed_rc is not None else "killed"
            print(f"trial {n:2d}: kill at {delay:5.2f}s ({when}), re-run {rerun_s:5.1f}s: {state}")
    return {
        "files": files,
        "chunks": len(reference.chunks),
        "reference_ingest_s": round(reference_s, 2),
        "trials": [asdict(t) for t in results],
        "passed": sum(t.ok for t in results),
        "killed_mid_run": sum(t.killed_rc is None for t in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.ERROR)
    embedder = MiniLMEmbedder()
    with tempfile.TemporaryDirectory(prefix="ossrag-crash-") as tmp:
        summary = run_trials(Path(tmp), args.trials, args.files, args.seed, embedder, not args.json)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['passed']}/{len(summary['trials'])} trials consistent "
            f"({summary['killed_mid_run']} killed mid-run; {summary['files']} files, "
            f"{summary['chunks']} chunks, clean ingest {summary['reference_ingest_s']} s)"
        )
    sys.exit(0 if summary["passed"] == len(summary["trials"]) else 1)


if __name__ == "__main__":
    main()
