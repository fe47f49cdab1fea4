"""After an ingest that touched a few files, the in-memory index is the previous one updated with
those files' rows (read back from Milvus), and it is the index a full rebuild would give."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import DOCS, write_docs

from ossrag.config import Settings, load_settings
from ossrag.embed.crosslingual import vocabulary, word_counts
from ossrag.embed.encoders import Embedder
from ossrag.embed.lexical import bm25_terms
from ossrag.engine.index import Index
from ossrag.store.fusion import Reciprocal, Relative, Weighted
from ossrag.store.local import Changes, LocalCopy
from ossrag.store.memory import SearchIndex

QUERIES = [
    "where does the engine keep inserted vectors",
    "back up etcd snapshot",
    "inner product cosine distance",
    "query nodes in the cluster",
    "boolean filter expressions",
]
MORE = {
    "guide/index.md": "# Indexes\n\n## HNSW\n\nHNSW builds a graph over the vectors.\n\n"
    "## IVF\n\nIVF clusters vectors into lists and probes a few of them.\n",
    "faq.md": "# FAQ\n\n## Is it free?\n\nYes, the engine is open source.\n\n"
    "## Where is data kept?\n\nIn object storage and etcd, as the storage guide says.\n",
}


@pytest.fixture
def index(tmp_path: Path, embedder: Embedder) -> Iterator[Index]:
    with Index(load_settings(db=str(tmp_path / "s.db"), translate=False), embedder=embedder) as ix:
        yield ix


def local(index: Index) -> LocalCopy:
    assert index.store._local is not None
    return index.store._local


def held(index: Index) -> SearchIndex:
    copy = local(index).index
    assert copy is not None
    return copy


def rebuilt(index: Index) -> SearchIndex:
    """The index `SearchIndex.from_rows` builds from every row of the store now."""
    info = index.store.info()
    assert info is not None
    return SearchIndex.from_rows(info.generation, index.store._all_rows(), info.dim)


BACKUP = "## How do I back up?\n\nCopy the bucket with the backup tool, then snapshot etcd."


def lines_of(index: SearchIndex, text: str) -> tuple[int, int]:
    (row,) = (r for r in map(index.rows.row, range(len(index))) if r["text"] == text)
    return row["start_line"], row["end_line"]


def assert_same(updated: SearchIndex, full: SearchIndex, embedder: Embedder) -> None:
    """Same rows (fields, vectors), same terms with the same idf, same rankings and scores."""
    ids = [r.decode() for r in updated.rows.encoded("id")]
    full_ids = [r.decode() for r in full.rows.encoded("id")]
    assert sorted(ids) == sorted(full_ids) and len(ids) == len(set(ids))
    at = {chunk_id: p for p, chunk_id in enumerate(full_ids)}
    for p, chunk_id in enumerate(ids):
        assert updated.rows.row(p) == full.rows.row(at[chunk_id])
        assert np.array_equal(updated.vectors[p], full.vectors[at[chunk_id]])
    assert sorted(updated.vocabulary) == sorted(full.vocabulary)
    idf = dict(zip(full.vocabulary, full._idf, strict=True))
    assert np.allclose(updated._idf, [idf[t] for t in updated.vocabulary])
    for query in QUERIES:
        vector, terms = embedder.embed_query(query), bm25_terms(query)
        for mine, theirs in (
            (updated.dense(vector, 5), full.dense(vector, 5)),
            (updated.bm25(terms, len(full)), full.bm25(terms, len(full))),
            *(
                (updated.hybrid(vector, terms, 5, 10, f), full.hybrid(vector, terms, 5, 10, f))
                for f in (Weighted(0.7), Reciprocal(60), Relative(0.5))
            ),
        ):
            assert [ids[p] for p, _ in mine] == [full_ids[p] for p, _ in theirs]
            assert np.allclose([s for _, s in mine], [s for _, s in theirs], rtol=1e-5)


def test_ingests_update_the_index_with_the_rows_of_the_touched_files(
    tmp_path: Path, index: Index, embedder: Embedder
) -> None:
    docs = write_docs(tmp_path / "docs")
    index.ingest([docs])
    index.search("storage")
    assert len(held(index)) == local(index).rows_read  # the first index read every row
    assert lines_of(held(index), BACKUP) == (10, 12)
    steps = [
        lambda: write_docs(docs, MORE),  # two files added
        lambda: (docs / "guide/storage.md").write_text(  # edited: chunks below move down
            DOCS["guide/storage.md"].replace("# Storage guide\n", "# Storage guide\n\nIntro.\n\n")
        ),
        lambda: (docs / "notes.txt").unlink(),  # deleted
        lambda: (docs / "faq.md").rename(docs / "questions.md"),  # renamed
    ]
    for step in steps:
        before, read = held(index).generation, local(index).rows_read
        step()
        report = index.ingest([docs])
        touched = report.files_added + report.files_updated + report.files_removed
        assert touched > 0
        updated = held(index)
        assert updated.generation != before
        full = rebuilt(index)
        assert_same(updated, full, embedder)
        # only the touched files' rows were read back (a deleted file has none)
        assert local(index).rows_read - read == report.chunks_embedded + report.chunks_reused
    assert lines_of(held(index), BACKUP) == (13, 15)  # was (10, 12): moved by the edit


def stored_then_grown(tmp_path: Path, embedder: Embedder, translate: bool) -> Settings:
    """A store of the docs ingested by one process; then MORE written into the docs folder."""
    docs = write_docs(tmp_path / "docs")
    settings = load_settings(db=str(tmp_path / "s.db"), translate=translate)
    with Index(settings, embedder=embedder) as first:
        first.ingest([docs])
    write_docs(docs, MORE)
    return settings


def test_a_fresh_store_updates_the_saved_index_it_starts_from(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = stored_then_grown(tmp_path, embedder, translate=False)
    docs = tmp_path / "docs"
    with Index(settings, embedder=embedder) as second:  # a new process: nothing held
        report = second.ingest([docs])
        assert local(second).rows_read == report.chunks_embedded == 4
        assert_same(held(second), rebuilt(second), embedder)


def test_every_row_is_read_when_the_starting_index_is_neither_held_nor_saved(
    tmp_path: Path, embedder: Embedder
) -> None:
    docs = write_docs(tmp_path / "docs")
    settings = load_settings(db=str(tmp_path / "s.db"), translate=False)
    with Index(settings, embedder=embedder) as first:
        first.ingest([docs])
        saved = local(first).directory
    shutil.rmtree(saved)  # as for a store whose index an older ossrag saved in another format
    write_docs(docs, MORE)
    with Index(settings, embedder=embedder) as second:
        second.ingest([docs])
        total = len(held(second))
        assert local(second).rows_read == total == 9
        assert_same(held(second), rebuilt(second), embedder)
        # asked for a generation from the index of one it holds nothing of: a full read
        copy, generation = local(second), held(second).generation
        copy.index = None
        shutil.rmtree(copy.directory)
        changes = Changes("another-generation", frozenset({"not-a-file"}))
        again = copy.index_of(generation, embedder.dim, changes)
        assert copy.rows_read == 2 * total
        assert_same(again, rebuilt(second), embedder)


def test_the_lexicon_follows_an_update_without_reading_every_text(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = stored_then_grown(tmp_path, embedder, translate=True)
    docs = tmp_path / "docs"
    (docs / "notes.txt").unlink()
    with Index(settings, embedder=embedder) as second:  # starts from the saved lexicon
        second.ingest([docs])
        copy, index = local(second), held(second)
        lexicon = copy.lexicon
        assert lexicon is not None and lexicon.generation == index.generation
        start, end, dropped, added = copy._words_changed or ("", "", None, None)
        assert end == index.generation and start != end
        assert "cluster" in dropped and "hnsw" in added  # notes.txt went, guide/index.md came
        texts = [f"{r['heading']}\n{r['text']}" for r in map(index.rows.row, range(len(index)))]
        assert lexicon.counts == word_counts(texts)
        expected = vocabulary(texts)
        assert lexicon.words == list(expected)
        assert lexicon.frequencies.tolist() == list(expected.values())
