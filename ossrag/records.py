"""Typed records that flow between the stages: documents, chunks, passages, answers."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One loaded file: its text plus where it came from."""

    text: str
    source: str  # path relative to the ingested root, with forward slashes
    root: str  # absolute path of the ingested root
    mtime: float
    sha256: str  # of the raw file bytes
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        return doc_id_for(self.root, self.source)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document sized for the embedder, with its location."""

    id: str
    doc_id: str
    source: str
    heading_path: tuple[str, ...]
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def heading(self) -> str:
        return " › ".join(self.heading_path)

    @property
    def embed_text(self) -> str:
        """What the embedder and BM25 see: the heading path, then the text."""
        return f"{self.heading}\n{self.text}" if self.heading_path else self.text


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its rank and a score where higher is better."""

    rank: int
    score: float
    chunk_id: str
    source: str
    heading: str
    start_line: int
    end_line: int
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    explain: dict[str, Any] | None = None  # why it ranked here (Retriever.explain), when asked

    @property
    def place(self) -> str:
        """Where the passage is, for people: `file › heading path (page n)`."""
        place = self.source + (f" › {self.heading}" if self.heading else "")
        if page := self.meta.get("page"):
            place += f" (page {page})"
        return place

    @property
    def location(self) -> str:
        """The place and its lines: `guide/a.md › Setup (page 3) (lines 4-9)`; every door and
        the prompt cite a passage this way."""
        return f"{self.place} (lines {self.start_line}-{self.end_line})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "source": self.source,
            "heading": self.heading,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "text": self.text,
            **({"meta": self.meta} if self.meta else {}),
            **({"explain": self.explain} if self.explain is not None else {}),
        }


def doc_id_for(root: str, source: str) -> str:
    """Stable id of a file: its absolute path, hashed (the same file under two roots is one doc)."""
    return hashlib.sha256(posixpath.join(root, source).encode()).hexdigest()[:32]
