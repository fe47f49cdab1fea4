"""Search latency while `ossrag serve` ingests a whole corpus (issue #19's fourth number).

    python benchmarks/search_during_ingest.py [--corpus DIR] [--questions FILE] [--interval 0.1]
        [--json]

What it does, in this order:
1. ingests the corpus's faq/ folder into a fresh Milvus Lite store (in this process, then closed);
2. starts `ossrag serve` on that store in a subprocess (loopback, a free port, the corpus's
   parent as the allowed root, no config file: every other setting is its default or this
   environment's OSSRAG_*, e.g. OSSRAG_ENCODER) and waits for /readyz;
3. times 30 searches one after another (the dev set's questions, in file order, cycled): the
   idle baseline;
4. POSTs /v1/ingest of the whole corpus and, until the job is done, sends one /v1/search every
   `--interval` s from one client thread (a new search starts only when the last one answered;
   the questions continue from the first), timing each round trip over HTTP;
5. prints p50 / p95 / max of both phases (ms), the ingest's own seconds and files, how many
   searches ran, and what ran them: the server's CPU seconds during the ingest by thread
   priority (nice, read from /proc on Linux: the ingest's threads run below the server's), the
   embedder, the machine's cores and its load average before and after.

Everything runs on this machine's cores: server, ingest and client share them, and so does any
other process (hence the load average).
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
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from ossrag.config import load_settings
from ossrag.engine.index import Index

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BODY = {"top_k": 5}  # every other search field at the server's default (hybrid, no filter)
IDLE_SEARCHES = 30


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
    response = client.post("/v1/search", json={"query": question, **BODY})
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


class ThreadClock:
    """CPU seconds of a process's threads by nice value, from /proc (empty elsewhere): sampled
    often, so threads that end between samples are counted up to their last sample."""

    def __init__(self, pid: int) -> None:
        self.tasks = Path(f"/proc/{pid}/task")
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start: dict[int, float] = {}
        self.last: dict[int, tuple[int, float]] = {}  # tid -> (nice, cpu seconds)

    def sample(self) -> None:
        for task in self.tasks.glob("*") if self.tasks.is_dir() else []:
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended
                continue
            # fields[0] is the state (stat's 3rd field): utime, stime, nice are 14, 15, 19.
            cpu = (int(fields[11]) + int(fields[12])) / self.tick
            self.last[int(task.name)] = (int(fields[16]), cpu)

    def begin(self) -> None:
        """Count from now (threads started later count from zero)."""
        self.sample()
        self.start = {tid: cpu for tid, (_, cpu) in self.last.items()}

    def by_nice(self) -> dict[str, dict[str, float]]:
        """{nice: {threads that ran, cpu seconds}} since `begin`."""
        spent: dict[int, list[float]] = defaultdict(list)
        for tid, (nice, cpu) in self.last.items():
            used = cpu - self.start.get(tid, 0.0)
            if used > 0:
                spent[nice].append(used)
        return {
            str(nice): {"threads": len(v), "cpu_s": round(sum(v), 1)}
            for nice, v in sorted(spent.items())
        }


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
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        db = f"{tmp}/store.db"
        index = Index(load_settings(db=db))
        index.ingest([corpus / "faq"])
        embedder = index.embedder.name
        index.close()
        port = free_port()
        env = {**os.environ, "OSSRAG_CONFIG": f"{tmp}/none.toml", "OSSRAG_DB": db}
        server = subprocess.Popen(
            [sys.executable, "-m", "ossrag", "serve", "--port", str(port),
             "--allowed-root", str(corpus.parent)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            clock = ThreadClock(server.pid)
            result = measure(f"http://127.0.0.1:{port}", corpus, questions, args.interval, clock)
        finally:
            server.terminate()
            server.wait(30)
    result |= {
        "embedder": embedder,
        "queries": f"{len(questions)} questions of {args.questions.name}, cycled; "
        f"POST /v1/search {json.dumps(BODY)}",
        "cores": os.cpu_count(),
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    idle, busy = result["idle_ms"], result["during_ingest_ms"]
    print(
        f"search over HTTP, one client every {args.interval} s, corpus {corpus.name}; "
        f"ingest {result['ingest']}"
    )
    print(f"queries: {result['queries']}; embedder {embedder}")
    threads = ", ".join(
        f"nice {nice}: {v['cpu_s']} s on {v['threads']} threads"
        for nice, v in result["server_cpu_during_ingest"].items()
    )
    print(f"server CPU during the ingest by thread priority: {threads or 'n/a (no /proc)'}")
    load = result["load_average"]
    print(f"{result['cores']} cores, load average {load['before']} before, {load['after']} after")
    print("| phase | searches | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|")
    for name, s in (("idle (FAQ store)", idle), ("during the ingest", busy)):
        print(f"| {name} | {s['n']} | {s['p50']} | {s['p95']} | {s['max']} |")


def measure(
    url: str, corpus: Path, questions: list[str], interval: float, clock: ThreadClock
) -> dict[str, Any]:
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
        idle = [timed_search(client, questions[i % len(questions)]) for i in range(IDLE_SEARCHES)]
        clock.begin()
        job = client.post("/v1/ingest", json={"paths": [str(corpus)]}).json()
        busy: list[float] = []
        started = time.monotonic()
        while True:
            clock.sample()
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
        "ingest_seconds": report.get("seconds"),
        "server_cpu_during_ingest": clock.by_nice(),
        "interval_s": interval,
    }


if __name__ == "__main__":
    main()
