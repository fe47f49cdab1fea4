"""Shared fixtures: real Milvus Lite stores in temp dirs, the real MiniLM embedder, a scripted LLM.

(Agent, budget, chat, compare and structured-answer tests embed with the scripted server's hashed
embeddings, `openai:hashed`: they test orchestration, not ranking.)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from llm_server import Reply, ScriptedLLMServer

from ossrag.config import Settings, load_settings
from ossrag.embed.encoders import Embedder, MiniLMEmbedder, Vectors
from ossrag.engine.index import Index
from ossrag.records import Chunk

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OSSRAG_SHARED") or REPO.parent / "shared")  # corpora, eval sets
# The expected rankings and scores were measured with fp32 MiniLM: stores the tests build use it,
# from module- and session-scoped fixtures too (a new store's default, int8, is tested where it
# is the subject, in test_embeddings.py).
os.environ["OSSRAG_ENCODER"] = "fp32"
MILVUS_DOCS = SHARED / "corpus" / "milvus-docs"
EVAL_DEV = SHARED / "eval" / "milvus-docs-dev.jsonl"

logging.getLogger("pymilvus").setLevel(logging.ERROR)
# Property tests: 100 examples each; the mutation run (benchmarks/mutation.py) runs them
# once per mutant, with fewer and the same examples every run.
hypothesis_settings.register_profile("default", deadline=None, max_examples=100)
hypothesis_settings.register_profile("mutation", deadline=None, max_examples=40, derandomize=True)
hypothesis_settings.load_profile("default")


STORE_FIXTURES = {"embedder", "index", "settings", "docs_store", "served", "store", "llm"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that load the model, open a store or start a server: `-m "not store"` leaves
    the fast, pure ones (the mutation run uses them)."""
    for item in items:
        if STORE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.store)


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not path.exists(), reason=f"{path} not found: clone the repo beside ../shared"
    )


def isolate_settings(mp: pytest.MonkeyPatch, work: Path) -> None:
    """No OSSRAG_* or OPENAI_* variable or config file of the user leaks in; fp32 as above."""
    for name in list(os.environ):
        if name.startswith(("OSSRAG_", "OPENAI_")):
            mp.delenv(name)
    mp.setenv("OSSRAG_CONFIG", str(work / "no-config.toml"))
    mp.setenv("OSSRAG_ENCODER", "fp32")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test runs with isolate_settings (module fixtures call it themselves)."""
    isolate_settings(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return MiniLMEmbedder()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(db=str(tmp_path / "store.db"))


@pytest.fixture
def index(settings: Settings, embedder: Embedder) -> Iterator[Index]:
    ix = Index(settings, embedder=embedder)
    yield ix
    ix.close()


@pytest.fixture
def llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(Reply(content="Milvus stores data in object storage [1].")) as server:
        yield server


# A chunk written straight into a store, outside any ingest (a write the in-memory index has not
# seen), findable by "zebras archive vault".
EXTRA_CHUNK = Chunk(
    id="extra",
    doc_id="d-extra",
    source="extra.md",
    heading_path=("Extra",),
    start_line=1,
    end_line=1,
    text="Zebras guard the archive vault.",
)

DOCS = {
    "guide/storage.md": """---
title: Storage
---
# Storage guide

## Where does the engine keep data?

The engine keeps inserted vectors in object storage such as MinIO or S3, and metadata in etcd.

## How do I back up?

Copy the bucket with the backup tool, then snapshot etcd.
""",
    "guide/search.md": """# Search guide

## Similarity metrics

Inner product, cosine and L2 distances are supported for dense vectors.

```python
# this is code, not a heading
client.search(collection, data=[vector], limit=3)
```

## Filters

Boolean expressions restrict a search to matching entities.
""",
    "notes.txt": "Plain text notes.\n\nThe cluster has three query nodes.\n",
}


def write_docs(root: Path, docs: dict[str, str] = DOCS) -> Path:
    for name, text in docs.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Any]:
    """A `milvus-lite server` on a free port over a fresh data dir (test_servers.Server)."""
    from test_servers import lite_server

    data = tmp_path / "served.db"
    data.mkdir()
    server = lite_server(data)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs")


def wait_for_job(http: httpx.Client, job_id: str, seconds: float = 60) -> dict[str, Any]:
    """Poll an ingest job of `ossrag serve` until it is no longer queued or running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/v1/ingest/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"ingest job {job_id} did not finish")


class EmbedderProxy:
    """The real embedder behind a wrapper that tests subclass to count or fail its calls."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name, self.max_tokens = inner.name, inner.max_tokens

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> Vectors:
        return self.inner.embed_query(text)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)
