"""CLI options no other test reaches, each through the real command: real store, scripted LLM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import write_docs
from llm_server import Reply, ScriptedLLMServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.generate.prompts import EXPAND_PROMPT

runner = CliRunner()
MODEL = "gpt-oss-20b"


def respond(body: dict[str, object]) -> Reply:
    """Rewrite requests get English queries; every other request gets an answer."""
    messages = body["messages"]
    assert isinstance(messages, list)
    if messages[0]["content"] == EXPAND_PROMPT:
        return Reply(content="backup tool snapshot etcd")
    return Reply(content="Snapshot etcd [1].")


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(Reply(respond=respond), model=MODEL) as server:
        yield server


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLMServer) -> dict[str, str]:
    """The test docs ingested once; the environment that points the CLI at them and the LLM."""
    tmp = tmp_path_factory.mktemp("cli-options")
    env = {
        "OSSRAG_DB": str(tmp / "store.db"),
        "OSSRAG_CONFIG": str(tmp / "none.toml"),
        "OSSRAG_BASE_URL": llm.base_url,
        "OSSRAG_MODEL": MODEL,
        "COLUMNS": "250",  # rich tables on one line each
    }
    result = runner.invoke(app, ["ingest", str(write_docs(tmp / "docs")), "--json"], env=env)
    assert result.exit_code == 0, result.output
    return env


def cli(args: list[str], env: dict[str, str], code: int = 0) -> str:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == code, result.stdout + result.stderr
    return result.stdout


def sources(env: dict[str, str], collection: str | None = None) -> list[str]:
    """The stored files' sources, read back through `search` (every chunk)."""
    args = ["search", "docs", "-k", "20", "--mode", "dense", "--json"]
    results = json.loads(cli(args + (["--collection", collection] if collection else []), env))
    return sorted({r["source"] for r in results["results"]})


