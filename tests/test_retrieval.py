"""Passages from ranked chunks: neighbouring chunks of one section come back as one passage."""

from __future__ import annotations

import shutil
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import MILVUS_DOCS, needs_shared, write_docs

from ossrag.config import Settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.records import Passage
from ossrag.retrieve.retriever import HoldsNothing, merge_neighbours


def chunk(
    rank: int, start: int, end: int, heading: str = "Guide › Backups", text: str = ""
) -> Passage:
    return Passage(
        rank=rank, score=1.0 / rank, chunk_id=f"c{rank}", source="guide.md", heading=heading,
        start_line=start, end_line=end,
        text=text or "\n".join(f"line {n}" for n in range(start, end + 1)),
    )  # fmt: skip


def test_neighbours_of_one_section_join_the_better_ranked_chunk() -> None:
    ranked = [
        chunk(1, 10, 20),
        chunk(2, 5, 9, heading="Guide › Restore"),  # touches, but another section
        chunk(3, 18, 25),  # overlaps the first: lines 18-20 are in both
        chunk(4, 40, 50),  # same section, far away
        chunk(5, 26, 30),  # touches the merged 10-25
        chunk(6, 60, 70, heading="Guide › Restore"),  # would be a fourth passage
        chunk(7, 31, 35),  # touches 10-30, but comes after the list was full
    ]
    first, second, third = merge_neighbours(ranked, 3)
    assert (first.rank, first.chunk_id, first.score) == (1, "c1", 1.0)  # the best chunk leads
    assert (first.start_line, first.end_line) == (10, 30)
    assert first.text == "\n".join(f"line {n}" for n in range(10, 31))  # overlap said once
    assert [(p.rank, p.chunk_id) for p in (second, third)] == [(2, "c2"), (3, "c4")]
    assert merge_neighbours(ranked, 4)[0].end_line == 35


def test_a_chunk_just_before_a_passage_joins_it() -> None:
    (merged,) = merge_neighbours([chunk(1, 20, 25), chunk(2, 10, 19)], 2)
    assert (merged.chunk_id, merged.start_line, merged.end_line) == ("c1", 10, 25)
    assert merged.text == "\n".join(f"line {n}" for n in range(10, 26))


def test_only_the_lines_between_two_chunks_are_asked_about() -> None:
    asked: list[tuple[str, int, int]] = []

    def holds_nothing(source: str, start: int, end: int) -> bool:
        asked.append((source, start, end))
        return True

    ranked = [chunk(1, 20, 25), chunk(2, 28, 30), chunk(3, 10, 16), chunk(4, 40, 41)]
    (merged,) = merge_neighbours(ranked, 1, holds_nothing)
    assert asked == [("guide.md", 26, 27), ("guide.md", 17, 19), ("guide.md", 31, 39)]
    assert (merged.start_line, merged.end_line) == (10, 41)
    lines = merged.text.split("\n")
    assert lines[7:10] == ["", "", ""] and len(lines) == 32  # lines 17-19 blank


def test_a_chunk_that_bridges_two_passages_joins_them() -> None:
    ranked = [chunk(1, 20, 25), chunk(2, 10, 15), chunk(3, 15, 20), chunk(4, 40, 45)]
    first, second = merge_neighbours(ranked, 2)
    assert (first.chunk_id, first.start_line, first.end_line) == ("c1", 10, 25)
    assert first.text == "\n".join(f"line {n}" for n in range(10, 26))
    assert (second.rank, second.chunk_id) == (2, "c4")  # the freed place goes to the next one


def test_texts_that_do_not_repeat_their_overlap_are_kept_whole() -> None:
    # a chunk that starts inside a split code block begins with a synthetic fence line
    ranked = [
        chunk(1, 1, 3, text="```python\nx = 1\ny = 2"),
        chunk(2, 3, 4, text="```python\ny = 2\nz = 3"),
        chunk(3, 2, 3, text="x = 1\ny = 2"),  # inside the first: adds nothing
    ]
    (merged,) = merge_neighbours(ranked, 2)
    assert merged.text == "```python\nx = 1\ny = 2\n```python\ny = 2\nz = 3"
    assert (merged.start_line, merged.end_line) == (1, 4)


def test_text_that_a_better_passage_already_holds_is_said_once() -> None:
    shared = "Data in MinIO stays for a while,\nso that a drop can be rolled back."
    ranked = [
        chunk(1, 1, 2, text=shared),
        chunk(2, 1, 2, heading="Tutorial › Drop", text=shared.replace("\n", "\n  ")),
        chunk(3, 8, 8, heading="FAQ", text="so that a drop can be rolled back."),  # inside c1
        chunk(4, 9, 12, heading="FAQ", text="Intro.\n" + shared),  # holds c1 and says more
        chunk(5, 20, 21, heading="FAQ"),
    ]
    passages = merge_neighbours(ranked, 3)
    assert [(p.rank, p.chunk_id) for p in passages] == [(1, "c1"), (2, "c4"), (3, "c5")]


