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
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ossrag.records import Chunk, Document

__all__ = ["FORMAT_BY_SUFFIX", "MIN_MAX_TOKENS", "CountTokens", "chunk_document", "chunk_id"]

CountTokens = Callable[[str], int]

#: Bump when the same text and settings would be chunked differently: stored files re-chunk.
CHUNKER_VERSION = 1
#: Below this the heading path, fences and overlap leave no room for text.
MIN_MAX_TOKENS = 32

#: Used when ``doc.meta`` has no "format" (the loaders always set it).
FORMAT_BY_SUFFIX = {".md": "markdown", ".markdown": "markdown", ".rst": "rst", ".txt": "text"}

HEADING_SEPARATOR = " › "  # must match Chunk.heading

# Sections longer than this many characters per token of budget skip the whole-section count.
_CHARS_PER_TOKEN_CEILING = 4

# line roles with respect to fenced code blocks
_NONE, _OPEN, _BODY, _CLOSE = 0, 1, 2, 3

_FENCE_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_ATX_CLOSING = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:={3,}|-{3,})[ \t]*$")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
_BLANK_PREFIX = re.compile(r"(?:[ \t]*\n)+")
# a sentence ends at . ! ? … (+ closing quotes/brackets/emphasis) before a space and what looks
# like the start of a sentence (so not "e.g. this"), or right after CJK full stops
_SENTENCE_END = re.compile(r"[.!?…][\"')\]*_`]*[ \t]+(?=[A-Z0-9\"'(\[`*_<])|[。！？]+")
_LIST_MARKER = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+")
_WORD = re.compile(r"\S+")
_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+])\1+[ \t]*$")


# --------------------------------------------------------------------------- public API


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
        parsed = _parse_markdown(text)
    elif fmt == "rst":
        parsed = _parse_rst(text)
    else:
        parsed = _parse_plain(text)
    chunker = _Chunker(text, parsed, max_tokens, count_tokens, overlap_tokens)
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


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Section:
    path: tuple[str, ...]
    head_start: int  # first line index of the heading (== head_end when there is none)
    head_end: int  # line index just after the heading lines
    end: int  # line index just after the section


@dataclass
class _Parsed:
    lines: list[str]
    sections: list[_Section]
    role: list[int]  # per line: _NONE/_OPEN/_BODY/_CLOSE
    opener: list[int]  # per line: index of the fence's opening line, or -1
    list_items: bool  # do list items start new blocks
    # fences ended by a dedented line rather than a closing fence: opener -> last code line
    implicit_end: dict[int, int] = field(default_factory=dict)


def _front_matter_end(lines: list[str]) -> int:
    """Index of the first line after YAML/TOML front matter (0 if there is none)."""
    if not lines:
        return 0
    first = lines[0].rstrip()
    if first not in ("---", "+++"):
        return 0
    closers = ("---", "...") if first == "---" else ("+++",)
    for i in range(1, len(lines)):
        if lines[i].rstrip() in closers:
            return i + 1
    return 0


def _parse_markdown(text: str) -> _Parsed:
    lines = text.split("\n")
    n = len(lines)
    role = [_NONE] * n
    opener = [-1] * n
    start = _front_matter_end(lines)
    headings: list[tuple[int, int, int, str]] = []  # (first line, end line, level, text)
    heading_lines: set[int] = set()
    implicit_end: dict[int, int] = {}
    fence: tuple[int, str, int, int] | None = None  # (opener index, char, length, indent)
    for i in range(start, n):
        line = lines[i]
        if fence is not None:
            oi, ch, length, indent = fence
            s = line.strip()
            if len(s) >= length and s.count(ch) == len(s):
                role[i] = _CLOSE
                opener[i] = oi
                fence = None
                continue
            if not (s and len(line) - len(line.lstrip()) < indent):
                role[i] = _BODY
                opener[i] = oi
                continue
            # dedented below an indented opener: the list item holding the fence ended, and
            # with it the fence (as CommonMark renders it); this line is ordinary markdown
            implicit_end[oi] = i - 1
            fence = None
        m = _FENCE_OPEN.match(line)
        if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
            role[i] = _OPEN
            opener[i] = i
            fence = (i, m.group(2)[0], len(m.group(2)), len(m.group(1)))
            continue
        m = _ATX.match(line)
        if m:
            raw = _ATX_CLOSING.sub("", m.group(2) or "")
            headings.append((i, i + 1, len(m.group(1)), _clean_markdown_inline(raw)))
            heading_lines.add(i)
            continue
        if (
            i - 1 >= start
            and i - 1 not in heading_lines
            and _SETEXT.match(line)
            and _is_setext_title(lines, i - 1, start, role)
        ):
            level = 1 if line.strip()[0] == "=" else 2
            headings.append((i - 1, i + 1, level, _clean_markdown_inline(lines[i - 1])))
            heading_lines.update((i - 1, i))
    return _Parsed(
        lines,
        _sections(headings, start, n),
        role,
        opener,
        list_items=True,
        implicit_end=implicit_end,
    )


