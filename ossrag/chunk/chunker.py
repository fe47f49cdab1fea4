"""Structure-aware chunking of documents into pieces that fit the embedder's window.

:func:`chunk_document` splits a :class:`~ossrag.records.Document` into sections at its headings
(markdown ATX/setext headings outside fenced code, reStructuredText section titles; plain text
has none), and each section into chunks whose ``embed_text`` (heading path + text) is at most
``max_tokens`` tokens as measured by the caller's ``count_tokens``.

Every chunk's text is a verbatim slice of the original document (blank edge lines and
trailing whitespace stripped), so ``start_line..end_line`` (1-based, inclusive, counted in the
original file, front matter included) are exact, with one exception: when a fenced code block
longer than the window has to be split, a piece that starts inside it gets the block's opening
line prepended (verbatim with its info string; without its indentation if the piece starts in
the middle of a line) and a piece that ends inside it gets a closing fence appended (the
opener's fence characters), so that every chunk is well-formed markdown. Those synthetic lines
are the only text not covered by the line range, and only ever the first and/or last line.

Fences follow CommonMark closely enough for real documents: ``` or ~~~ (3 or more, any
indentation, info string allowed, backtick info strings cannot contain backticks); a fence
closes with the same character at least as long; an unclosed fence runs to the end of the
document; and a fence opened indented (inside a list item) also ends at the first non-blank
line indented less than its opener (where the list item ends), as renderers show it.

Splitting, coarse to fine, always preferring the coarsest boundary that fits:
sections -> blocks (paragraphs, list items, tables, whole fenced code blocks) -> lines ->
sentences -> words -> characters. Consecutive pieces of one section overlap by up to
``overlap_tokens`` (whole trailing lines, or sentences, of the previous piece; never more than
half of the budget); the heading line is only in the section's first piece.

Token counting is assumed to be roughly additive over newline-joined pieces (true for WordPiece
and close for BPE tokenizers): pieces are packed on summed per-block counts and every chunk is
then verified with one real count, shrinking it if needed.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from pathlib import PurePosixPath

from ossrag.chunk.markup import parse_markdown, parse_plain, parse_rst
from ossrag.chunk.pack import CountTokens, Packer
from ossrag.records import Chunk, Document

__all__ = ["FORMAT_BY_SUFFIX", "MIN_MAX_TOKENS", "CountTokens", "chunk_document", "chunk_id"]

#: Bump when the same text and settings would be chunked differently: stored files re-chunk.
CHUNKER_VERSION = 1
#: Below this the heading path, fences and overlap leave no room for text.
MIN_MAX_TOKENS = 32

#: Used when ``doc.meta`` has no "format" (the loaders always set it).
FORMAT_BY_SUFFIX = {".md": "markdown", ".markdown": "markdown", ".rst": "rst", ".txt": "text"}


def chunk_document(
    doc: Document,
    *,
    max_tokens: int,
    count_tokens: CountTokens,
    overlap_tokens: int = 32,
) -> list[Chunk]:
    """Split ``doc`` into chunks with ``count_tokens(chunk.embed_text) <= max_tokens``.

    The format comes from ``doc.meta["format"]`` ("markdown", "rst"; "pages" is plain text
    whose pages are separated by form-feed lines, and each chunk gets ``meta["page"]``: 3, or
    "3-4" across a page break; anything else is plain text), or from the source's suffix when
    absent. Markdown front matter (YAML ``---`` or TOML ``+++``) is not chunked. Sections without
    body text (a heading directly followed by a sub-heading) produce no chunk; their title lives
    on in the children's heading path.
    """
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}, got {max_tokens}")
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must be >= 0, got {overlap_tokens}")
    fmt = doc.meta.get("format") or FORMAT_BY_SUFFIX.get(
        PurePosixPath(doc.source).suffix.lower(), "text"
    )
    text = doc.text
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if fmt == "markdown":
        parsed = parse_markdown(text)
    elif fmt == "rst":
        parsed = parse_rst(text)
    else:
        parsed = parse_plain(text)
    chunker = Packer(text, parsed, max_tokens, count_tokens, overlap_tokens)
    # "pages" (PDF text): a line holding only a form feed separates pages
    breaks = [i for i, line in enumerate(parsed.lines) if line == "\f"] if fmt == "pages" else []
    doc_id = doc.doc_id
    chunks: list[Chunk] = []
    for path, body, start_line, end_line in chunker.run():
        chunks.append(
            Chunk(
                id=chunk_id(doc_id, len(chunks), body),
                doc_id=doc_id,
                source=doc.source,
                heading_path=path,
                start_line=start_line,
                end_line=end_line,
                text=body,
                meta={"page": _pages(breaks, start_line, end_line)} if fmt == "pages" else {},
            )
        )
    return chunks


def _pages(breaks: list[int], start_line: int, end_line: int) -> int | str:
    """The page a chunk is on (1-based), or "first-last" when it runs over a page break."""
    first = bisect_right(breaks, start_line - 1) + 1
    last = bisect_right(breaks, end_line - 1) + 1
    return first if first == last else f"{first}-{last}"


def chunk_id(doc_id: str, ordinal: int, text: str) -> str:
    """Deterministic chunk id: sha256 of (doc_id, ordinal, sha256 of text), 32 hex chars."""
    text_hash = hashlib.sha256(text.encode()).hexdigest()
    return hashlib.sha256(f"{doc_id}\0{ordinal}\0{text_hash}".encode()).hexdigest()[:32]
