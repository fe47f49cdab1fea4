"""Markup parsing for the chunker: a document's lines, its sections (markdown ATX and setext
headings outside fenced code, reStructuredText titles, none for plain text), each line's role in
fenced code, and the inline markup stripped from heading titles."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# line roles with respect to fenced code blocks
NOT_FENCE, FENCE_OPENER, FENCE_BODY, FENCE_CLOSER = 0, 1, 2, 3

FENCE_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_ATX_CLOSING = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:={3,}|-{3,})[ \t]*$")
LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+])\1+[ \t]*$")


@dataclass(frozen=True)
class Section:
    path: tuple[str, ...]
    head_start: int  # first line index of the heading (== head_end when there is none)
    head_end: int  # line index just after the heading lines
    end: int  # line index just after the section


@dataclass
class Parsed:
    lines: list[str]
    sections: list[Section]
    role: list[int]  # per line: NOT_FENCE/FENCE_OPENER/FENCE_BODY/FENCE_CLOSER
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


def parse_markdown(text: str) -> Parsed:
    lines = text.split("\n")
    n = len(lines)
    role = [NOT_FENCE] * n
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
                role[i] = FENCE_CLOSER
                opener[i] = oi
                fence = None
                continue
            if not (s and len(line) - len(line.lstrip()) < indent):
                role[i] = FENCE_BODY
                opener[i] = oi
                continue
            # dedented below an indented opener: the list item holding the fence ended, and
            # with it the fence (as CommonMark renders it); this line is ordinary markdown
            implicit_end[oi] = i - 1
            fence = None
        m = FENCE_OPEN.match(line)
        if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
            role[i] = FENCE_OPENER
            opener[i] = i
            fence = (i, m.group(2)[0], len(m.group(2)), len(m.group(1)))
            continue
        m = _ATX.match(line)
        if m:
            raw = _ATX_CLOSING.sub("", m.group(2) or "")
            headings.append((i, i + 1, len(m.group(1)), clean_markdown_inline(raw)))
            heading_lines.add(i)
            continue
        if (
            i - 1 >= start
            and i - 1 not in heading_lines
            and _SETEXT.match(line)
            and _is_setext_title(lines, i - 1, start, role)
        ):
            level = 1 if line.strip()[0] == "=" else 2
            headings.append((i - 1, i + 1, level, clean_markdown_inline(lines[i - 1])))
            heading_lines.update((i - 1, i))
    return Parsed(
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
    if not stripped or role[t] != NOT_FENCE or len(title) - len(title.lstrip()) >= 4:
        return False
    if stripped[0] in ">|" or LIST_ITEM.match(title) or _ATX.match(title):
        return False
    return t == start or not lines[t - 1].strip() or role[t - 1] == FENCE_CLOSER


def parse_rst(text: str) -> Parsed:
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
            headings.append((i, i + 3, lvl, clean_rst_inline(lines[i + 1])))
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
            headings.append((i, i + 2, lvl, clean_rst_inline(line)))
            i += 2
            continue
        i += 1
    return Parsed(lines, _sections(headings, 0, n), [NOT_FENCE] * n, [-1] * n, list_items=True)


def parse_plain(text: str) -> Parsed:
    lines = text.split("\n")
    n = len(lines)
    return Parsed(lines, [Section((), 0, 0, n)], [NOT_FENCE] * n, [-1] * n, list_items=False)


def _sections(headings: list[tuple[int, int, int, str]], start: int, n: int) -> list[Section]:
    sections = []
    first = headings[0][0] if headings else n
    if first > start:
        sections.append(Section((), start, start, first))
    stack: list[tuple[int, str]] = []
    for k, (h0, h1, lvl, title) in enumerate(headings):
        while stack and stack[-1][0] >= lvl:
            stack.pop()
        stack.append((lvl, title))
        end = headings[k + 1][0] if k + 1 < len(headings) else n
        sections.append(Section(tuple(t for _, t in stack if t), h0, h1, end))
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


def clean_markdown_inline(s: str) -> str:
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


def clean_rst_inline(s: str) -> str:
    s = _RST_ROLE.sub(r"\1", s)
    s = _RST_LITERAL.sub(r"\1", s)
    s = _RST_REF.sub(r"\1", s)
    s = _RST_INTERPRETED.sub(r"\1", s)
    s = _RST_EMPHASIS.sub(r"\1", s)
    return " ".join(s.split())
