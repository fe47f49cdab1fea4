"""Latency ossrag adds to the time to first token, on top of the server's own.

A scripted OpenAI-compatible server (tests/llm_server.py, real HTTP/SSE) answers both a direct
`openai` client call and `Index.ask_stream` over a tiny Milvus Lite index with the same prompt.
Overhead = ossrag's time to first token - retrieval - the direct call's time to first token.
Retrieval (embedding the question + Milvus search) is reported separately. Target: ≤ 30 ms.

    python benchmarks/ttft_overhead.py [--runs 30] [--server-delay 0.02] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from llm_server import Reply, ScriptedLLMServer  # noqa: E402

from ossrag.config import load_settings  # noqa: E402
from ossrag.engine.index import Index  # noqa: E402
from ossrag.generate.answer import Answer  # noqa: E402
from ossrag.generate.budget import Budget  # noqa: E402
from ossrag.generate.llm import ContentDelta, ReasoningDelta  # noqa: E402

QUESTION = "Where does the engine keep inserted vectors?"
DOCS = {
    "storage.md": "# Storage\n\n## Data\n\nThe engine keeps inserted vectors in object storage "
    "such as MinIO or S3, and metadata in etcd.\n\n## Backup\n\nCopy the bucket, then snapshot "
    "etcd.\n",
    "search.md": "# Search\n\n## Metrics\n\nInner product, cosine and L2 distances are "
    "supported.\n\n## Filters\n\nBoolean expressions restrict a search.\n",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def direct_ttft(client: openai.OpenAI, messages: list[dict[str, Any]], max_tokens: int) -> float:
    started = time.perf_counter()
    elapsed = 0.0
    stream = client.chat.completions.create(
        model="gpt-oss-20b",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        max_tokens=max_tokens,
        reasoning_effort="medium",
    )
    with stream:
        for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            if delta is not None and (delta.content or delta.model_extra):  # reasoning or text
                elapsed = time.perf_counter() - started
                break
        for _ in stream:
            pass
    return elapsed * 1000


def ossrag_ttft(index: Index) -> tuple[float, float]:
    started = time.perf_counter()
    first: float | None = None
    retrieve_ms = 0.0
    for event in index.ask_stream(QUESTION):
        if isinstance(event, ReasoningDelta | ContentDelta) and first is None:
            first = time.perf_counter()
        if isinstance(event, Answer):
            retrieve_ms = event.timings["retrieve_ms"]
    assert first is not None
    return (first - started) * 1000, retrieve_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--server-delay", type=float, default=0.02, help="server's own TTFT, s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    reply = Reply(
        content="The engine keeps vectors in object storage [1].",
        reasoning="Passage 1 answers this.",
        first_token_delay_s=args.server_delay,
    )
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLMServer(reply) as server:
        root = Path(tmp) / "docs"
        root.mkdir()
        for name, text in DOCS.items():
            (root / name).write_text(text, encoding="utf-8")
        settings = load_settings(
            db=str(Path(tmp) / "store.db"), base_url=server.base_url, model="gpt-oss-20b",
            api_key="x", effort="medium",
        )  # fmt: skip
        index = Index(settings)
        index.ingest([root])
        budget: Budget = index.budget
        passages = index.search(QUESTION).passages
        messages = budget.fit(QUESTION, passages).messages
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        ossrag_ttft(index)  # warm up: model, connections, Milvus
        direct_ttft(client, messages, budget.answer_tokens)
        direct, through, retrieval = [], [], []
        for _ in range(args.runs):
            direct.append(direct_ttft(client, messages, budget.answer_tokens))
            ttft, retrieve_ms = ossrag_ttft(index)
            through.append(ttft)
            retrieval.append(retrieve_ms)
        fit_ms = []
        for _ in range(args.runs):
            started = time.perf_counter()
            budget.fit(QUESTION, passages)
            fit_ms.append((time.perf_counter() - started) * 1000)
        index.close()
        client.close()

    overhead = [t - r - d for t, r, d in zip(through, retrieval, direct, strict=True)]
    report = {
        "runs": args.runs,
        "server_ttft_ms_p50": round(statistics.median(direct), 2),
        "ossrag_ttft_ms_p50": round(statistics.median(through), 2),
        "retrieval_ms_p50": round(statistics.median(retrieval), 2),
        "overhead_ms_p50": round(statistics.median(overhead), 2),
        "overhead_ms_p90": round(percentile(overhead, 0.9), 2),
        "budget_fit_ms_p50": round(statistics.median(fit_ms), 3),
        "target_overhead_ms": 30,
    }
    if args.json:
        print(json.dumps(report))
        return
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