def test_a_long_section_comes_back_as_one_exact_passage(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    body = [
        f"Step {n}: the backup tool copies segment {n} of the bucket to cold storage."
        for n in range(1, 25)
    ]
    text = "# Backups\n\n" + "\n".join(body) + "\n"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "backups.md").write_text(text, encoding="utf-8")
    index = Index(settings.model_copy(update={"chunk_tokens": 64}), embedder=embedder)
    try:
        index.ingest([docs])
        chunks = len(index.store.chunk_ids())
        # k beyond the chunk count: every chunk is ranked, so every neighbour finds its group
        passages = index.search("backup tool copies segments of the bucket", k=20).passages
    finally:
        index.close()
    assert chunks > 3 and len(passages) < chunks  # the section was split, and joined again
    lines = text.split("\n")
    for passage in passages:  # each joined text is exactly the lines its range cites
        assert passage.text == "\n".join(lines[passage.start_line - 1 : passage.end_line])
    spans = sorted((p.start_line, p.end_line) for p in passages)
    assert all(end < start for (_, end), (start, _) in pairwise(spans))  # no line twice


def blank_lines(*spans: tuple[int, int]) -> HoldsNothing:
    """A `holds_nothing` for guide.md whose given line spans hold no chunk."""
    return lambda source, start, end: (
        source == "guide.md" and any(a <= start and end <= b for a, b in spans)
    )


def test_chunks_of_one_section_join_across_blank_lines() -> None:
    ranked = [
        chunk(1, 36, 36, text="Inserted data goes to object storage."),
        chunk(2, 40, 42, heading="Guide › Etcd", text="## Etcd\n\nMetadata."),
        chunk(3, 38, 38, text="Metadata goes to etcd."),
        chunk(4, 32, 34, text="## Backups\n\nTwo kinds of data."),
        chunk(5, 50, 51),  # same section, but lines 39-49 hold chunks
    ]
    passages = merge_neighbours(ranked, 2, blank_lines((35, 35), (37, 37)))
    assert [(p.rank, p.chunk_id, p.start_line, p.end_line) for p in passages] == [
        (1, "c1", 32, 38),
        (2, "c2", 40, 42),
    ]
    assert passages[0].score == 1.0
    assert passages[0].text == (
        "## Backups\n\nTwo kinds of data.\n\nInserted data goes to object storage.\n\n"
        "Metadata goes to etcd."
    )
    # lines 39-49 hold chunks that are not in the ranking: c5 is a passage of its own
    kept = merge_neighbours(ranked, 3, blank_lines((35, 35), (37, 37)))
    assert [(p.chunk_id, p.start_line, p.end_line) for p in kept] == [
        ("c1", 32, 38),
        ("c2", 40, 42),
        ("c5", 50, 51),
    ]
    # without knowing what lies between, only touching chunks join (the pure ranking)
    alone = merge_neighbours(ranked, 5)
    assert [(p.chunk_id, p.start_line, p.end_line) for p in alone] == [
        ("c1", 36, 36),
        ("c2", 40, 42),
        ("c3", 38, 38),
        ("c4", 32, 34),
        ("c5", 50, 51),
    ]


def test_a_repeated_heading_further_down_is_not_a_continuation() -> None:
    ranked = [
        chunk(1, 10, 12, text="## Backups\n\nCopy the bucket."),
        chunk(2, 16, 18, text="## Backups\n\nSnapshot etcd."),  # ATX heading opens it
        chunk(3, 22, 25, text="Backups again\n=============\nAgain.\nAnd again."),  # setext
        chunk(4, 27, 27, text="More about the last one."),  # continues c3
        chunk(5, 29, 30, text="Backups at last\n---------------"),  # setext, two lines
    ]
    holds_nothing = blank_lines((13, 15), (19, 21), (26, 26), (28, 28))
    passages = merge_neighbours(ranked, 4, holds_nothing)
    assert [(p.chunk_id, p.start_line, p.end_line) for p in passages] == [
        ("c1", 10, 12),
        ("c2", 16, 18),
        ("c3", 22, 27),
        ("c5", 29, 30),
    ]


