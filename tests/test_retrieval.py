"""Passages from ranked chunks: neighbouring chunks of one section come back as one passage."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from ossrag.config import Settings
from ossrag.embeddings import Embedder
from ossrag.index import Index
from ossrag.models import Passage
from ossrag.retrieval import merge_neighbours


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
