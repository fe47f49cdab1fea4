"""Packing a parsed document into chunks that fit the embedder's window: sections into blocks,
lines, sentences, words and characters, coarse to fine, with overlap and well-formed code fences
(see ossrag.chunk.chunker for the rules)."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ossrag.chunk.markup import (
    FENCE_BODY,
    FENCE_CLOSER,
    FENCE_OPEN,
    FENCE_OPENER,
    LIST_ITEM,
    NOT_FENCE,
    Parsed,
    Section,
)

CountTokens = Callable[[str], int]
HEADING_SEPARATOR = " › "  # must match Chunk.heading

# Sections longer than this many characters per token of budget skip the whole-section count.
_CHARS_PER_TOKEN_CEILING = 4

_BLANK_PREFIX = re.compile(r"(?:[ \t]*\n)+")
# a sentence ends at . ! ? … (+ closing quotes/brackets/emphasis) before a space and what looks
# like the start of a sentence (so not "e.g. this"), or right after CJK full stops
_SENTENCE_END = re.compile(r"[.!?…][\"')\]*_`]*[ \t]+(?=[A-Z0-9\"'(\[`*_<])|[。！？]+")
_LIST_MARKER = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+")
_WORD = re.compile(r"\S+")


@dataclass
class _Unit:
    """A contiguous, unsplittable-for-now span of the document with its token cost."""

    start: int  # char offset
    end: int  # char offset, exclusive
    cost: int  # tokens, excluding the tokenizer's fixed per-call overhead
    kind: str  # "heading" | "text" (block) | "code" (block) | "line" | "piece"


class Packer:
    def __init__(
        self,
        text: str,
        parsed: Parsed,
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
        m = FENCE_OPEN.match(self.lines[oi])
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
        return self.opener[i] if self.role[i] in (FENCE_BODY, FENCE_CLOSER) else -1

    def ends_in_fence(self, end: int) -> int:
        """Opener line index if a chunk ending at ``end`` needs a closing fence, else -1."""
        i = self.line_of(end - 1)
        return self.opener[i] if self.role[i] in (FENCE_OPENER, FENCE_BODY) else -1

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

    def units(self, sec: Section, lo: int, hi: int) -> list[_Unit]:
        lines, role = self.lines, self.role
        blocks: list[tuple[int, int, str]] = []  # (first line, last line, kind)
        if sec.head_end > sec.head_start:
            blocks.append((sec.head_start, sec.head_end - 1, "heading"))
        i = sec.head_end
        while i < hi:
            if self.blank(i):
                i += 1
            elif role[i] == FENCE_OPENER:
                j = i + 1
                while j < hi and role[j] == FENCE_BODY:
                    j += 1
                if j < hi and role[j] == FENCE_CLOSER:
                    j += 1
                blocks.append((i, j - 1, "code"))
                i = j
            else:
                s = i
                i += 1
                while (
                    i < hi
                    and not self.blank(i)
                    and role[i] != FENCE_OPENER
                    and not (self.p.list_items and LIST_ITEM.match(lines[i]))
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
        has_close = self.role[b] == FENCE_CLOSER
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
                if (
                    nxt.kind != "code"
                    and self.role[self.line_of(nxt.start)] == NOT_FENCE
                    and room > 0
                ):
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
            if (in_code and r != FENCE_BODY) or (not in_code and r != NOT_FENCE):
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
