"""The in-memory copy of a Milvus Lite store's search side, and how it is searched.

Milvus Lite's engine is pure Python, so a Lite store is searched through a `SearchIndex` of its
rows, built from the collection, tagged with the collection's generation and saved beside the
store (a new process loads it in milliseconds while it is current). After writes to a few
files, the index they started from is updated with those files' rows instead of rebuilt. The
cross-lingual lexicon is built from the same rows and kept the same way, embedding only words it
has not seen, and follows such an update from the texts it changed.

A sidecar beside them records the collection's facts (embedder, features, generation) together
with a fingerprint of the store's own files: while both hold, a new process knows the saved
index is current without opening Milvus at all (see `LocalCopy.read_sidecar`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ossrag.embed.crosslingual import Lexicon, load_word_encoder, word_counts
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


def fingerprint(root: Path, skip: Path) -> str:
    """A digest of every file's path, size and modification time under `root` (a Milvus Lite
    store), `skip` and what it holds left out: any write to the store, by any process, through
    ossrag or not, changes it (Lite appends each write to a log file as it is made)."""
    files = []
    for folder, subfolders, names in os.walk(root):
        if Path(folder) == skip.parent and skip.name in subfolders:
            subfolders.remove(skip.name)
        for name in names:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed while we walked: the store is changing
                stat = None
            files.append((os.path.relpath(path, root), stat and (stat.st_size, stat.st_mtime_ns)))
    return hashlib.sha256(json.dumps(sorted(files)).encode()).hexdigest()


@dataclass(frozen=True)
class Changes:
    """What writes did since the collection was at `generation`: every chunk row they wrote or
    deleted is of one of `doc_ids`."""

    generation: str
    doc_ids: frozenset[str]


RowReader = Callable[[], Iterable[dict[str, Any]]]
FileRowReader = Callable[[Collection[str]], Iterable[dict[str, Any]]]


class LocalCopy:
    """The index and lexicon of one collection, kept in `directory` beside the store `root`.

    `read_rows()` reads every chunk row (with its vector and terms) from the collection, and
    `read_rows_of(doc_ids)` those of some files; they are called only when no saved index of the
    wanted generation exists: after writes that touched a few files, the index they started from
    (held, or saved) is updated with those files' rows; otherwise every row is read.
    """

    def __init__(
        self, root: Path, directory: Path, read_rows: RowReader, read_rows_of: FileRowReader
    ) -> None:
        self.root = root
        self.directory = directory
        self.read_rows = read_rows
        self.read_rows_of = read_rows_of
        self.rows_read = 0  # chunk rows read from the collection for indexes, in all
        self.index: SearchIndex | None = None
        self.saved = ""  # the generation of the index this process saved or loaded
        self.lexicon: Lexicon | None = None
        # After an update: (the generation it started from, its own, the word counts of the
        # texts it dropped, of those it added), for the lexicon to follow.
        self._words_changed: tuple[str, str, Counter[str], Counter[str]] | None = None
        self._index_lock = threading.Lock()
        self._lexicon_lock = threading.Lock()

    # -- the sidecar: the collection's facts, while the store's files are unchanged -------------

    @property
    def sidecar(self) -> Path:
        return self.directory.with_name(f"{self.directory.name}.current.json")

    def read_sidecar(self) -> dict[str, Any] | None:
        """The facts `write_sidecar` recorded, if no file of the store changed since; else None."""
        try:
            saved = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or not isinstance(saved.get("facts"), dict):
            return None
        if saved.get("fingerprint") != fingerprint(self.root, self.directory.parent):
            return None
        return saved["facts"]

    def write_sidecar(self, facts: dict[str, Any]) -> None:
        """Record facts that hold for the store's files as they are now (atomically). The caller
        makes sure no write of its own is under way (see Store._record_current)."""
        record = {"facts": facts, "fingerprint": fingerprint(self.root, self.directory.parent)}
        staging = self.sidecar.with_name(f".{self.sidecar.name}.{os.getpid()}.tmp")
        try:
            staging.parent.mkdir(parents=True, exist_ok=True)
            staging.write_text(json.dumps(record), encoding="utf-8")
            os.replace(staging, self.sidecar)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            log.warning("search index facts not saved: %s", exc)

    def refresh_sidecar(self, facts: dict[str, Any]) -> None:
        """After this process closed the store: vouch for `facts` again, for the files as Milvus
        Lite left them (it compacts segments and builds their indexes in the background after a
        flush, and finishes as it closes). Only while the sidecar still holds these facts (no
        writer retired it) and no other process has opened the store (its LOCK is taken for
        the millisecond this takes)."""
        try:
            with (self.root / "LOCK").open("rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                try:
                    if json.loads(self.sidecar.read_text(encoding="utf-8")).get("facts") == facts:
                        self.write_sidecar(facts)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except (OSError, ValueError, AttributeError):
            pass  # held elsewhere, or no sidecar: the next process asks Milvus

    def remove_sidecar(self) -> None:
        """Before a write: from now on a new process asks Milvus (an error here stops the write,
        since a sidecar left in place would vouch for contents about to change)."""
        self.sidecar.unlink(missing_ok=True)

    # -- the index and the lexicon ------------------------------------------------------------

    def index_of(self, generation: str, dim: int, changes: Changes | None = None) -> SearchIndex:
        """The index of this generation: the one held, the saved one, or built and saved (from
        the index of `changes.generation` and the rows of its files, when that one is held or
        saved)."""
        with self._index_lock:
            if self.index is None or self.index.generation != generation:
                self.index = self._open(generation, dim, changes)
            return self.index

    def _open(self, generation: str, dim: int, changes: Changes | None) -> SearchIndex:
        limit_blas_threads()
        if generation and (saved := SearchIndex.load(self.directory, generation)):
            self.saved = generation
            return saved
        base = self._index_at(changes.generation) if changes is not None else None
        if changes is not None and base is not None:
            rows = self._counted(self.read_rows_of(changes.doc_ids) if changes.doc_ids else ())
            index = base.updated(generation, changes.doc_ids, rows, dim)
            old, new = Counter(_texts(base)), Counter(_texts(index))
            dropped, added = (
                word_counts(t.decode() for t in c.elements()) for c in (old - new, new - old)
            )
            self._words_changed = (base.generation, generation, dropped, added)
        else:
            index = SearchIndex.from_rows(generation, self._counted(self.read_rows()), dim)
        if generation:  # a store last written by an older ossrag has none: keep in memory
            try:
                index.save(self.directory)
                self.saved = generation
            except OSError as exc:
                log.warning("search index not saved: %s", exc)
        return index

    def _index_at(self, generation: str) -> SearchIndex | None:
        """The index of this generation if it is held or saved (and of the current format)."""
        if not generation:
            return None
        if self.index is not None and self.index.generation == generation:
            return self.index
        return SearchIndex.load(self.directory, generation)

    def _counted(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            self.rows_read += 1
            yield row

    def lexicon_of(self, index: SearchIndex) -> Lexicon | None:
        """The lexicon of `index`'s rows: the saved one of its generation, or built (reusing the
        word vectors of the previous one); None if it must be built and the word encoder cannot
        be loaded. Loading a saved one loads no encoder: a question that reads as English needs
        none (Lexicon.translate loads it for a foreign one)."""
        with self._lexicon_lock:
            if self.lexicon is None or self.lexicon.generation != index.generation:
                path = self.directory.with_name(f"{self.directory.name}.lexicon.npz")
                saved = Lexicon.load(path)
                if saved is not None and saved.generation == index.generation != "":
                    self.lexicon = saved
                else:
                    if (encoder := load_word_encoder()) is None:
                        return None
                    previous = saved or self.lexicon  # whose word vectors to reuse
                    texts = self._words_now(previous, index.generation)
                    if texts is None:
                        texts = word_counts(t.decode() for t in _texts(index))
                    self.lexicon = Lexicon.build(index.generation, texts, encoder, previous)
                    try:  # kept even without a generation: its vectors stay valid
                        self.lexicon.save(path)
                    except OSError as exc:
                        log.warning("lexicon not saved: %s", exc)
            return self.lexicon

    def _words_now(self, previous: Lexicon | None, generation: str) -> Counter[str] | None:
        """The word counts of this generation's texts, from `previous`'s and the last update's
        changes, when `previous` is of the generation that update started from."""
        changed = self._words_changed
        if previous is None or previous.counts is None or changed is None:
            return None
        start, end, dropped, added = changed
        if previous.generation != start or end != generation or not start:
            return None
        return previous.counts - dropped + added


def _texts(index: SearchIndex) -> list[bytes]:
    """Each row's heading and text, as the lexicon reads them (UTF-8)."""
    headings, texts = index.rows.encoded("heading"), index.rows.encoded("text")
    return [heading + b"\n" + text for heading, text in zip(headings, texts, strict=True)]
