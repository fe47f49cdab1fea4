"""Several knowledge bases: `ossrag serve --collection a --collection b` over real HTTP, and
`ossrag status` listing the collections of a store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import write_docs
from llm_server import Reply, ScriptedLLMServer
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from test_server import LiveServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.http.app import create_app

pytestmark = pytest.mark.timeout(120)
KEY = "kb-key"
RECIPES = {"soup.md": "# Soup\n\nSimmer the onions for twenty minutes.\n"}
GARDEN = {"roses.md": "# Roses\n\nPrune the roses in early spring.\n"}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[LiveServer, Path]]:
    root = tmp_path_factory.mktemp("kb")
    db = str(root / "kb.db")
    for name, docs in (("recipes", RECIPES), ("garden", GARDEN)):
        index = Index(load_settings(db=db, collection=name), embedder=embedder)
        index.ingest([write_docs(root / name, docs)])
        index.close()
    allowed = write_docs(root / "allowed" / "more", {"tulips.md": "# Tulips\n\nPlant bulbs.\n"})
    with ScriptedLLMServer(Reply(content="Twenty minutes [1].")) as llm:
        settings = load_settings(
            db=db, collection="recipes", collections=["recipes", "garden"], api_keys=[KEY],
            base_url=llm.base_url, model="gpt-oss-20b", allowed_roots=[str(root / "allowed")],
        )  # fmt: skip
        index = Index(settings, embedder=embedder)
        with LiveServer(create_app(settings, index)) as live:
            yield live, allowed
        index.close()


def _call(live: LiveServer, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, live.url + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip


def test_models_name_each_collection_and_mode(served: tuple[LiveServer, Path]) -> None:
    live, _ = served
    ids = [m["id"] for m in _call(live, "GET", "/v1/models").json()["data"]]
    modes = ["", "-hybrid", "-dense", "-bm25", "-agent"]
    assert ids == [f"ossrag{m}" for m in modes] + [f"ossrag/recipes{m}" for m in modes] + [
        f"ossrag/garden{m}" for m in modes
    ]


def test_chat_and_search_use_the_collection_asked_for(served: tuple[LiveServer, Path]) -> None:
    live, _ = served
    for model, source in (("ossrag", "soup.md"), ("ossrag/garden-bm25", "roses.md"),
                          ("ossrag/recipes", "soup.md")):  # fmt: skip
        body = {"model": model, "messages": [{"role": "user", "content": "When do I prune?"}]}
        chat = _call(live, "POST", "/v1/chat/completions", body)
        assert chat.status_code == 200, chat.text
        assert [s["source"] for s in chat.json()["sources"]] == [source], model
    found = _call(live, "POST", "/v1/search", {"query": "prune", "collection": "garden"})
    assert [r["source"] for r in found.json()["results"]] == ["roses.md"]
    default = _call(live, "POST", "/v1/search", {"query": "prune"})
    assert [r["source"] for r in default.json()["results"]] == ["soup.md"]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/search", {"query": "x", "collection": "attic"},
         "collection 'attic' is not served: use one of recipes, garden"),
        ("/v1/chat/completions", {"model": "ossrag/attic", "messages": [
            {"role": "user", "content": "x"}]}, "model 'ossrag/attic' does not exist: use one"),
    ],
)  # fmt: skip
def test_unknown_collections_are_404(
    served: tuple[LiveServer, Path], path: str, body: Any, message: str
) -> None:
    response = _call(served[0], "POST", path, body)
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith(message)


def test_ingest_into_a_collection(served: tuple[LiveServer, Path]) -> None:
    live, allowed = served
    job = _call(live, "POST", "/v1/ingest", {"paths": [str(allowed)], "collection": "garden"})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 60
    while (state := _call(live, "GET", f"/v1/ingest/{job.json()['id']}").json())["status"] in (
        "queued", "running"
    ):  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state["report"]["files_added"] == 1
    body = {"query": "bulbs", "mode": "bm25", "top_k": 1}
    garden = _call(live, "POST", "/v1/search", {**body, "collection": "garden"}).json()
    recipes = _call(live, "POST", "/v1/search", {**body, "collection": "recipes"}).json()
    assert ([r["source"] for r in garden["results"]], recipes["results"]) == (["tulips.md"], [])


def test_status_lists_the_collections(tmp_path: Path, embedder: Embedder) -> None:
    db = str(tmp_path / "s.db")
    for name, docs in (("recipes", RECIPES), ("garden", {**GARDEN, **RECIPES})):
        index = Index(load_settings(db=db, collection=name), embedder=embedder)
        index.ingest([write_docs(tmp_path / name, docs)])
        index.close()
    result = CliRunner().invoke(app, ["status", "--db", db, "--json", "--base-url",
                                      "http://127.0.0.1:9/v1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["collections"] == [
        {"name": "garden", "files": 2, "chunks": 2},
        {"name": "recipes", "files": 1, "chunks": 1},
    ]


def test_mcp_tools_take_the_collection(served: tuple[LiveServer, Path]) -> None:
    """Over /mcp, each tool's `collection` picks a knowledge base; the default is the first."""
    live, _ = served

    async def session() -> None:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {KEY}"})
        async with Client(streamable_http_client(live.url + "/mcp", http_client=http)) as client:
            assert (client.instructions or "").endswith(
                "Knowledge bases (the tools' `collection`): `recipes` (the default), `garden`"
            )
            # (test_ingest_into_a_collection may have added more/tulips.md to garden)
            sources = {}
            for collection in (None, "garden", "recipes"):
                args = {"query": "prune the roses", "k": 1, "mode": "bm25"}
                if collection:
                    args["collection"] = collection
                found = await client.call_tool("search", args)
                sources[collection] = [p["source"] for p in found.structured_content["passages"]]
            assert sources == {None: [], "garden": ["roses.md"], "recipes": []}
            opened = await client.call_tool(
                "open_source", {"source": "roses.md", "collection": "garden"}
            )
            assert [c["text"] for c in opened.structured_content["chunks"]] == [
                "# Roses\n\nPrune the roses in early spring."
            ]
            asked = await client.call_tool(
                "ask", {"question": "When do I prune the roses?", "collection": "garden"}
            )
            cited = asked.structured_content["citations"]
            assert cited[0]["source"] == "roses.md"
            assert "soup.md" not in {c["source"] for c in cited}
            wrong = await client.call_tool("search", {"query": "prune", "collection": "attic"})
            assert wrong.is_error
            assert wrong.content[0].text == (
                "Error executing tool search: collection 'attic' is not served: use one of "
                "recipes, garden"
            )
            listed = await client.read_resource("ossrag://files/garden")
            garden = {f["source"] for f in json.loads(listed.contents[0].text)}
            assert "roses.md" in garden and "soup.md" not in garden

    anyio.run(session)
