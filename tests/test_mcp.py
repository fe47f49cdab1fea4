"""The MCP door through the SDK's own client: over stdio (`python -m ossrag mcp` as a
subprocess), over streamable HTTP (`/mcp` of a live `ossrag serve` app on loopback), and
in-process for argument checks. Real Milvus Lite stores, the scripted LLM over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import REPO, write_docs
from llm_server import Reply, ScriptedLLMServer
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from test_server import LiveServer

from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.http.app import create_app
from ossrag.mcp.server import FILES_URI, build_mcp_server

pytestmark = pytest.mark.timeout(120)

KEY = "mcp-key-1"
MODEL = "gpt-oss-20b"
REASONING = "Passage [1] names object storage, so that is the answer."
ANSWER = "The engine keeps inserted vectors in object storage such as MinIO or S3 [1]."
STORAGE_Q = "Where does the engine keep inserted vectors?"
STORAGE = {
    "n": 1,
    "source": "guide/storage.md",
    "heading": "Storage guide › Where does the engine keep data?",
    "start_line": 6,
    "end_line": 8,
    "score": 0.6495,
    "text": "## Where does the engine keep data?\n\nThe engine keeps inserted vectors in object "
    "storage such as MinIO or S3, and metadata in etcd.",
}
STORAGE_WHERE = (STORAGE["source"], STORAGE["heading"], STORAGE["start_line"], STORAGE["end_line"])
METRICS = ("guide/search.md", "Search guide › Similarity metrics", 3, 10)
FILTERS = ("guide/search.md", "Search guide › Filters", 12, 14)


def _where(passages: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    return [(p["source"], p["heading"], p["start_line"], p["end_line"]) for p in passages]


@pytest.fixture(scope="module")
def llm_server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(Reply(content=ANSWER, reasoning=REASONING), model=MODEL) as server:
        yield server


def _stored(root: Path, embedder: Embedder) -> Path:
    """A store holding the fixture docs, closed again (so another process may open it)."""
    write_docs(root / "docs")
    index = Index(load_settings(db=str(root / "store.db")), embedder=embedder)
    index.ingest([root / "docs"])
    index.close()
    return root / "store.db"


def _stdio(db: Path, llm: ScriptedLLMServer, *extra: str) -> StdioServerParameters:
    args = ["-m", "ossrag", "mcp", "--db", str(db), "--base-url", llm.base_url, "--model", MODEL]
    env = {"PYTHONPATH": str(REPO), "OSSRAG_CONFIG": str(db.parent / "no-config.toml")}
    return StdioServerParameters(command=sys.executable, args=[*args, *extra], env=env)


# --------------------------------------------------------------------------- stdio


def test_stdio_search_open_source_ask_and_files(
    tmp_path: Path, embedder: Embedder, llm_server: ScriptedLLMServer
) -> None:
    db = _stored(tmp_path, embedder)

    async def session() -> None:
        async with Client(_stdio(db, llm_server)) as client:
            tools = (await client.list_tools()).tools
            assert [t.name for t in tools] == ["search", "open_source", "ask"]
            assert all(t.annotations and t.annotations.read_only_hint for t in tools)
            found = await client.call_tool("search", {"query": STORAGE_Q, "k": 3})
            assert not found.is_error
            passages = found.structured_content["passages"]
            assert passages[0] == STORAGE
            assert _where(passages) == [
                STORAGE_WHERE, METRICS, ("notes.txt", "", 1, 3)
            ]  # fmt: skip
            assert json.loads(found.content[0].text) == found.structured_content

            kept = await client.call_tool(
                "search", {"query": STORAGE_Q, "k": 3, "path": ["guide/search.md"]}
            )
            assert _where(kept.structured_content["passages"]) == [METRICS, FILTERS]

            opened = await client.call_tool(
                "open_source", {"source": "guide/storage.md", "start_line": 7, "end_line": 7}
            )
            assert opened.structured_content == {
                "source": "guide/storage.md",
                "chunks": [{k: STORAGE[k] for k in ("heading", "start_line", "end_line", "text")}],
            }

            answered = await client.call_tool("ask", {"question": STORAGE_Q, "effort": "low"})
            assert answered.structured_content["answer"] == ANSWER
            first = answered.structured_content["citations"][0]
            assert first == {"n": 1, **{k: STORAGE[k] for k in ("source", "heading",
                             "start_line", "end_line")}, "cited": True}  # fmt: skip
            assert REASONING not in answered.content[0].text  # reasoning is left out
            checks = answered.structured_content["claims"]
            assert [(c["citations"], c["verdict"]) for c in checks] == [([1], "supported")]
            assert llm_server.bodies()[-1]["reasoning_effort"] == "low"
            llm_server.enqueue(Reply(content="The engine keeps inserted vectors on 42 disks [1]."))
            made_up = await client.call_tool("ask", {"question": STORAGE_Q})
            checks = made_up.structured_content["claims"]
            assert [(c["citations"], c["verdict"]) for c in checks] == [([1], "unsupported")]
            kept = await client.call_tool("ask", {"question": STORAGE_Q, "path": "notes.txt"})
            assert [c["source"] for c in kept.structured_content["citations"]] == ["notes.txt"]

            listed = (await client.list_resources()).resources
            assert [(str(r.uri), r.mime_type) for r in listed] == [(FILES_URI, "application/json")]
            files = json.loads((await client.read_resource(FILES_URI)).contents[0].text)
            assert [(f["source"], f["type"], f["chunks"]) for f in files] == [
                ("guide/search.md", "md", 2), ("guide/storage.md", "md", 2),
                ("notes.txt", "txt", 1),
            ]  # fmt: skip

    anyio.run(session)


def test_stdio_stdout_carries_only_protocol_and_ends_on_eof(
    tmp_path: Path, embedder: Embedder
) -> None:
    """Raw lines: every one on stdout is a JSON-RPC message; closing stdin stops the server."""
    db = _stored(tmp_path, embedder)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OSSRAG_CONFIG": str(tmp_path / "none.toml")}
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "search", "arguments": {"query": "query nodes", "k": 1}}},
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "ossrag", "mcp", "--db", str(db), "--no-ask"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    replies = []
    for request in requests:
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        if "id" in request:
            replies.append(json.loads(proc.stdout.readline()))
    rest, stderr = proc.communicate(timeout=30)  # EOF on stdin: the server stops
    assert proc.returncode == 0, stderr[-2000:]
    assert [r["id"] for r in replies] == [1, 2]
    assert replies[0]["result"]["serverInfo"]["name"] == "ossrag"
    passages = replies[1]["result"]["structuredContent"]["passages"]
    assert _where(passages) == [("notes.txt", "", 1, 3)]
    assert rest == ""  # nothing else was written to stdout
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, llm_server: ScriptedLLMServer
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("mcp-http")
    db = _stored(root, embedder)
    settings = load_settings(db=str(db), base_url=llm_server.base_url, model=MODEL, api_keys=[KEY])
    index = Index(settings, embedder=embedder)
    with LiveServer(create_app(settings, index)) as live:
        yield live
    index.close()


def _http_client(url: str, key: str) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    return Client(streamable_http_client(url, http_client=http))


def test_http_mcp_needs_the_api_key(served: LiveServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        response = httpx.post(served.url + "/mcp", json=body, headers={**headers, **auth})
        assert response.status_code == 401, response.text
        assert "API key" in response.json()["error"]["message"]

    async def session() -> None:
        with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the 401 in a task group
            async with _http_client(served.url + "/mcp", "wrong") as client:
                await client.list_tools()

    anyio.run(session)


def test_http_mcp_tools_with_the_key(served: LiveServer) -> None:
    async def session() -> None:
        async with _http_client(served.url + "/mcp", KEY) as client:
            assert [t.name for t in (await client.list_tools()).tools] == [
                "search", "open_source", "ask"
            ]  # fmt: skip
            found = await client.call_tool("search", {"query": STORAGE_Q, "k": 2, "type": ["txt"]})
            assert _where(found.structured_content["passages"]) == [("notes.txt", "", 1, 3)]
            answered = await client.call_tool("ask", {"question": STORAGE_Q})
            assert answered.structured_content["answer"] == ANSWER

    anyio.run(session)


def test_http_mcp_refuses_a_foreign_host_and_origin(served: LiveServer) -> None:
    """DNS rebinding: a page on another name must not reach the tools, even with the key."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {KEY}"}
    host = httpx.post(served.url + "/mcp", json=body, headers={**headers, "Host": "evil.test"})
    # the API's own Host check answers first (a 400 of the MCP SDK's, such as "Missing session
    # ID", would mean the request got through)
    assert host.status_code == 400, host.text
    assert host.json()["error"]["message"].startswith("Host header not allowed"), host.text
    origin = httpx.post(
        served.url + "/mcp", json=body, headers={**headers, "Origin": "http://evil.test"}
    )
    assert origin.status_code == 403, origin.text


