"""The one search interface of a store: what a search returns (`Hit`), which files it may
return (`Scope`), and what every backend answers (`Searcher`: three routes and the chunks of a
line range): Milvus itself (`milvus.MilvusSearcher`) or the in-memory copy of a Lite store
(`local.IndexSearcher`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ossrag.embed.encoders import Vectors
from ossrag.store.fusion import FusionRule

_MILVUS_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class Hit:
    """A raw search hit: chunk fields plus the route's score (higher is better)."""

    distance: float
    entity: dict[str, Any]


@dataclass(frozen=True)
class Scope:
    """The files a filtered search may return: those `kept`, not those `dropped`."""

    kept: frozenset[str]
    dropped: frozenset[str]

    def expr(self) -> str:
        """A Milvus boolean expression over doc ids, the shorter of the two lists."""
        if len(self.dropped) < len(self.kept):
            return doc_id_filter(sorted(self.dropped), negate=True) if self.dropped else ""
        return doc_id_filter(sorted(self.kept))


class Searcher(Protocol):
    """Dense, BM25 (over `bm25_terms` of the query) and hybrid search over one collection, and
    the chunks a passage's neighbourhood is read from."""

    def dense(self, vector: Vectors, limit: int, scope: Scope | None) -> list[Hit]: ...

    def bm25(self, terms: str, limit: int, scope: Scope | None) -> list[Hit]: ...

    def hybrid(
        self,
        vector: Vectors,
        terms: str,
        limit: int,
        depth: int,
        fusion: FusionRule,
        scope: Scope | None,
    ) -> list[Hit]: ...

    def in_range(
        self, source: str, start_line: int, end_line: int, limit: int
    ) -> list[dict[str, Any]]:
        """Chunks of `source` overlapping the line range, in line order (at most `limit`)."""


def milvus_string(value: str) -> str:
    """`value` as a double-quoted string literal of Milvus's filter grammar.

    Milvus (Lite and server) knows the escapes \\\\, \\", \\n and \\r but not JSON's \\uXXXX, so
    any other character, non-ASCII or control, goes in as itself.
    """
    return '"' + value.translate(_MILVUS_STRING_ESCAPES) + '"'


def doc_id_filter(doc_ids: Iterable[str], negate: bool = False) -> str:
    """A Milvus expression selecting (or, negated, excluding) the rows of these files."""
    return f"doc_id {'not in' if negate else 'in'} [{', '.join(milvus_string(d) for d in doc_ids)}]"