def test_a_section_split_at_blank_lines_comes_back_whole(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    paragraphs = [
        f"Step {n}: the backup tool copies segment {n} of the bucket to cold storage, "
        f"checks its checksum and records segment {n} in the backup manifest."
        for n in range(1, 9)
    ]
    text = (
        "# Guide\n\n## Backups\n\n" + "\n\n".join(paragraphs) + "\n\n## Notes\n\n"
        "## Backups\n\nA second section with the same heading path.\n"
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(text, encoding="utf-8")
    no_overlap = settings.model_copy(update={"chunk_tokens": 64, "chunk_overlap": 0})
    index = Index(no_overlap, embedder=embedder)
    try:
        index.ingest([docs])
        chunks = sorted(
            (row["start_line"], row["end_line"])
            for row in index.store.chunks_in_range("guide.md", 1, 100, 100)
        )
        passages = index.search("backup tool copies segments of the bucket", k=20).passages
    finally:
        index.close()
    lines = text.split("\n")
    # the section was split at the blank lines between its paragraphs ...
    assert chunks == [(3, 5), (7, 9), (11, 13), (15, 17), (19, 19), (23, 25)]
    joined = sorted((p.start_line, p.end_line, p.text) for p in passages)
    assert (
        joined
        == [
            (3, 19, "\n".join(lines[2:19])),  # ... and joined again, blank lines included
            (23, 25, "\n".join(lines[22:25])),
        ]
    )


@needs_shared(MILVUS_DOCS)
def test_the_faq_answer_on_storage_comes_back_as_one_passage(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    source = MILVUS_DOCS / "faq" / "product_faq.md"
    docs = tmp_path / "faq"
    docs.mkdir()
    shutil.copy(source, docs)
    index = Index(settings, embedder=embedder)
    try:
        index.ingest([docs])
        passages = index.search("Where does Milvus store data?", k=5).passages
    finally:
        index.close()
    lines = [line.rstrip() for line in source.read_text(encoding="utf-8").split("\n")]
    first = passages[0]
    assert (first.heading, first.start_line, first.end_line) == (
        "Product FAQ › Where does Milvus store data?",
        32,
        38,
    )
    assert first.text == "\n".join(lines[31:38])
    assert [p.heading for p in passages].count(first.heading) == 1


@pytest.fixture(scope="module")
def docs_store(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> str:
    """The shared test docs ingested once; tests open it with their own settings."""
    root = tmp_path_factory.mktemp("fusion")
    db = str(root / "store.db")
    index = Index(Settings(db=db), embedder=embedder)
    try:
        index.ingest([write_docs(root / "docs")])
    finally:
        index.close()
    return db


# the docs' sections, by the last part of their heading
SECTIONS = {
    "S": "Where does the engine keep data?",
    "B": "How do I back up?",
    "M": "Similarity metrics",
    "F": "Filters",
    "N": "",  # notes.txt
}
WEIGHTED_03 = {"fusion": "weighted", "dense_weight": 0.3}
RRF = 61 / 2  # RRF scores scaled so that first on both routes (2/61) is 1


@pytest.mark.parametrize(
    ("options", "order", "scores"),
    [
        ({}, "SBMNF", [0.6543, 0.48, 0.4721, 0.4683, 0.4068]),
        ({"dense_weight": 0.3}, "SMBNF", [0.5742, 0.3678, 0.18, 0.1756, 0.1526]),
        ({"fusion": "weighted"}, "SMBNF", [0.6297, 0.4583, 0.36, 0.3513, 0.3051]),
        ({**WEIGHTED_03}, "SMBNF", [0.5872, 0.4166, 0.18, 0.1756, 0.1526]),
        # M is 2nd by BM25 (which lists only S and M) and 4th by dense
        ({"fusion": "rrf"}, "SMBNF", [1.0, (1 / 62 + 1 / 64) * RRF, RRF / 62, RRF / 63, RRF / 65]),
        ({"mode": "dense"}, "SBNMF", [0.6628, 0.3251, 0.275, 0.0434, 0.0268]),
        ({"mode": "bm25"}, "SM", [1.1516, 0.668]),
    ],
)  # fmt: skip
def test_each_fusion_setting_ranks_every_passage(
    docs_store: str,
    embedder: Embedder,
    options: dict[str, object],
    order: str,
    scores: list[float],
) -> None:
    index = Index(Settings(db=docs_store, **options), embedder=embedder)
    try:
        passages = index.search("Where is data kept?", k=5).passages
    finally:
        index.close()
    assert [p.rank for p in passages] == list(range(1, len(order) + 1))
    assert [p.heading.split(" › ")[-1] for p in passages] == [SECTIONS[s] for s in order]
    assert [p.score for p in passages] == pytest.approx(scores, abs=2e-4)