# --------------------------------------------------------------------------- arguments


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Index]:
    root = tmp_path_factory.mktemp("mcp-local")
    index = Index(load_settings(db=str(_stored(root, embedder))), embedder=embedder)
    yield index
    index.close()


def _call(index: Index, tool: str, args: dict[str, Any], ask: bool = False) -> Any:
    async def call() -> Any:
        async with Client(build_mcp_server(index, ask=ask)) as client:
            return await client.call_tool(tool, args)

    return anyio.run(call)


@pytest.mark.parametrize(
    ("tool", "args", "error"),
    [
        ("search", {"query": "q", "k": 0}, "k\n  Input should be greater than or equal to 1"),
        ("search", {"query": "q", "k": 51}, "k\n  Input should be less than or equal to 50"),
        ("search", {"query": "q", "mode": "fuzzy"}, "mode\n  Input should be 'hybrid'"),
        ("search", {"query": "   "}, "query is empty: pass the words to look for"),
        ("search", {"query": "q", "type": ["exe"]}, "type 'exe': not a type ossrag ingests"),
        ("search", {"query": "q", "since": "soon"}, "since 'soon': use a date like 2026-01-31"),
        ("search", {"query": "q", "path": [""]}, "path '': a non-empty glob like"),
        ("open_source", {"source": "guide/storage.md", "start_line": 9, "end_line": 3},
         "end_line 3 is before start_line 9"),
        ("open_source", {"source": "nope.md"}, "nothing stored for 'nope.md' in lines 1-200"),
        # an expression injected through the source name stays a string
        ("open_source", {"source": 'x" or id != "'}, "nothing stored for 'x\" or id != \"'"),
        ("open_source", {"source": "gu\u00efde/storage.md\n"}, "nothing stored for 'gu\u00efde"),
        ("ask", {"question": "q"}, "Unknown tool: ask"),
        ("search", {"query": "q", "collection": "nope"},
         "collection 'nope' is not served: use one of ossrag"),
    ],
)  # fmt: skip
def test_bad_arguments_are_tool_errors_naming_the_field(
    local: Index, tool: str, args: dict[str, Any], error: str
) -> None:
    result = _call(local, tool, args)
    assert result.is_error
    assert error in result.content[0].text


def test_search_filters_keep_k_passages_when_k_match(local: Index) -> None:
    md = _call(local, "search", {"query": "query nodes", "k": 3, "type": ["md"]})
    assert _where(md.structured_content["passages"]) == [FILTERS, METRICS, STORAGE_WHERE]
    later = _call(local, "search", {"query": "query nodes", "since": "2100-01-01"})
    assert later.structured_content == {
        "passages": [], "notice": "no stored file matches the filter"
    }  # fmt: skip
    one = _call(local, "search", {"query": "query nodes", "k": 3, "path": "guide/search.md"})
    assert _where(one.structured_content["passages"]) == [FILTERS, METRICS]
    recent = _call(local, "search", {"query": "query nodes", "k": 1, "since": "1d"})
    assert _where(recent.structured_content["passages"]) == [("notes.txt", "", 1, 3)]