def test_ingest_include_exclude_and_keep_missing(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    env = {"OSSRAG_DB": str(tmp_path / "a.db"), "OSSRAG_CONFIG": str(tmp_path / "none.toml")}
    report = json.loads(cli(["ingest", str(docs), "--include", "*.md", "--json"], env))
    assert (report["files_added"], report["chunks_embedded"]) == (2, 4)
    assert sources(env) == ["guide/search.md", "guide/storage.md"]

    env["OSSRAG_DB"] = str(tmp_path / "b.db")
    args = ["ingest", str(docs), "--exclude", "guide/*", "--exclude", "*.rst", "--json"]
    assert json.loads(cli(args, env))["files_added"] == 1
    assert sources(env) == ["notes.txt"]

    env["OSSRAG_DB"] = str(tmp_path / "c.db")
    cli(["ingest", str(docs), "--json"], env)
    (docs / "notes.txt").unlink()
    kept = json.loads(cli(["ingest", str(docs), "--keep-missing", "--json"], env))
    assert (kept["files_unchanged"], kept["files_removed"], kept["chunks_deleted"]) == (2, 0, 0)
    assert sources(env) == ["guide/search.md", "guide/storage.md", "notes.txt"]
    pruned = json.loads(cli(["ingest", str(docs), "--json"], env))
    assert (pruned["files_unchanged"], pruned["files_removed"], pruned["chunks_deleted"]) == (
        2,
        1,
        1,
    )
    assert sources(env) == ["guide/search.md", "guide/storage.md"]


def test_collection_flag_keeps_stores_apart(store: dict[str, str], tmp_path: Path) -> None:
    other = write_docs(tmp_path / "other", {"zebra.md": "# Zebras\n\nZebras guard the vault.\n"})
    cli(["ingest", str(other), "--collection", "zoo", "--json"], store)
    assert sources(store, "zoo") == ["zebra.md"]
    assert sources(store) == ["guide/search.md", "guide/storage.md", "notes.txt"]
    status = json.loads(cli(["status", "--json", "--collection", "zoo"], store))
    assert (status["collection"], status["files"], status["chunks"]) == ("zoo", 1, 1)
    empty = json.loads(cli(["search", "zebras", "--collection", "nothing", "--json"], store))
    assert empty["results"] == [] and "the store is empty" in empty["notice"]


def test_search_rewrite_fuses_the_llms_queries(
    store: dict[str, str], llm: ScriptedLLMServer
) -> None:
    args = ["search", "zzqx qqxz", "--mode", "bm25", "-k", "2", "--json"]
    assert json.loads(cli(args, store))["results"] == []  # no word of it is in the docs
    calls = len(llm.bodies())
    rewritten = json.loads(cli([*args, "--rewrite", "--api-key", "sk-flag"], store))
    (body,) = llm.bodies()[calls:]
    assert body["messages"][0]["content"] == EXPAND_PROMPT
    assert body["messages"][1]["content"] == "zzqx qqxz"
    assert llm.requests[-1].headers["authorization"] == "Bearer sk-flag"
    assert [(r["rank"], r["heading"]) for r in rewritten["results"]] == [
        (1, "Storage guide › How do I back up?"),
        (2, "Storage guide › Where does the engine keep data?"),  # "etcd"
    ]


def test_the_llm_key_comes_from_the_flag_then_ossrag_then_openai(
    store: dict[str, str], llm: ScriptedLLMServer
) -> None:
    def key(args: list[str], **env: str) -> str:
        status = json.loads(cli(["status", "--json", *args], {**store, **env}))
        assert status["llm"]["ok"] is True
        return llm.requests[-1].headers.get("authorization", "")

    assert key([]) == "Bearer not-needed"  # local servers ignore the key, the SDK wants one
    assert key([], OPENAI_API_KEY="sk-openai") == "Bearer sk-openai"
    assert key([], OPENAI_API_KEY="sk-openai", OSSRAG_API_KEY="sk-ossrag") == "Bearer sk-ossrag"
    flag = key(["--api-key", "sk-flag"], OPENAI_API_KEY="sk-openai", OSSRAG_API_KEY="sk-ossrag")
    assert flag == "Bearer sk-flag"


def test_llm_preset_flag_fills_what_was_not_given(store: dict[str, str]) -> None:
    env = {k: v for k, v in store.items() if k not in ("OSSRAG_BASE_URL", "OSSRAG_MODEL")}
    preset = json.loads(cli(["status", "--json", "--llm", "lmstudio"], env))["llm"]
    assert (preset["base_url"], preset["model"]) == (
        "http://localhost:1234/v1",
        "openai/gpt-oss-20b",
    )
    assert preset["ok"] is False  # nothing listens there
    args = ["status", "--json", "--llm", "lmstudio", "--model", "mine"]
    own = json.loads(cli(args, env))["llm"]
    assert (own["base_url"], own["model"]) == ("http://localhost:1234/v1", "mine")
    assert "unknown llm preset 'nope'" in runner.invoke(app, ["status", "--llm", "nope"]).stderr


def test_context_window_and_answer_tokens_decide_how_many_passages_go(
    store: dict[str, str], llm: ScriptedLLMServer
) -> None:
    def passages_sent(*budget: str) -> tuple[int, int]:
        args = ["ask", "How do I back up the bucket?", "-k", "5", "--json", *budget]
        answer = json.loads(cli(args, store))
        prompt = llm.bodies()[-1]["messages"][-1]["content"]
        return len(answer["citations"]), len(re.findall(r"^\[\d+\] ", prompt, re.M))

    assert passages_sent("--context-window", "8192", "--answer-tokens", "1024") == (5, 5)
    assert passages_sent("--context-window", "1024", "--answer-tokens", "640") == (3, 3)
    refused = runner.invoke(
        app, ["ask", "backup?", "--context-window", "1024", "--answer-tokens", "1000"], env=store
    )
    assert refused.exit_code == 1 and "--answer-tokens" in refused.stderr


def test_status_prints_a_table(
    store: dict[str, str], llm: ScriptedLLMServer, tmp_path: Path
) -> None:
    env = {**store, "OSSRAG_DB": str(tmp_path / "own.db")}  # its own store: no other collection
    cli(["ingest", str(write_docs(tmp_path / "docs")), "--json"], env)
    lines = [line.rstrip() for line in cli(["status"], env).splitlines()]
    assert lines[:5] == [
        f" store        {env['OSSRAG_DB']} (collection ossrag)",
        " content      3 files, 5 chunks",
        " embedder     minilm (384-d)",
        " collections  ossrag: 3 files, 5 chunks",
        f" llm          {MODEL} at {llm.base_url} — answering",
    ]
    assert len(lines) == 6 and lines[5].startswith("              ")


def test_eval_retrieval_prints_a_table(
    store: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    items = [
        {"id": "a", "question": "Where are vectors kept?", "evidence": ["object storage"]},
        {"id": "b", "question": "How many query nodes?", "evidence": ["three query nodes"]},
        {"id": "c", "question": "Quanti nodi?", "lang": "it", "evidence": ["not in the docs"]},
    ]
    question_set = tmp_path / "set.jsonl"
    question_set.write_text("".join(json.dumps(item) + "\n" for item in items))
    corpus = write_docs(tmp_path / "corpus")
    out = cli(["eval", "retrieval", str(question_set), "--corpus", str(corpus)], store)
    rows = [line.strip() for line in out.splitlines() if line.strip()]
    assert rows[0] == "retrieval on set.jsonl (n=3)"
    body = [re.sub(r"[│┃]", "|", row) for row in rows if "|" in row or "│" in row or "┃" in row]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in body]
    assert cells[:8] == [
        ["metric", "ossrag"],
        ["recall@1", "0.667"],
        ["recall@3", "0.667"],
        ["recall@5", "0.667"],
        ["recall@10", "0.667"],
        ["mrr@10", "0.667"],
        ["en recall@5", "1.000"],
        ["en mrr@10", "1.000"],
    ]
    assert cells[8:10] == [["it recall@5", "0.000"], ["it mrr@10", "0.000"]]
    assert [cell[0] for cell in cells[10:]] == ["latency p50 ms", "latency p95 ms"]
    assert all(re.fullmatch(r"\d+\.\d", cell[1]) for cell in cells[10:])


def test_top_k_comes_from_the_flag_then_the_environment_then_ossrag_toml(
    store: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ossrag.toml").write_text('top_k = 4\nmode = "dense"\n')
    env: dict[str, str | None] = {**store, "OSSRAG_CONFIG": None}  # ./ossrag.toml is found

    def results(*args: str, **extra: str) -> tuple[int, str]:
        result = runner.invoke(app, ["search", "backup", "--json", *args], env={**env, **extra})
        assert result.exit_code == 0, result.stderr
        payload = json.loads(result.stdout)
        return len(payload["results"]), payload["mode"]

    assert results() == (4, "dense")
    assert results(OSSRAG_TOP_K="3") == (3, "dense")
    assert results("-k", "2", OSSRAG_TOP_K="3") == (2, "dense")
    assert results("--mode", "bm25", OSSRAG_MODE="hybrid") == (1, "bm25")  # one chunk says it
    (tmp_path / "ossrag.toml").write_text("top_k = [\n")
    broken = runner.invoke(app, ["search", "backup"], env=env)
    assert broken.exit_code == 1
    assert broken.stderr.startswith("error: cannot read config file ossrag.toml")
    assert len(broken.stderr.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[str]:
    """`ossrag serve` in its own process on a free loopback port; its base URL once healthy."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ossrag", "serve", "--port", str(port), *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve did not answer /healthz within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_without_keys_on_loopback(store: dict[str, str]) -> None:
    with serving(store) as url:
        models = httpx.get(url + "/v1/models", timeout=30)
        hits = httpx.post(url + "/v1/search", json={"query": "back up the bucket"}, timeout=30)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "ossrag"
    assert hits.status_code == 200, hits.text
    assert hits.json()["results"][0]["heading"] == "Storage guide › How do I back up?"


def test_serve_with_keys_from_a_file_and_cors(store: dict[str, str], tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# one key a line\nkey-one\n\n  key-two  \n")
    origin = "https://app.example"
    args = ["--api-keys-file", str(keys), "--cors-origin", origin]
    with serving(store, *args) as url:

        def models(key: str | None) -> int:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.get(url + "/v1/models", headers=headers, timeout=30).status_code

        def preflight(from_origin: str) -> str | None:
            headers = {"Origin": from_origin, "Access-Control-Request-Method": "POST"}
            response = httpx.options(url + "/v1/search", headers=headers, timeout=30)
            return response.headers.get("access-control-allow-origin")

        statuses = [models(key) for key in (None, "key-one", "key-two", "# one key a line")]
        allowed, refused = preflight(origin), preflight("https://evil.example")
    assert statuses == [401, 200, 200, 401]
    assert (allowed, refused) == (origin, None)


def test_serve_collections_and_watch_from_the_command_line(tmp_path: Path) -> None:
    """`ossrag serve --collection a --collection b --watch DIR`: a model per collection, the
    watched folder kept in sync in the first one (the default)."""
    watched = write_docs(tmp_path / "watched", {"soup.md": "# Soup\n\nSimmer the onions.\n"})
    env = {"OSSRAG_DB": str(tmp_path / "kb.db"), "OSSRAG_CONFIG": str(tmp_path / "none.toml")}
    args = ["--collection", "recipes", "--collection", "garden", "--watch", str(watched)]
    with serving(env, *args) as url:

        def sources(query: str, collection: str) -> list[str]:
            body = {"query": query, "top_k": 1, "mode": "bm25", "collection": collection}
            response = httpx.post(url + "/v1/search", json=body, timeout=30)
            assert response.status_code == 200, response.text
            return [r["source"] for r in response.json()["results"]]

        def soon(query: str, expected: list[str]) -> None:
            deadline = time.monotonic() + 30
            while sources(query, "recipes") != expected:
                assert time.monotonic() < deadline, f"{query!r} did not find {expected}"
                time.sleep(0.2)

        models = httpx.get(url + "/v1/models", timeout=30).json()["data"]
        soon("onions", ["soup.md"])  # the sync at start
        (watched / "tart.md").write_text("# Tart\n\nBake the pastry blind.\n")
        soon("pastry", ["tart.md"])
        garden = sources("pastry", "garden")
    assert [m["id"] for m in models if m["id"].endswith("-bm25")] == [
        "ossrag-bm25", "ossrag/recipes-bm25", "ossrag/garden-bm25"
    ]  # fmt: skip
    assert garden == []
