"""Edits re-embed only what changed (unchanged chunks keep their vectors and get their new lines),
and searches during an ingest never wait for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import MILVUS_DOCS, EmbedderProxy, needs_shared, write_docs

from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder, Vectors
from ossrag.engine import ingest as ingest_module
from ossrag.engine.index import Index
from ossrag.engine.ingest import Progress
from ossrag.records import doc_id_for


class CountingEmbedder(EmbedderProxy):
    """The real embedder, counting the passages it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.embedded += texts
        return self.inner.embed(texts)


def paragraphs(n: int, changed: int | None = None) -> str:
    """A long document: one section per paragraph, each far below the chunk window."""
    parts = ["# Handbook\n"]
    for i in range(n):
        body = f"Paragraph {i} explains topic {i} of the handbook in its own words."
        if i == changed:
            body = f"Paragraph {i} now explains something else entirely, after an edit."
        parts.append(f"## Topic {i}\n\n{body}\n")
    return "\n".join(parts)


@pytest.fixture
def counted(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[Index, CountingEmbedder]]:
    counting = CountingEmbedder(embedder)
    settings = load_settings(db=str(tmp_path / "s.db"), translate=False)
    with Index(settings, embedder=counting) as index:
        yield index, counting


def one_file(folder: Path, name: str, text: str) -> Path:
    """`folder` holding one file; the file's path."""
    folder.mkdir()
    (folder / name).write_text(text)
    return folder / name


def stored(index: Index, path: Path) -> dict[str, tuple[int, int, list[float]]]:
    rows = index.store.client.query(
        index.store.collection,
        filter=f'doc_id == "{doc_id_for(str(path.parent), path.name)}"',
        output_fields=["text", "start_line", "end_line", "dense"],
    )
    return {r["text"]: (r["start_line"], r["end_line"], list(r["dense"])) for r in rows}


def test_editing_one_paragraph_embeds_only_its_chunk(
    tmp_path: Path, counted: tuple[Index, CountingEmbedder]
) -> None:
    index, counting = counted
    docs = tmp_path / "docs"
    handbook = one_file(docs, "handbook.md", paragraphs(50))
    first = index.ingest([docs])
    assert (first.chunks_embedded, first.chunks_reused) == (50, 0)
    before = stored(index, handbook)

    counting.embedded.clear()
    handbook.write_text(paragraphs(50, changed=17))
    edit = index.ingest([docs])
    assert (edit.files_updated, edit.chunks_embedded, edit.chunks_reused) == (1, 1, 49)
    assert counting.embedded == [
        "Handbook › Topic 17\n## Topic 17\n\n"
        "Paragraph 17 now explains something else entirely, after an edit."
    ]
    after = stored(index, handbook)
    kept = next(text for text in after if "Paragraph 3 " in text)
    assert after[kept] == before[kept]  # same vector, same lines
    result = index.search("something else entirely after an edit", 1)
    assert result.passages[0].text.endswith("after an edit.")


def test_chunks_that_moved_keep_their_vectors_and_get_their_new_lines(
    tmp_path: Path, counted: tuple[Index, CountingEmbedder]
) -> None:
    index, counting = counted
    docs = tmp_path / "docs"
    handbook = one_file(docs, "handbook.md", paragraphs(20))
    index.ingest([docs])
    before = stored(index, handbook)
    counting.embedded.clear()
    handbook.write_text("\n\n\n" + paragraphs(20))  # everything moves three lines down
    report = index.ingest([docs])
    assert (report.chunks_embedded, report.chunks_reused) == (0, 20)
    assert counting.embedded == []
    after = stored(index, handbook)
    assert sorted(after) == sorted(before)
    for text, (start, end, vector) in after.items():
        assert (start, end) == (before[text][0] + 3, before[text][1] + 3)
        assert np.allclose(vector, before[text][2])


@needs_shared(MILVUS_DOCS)
def test_a_one_sentence_edit_of_the_faq_embeds_at_most_two_chunks(
    tmp_path: Path, counted: tuple[Index, CountingEmbedder]
) -> None:
    index, _ = counted
    faq = tmp_path / "faq"
    text = (MILVUS_DOCS / "faq" / "product_faq.md").read_text()
    one_file(faq, "product_faq.md", text)
    first = index.ingest([faq])
    sentence = "These are all x86-dedicated SIMD instruction sets."
    assert sentence in text
    (faq / "product_faq.md").write_text(text.replace(sentence, "All of them are x86 SIMD sets.", 1))
    edit = index.ingest([faq])
    assert edit.chunks_embedded <= 2
    assert edit.chunks_embedded + edit.chunks_reused == first.chunks_embedded


def test_searches_during_an_ingest_see_the_last_complete_state(
    tmp_path: Path, index: Index, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search while an ingest has unflushed writes is answered from the last complete
    in-memory index, not from Milvus behind the writer (which would also show half a sync)."""
    monkeypatch.setattr(ingest_module, "EMBED_BATCH_CHUNKS", 1)  # write each file at once
    index.ingest([docs])
    question = "How are zebra crossings painted?"
    before = [(p.source, p.start_line) for p in index.search(question).passages]
    write_docs(
        docs, {f"new/zebra{i}.md": f"# Zebra {i}\n\nZebra crossings, painted.\n" for i in range(3)}
    )
    paused, resume = threading.Event(), threading.Event()

    def progress(p: Progress) -> None:
        if p.files_done == 4:  # guide/*.md unchanged, zebra0 and zebra1 written
            paused.set()
            assert resume.wait(60)

    writer = threading.Thread(target=index.ingest, args=([docs],), kwargs={"progress": progress})
    writer.start()
    try:
        assert paused.wait(60)
        assert index.store._writing  # rows written, not flushed
        during = [(p.source, p.start_line) for p in index.search(question).passages]
    finally:
        resume.set()
        writer.join(60)
    assert during == before
    after = {p.source for p in index.search(question).passages}
    assert {"new/zebra0.md", "new/zebra1.md", "new/zebra2.md"} <= after
