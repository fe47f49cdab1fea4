"""Retrieval that explains itself: --explain, --expect, /v1/search explain, eval --show-misses.

The question "distance metrics for vectors" over the fixture docs is one where the routes
disagree: the storage section is 4th by dense similarity but 2nd by BM25 ("vector"), and
notes.txt, 2nd by dense, has no BM25 term at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import write_docs
from test_server import LiveServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.http.app import create_app

pytestmark = pytest.mark.timeout(120)

QUESTION = "distance metrics for vectors"
runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    tmp = tmp_path_factory.mktemp("explain")
    index = Index(load_settings(db=str(tmp / "store.db")), embedder=embedder)
    index.ingest([write_docs(tmp / "docs")])
    index.close()
    return tmp / "store.db"


def _ranks(results: list[dict[str, object]]) -> list[tuple[object, ...]]:
    rows = []
    for r in results:
        e = r["explain"]
        assert isinstance(e, dict)
        dense, bm25 = e["dense"], e["bm25"]
        rows.append((r["source"], r["start_line"], dense and dense["rank"], bm25["rank"],
                     bm25["terms"], len(e["merged_from"])))  # fmt: skip
    return rows


EXPECTED = [
    ("guide/search.md", 3, 1, 1, ["distanc", "metric", "vector"], 1),
    ("guide/storage.md", 6, 4, 2, ["vector"], 1),
    ("notes.txt", 1, 2, None, [], 1),
]


def test_search_explain_json_when_routes_disagree(store: Path) -> None:
    env = {"OSSRAG_DB": str(store)}
    result = runner.invoke(app, ["search", QUESTION, "-k", "3", "--explain", "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)["results"]
    assert _ranks(results) == EXPECTED
    top = results[0]["explain"]
    assert top["fused"] == results[0]["score"]
    assert top["merged_from"] == [{"start_line": 3, "end_line": 10, "fused_rank": 1}]
    assert (top["translated"], top["rewrites"]) == (None, [])
    assert results[1]["explain"]["bm25"]["score"] > 0 and results[1]["explain"]["dense"]["score"]

    text = runner.invoke(app, ["search", QUESTION, "-k", "3", "--explain"], env=env).stdout
    lines = [line for line in text.splitlines() if line.startswith("   dense ")]
    assert [line.split(" · ")[:2] for line in lines] == [
        ["   dense #1 0.595", "bm25 #1 3.702 (distanc, metric, vector)"],
        ["   dense #4 0.083", "bm25 #2 0.781 (vector)"],
        ["   dense #2 0.109", "bm25 no term matched"],
    ]

    plain = runner.invoke(app, ["search", QUESTION, "-k", "3", "--json"], env=env)
    assert all("explain" not in r for r in json.loads(plain.stdout)["results"])


def test_search_expect_says_what_beat_the_source(store: Path) -> None:
    env = {"OSSRAG_DB": str(store)}
    args = ["search", QUESTION, "-k", "1", "--expect", "guide/storage.md"]
    result = runner.invoke(app, [*args, "--json"], env=env)
    expect = json.loads(result.stdout)["expect"]
    assert [(name, expect[name]["rank"]) for name in ("dense", "bm25", "fused", "passages")] == [
        ("dense", 4), ("bm25", 2), ("fused", 2), ("passages", None)
    ]  # fmt: skip
    assert [b["source"] for b in expect["dense"]["beaten_by"]] == ["guide/search.md", "notes.txt"]
    assert [b["source"] for b in expect["bm25"]["beaten_by"]] == ["guide/search.md"]
    result = runner.invoke(app, args, env=env)
    lines = result.stdout.splitlines()
    at = lines.index("expected guide/storage.md:")
    assert lines[at + 1].startswith("  dense    #4 of ")
    assert "above it: guide/search.md #1" in lines[at + 1] and "notes.txt #2" in lines[at + 1]
    assert lines[at + 4].startswith("  passages not in the top 1; above it: guide/search.md #1")
    assert expect["indexed"] is True

    result = runner.invoke(app, ["search", QUESTION, "--expect", "storage.md"], env=env)
    assert result.exit_code == 0
    assert "expected storage.md: no such file in the index" in result.stdout


def test_explain_and_expect_rank_among_the_filtered_files(store: Path) -> None:
    """With a filter, each route is ranked among the files it keeps, as the search was."""
    env = {"OSSRAG_DB": str(store)}
    args = ["search", QUESTION, "-k", "2", "--explain", "--json", "--path", "guide/storage.md"]
    results = json.loads(runner.invoke(app, args, env=env).stdout)["results"]
    assert _ranks(results) == [
        ("guide/storage.md", 6, 1, 1, ["vector"], 1),
        ("guide/storage.md", 10, 2, None, [], 1),
    ]
    args = ["search", QUESTION, "-k", "1", "--expect", "guide/storage.md", "--path", "guide/*"]
    expect = json.loads(runner.invoke(app, [*args, "--json"], env=env).stdout)["expect"]
    assert {name: (expect[name]["rank"], [b["source"] for b in expect[name]["beaten_by"]])
            for name in ("dense", "bm25", "fused")} == {
        "dense": (3, ["guide/search.md"]), "bm25": (2, ["guide/search.md"]),
        "fused": (2, ["guide/search.md"]),
    }  # fmt: skip


def test_http_search_explain(store: Path, embedder: Embedder) -> None:
    settings = load_settings(db=str(store))
    index = Index(settings, embedder=embedder)
    try:
        with LiveServer(create_app(settings, index)) as live, httpx.Client(timeout=60) as http:
            body = {"query": QUESTION, "top_k": 3}
            explained = http.post(f"{live.url}/v1/search", json={**body, "explain": True})
            plain = http.post(f"{live.url}/v1/search", json=body)
            bad = http.post(f"{live.url}/v1/search", json={**body, "explain": "maybe"})
    finally:
        index.close()
    assert explained.status_code == 200
    assert _ranks(explained.json()["results"]) == EXPECTED
    assert all("explain" not in r for r in plain.json()["results"])
    assert bad.status_code == 400 and "explain" in bad.json()["error"]["message"]


def test_eval_show_misses_explains_each_miss(store: Path, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    item = {"id": "q1", "question": QUESTION, "source": "guide/storage.md",
            "evidence": ["metadata in etcd"]}  # fmt: skip
    questions.write_text(json.dumps(item) + "\n", encoding="utf-8")
    env = {"OSSRAG_DB": str(store)}
    args = ["eval", "retrieval", str(questions), "-k", "1", "--show-misses"]
    result = runner.invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    (miss,) = json.loads(result.stdout)["misses"]["ossrag"]
    assert (miss["id"], miss["rank"]) == ("q1", None)
    assert [miss["expect"][name]["rank"] for name in ("dense", "bm25", "fused")] == [4, 2, 2]
    kept = runner.invoke(app, [*args, "--json", "--path", "guide/*"], env=env)
    (miss,) = json.loads(kept.stdout)["misses"]["ossrag"]
    assert [miss["expect"][name]["rank"] for name in ("dense", "bm25", "fused")] == [3, 2, 2]
    result = runner.invoke(app, args, env=env)
    assert "  expected guide/storage.md:" in result.stdout.splitlines()
