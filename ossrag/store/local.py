"""The in-memory copy of a Milvus Lite store's search side, and how it is searched.

Milvus Lite's engine is pure Python, so a Lite store is searched through a `SearchIndex` of its
rows, built from the collection, tagged with the collection's generation and saved beside the
store (a new process loads it in milliseconds while it is current). The cross-lingual lexicon
is built from the same rows and kept the same way, embedding only words it has not seen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ossrag.embed.crosslingual import Lexicon, load_word_encoder
from ossrag.embed.encoders import Vectors
from ossrag.store.fusion import FusionRule
from ossrag.store.memory import Ranked, SearchIndex, limit_blas_threads
from ossrag.store.search import Hit, Scope

log = logging.getLogger(__name__)


class IndexSearcher:
    """A `Searcher` over an in-memory index."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index

    def dense(self, vector: Vectors, limit: int, scope: Scope | None) -> list[Hit]:
        return self._hits(self.index.dense(vector, limit, self._mask(scope)))

    def bm25(self, terms: str, limit: int, scope: Scope | None) -> list[Hit]:
        return self._hits(self.index.bm25(terms, limit, self._mask(scope)))

    def hybrid(
        self,
        vector: Vectors,
        terms: str,
        limit: int,
        depth: int,
        fusion: FusionRule,
        scope: Scope | None,
    ) -> list[Hit]:
        ranked = self.index.hybrid(vector, terms, limit, depth, fusion, self._mask(scope))
        return self._hits(ranked)

    def in_range(
        self, source: str, start_line: int, end_line: int, limit: int
    ) -> list[dict[str, Any]]:
        return [
            self.index.rows.row(p) for p in self.index.in_range(source, start_line, end_line, limit)
        ]

    def _mask(self, scope: Scope | None) -> np.ndarray | None:
        """Which of the index's rows belong to the scope's files (None: every row)."""
        return None if scope is None else self.index.rows_of(scope.kept)

    def _hits(self, ranked: Ranked) -> list[Hit]:
        return [Hit(score, self.index.rows.row(position)) for position, score in ranked]


class LocalCopy:
    """The index and lexicon of one collection, kept in `directory` beside the store.

    `read_rows()` reads every chunk row (with its vector and terms) from the collection; it is
    called only when no saved index of the wanted generation exists.
    """

    def __init__(self, directory: Path, read_rows: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self.directory = directory
        self.read_rows = read_rows
        self.index: SearchIndex | None = None
        self.lexicon: Lexicon | None = None
        self._index_lock = threading.Lock()
        self._lexicon_lock = threading.Lock()

    def index_of(self, generation: str, dim: int) -> SearchIndex:
        """The index of this generation: the one held, the saved one, or built and saved."""
        with self._index_lock:
            if self.index is None or self.index.generation != generation:
                self.index = self._open(generation, dim)
            return self.index

    def _open(self, generation: str, dim: int) -> SearchIndex:
        limit_blas_threads()
        if generation and (saved := SearchIndex.load(self.directory, generation)):
            return saved
        index = SearchIndex.from_rows(generation, self.read_rows(), dim)
        if generation:  # a store last written by an older ossrag has none: keep in memory
            try:
                index.save(self.directory)
            except OSError as exc:
                log.warning("search index not saved: %s", exc)
        return index

    def lexicon_of(self, index: SearchIndex) -> Lexicon | None:
        """The lexicon of `index`'s rows, loaded or built (reusing the word vectors of the
        previous one); None without the word encoder."""
        if (encoder := load_word_encoder()) is None:
            return None
        with self._lexicon_lock:
            if self.lexicon is None or self.lexicon.generation != index.generation:
                path = self.directory.with_name(f"{self.directory.name}.lexicon.npz")
                saved = Lexicon.load(path)
                if saved is not None and saved.generation == index.generation != "":
                    self.lexicon = saved
                else:
                    texts = (
                        f"{index.rows.string('heading', row)}\n{index.rows.string('text', row)}"
                        for row in range(len(index))
                    )
                    previous = saved or self.lexicon  # whose word vectors to reuse
                    self.lexicon = Lexicon.build(index.generation, texts, encoder, previous)
                    try:  # kept even without a generation: its vectors stay valid
                        self.lexicon.save(path)
                    except OSError as exc:
                        log.warning("lexicon not saved: %s", exc)
            return self.lexicon