def _is_setext_title(lines: list[str], t: int, start: int, role: list[int]) -> bool:
    """Conservative: only a one-line paragraph directly above the underline."""
    title = lines[t]
    stripped = title.strip()
    if not stripped or role[t] != _NONE or len(title) - len(title.lstrip()) >= 4:
        return False
    if stripped[0] in ">|" or _LIST_ITEM.match(title) or _ATX.match(title):
        return False
    return t == start or not lines[t - 1].strip() or role[t - 1] == _CLOSE


def _parse_rst(text: str) -> _Parsed:
    lines = text.split("\n")
    n = len(lines)
    styles: list[tuple[str, bool]] = []
    headings: list[tuple[int, int, int, str]] = []

    def level(style: tuple[str, bool]) -> int:
        if style not in styles:
            styles.append(style)
        return styles.index(style) + 1

    i = 0
    while i < n:
        line = lines[i]
        blank_before = i == 0 or not lines[i - 1].strip()
        over = _RST_ADORNMENT.match(line)
        if (
            over
            and blank_before
            and i + 2 < n
            and lines[i + 1].strip()
            and not _RST_ADORNMENT.match(lines[i + 1])
            and lines[i + 2].rstrip() == line.rstrip()
            and len(line.rstrip()) >= len(lines[i + 1].strip())
        ):
            lvl = level((over.group(1), True))
            headings.append((i, i + 3, lvl, _clean_rst_inline(lines[i + 1])))
            i += 3
            continue
        if (
            blank_before
            and i + 1 < n
            and line.strip()
            and not line[0].isspace()
            and not over
            and (under := _RST_ADORNMENT.match(lines[i + 1]))
            and len(lines[i + 1].rstrip()) >= len(line.rstrip())
        ):
            lvl = level((under.group(1), False))
            headings.append((i, i + 2, lvl, _clean_rst_inline(line)))
            i += 2
            continue
        i += 1
    return _Parsed(lines, _sections(headings, 0, n), [_NONE] * n, [-1] * n, list_items=True)


def _parse_plain(text: str) -> _Parsed:
    lines = text.split("\n")
    n = len(lines)
    return _Parsed(lines, [_Section((), 0, 0, n)], [_NONE] * n, [-1] * n, list_items=False)


def _sections(headings: list[tuple[int, int, int, str]], start: int, n: int) -> list[_Section]:
    sections = []
    first = headings[0][0] if headings else n
    if first > start:
        sections.append(_Section((), start, start, first))
    stack: list[tuple[int, str]] = []
    for k, (h0, h1, lvl, title) in enumerate(headings):
        while stack and stack[-1][0] >= lvl:
            stack.pop()
        stack.append((lvl, title))
        end = headings[k + 1][0] if k + 1 < len(headings) else n
        sections.append(_Section(tuple(t for _, t in stack if t), h0, h1, end))
    return sections


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_MD_REF_LINK = re.compile(r"\[([^\]]*)\]\[[^\]]*\]")
_MD_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_ATTR_LIST = re.compile(r"[ \t]*\{[ \t]*:?[ \t]*[#.][^{}]*\}[ \t]*$")
_EMPHASIS = (
    re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
    re.compile(r"\*(?=\S)(.+?)(?<=\S)\*"),
    re.compile(r"(?<![A-Za-z0-9])_(?=\S)(.+?)(?<=\S)_(?![A-Za-z0-9])"),
)
_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_ESCAPED = re.compile("[\ue021-\ue07e]")


