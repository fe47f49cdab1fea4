"""The incremental-sync decisions, without a store or a model: which files are new, changed,
unchanged or removed, and which chunks of an edited file keep their stored vectors."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ossrag.chunk.chunker import chunk_document
from ossrag.engine.ingest import ChunkPlan, _is_under, file_change, files_removed, plan_chunks
from ossrag.load.files import Found
from ossrag.records import Chunk, Document, doc_id_for
from ossrag.store.milvus import FileRecord

ROOT = "/data/docs"


def record(source: str, root: str = ROOT, sha: str = "s1", chunking: str = "c1") -> FileRecord:
    return FileRecord(doc_id_for(root, source), root, source, sha, 0.0, 2, chunking)


def found(source: str, root: str = ROOT) -> Found:
    return Found(Path(root), Path(root) / source, source)


def chunk(text: str, *heading: str, start: int = 1) -> Chunk:
    return Chunk("id", "doc", "a.md", heading, start, start + text.count("\n"), text)


# -- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "sha", "chunking", "change"),
    [
        (None, "s1", "c1", "new"),
        (record("a.md"), "s1", "c1", "unchanged"),
        (record("a.md"), "s2", "c1", "changed"),  # edited
        (record("a.md"), "s1", "c2", "changed"),  # other chunk settings: re-chunked
        (record("a.md"), "s2", "c2", "changed"),
    ],
)
def test_file_change(previous: FileRecord | None, sha: str, chunking: str, change: str) -> None:
    assert file_change(previous, sha, chunking) == change


def test_only_files_gone_from_disk_under_an_ingested_directory_are_removed() -> None:
    rows = [
        record("kept.md"),  # found again
        record("gone.md"),  # deleted
        record("guide/gone.md"),  # deleted, in a subdirectory
        record("excluded.md"),  # on disk, left out by include/exclude
        record("unreadable.md"),  # found, could not be read, deleted since
        record("x.md", root="/data/other"),  # deleted, outside the directories ingested
        record("y.md", root="/data/docs2"),  # deleted, beside them: a prefix, not a parent
    ]
    manifest = {row.doc_id: row for row in rows}
    on_disk = {f"{ROOT}/kept.md", f"{ROOT}/excluded.md"}
    checked: list[str] = []

    def exists(path: str) -> bool:
        checked.append(path)
        return path in on_disk

    kept, unreadable = found("kept.md"), found("unreadable.md")
    gone = files_removed(manifest, [kept, unreadable], [ROOT], prune=True, on_disk=exists)
    assert gone == [rows[1], rows[2]]
    assert checked == [f"{ROOT}/gone.md", f"{ROOT}/guide/gone.md", f"{ROOT}/excluded.md"]
    both = files_removed(manifest, [kept], [ROOT + "/", "/data/other"], prune=True, on_disk=exists)
    assert both == [rows[1], rows[2], rows[4], rows[5]]
    assert files_removed(manifest, [], [f"{ROOT}/guide"], prune=True, on_disk=exists) == [rows[2]]
    assert files_removed(manifest, [], [], prune=True, on_disk=exists) == []
    assert files_removed(manifest, [], ["/"], prune=True, on_disk=exists) == [
        row for row in rows if row.source not in ("kept.md", "excluded.md")
    ]


def test_keep_missing_removes_nothing() -> None:
    manifest = {row.doc_id: row for row in [record("gone.md")]}
    assert files_removed(manifest, [], [ROOT], prune=False, on_disk=lambda path: False) == []


LABELS = ("unchanged", "edited", "rechunked", "new", "deleted", "excluded", "outside")


@given(st.lists(st.sampled_from(LABELS), max_size=30), st.booleans())
def test_any_mix_of_files_gives_a_plan_that_partitions_them(labels: list[str], prune: bool) -> None:
    """Every file read is new, changed or unchanged as its history says; every stored file not
    read this run is removed exactly when it was deleted under the directory ingested."""
    manifest: dict[str, FileRecord] = {}
    read: list[tuple[Found, str, str]] = []  # (file, sha256, chunking) of files read
    on_disk: set[str] = set()
    for i, label in enumerate(labels):
        root = "/data/other" if label == "outside" else ROOT
        row = record(f"f{i}.md", root)
        if label != "new":
            manifest[row.doc_id] = row
        if label in ("unchanged", "edited", "rechunked", "new"):
            sha = "s2" if label == "edited" else "s1"
            read.append((found(row.source, root), sha, "c2" if label == "rechunked" else "c1"))
        if label in ("excluded", "unchanged", "edited", "rechunked", "new"):
            on_disk.add(f"{root}/{row.source}")

    changes = [
        file_change(manifest.get(doc_id_for(str(f.root), f.source)), sha, chunking)
        for f, sha, chunking in read
    ]
    expected = {"unchanged": "unchanged", "new": "new", "edited": "changed", "rechunked": "changed"}
    assert changes == [expected[label] for label in labels if label in expected]
    files = [f for f, _, _ in read]
    gone = files_removed(manifest, files, [ROOT], prune=prune, on_disk=on_disk.__contains__)
    deleted = [f"f{i}.md" for i, label in enumerate(labels) if label == "deleted"]
    assert [row.source for row in gone] == (deleted if prune else [])
    read_ids = {doc_id_for(str(f.root), f.source) for f in files}
    assert not read_ids & {row.doc_id for row in gone}  # a file read is never removed


@pytest.mark.parametrize(
    ("path", "directory", "under"),
    [
        ("/data/docs/a.md", "/data/docs", True),
        ("/data/docs/a.md", "/data/docs/", True),
        ("/data/docs/guide/a.md", "/data/docs", True),
        ("/data/docs2/a.md", "/data/docs", False),
        ("/data/docs", "/data/docs", False),
        ("/a.md", "/", True),
        ("/data/SCANS_X/a.md", "/data/SCANS_X", True),
    ],
)
def test_is_under(path: str, directory: str, under: bool) -> None:
    assert _is_under(path, directory) is under


@given(st.lists(st.sampled_from(["a", "ab", "b", "a.md"]), min_size=1, max_size=4), st.data())
def test_is_under_means_a_proper_parent(parts: list[str], data: st.DataObject) -> None:
    path = "/" + "/".join(parts)
    directory = "/" + "/".join(data.draw(st.lists(st.sampled_from(["a", "ab", "b"]), max_size=3)))
    slash = data.draw(st.sampled_from(["", "/"]))
    parent = PurePosixPath(directory) in PurePosixPath(path).parents
    assert _is_under(path, directory + slash) == parent


# -- chunks -------------------------------------------------------------------------------------


def test_chunks_whose_text_and_heading_are_stored_keep_their_vectors() -> None:
    chunks = [
        chunk("Intro.", "Guide"),  # stored
        chunk("Intro."),  # same text, no heading: another embed text
        chunk("Intro.", "Other"),  # same text, another heading
        chunk("New paragraph.", "Guide"),
        chunk("Plain."),  # stored, no heading
        chunk("Intro.", "Guide", start=9),  # a repeat of a stored chunk
    ]
    stored = {
        "Guide\nIntro.": np.array([1, 0], dtype=np.float32),
        "Plain.": np.array([0, 1], dtype=np.float32),
        "Gone\nRemoved.": np.array([1, 1], dtype=np.float32),
    }
    plan = plan_chunks(chunks, stored)
    assert plan == ChunkPlan(embed=[1, 2, 3], reuse=[0, 4, 5])
    embedded = np.array([[2, 0], [3, 0], [4, 0]], dtype=np.float64)
    vectors = plan.vectors(chunks, stored, embedded, 2)
    assert vectors.dtype == np.float32
    assert vectors.tolist() == [[1, 0], [2, 0], [3, 0], [4, 0], [0, 1], [1, 0]]


def test_nothing_stored_embeds_everything_and_everything_stored_embeds_nothing() -> None:
    chunks = [chunk("One.", "A"), chunk("Two.", "A")]
    assert plan_chunks(chunks, set()) == ChunkPlan(embed=[0, 1], reuse=[])
    stored = {"A\nOne.": np.ones(3, np.float32), "A\nTwo.": np.zeros(3, np.float32)}
    plan = plan_chunks(chunks, stored)
    assert plan == ChunkPlan(embed=[], reuse=[0, 1])
    vectors = plan.vectors(chunks, stored, np.empty((0, 3), np.float32), 3)
    assert vectors.tolist() == [[1, 1, 1], [0, 0, 0]]
    assert plan_chunks([], stored) == ChunkPlan(embed=[], reuse=[])


def handbook(lines_before: int, changed: int | None = None) -> Document:
    sections = [
        f"## Topic {i}\n\nParagraph {i}{' edited' if i == changed else ''} says something.\n"
        for i in range(4)
    ]
    text = "\n" * lines_before + "# Handbook\n\n" + "\n".join(sections)
    return Document(text, "handbook.md", ROOT, 0.0, "s")


def chunked(document: Document) -> list[Chunk]:
    return chunk_document(document, max_tokens=64, count_tokens=lambda s: len(s.split()))


def test_an_edit_embeds_its_chunk_and_moved_chunks_keep_vectors_with_new_lines() -> None:
    before = chunked(handbook(0))
    stored = {c.embed_text for c in before}
    after = chunked(handbook(3, changed=2))  # three lines pushed in at the top, topic 2 edited
    plan = plan_chunks(after, stored)
    assert [after[i].heading_path[-1] for i in plan.embed] == ["Topic 2"]
    assert plan.reuse == [0, 1, 3]
    for i in plan.reuse:  # the chunk written is the new one: same text, lines 3 further down
        old = next(c for c in before if c.embed_text == after[i].embed_text)
        assert (after[i].start_line, after[i].end_line) == (old.start_line + 3, old.end_line + 3)


@given(
    st.lists(st.tuples(st.sampled_from(["", "H"]), st.sampled_from("xyz")), max_size=12),
    st.sets(st.sampled_from(["x", "y", "H\nx", "H\nz"])),
)
def test_every_chunk_is_embedded_or_reused_once(
    specs: list[tuple[str, str]], stored_texts: set[str]
) -> None:
    chunks = [chunk(text, *([heading] if heading else [])) for heading, text in specs]
    stored = {text: np.full(2, len(text), np.float32) for text in stored_texts}
    plan = plan_chunks(chunks, stored)
    assert sorted(plan.embed + plan.reuse) == list(range(len(chunks)))
    assert plan.embed == sorted(plan.embed) and plan.reuse == sorted(plan.reuse)
    assert [chunks[i].embed_text in stored for i in plan.reuse] == [True] * len(plan.reuse)
    assert [chunks[i].embed_text in stored for i in plan.embed] == [False] * len(plan.embed)
    embedded = -np.arange(2 * len(plan.embed), dtype=np.float32).reshape(-1, 2)
    vectors = plan.vectors(chunks, stored, embedded, 2)
    for row, i in enumerate(plan.embed):
        assert vectors[i].tolist() == embedded[row].tolist()
    for i in plan.reuse:
        assert vectors[i].tolist() == [len(chunks[i].embed_text)] * 2
