"""Ingest and incremental sync against a real Milvus Lite store and the real embedder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import MILVUS_DOCS, EmbedderProxy, needs_shared

from ossrag.embed.encoders import Embedder, Vectors
from ossrag.engine.index import Index
from ossrag.errors import StoreError


def chunk_ids(index: Index) -> dict[str, str]:
    return index.store.chunk_ids()


def test_first_ingest_stores_every_file(index: Index, docs: Path) -> None:
    report = index.ingest([docs])
    assert (report.files_added, report.files_updated, report.files_unchanged) == (3, 0, 0)
    assert report.chunks_embedded == index.store.count() == 5
    manifest = index.store.files()
    assert sorted(r.source for r in manifest.values()) == [
        "guide/search.md",
        "guide/storage.md",
        "notes.txt",
    ]
    assert sum(r.chunks for r in manifest.values()) == report.chunks_embedded


def test_reingest_unchanged_embeds_nothing(index: Index, docs: Path) -> None:
    index.ingest([docs])
    before = chunk_ids(index)
    report = index.ingest([docs])
    assert report.chunks_embedded == 0
    assert report.files_unchanged == 3
    assert chunk_ids(index) == before


def test_edit_replaces_only_that_files_chunks(index: Index, docs: Path) -> None:
    index.ingest([docs])
    before = chunk_ids(index)
    edited = docs / "guide/storage.md"
    edited.write_text(edited.read_text() + "\n## Restore\n\nRestore from the bucket copy.\n")
    report = index.ingest([docs])
    assert (report.files_updated, report.files_unchanged) == (1, 2)
    after = chunk_ids(index)
    edited_doc = next(r.doc_id for r in index.store.files().values() if r.source.endswith("e.md"))
    assert {c for c, d in before.items() if d != edited_doc} == {
        c for c, d in after.items() if d != edited_doc
    }
    edited_chunks = sum(1 for d in after.values() if d == edited_doc)
    assert (report.chunks_embedded, report.chunks_reused) == (1, edited_chunks - 1)  # the new one
    texts = [p.text for p in index.search("Restore from the bucket copy", k=3).passages]
    assert any("Restore from the bucket copy" in t for t in texts)


def test_deleted_file_loses_its_chunks(index: Index, docs: Path) -> None:
    index.ingest([docs])
    (docs / "notes.txt").unlink()
    report = index.ingest([docs])
    assert report.files_removed == 1 and report.chunks_deleted >= 1
    assert "notes.txt" not in {r.source for r in index.store.files().values()}
    assert all(p.source != "notes.txt" for p in index.search("three query nodes").passages)


def test_keep_missing_keeps_chunks(index: Index, docs: Path) -> None:
    index.ingest([docs])
    (docs / "notes.txt").unlink()
    report = index.ingest([docs], prune=False)
    assert report.files_removed == 0
    assert "notes.txt" in {r.source for r in index.store.files().values()}


def test_subdirectory_reingest_is_not_a_duplicate(index: Index, docs: Path) -> None:
    index.ingest([docs])
    count = index.store.count()
    report = index.ingest([docs / "guide"])
    assert report.files_unchanged == 2 and report.chunks_embedded == 0
    assert index.store.count() == count


class FailingEmbedder(EmbedderProxy):
    """The real embedder, made to die after some batches: an interrupted ingest."""

    def __init__(self, inner: Embedder, fail_after: int) -> None:
        super().__init__(inner)
        self.calls, self.fail_after = 0, fail_after

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        if self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        return self.inner.embed(texts)


def test_interrupted_ingest_rerun_has_no_duplicates(
    settings, embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ossrag.engine.ingest

    docs = tmp_path / "many"
    for i in range(12):
        (docs / f"d{i}").mkdir(parents=True)
        (docs / f"d{i}" / "doc.md").write_text(f"# Doc {i}\n\nFact number {i} is unique.\n")
    monkeypatch.setattr(ossrag.engine.ingest, "EMBED_BATCH_CHUNKS", 2)
    monkeypatch.setattr(ossrag.engine.ingest, "FLUSH_EVERY_CHUNKS", 4)
    crashing = Index(settings, embedder=FailingEmbedder(embedder, fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        crashing.ingest([docs])
    crashing.close()
    clean = Index(settings, embedder=embedder)
    report = clean.ingest([docs])
    assert report.files_added + report.files_unchanged == 12
    ids = clean.store.chunk_ids()
    assert len(ids) == clean.store.count() == 12
    assert len(set(ids.values())) == 12
    assert clean.ingest([docs]).chunks_embedded == 0
    clean.close()


def test_other_embedder_is_refused(index: Index, docs: Path, settings) -> None:
    index.ingest([docs])
    index.close()
    other = Index(settings.model_copy(update={"embedder": "st:other"}), embedder=_Renamed())
    with pytest.raises(StoreError, match="built with embedder minilm"):
        other.search("anything")
    other.close()


class _Renamed:
    name, max_tokens, dim = "st:other", 128, 8


def test_skips_are_reported_and_the_rest_ingested(index: Index, docs: Path) -> None:
    (docs / "empty.md").write_text("")
    (docs / "binary.md").write_bytes(b"\x00\x01\x02 binary")
    report = index.ingest([docs, docs / "missing.md"])
    assert report.files_added == 3
    reasons = " | ".join(report.warnings)
    assert "empty.md" in reasons and "binary.md" in reasons and "missing.md" in reasons


@needs_shared(MILVUS_DOCS)
def test_tutorial_check_store_question_ranks_store_passage_first(index: Index) -> None:
    report = index.ingest([MILVUS_DOCS], include=["faq/*.md"])
    assert report.files_added == len(list((MILVUS_DOCS / "faq").glob("*.md")))
    for mode in ("hybrid", "dense"):
        top = index.search("How is data stored in milvus?", k=3, mode=mode).passages[0]
        assert top.source == "faq/product_faq.md"
        assert top.heading.endswith("Where does Milvus store data?"), (mode, top.heading)


def test_changed_chunk_settings_rechunk_unchanged_files(
    settings, embedder: Embedder, docs: Path
) -> None:
    first = Index(settings, embedder=embedder)
    first.ingest([docs])
    first.close()
    smaller = Index(settings.model_copy(update={"chunk_tokens": 64}), embedder=embedder)
    report = smaller.ingest([docs])
    assert (report.files_updated, report.files_unchanged) == (3, 0)
    assert smaller.ingest([docs]).chunks_embedded == 0
    assert smaller.store.count() == sum(r.chunks for r in smaller.store.files().values())
    smaller.close()


def test_store_from_an_older_schema_is_refused(settings, embedder: Embedder, docs: Path) -> None:
    import json

    from ossrag.store.milvus import INFO_ID, FileRecord

    index = Index(settings, embedder=embedder)
    index.ingest([docs])
    old = {"embedder": "minilm", "dim": 384, "bm25": True, "schema": 1}
    index.store.record_files([FileRecord(INFO_ID, json.dumps(old), "", "", 0.0, 0)])
    index.store.flush()
    index.close()
    reopened = Index(settings, embedder=embedder)
    with pytest.raises(StoreError, match="made by an older ossrag"):
        reopened.search("anything")
    reopened.close()