def _clean_markdown_inline(s: str) -> str:
    """Heading text without {#anchor} ids, emphasis, code backticks, links, images, tags."""
    s = _ATTR_LIST.sub("", s)
    s = _MD_IMAGE.sub(r"\1", s)
    s = _MD_LINK.sub(r"\1", s)
    s = _MD_REF_LINK.sub(r"\1", s)
    s = _MD_AUTOLINK.sub(r"\1", s)
    s = _HTML_TAG.sub("", s)
    out = []
    pos = 0
    for m in _CODE_SPAN.finditer(s):  # emphasis rules must not touch code (e.g. __init__)
        out.append(_strip_emphasis(s[pos : m.start()]))
        out.append(m.group(2).strip())
        pos = m.end()
    out.append(_strip_emphasis(s[pos:]))
    return " ".join("".join(out).split())


def _strip_emphasis(s: str) -> str:
    # escaped punctuation (\*) is hidden in the private use area while emphasis is removed
    s = _BACKSLASH_ESCAPE.sub(lambda m: chr(0xE000 + ord(m.group(1))), s)
    for rx in _EMPHASIS:
        s = rx.sub(lambda m: m.group(m.lastindex or 0), s)
    return _ESCAPED.sub(lambda m: chr(ord(m.group()) - 0xE000), s)


_RST_ROLE = re.compile(r":[A-Za-z0-9_.+-]+:`([^`]*)`")
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_REF = re.compile(r"`([^`<]*?)\s*(?:<[^>]*>)?`_{1,2}")
_RST_INTERPRETED = re.compile(r"`([^`]+)`")
_RST_EMPHASIS = re.compile(r"\*{1,2}(?=\S)(.+?)(?<=\S)\*{1,2}")


def _clean_rst_inline(s: str) -> str:
    s = _RST_ROLE.sub(r"\1", s)
    s = _RST_LITERAL.sub(r"\1", s)
    s = _RST_REF.sub(r"\1", s)
    s = _RST_INTERPRETED.sub(r"\1", s)
    s = _RST_EMPHASIS.sub(r"\1", s)
    return " ".join(s.split())


# --------------------------------------------------------------------------- chunking


@dataclass
class _Unit:
    """A contiguous, unsplittable-for-now span of the document with its token cost."""

    start: int  # char offset
    end: int  # char offset, exclusive
    cost: int  # tokens, excluding the tokenizer's fixed per-call overhead
    kind: str  # "heading" | "text" (block) | "code" (block) | "line" | "piece"


