"""A search on a Lite store whose saved index is current needs no Milvus: the sidecar that says
so, and every way it stops saying so (a write, a writer that does not know it, a crash)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import EXTRA_CHUNK

from ossrag.config import Settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.errors import StoreError
from ossrag.store.local import LocalCopy, fingerprint
from ossrag.store.milvus import Store

QUERIES = ["Where is data kept?", "back up the bucket", "zebras archive vault"]
MODES = ("dense", "bm25", "hybrid")

# A fresh process searching as `ossrag search` does; it reports what it found and whether it
# imported the Milvus client or Milvus Lite.
SEARCH = """
import json, sys
from ossrag.config import load_settings
from ossrag.engine.index import Index
index = Index(load_settings(db=sys.argv[1], fusion="weighted"))
found = {
    f"{mode} {query}": [[p.source, p.start_line, p.score] for p in result.passages]
    for query in json.loads(sys.argv[2]) for mode in json.loads(sys.argv[3])
    for result in [index.search(query, 3, mode)]
}
index.close()
opened = sorted({"pymilvus", "milvus_lite"} & set(sys.modules))
print(json.dumps({"found": found, "opened": opened}))
"""

# A long-running process holding the store, as `ossrag serve` does, until its stdin closes.
HOLD = """
import sys
from ossrag.store.milvus import Store
store = Store(sys.argv[1])
store.open()
print("held", flush=True)
sys.stdin.read()
store.close()
"""

# A process that starts a batch of writes and dies before flushing it.
CRASH = """
import os, sys
import numpy as np
from ossrag.records import Chunk
from ossrag.store.milvus import Store
store = Store(sys.argv[1])
chunk = Chunk(id="extra", doc_id="d-extra", source="extra.md", heading_path=("Extra",),
              start_line=1, end_line=1, text="Zebras guard the archive vault.")
