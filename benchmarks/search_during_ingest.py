"""Search latency while `ossrag serve` ingests a whole corpus (issue #19's fourth number).

    python benchmarks/search_during_ingest.py [--corpus DIR] [--interval 0.1] [--json]

What it does, in this order:
1. ingests the corpus's faq/ folder into a fresh Milvus Lite store (in this process, then closed);
2. starts `ossrag serve` on that store in a subprocess (loopback, a free port, the corpus's
   parent as the allowed root) and waits for /readyz;
3. times 30 searches one after another (the dev set's questions, cycled): the idle baseline;
4. POSTs /v1/ingest of the whole corpus and, until the job is done, sends one /v1/search every
   `--interval` s from one client thread (a new search starts only when the last one answered),
   timing each round trip over HTTP;
5. prints p50 / p95 / max of both phases (ms), the ingest's own seconds and files, and how many
   searches ran. Everything runs on this machine's cores: server, ingest and client share them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ossrag.config import load_settings
from ossrag.engine.index import Index

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


def timed_search(client: httpx.Client, question: str) -> float:
    started = time.perf_counter()
    response = client.post("/v1/search", json={"query": question, "top_k": 5})
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus" / "milvus-docs")
    parser.add_argument("--questions", type=Path, default=SHARED / "eval" / "milvus-docs-dev.jsonl")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not (args.corpus / "faq").is_dir() or not args.questions.exists():
        sys.exit(f"error: need {args.corpus}/faq and {args.questions} (see --help)")
    corpus = args.corpus.resolve()
    questions = [json.loads(line)["question"] for line in args.questions.read_text().splitlines()]

    with tempfile.TemporaryDirectory() as tmp:
        db = f"{tmp}/store.db"
        index = Index(load_settings(db=db))
        index.ingest([corpus / "faq"])
        index.close()
        port = free_port()
        env = {**os.environ, "OSSRAG_CONFIG": f"{tmp}/none.toml", "OSSRAG_DB": db}
        server = subprocess.Popen(
            [sys.executable, "-m", "ossrag", "serve", "--port", str(port),
             "--allowed-root", str(corpus.parent)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            result = measure(f"http://127.0.0.1:{port}", corpus, questions, args.interval)
        finally:
            server.terminate()
            server.wait(30)
    if args.json:
        print(json.dumps(result))
        return
    idle, busy = result["idle_ms"], result["during_ingest_ms"]
    print(f"search over HTTP, one client, corpus {corpus.name}; ingest {result['ingest']}")
    print("| phase | searches | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|")
    for name, s in (("idle (FAQ store)", idle), ("during the ingest", busy)):
        print(f"| {name} | {s['n']} | {s['p50']} | {s['p95']} | {s['max']} |")


def measure(url: str, corpus: Path, questions: list[str], interval: float) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=120) as client:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/readyz").status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("error: ossrag serve did not start")
            time.sleep(0.2)
        for question in questions[:3]:  # warm: the first searches load the encoder and index
            timed_search(client, question)
        idle = [timed_search(client, questions[i % len(questions)]) for i in range(30)]
        job = client.post("/v1/ingest", json={"paths": [str(corpus)]}).json()
        busy: list[float] = []
        started = time.monotonic()
        while True:
            state = client.get(f"/v1/ingest/{job['id']}").json()
            if state["status"] not in ("queued", "running"):
                break
            busy.append(timed_search(client, questions[len(busy) % len(questions)]))
            time.sleep(interval)
        seconds = time.monotonic() - started
    report = state.get("report") or {}
    return {
        "idle_ms": percentiles(idle),
        "during_ingest_ms": percentiles(busy),
        "ingest": f"{state['status']} in {seconds:.1f} s, "
        f"{report.get('files_added', 0)} files added, {report.get('chunks_embedded', 0)} chunks",
        "interval_s": interval,
    }


if __name__ == "__main__":
    main()