class _Chunker:
    def __init__(
        self,
        text: str,
        parsed: _Parsed,
        max_tokens: int,
        count_tokens: CountTokens,
        overlap_tokens: int,
    ) -> None:
        self.text = text
        self.p = parsed
        self.lines = parsed.lines
        self.role = parsed.role
        self.opener = parsed.opener
        self.max_tokens = max_tokens
        self._count = count_tokens
        self.overlap = overlap_tokens
        self.line_starts: list[int] = []
        off = 0
        for line in self.lines:
            self.line_starts.append(off)
            off += len(line) + 1
        self.base = count_tokens("")  # e.g. [CLS] + [SEP]
        # what joining two pieces with a blank line adds (0 for WordPiece, which ignores
        # whitespace; > 0 for counters that count newlines): added per unit when packing
        self.sep = max(
            0, count_tokens("a\n\nb") - count_tokens("a") - count_tokens("b") + self.base
        )
        self._line_cost: dict[int, int] = {}
        self._fence_cost: dict[int, tuple[int, int]] = {}
        # per-section state
        self.budget = 0
        self.body_start = 0

    # ---- small helpers

    def cost(self, s: str) -> int:
        return max(0, self._count(s) - self.base)

    def line_of(self, off: int) -> int:
        return bisect_right(self.line_starts, off) - 1

    def line_end(self, i: int) -> int:
        return self.line_starts[i] + len(self.lines[i])

    def blank(self, i: int) -> bool:
        return not self.lines[i].strip()

    def line_cost(self, i: int) -> int:
        c = self._line_cost.get(i)
        if c is None:
            c = self._line_cost[i] = self.cost(self.lines[i])
        return c

    def reopener_text(self, oi: int, mid_line: bool = False) -> str:
        """The fence opened at line ``oi``, reopened at the top of a chunk: its opening line
        verbatim (fence and info string), or without its indentation when the chunk starts
        in the middle of a line (so that the unindented rest of that line is inside it)."""
        return self.lines[oi].lstrip() if mid_line else self.lines[oi]

    def closer_text(self, oi: int) -> str:
        m = _FENCE_OPEN.match(self.lines[oi])
        assert m is not None
        return m.group(2)

    def fence_costs(self, oi: int) -> tuple[int, int]:
        """(cost of reopening, cost of closing) the fence opened at line ``oi``."""
        c = self._fence_cost.get(oi)
        if c is None:
            c = self._fence_cost[oi] = (
                self.cost(self.reopener_text(oi)),
                self.cost(self.closer_text(oi)),
            )
        return c

    def starts_in_fence(self, start: int) -> int:
        """Opener line index if a chunk starting at ``start`` needs a reopened fence, else -1."""
        i = self.line_of(start)
        return self.opener[i] if self.role[i] in (_BODY, _CLOSE) else -1

    def ends_in_fence(self, end: int) -> int:
        """Opener line index if a chunk ending at ``end`` needs a closing fence, else -1."""
        i = self.line_of(end - 1)
        return self.opener[i] if self.role[i] in (_OPEN, _BODY) else -1

    def fence_overhead(self, start: int, end: int) -> int:
        c = 0
        oi = self.starts_in_fence(start)
        if oi >= 0:
            c += self.fence_costs(oi)[0] + self.sep
        oi = self.ends_in_fence(end)
        if oi >= 0:
            c += self.fence_costs(oi)[1] + self.sep
        return c

    def render(self, start: int, end: int) -> tuple[str, int, int]:
        """Chunk text for the span (blank edges stripped, fences balanced) and its lines."""
        body = self.text[start:end].rstrip()
        m = _BLANK_PREFIX.match(body)
        if m:
            start += m.end()
            body = body[m.end() :]
        end = start + len(body)
        first, last = self.line_of(start), self.line_of(max(start, end - 1))
        oi = self.starts_in_fence(start)
        if oi >= 0:
            mid_line = start != self.line_starts[first]
            body = f"{self.reopener_text(oi, mid_line)}\n{body}"
        oi = self.ends_in_fence(end)
        if oi >= 0:
            body = f"{body}\n{self.closer_text(oi)}"
        return body, first + 1, last + 1

    def fits(self, prefix: str, body: str) -> bool:
        return self._count(f"{prefix}\n{body}" if prefix else body) <= self.max_tokens

    # ---- driver

    def run(self) -> list[tuple[tuple[str, ...], str, int, int]]:
        out: list[tuple[tuple[str, ...], str, int, int]] = []
        for sec in self.p.sections:
            body_lines = [i for i in range(sec.head_end, sec.end) if not self.blank(i)]
            if not body_lines:
                continue  # heading directly followed by a sub-heading (or nothing)
            lo = sec.head_start
            hi = body_lines[-1] + 1
            start = self.line_starts[lo if sec.head_end > sec.head_start else body_lines[0]]
            end = self.line_end(hi - 1)
            path = sec.path
            prefix = HEADING_SEPARATOR.join(path)
            # One count decides whether the whole section fits, unless it is obviously far
            # too long (a token rarely spans more than ~4 chars of text); then the packer
            # below gets there with per-block counts only, and still yields a single chunk
            # if it all fits.
            if end - start <= _CHARS_PER_TOKEN_CEILING * self.max_tokens:
                text, first, last = self.render(start, end)
                if self.fits(prefix, text):
                    out.append((path, text, first, last))
                    continue
            path, prefix, prefix_cost = self.shorten_path(path)
            self.budget = self.max_tokens - self.base - prefix_cost - (self.sep if path else 0)
            self.body_start = self.line_starts[body_lines[0]]
            units = self.units(sec, lo, hi)
            for s, e in self.pack(units, prefix):
                text, first, last = self.render(s, e)
                out.append((path, text, first, last))
        return out

    def shorten_path(self, path: tuple[str, ...]) -> tuple[tuple[str, ...], str, int]:
        """Keep the heading prefix within a quarter of the window (drop outer levels first).

        Returns the path, the prefix string and its cost (0 for an empty path)."""
        if not path:
            return path, "", 0
        cap = self.max_tokens // 4
        prefix = HEADING_SEPARATOR.join(path)
        c = self.cost(prefix)
        if c <= cap:
            return path, prefix, c
        while len(path) > 1 and self.cost(HEADING_SEPARATOR.join(path)) > cap:
            path = path[1:]
        if path and self.cost(path[-1]) > cap:
            words = path[-1].split()
            while len(words) > 1 and self.cost(" ".join(words)) > cap:
                words = words[: len(words) // 2]
            title = " ".join(words)
            if self.cost(title) > cap:
                title = title[: cap // 2]
            path = (title,)
        prefix = HEADING_SEPARATOR.join(path)
        return path, prefix, self.cost(prefix)

    # ---- splitting a section into units that each fit the budget

    def units(self, sec: _Section, lo: int, hi: int) -> list[_Unit]:
        lines, role = self.lines, self.role
        blocks: list[tuple[int, int, str]] = []  # (first line, last line, kind)
        if sec.head_end > sec.head_start:
            blocks.append((sec.head_start, sec.head_end - 1, "heading"))
        i = sec.head_end
        while i < hi:
            if self.blank(i):
                i += 1
            elif role[i] == _OPEN:
                j = i + 1
                while j < hi and role[j] == _BODY:
                    j += 1
                if j < hi and role[j] == _CLOSE:
                    j += 1
                blocks.append((i, j - 1, "code"))
                i = j
            else:
                s = i
                i += 1
                while (
                    i < hi
                    and not self.blank(i)
                    and role[i] != _OPEN
                    and not (self.p.list_items and _LIST_ITEM.match(lines[i]))
                ):
                    i += 1
                blocks.append((s, i - 1, "text"))
        units: list[_Unit] = []
        for a, b, kind in blocks:
            start, end = self.line_starts[a], self.line_end(b)
            c = self.line_cost(a) if a == b else self.cost(self.text[start:end])
            if kind == "heading" or c <= self.budget:
                units.append(_Unit(start, end, c, kind))
            elif kind == "code":
                units.extend(self.code_units(a, b))
            else:
                units.extend(self.text_units(a, b, self.budget))
        return units

    def text_units(self, a: int, b: int, avail: int) -> list[_Unit]:
        out: list[_Unit] = []
        for i in range(a, b + 1):
            if self.blank(i):
                continue
            s, e = self.line_starts[i], self.line_end(i)
            c = self.line_cost(i)
            if c <= avail:
                out.append(_Unit(s, e, c, "line"))
                continue
            for ss, se in self.sentences(s, e):
                sc = self.cost(self.text[ss:se])
                if sc <= avail:
                    out.append(_Unit(ss, se, sc, "piece"))
                else:
                    out.extend(self.fit_pieces(ss, se, avail))
        return out

    def code_units(self, a: int, b: int) -> list[_Unit]:
        """Units of a fenced block too long for the window: its lines, never the bare fences."""
        open_cost, close_cost = self.fence_costs(a)
        avail = max(1, self.budget - open_cost - close_cost - 2 * self.sep)
        has_close = self.role[b] == _CLOSE
        last_body = b - 1 if has_close else b
        body: list[_Unit] = []
        for i in range(a + 1, last_body + 1):
            if self.blank(i):
                continue
            s, e = self.line_starts[i], self.line_end(i)
            c = self.line_cost(i)
            if c <= avail:
                body.append(_Unit(s, e, c, "line"))
            else:
                body.extend(self.fit_pieces(s, e, avail))
        if not body:  # only fences and blank lines: nothing to split
            return [_Unit(self.line_starts[a], self.line_end(b), self.line_cost(a), "code")]
        fence_open = _Unit(self.line_starts[a], self.line_end(a), self.line_cost(a), "line")
        first = body[0]
        body[0] = _Unit(fence_open.start, first.end, fence_open.cost + first.cost, first.kind)
        if has_close:
            last = body[-1]
            body[-1] = _Unit(last.start, self.line_end(b), last.cost + self.line_cost(b), last.kind)
        return body

    def sentences(self, s: int, e: int) -> list[tuple[int, int]]:
        """Sentence spans covering ``text[s:e]`` (a list marker stays with its sentence)."""
        out = []
        pos = s
        marker = _LIST_MARKER.match(self.text, s, e)
        for m in _SENTENCE_END.finditer(self.text, marker.end() if marker else s, e):
            cut = m.start() + len(m.group().rstrip())
            out.append((pos, cut))
            pos = m.end()
        out.append((pos, e))
        return [(a, b) for a, b in out if b > a]

    def fit_pieces(self, s: int, e: int, avail: int) -> list[_Unit]:
        """Greedy word-boundary pieces of ``text[s:e]`` (chars as a last resort) within avail."""
        word_starts: list[int] = []
        word_ends: list[int] = []
        for m in _WORD.finditer(self.text, s, e):
            word_starts.append(m.start())
            word_ends.append(m.end())
        out: list[_Unit] = []
        k = 0
        while k < len(word_starts):
            pos = word_starts[k]
            found = self.max_fit(pos, word_ends, k, avail)
            if found is not None:
                j, c = found
                out.append(_Unit(pos, word_ends[j], c, "piece"))
                k = j + 1
                continue
            # a single word longer than the budget: cut it between characters
            wend = word_ends[k]
            while pos < wend:
                cuts = range(pos + 1, wend + 1)
                found = self.max_fit(pos, cuts, 0, avail)
                cut, c = (cuts[found[0]], found[1]) if found else (pos + 1, avail + 1)
                out.append(_Unit(pos, cut, c, "piece"))
                pos = cut
            k += 1
        return out

    def max_fit(self, pos: int, ends: Sequence[int], lo: int, avail: int) -> tuple[int, int] | None:
        """Largest j >= lo with cost(text[pos:ends[j]]) <= avail (``ends`` ascending), and
        that cost; None when even ``ends[lo]`` does not fit. Probes exponentially upwards, then
        bisects, so a huge line costs O(piece length) tokenizer work per piece."""
        text = self.text
        c = self.cost(text[pos : ends[lo]])
        if c > avail:
            return None
        best, best_cost = lo, c
        hi = len(ends) - 1
        step = 1
        while best < hi:
            probe = min(best + step, hi)
            c = self.cost(text[pos : ends[probe]])
            if c > avail:
                hi = probe - 1
                break
            best, best_cost = probe, c
            step *= 2
        lo = best + 1
        while lo <= hi:
            mid = (lo + hi) // 2
            c = self.cost(text[pos : ends[mid]])
            if c <= avail:
                best, best_cost, lo = mid, c, mid + 1
            else:
                hi = mid - 1
        return best, best_cost

    def refine(self, u: _Unit, avail: int) -> list[_Unit] | None:
        """Finer units for ``u``, each within ``avail`` where possible; None if it cannot be
        split further."""
        a, b = self.line_of(u.start), self.line_of(u.end - 1)
        if u.kind == "text" and b > a:
            finer = self.text_units(a, b, avail)
        elif u.kind == "code" and b > a:
            finer = self.code_units(a, b)
        else:
            finer = self.fit_pieces(u.start, u.end, avail)
        if len(finer) <= 1:
            return None
        return finer

    # ---- packing units into chunks

    def pack(self, units: list[_Unit], prefix: str) -> list[tuple[int, int]]:
        budget = self.budget
        pieces: list[tuple[int, int]] = []
        i = 0
        use_overlap = True
        while i < len(units):
            u = units[i]
            start, used = u.start, 0
            if pieces and use_overlap and self.overlap > 0:
                room = budget - u.cost - self.sep - self.fence_overhead(u.start, u.end)
                limit = min(self.overlap, budget // 2, room)
                ov = self.overlap_start(*pieces[-1], limit)
                if ov is not None:
                    start, used = ov
            # estimated tokens of text[start:units[j].end], without reopened/closed fences
            total = used + (self.sep if used else 0) + u.cost
            j = i
            while j + 1 < len(units):
                nxt_total = total + self.sep + units[j + 1].cost
                if nxt_total + self.fence_overhead(start, units[j + 1].end) > budget:
                    break
                j += 1
                total = nxt_total
            if j > i:
                # a fenced block too long for the window starts a new chunk instead of
                # filling the end of this one with its first few lines
                oi = self.ends_in_fence(units[j].end)
                if oi >= 0 and self.line_starts[oi] > start:
                    k = j
                    while k > i and units[k].start > self.line_starts[oi]:
                        k -= 1
                    if k > i and not (k == 1 and units[0].kind == "heading"):
                        j = k - 1
            oi = self.starts_in_fence(start)
            if oi in self.p.implicit_end and start != self.line_starts[self.line_of(start)]:
                # starting mid-line in a fence that ends without a closing line: the chunk
                # must not reach past that end (its reopened fence would never close)
                while j > i and self.line_of(units[j].start) > self.p.implicit_end[oi]:
                    j -= 1
            if i == 0 and j == 0 and units[0].kind == "heading" and len(units) > 1:
                # the heading line alone would be a chunk: split the next block so that its
                # start fits after the heading if it is prose; if it is code, leave the
                # heading to the path prefix only
                nxt, room = units[1], budget - u.cost - self.sep
                finer = None
                if nxt.kind != "code" and self.role[self.line_of(nxt.start)] == _NONE and room > 0:
                    finer = self.refine(nxt, room)
                if finer:
                    units[1:2] = finer
                else:
                    units.pop(0)
                continue
            body, _, _ = self.render(start, units[j].end)
            if not self.fits(prefix, body):
                if start != u.start:
                    use_overlap = False
                    continue
                if j > i:
                    # shrink by one unit at a time; rare (only when counts are not additive)
                    k = j - 1
                    while k > i and not self.fits(prefix, self.render(start, units[k].end)[0]):
                        k -= 1
                    if k > i or self.fits(prefix, self.render(start, units[i].end)[0]):
                        j = k
                    else:
                        finer = self.refine(u, max(1, u.cost // 2))
                        if finer:
                            units[i : i + 1] = finer
                            continue
                else:
                    finer = self.refine(u, max(1, u.cost // 2))
                    if finer:
                        units[i : i + 1] = finer
                        continue
                    # cannot get smaller than one character: emit as is
            pieces.append((start, units[j].end))
            i = j + 1
            use_overlap = True
        return pieces

    def overlap_start(self, prev_start: int, prev_end: int, limit: int) -> tuple[int, int] | None:
        """Start offset and cost of the trailing whole lines (or sentences) of the previous
        piece to repeat, within ``limit`` tokens; None for no overlap.

        Never repeats the whole previous piece or reaches into the heading, and never enters
        a fenced block unless the previous piece ended inside it (then only its code lines).
        """
        if limit <= 0:
            return None
        in_code = self.ends_in_fence(prev_end) >= 0
        floor = max(prev_start, self.body_start)
        line = self.line_of(prev_end - 1)
        seg_end = prev_end
        start: int | None = None
        acc = 0
        while line >= 0:
            seg_start = max(self.line_starts[line], floor)
            if seg_start >= seg_end:
                break
            if not self.text[seg_start:seg_end].strip():  # blank line: free, keep going
                line -= 1
                seg_end = self.line_end(line) if line >= 0 else 0
                continue
            r = self.role[line]
            if (in_code and r != _BODY) or (not in_code and r != _NONE):
                break
            if seg_start > floor:  # not the whole previous piece: try the whole line
                whole = seg_start == self.line_starts[line] and seg_end == self.line_end(line)
                c = self.line_cost(line) if whole else self.cost(self.text[seg_start:seg_end])
                if acc + c <= limit:
                    acc += c + self.sep
                    start = seg_start
                    line -= 1
                    seg_end = self.line_end(line) if line >= 0 else 0
                    continue
            if start is None and not in_code:  # trailing sentences of this line instead
                for ss, _ in reversed(self.sentences(seg_start, seg_end)):
                    if ss == seg_start:
                        break
                    sc = self.cost(self.text[ss:seg_end])
                    if sc > limit:
                        break
                    start, acc = ss, sc
            break
        if start is None:
            return None
        return start, acc