store.insert_chunks([chunk], np.full((1, 384), 384**-0.5, dtype=np.float32))
os._exit(3)
"""


def search_in_child(db: str, queries: list[str] = QUERIES) -> dict[str, Any]:
    """What a new process finds for each query in each mode, and which Milvus modules it opened."""
    args = [db, json.dumps(queries), json.dumps(MODES)]
    result = subprocess.run(
        [sys.executable, "-c", SEARCH, *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def search_in_milvus(settings: Settings, embedder: Embedder) -> dict[str, list[list[Any]]]:
    """The same searches in this process, ranked by Milvus itself."""
    index = Index(settings.model_copy(update={"fusion": "weighted"}), embedder=embedder)
    index.store.memory_index = False
    try:
        return {
            f"{mode} {query}": [
                [p.source, p.start_line, p.score] for p in index.search(query, 3, mode).passages
            ]
            for query in QUERIES
            for mode in MODES
        }
    finally:
        index.close()


def assert_same(found: dict[str, list[list[Any]]], expected: dict[str, list[list[Any]]]) -> None:
    assert found.keys() == expected.keys()
    for key, passages in expected.items():
        assert [p[:2] for p in found[key]] == [p[:2] for p in passages], key
        assert [p[2] for p in found[key]] == pytest.approx([p[2] for p in passages], rel=1e-4)


def sidecar(settings: Settings) -> Path:
    return Path(settings.db) / "ossrag-search" / f"{settings.collection}.current.json"


@pytest.fixture
def ingested(settings: Settings, embedder: Embedder, docs: Path) -> Settings:
    """A store of the fixture docs, ingested and closed: its index and sidecar saved."""
    index = Index(settings, embedder=embedder)
    index.ingest([docs])
    index.close()
    assert sidecar(settings).exists()
    return settings


def test_a_new_process_searches_the_saved_index_without_milvus_and_as_milvus_ranks(
    ingested: Settings, embedder: Embedder
) -> None:
    child = search_in_child(ingested.db)
    assert child["opened"] == []  # neither pymilvus nor Milvus Lite imported
    assert child["found"]["bm25 back up the bucket"][0][0] == "guide/storage.md"
    assert_same(child["found"], search_in_milvus(ingested, embedder))


def test_the_sidecar_gives_the_collection_info_milvus_holds(ingested: Settings) -> None:
    store = Store(ingested.db)
    known = store.info()
    assert not store.connected
    assert known is not None and known.generation
    store.ensure(known.embedder, known.dim)  # checks against the sidecar's facts, no Milvus
    assert not store.connected
    assert store.files()  # the manifest is in Milvus: opened now
    assert store.connected
    store.close()
    again = Store(ingested.db)
    again.open()  # as a server does: held, its info read from Milvus
    assert again.connected and again.info() == known
    again.close()


def test_a_search_needs_no_lock_while_another_process_holds_the_store(ingested: Settings) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, ingested.db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        child = search_in_child(ingested.db, ["back up the bucket"])
        assert child["opened"] == []
        assert child["found"]["bm25 back up the bucket"][0][0] == "guide/storage.md"
        with pytest.raises(StoreError, match="open in another process"):
            Store(ingested.db).files()  # what needs Milvus still waits for the holder
    finally:
        holder.communicate("", timeout=60)


def test_a_write_retires_the_sidecar_and_the_next_process_sees_it(
    ingested: Settings, embedder: Embedder
) -> None:
    index = Index(ingested, embedder=embedder)
    index.store.insert_chunks([EXTRA_CHUNK], embedder.embed([EXTRA_CHUNK.embed_text]))
    assert not sidecar(ingested).exists()  # gone before anything was written
    index.store.flush()  # no index built: the next process builds it
    index.close()
    first = search_in_child(ingested.db)
    assert first["opened"] == ["milvus_lite", "pymilvus"]
    assert first["found"]["bm25 zebras archive vault"][0][0] == "extra.md"
    assert sidecar(ingested).exists()  # it built the index and vouched for it
    second = search_in_child(ingested.db)
    assert second["opened"] == []
    assert_same(second["found"], first["found"])


def test_a_writer_that_leaves_the_sidecar_is_caught_by_the_store_files(
    ingested: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an older ossrag would, or one writing through `milvus-lite server` on the same folder:
    the sidecar stays, but the store's files changed, so it is not believed."""
    monkeypatch.setattr(LocalCopy, "remove_sidecar", lambda self: None)
    index = Index(ingested, embedder=embedder)
    index.store.insert_chunks([EXTRA_CHUNK], embedder.embed([EXTRA_CHUNK.embed_text]))
    index.store.flush()
    index.close()
    assert sidecar(ingested).exists()
    child = search_in_child(ingested.db)
    assert child["opened"] == ["milvus_lite", "pymilvus"]
    assert child["found"]["bm25 zebras archive vault"][0][0] == "extra.md"


def test_a_crash_mid_write_leaves_no_sidecar(ingested: Settings) -> None:
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, ingested.db], capture_output=True, text=True, timeout=120
    )
    assert crashed.returncode == 3, crashed.stderr
    assert not sidecar(ingested).exists()
    child = search_in_child(ingested.db, ["zebras archive vault"])
    assert child["opened"] == ["milvus_lite", "pymilvus"]
    assert child["found"]["bm25 zebras archive vault"][0][0] == "extra.md"  # Lite kept the write


def test_the_fingerprint_follows_every_store_file_but_ossrags_own(tmp_path: Path) -> None:
    store, own = tmp_path / "s.db", tmp_path / "s.db" / "ossrag-search"
    (store / "collections" / "c" / "wal").mkdir(parents=True)
    own.mkdir()
    (store / "collections" / "c" / "manifest.json").write_text("{}")
    before = fingerprint(store, own)
    (own / "ossrag.current.json").write_text("{}")
    (own / "ossrag").mkdir()
    assert fingerprint(store, own) == before
    (store / "collections" / "c" / "wal" / "wal_1.arrow").write_bytes(b"x")
    assert fingerprint(store, own) != before
    os.remove(store / "collections" / "c" / "wal" / "wal_1.arrow")
    assert fingerprint(store, own) == before
    (store / "collections" / "c" / "manifest.json").write_text("{ }")
    assert fingerprint(store, own) != before
