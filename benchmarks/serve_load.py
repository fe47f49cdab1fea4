"""Load on `ossrag serve` (issue 5's numbers): concurrent clients over loopback HTTP.

    python benchmarks/serve_load.py [--clients 8] [--duration 30]
                                    [--chat-clients 32] [--chat-duration 60] [--json]

Starts the scripted LLM (tests/llm_server.py) in this process with a fixed latency, runs
`ossrag serve` as a child process on a fresh store, ingests a small corpus through POST
/v1/ingest, then:

1. search: N clients loop on POST /v1/search → throughput, p50/p95/p99, errors
   (target ≥ 100 req/s with 0 errors on 2 cores).
2. chat: M clients loop on streamed POST /v1/chat/completions → throughput, latency
   percentiles, errors, and the latency ossrag adds over the same clients calling the
   scripted LLM directly for as long (target: 0 errors; added p95 reported).
3. where the time goes: GET /v1/models with the same clients (the HTTP layer alone), and one
   query's embedding (ONNX Runtime, as in the server, its default threads) and hybrid search
   timed one at a time in this process on the same store afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from common import FAQ, FAQ_QUESTIONS  # noqa: E402 - this folder is on sys.path
from llm_server import Reply, ScriptedLLMServer  # noqa: E402

KEY = "bench-key"
MODEL = "gpt-oss-20b"


@dataclass
class Run:
    """Latencies (s) and failures of one load phase."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

        return {
            "requests": len(lat),
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "req_per_s": round(len(lat) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
        }


async def load(clients: int, seconds: float, call: Callable[[int], Awaitable[None]]) -> Run:
    """Run `call(i)` in a loop from `clients` tasks for `seconds`; record each outcome."""
    run = Run()
    deadline = time.perf_counter() + seconds

    async def client(worker: int) -> None:
        i = worker
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call(i)
                run.latencies.append(time.perf_counter() - started)
            except Exception as exc:
                run.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(clients)))
    run.seconds = time.perf_counter() - started
    return run


async def search_load(url: str, clients: int, seconds: float, path: str = "/v1/search") -> Run:
    """POST /v1/search with varied queries (or GET `path`, to time the HTTP layer alone)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:

        async def call(i: int) -> None:
            if path != "/v1/search":
                response = await http.get(path)
            else:
                query = {"query": FAQ_QUESTIONS[i % len(FAQ_QUESTIONS)]}
                response = await http.post(path, json=query)
                if response.status_code == 200 and not response.json()["results"]:
                    raise RuntimeError("no results")
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:100]}")

        return await load(clients, seconds, call)


async def chat_load(base_url: str, model: str, clients: int, seconds: float) -> Run:
    """Streamed chat completions; a request counts only if it ends with data: [DONE]."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=120) as http:

        async def call(i: int) -> None:
            body = {
                "model": model,
                "stream": True,
                "messages": [{"role": "user", "content": FAQ_QUESTIONS[i % len(FAQ_QUESTIONS)]}],
            }
            async with http.stream("POST", f"{base_url}/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}")
                last = ""
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        last = line[6:]
                        if '"error"' in last[:12]:
                            raise RuntimeError(last[:150])
                if last != "[DONE]":
                    raise RuntimeError("stream ended without [DONE]")

        return await load(clients, seconds, call)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path, corpus: Path, llm_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSSRAG_")}
    env.update(
        OSSRAG_CONFIG=str(workdir / "none.toml"),
        OSSRAG_DB=str(workdir / "bench.db"),
        OSSRAG_BASE_URL=llm_url,
        OSSRAG_MODEL=MODEL,
        OSSRAG_API_KEYS=KEY,
        OSSRAG_ALLOWED_ROOTS=str(corpus),
        OSSRAG_PORT=str(port),
    )
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from ossrag.cli.app import main; main()", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"ossrag serve exited: see {workdir / 'server.log'}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("ossrag serve did not start within 120 s")


def ingest(url: str, corpus: Path) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY}"}
    job = httpx.post(url + "/v1/ingest", json={"paths": [str(corpus)]}, headers=headers).json()
    while job.get("status") in ("queued", "running"):
        time.sleep(0.5)
        job = httpx.get(f"{url}/v1/ingest/{job['id']}", headers=headers).json()
    if job.get("status") != "done":
        raise SystemExit(f"ingest failed: {job}")
    return dict(job["report"])


def stage_times(db: Path, n: int = 40) -> dict[str, float]:
    """Median ms of one query embedding and one hybrid search, on the benchmark's store, one
    query at a time in this process: the embedding runs in ONNX Runtime as in the server, with
    its default intra-op threads (one per core)."""
    from ossrag.config import load_settings
    from ossrag.engine.index import Index
    from ossrag.retrieve.retriever import CANDIDATE_DEPTH, DEFAULT_FUSION

    index = Index(load_settings(db=str(db)))
    index.store.info()  # loads the collections of a reopened store
    embed, search = [], []
    for i in range(n):
        query = FAQ_QUESTIONS[i % len(FAQ_QUESTIONS)]
        t0 = time.perf_counter()
        vector = index.embedder.embed_query(query)
        t1 = time.perf_counter()
        index.store.search_hybrid(vector, query, 5, CANDIDATE_DEPTH, DEFAULT_FUSION)
        t2 = time.perf_counter()
        embed.append(t1 - t0)
        search.append(t2 - t1)
    index.close()
    return {
        "embed_query_ms": round(statistics.median(embed[2:]) * 1000, 1),
        "hybrid_search_ms": round(statistics.median(search[2:]) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="search clients")
    parser.add_argument("--duration", type=float, default=30, help="search seconds")
    parser.add_argument("--chat-clients", type=int, default=32)
    parser.add_argument("--chat-duration", type=float, default=60)
    parser.add_argument(
        "--llm-latency", type=float, default=0.5, help="scripted LLM seconds per answer"
    )
    parser.add_argument("--corpus", type=Path, default=FAQ if FAQ.exists() else REPO / "docs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    corpus = args.corpus.resolve()
    if not corpus.is_dir() or not any(corpus.rglob("*.md")):
        raise SystemExit(f"no markdown corpus at {corpus}: pass --corpus DIR")

    # A fixed-latency answer: first token after 40% of the time, 10 deltas over the rest.
    content = "Milvus stores vectors in object storage and serves them from query nodes [1]. " * 2
    chunk = len(content) // 10 + 1
    reply = Reply(
        content=content,
        reasoning="The first passage answers it.",
        chunk_size=chunk,
        first_token_delay_s=args.llm_latency * 0.4,
        delay_s=args.llm_latency * 0.6 / 12,
    )
    results: dict[str, Any] = {"corpus": str(corpus), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLMServer(reply, model=MODEL) as llm:
        workdir = Path(tmp)
        process, url = start_server(workdir, corpus, llm.base_url)
        try:
            results["ingest"] = ingest(url, corpus)
            http_only = asyncio.run(search_load(url, args.clients, 5, "/v1/models"))
            results["http_only"] = {"clients": args.clients, **http_only.summary()}
            search = asyncio.run(search_load(url, args.clients, args.duration))
            results["search"] = {"clients": args.clients, **search.summary()}
            if args.chat_clients and args.chat_duration:
                direct = asyncio.run(  # the same clients for the same time, LLM alone
                    chat_load(llm.base_url, MODEL, args.chat_clients, args.chat_duration)
                )
                chat = asyncio.run(
                    chat_load(url + "/v1", "ossrag", args.chat_clients, args.chat_duration)
                )
                base, ours = direct.summary(), chat.summary()
                results["chat"] = {
                    "clients": args.chat_clients,
                    "llm_latency_s": args.llm_latency,
                    **ours,
                    "llm_direct": base,
                    "added_p50_ms": round((ours["p50_ms"] or 0) - (base["p50_ms"] or 0), 1),
                    "added_p95_ms": round((ours["p95_ms"] or 0) - (base["p95_ms"] or 0), 1),
                }
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        results["stages"] = stage_times(workdir / "bench.db")

    if args.json:
        print(json.dumps(results, indent=2))
        return
    s = results["search"]
    print(f"corpus {corpus}: {results['ingest']['chunks_embedded']} chunks")
    print(
        f"search  {s['clients']} clients: {s['req_per_s']} req/s, p50 {s['p50_ms']} ms, "
        f"p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms, {s['errors']} errors (target ≥ 100 req/s)"
    )
    h = results["http_only"]
    print(
        f"HTTP layer alone (GET /v1/models, auth, same clients): {h['req_per_s']} req/s, "
        f"p50 {h['p50_ms']} ms"
    )
    if "chat" in results:
        c = results["chat"]
        print(
            f"chat    {c['clients']} clients: {c['req_per_s']} req/s, p50 {c['p50_ms']} ms, "
            f"p95 {c['p95_ms']} ms, {c['errors']} errors; LLM alone p50 "
            f"{c['llm_direct']['p50_ms']} ms, p95 {c['llm_direct']['p95_ms']} ms → added "
            f"p50 {c['added_p50_ms']} ms, p95 {c['added_p95_ms']} ms"
        )
    st = results["stages"]
    print(
        f"one search at a time (ONNX Runtime, its default threads: one per core, "
        f"{results['cpus']} CPUs): embed_query {st['embed_query_ms']} ms + "
        f"hybrid search {st['hybrid_search_ms']} ms"
    )


if __name__ == "__main__":
    main()
