"""Incremental sync of files into the store: load → chunk → embed → write, pipelined.

Write order keeps the store consistent if the process dies at any point: a file's old chunks
are deleted by doc id before its new ones are inserted, and its manifest row is written only
after those chunks are flushed. A re-run therefore redoes exactly the files whose manifest row
is missing or stale, and never leaves a duplicate.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ossrag.chunk.chunker import CHUNKER_VERSION, chunk_document
from ossrag.embed.encoders import Embedder, Vectors
from ossrag.errors import LoadError
from ossrag.load.files import Found, Skipped, discover, load
from ossrag.records import Chunk, Document, doc_id_for
from ossrag.store.milvus import FileRecord, Store

FLUSH_EVERY_CHUNKS = 4096  # fewer, larger segments keep Milvus Lite searches fast
EMBED_BATCH_CHUNKS = 256


@dataclass
class IngestReport:
    """What an ingest did, file by file and chunk by chunk."""

    files_added: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_reused: int = 0  # chunks of edited files whose text was stored: vector kept
    chunks_deleted: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def warnings(self) -> list[str]:
        """One line per skipped file; control characters (a newline in a name) are escaped."""
        return [_escaped(f"{source}: {reason}") for source, reason in self.skipped]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files_added": self.files_added,
            "files_updated": self.files_updated,
            "files_unchanged": self.files_unchanged,
            "files_removed": self.files_removed,
            "files_skipped": len(self.skipped),
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "chunks_deleted": self.chunks_deleted,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Changed:
    """A new or edited file, chunked and waiting to be embedded."""

    document: Document
    chunks: list[Chunk]
    previous: FileRecord | None


@dataclass(frozen=True)
class Progress:
    """Sent to the progress callback after each file is settled."""

    files_done: int
    files_total: int
    chunks_embedded: int


ProgressCallback = Callable[[Progress], None]
Chunker = Callable[[Document], list[Chunk]]
_DONE = object()


class Ingestor:
    """Syncs paths into a store with one embedder and chunk budget."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        chunk_tokens: int = 256,
        chunk_overlap: int = 32,
        max_bytes: int = 20_000_000,
        chunker: Chunker | None = None,
        lexicon: bool = False,
        roots: Sequence[Path] | None = None,
    ) -> None:
        self.store = store
        self.roots = roots  # when set, every file is re-checked under them as it is read
        self.chunker = chunker
        self.lexicon = lexicon  # also prepare the cross-lingual lexicon after a change
        self.embedder = embedder
        self.chunk_tokens = min(chunk_tokens, embedder.max_tokens)
        self.chunk_overlap = chunk_overlap
        self.max_bytes = max_bytes
        recipe = chunker.__name__ if chunker else f"ossrag-{CHUNKER_VERSION}"
        self.chunking = f"{recipe}:{self.chunk_tokens}:{self.chunk_overlap}"

    def run(
        self,
        paths: Sequence[Path],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        prune: bool = True,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Bring the store in line with the files under `paths`."""
        started = time.perf_counter()
        report = IngestReport()
        self.store.ensure(self.embedder.name, self.embedder.dim)
        manifest = self.store.files()
        found: list[Found] = []
        for item in discover(paths, include, exclude):
            if isinstance(item, Skipped):
                report.skipped.append((str(item.path), item.reason))
            else:
                found.append(item)
        with self.store.syncing():  # searches meanwhile see the last complete state
            work: queue.Queue[Any] = queue.Queue(maxsize=8)
            producer = threading.Thread(
                target=self._produce, args=(found, manifest, work, report), daemon=True
            )
            producer.start()
            self._consume(self._drain(work), len(found), report, progress)
            producer.join()
            self._prune(paths, found, manifest, report, prune=prune)
            if report.chunks_embedded or report.chunks_deleted or report.chunks_reused:
                self.store.prepare_search()  # the next search, in any process, starts ready
                if self.lexicon:
                    self.store.prepare_lexicon()
        report.seconds = time.perf_counter() - started
        return report

    # -- pipeline ------------------------------------------------------------------------------

    def _produce(
        self,
        found: list[Found],
        manifest: dict[str, FileRecord],
        out: queue.Queue[Any],
        report: IngestReport,
    ) -> None:
        """Load and chunk files in a thread while the main thread embeds."""
        try:
            for item in found:
                out.put(self._prepare(item, manifest, report))
        except BaseException as exc:  # surfaced in the consumer
            out.put(exc)
        finally:
            out.put(_DONE)

    def _prepare(
        self, item: Found, manifest: dict[str, FileRecord], report: IngestReport
    ) -> _Changed | None:
        previous = manifest.get(doc_id_for(str(item.root), item.source))
        try:
            document = load(item, self.max_bytes, self.roots)
        except LoadError as exc:
            report.skipped.append((exc.source, exc.reason))
            return None
        if file_change(previous, document.sha256, self.chunking) == "unchanged":
            report.files_unchanged += 1
            return None
        if self.chunker is not None:
            chunks = self.chunker(document)
        else:
            chunks = chunk_document(
                document,
                max_tokens=self.chunk_tokens,
                count_tokens=self.embedder.count_tokens,
                overlap_tokens=self.chunk_overlap,
            )
        return _Changed(document, chunks, previous)

    @staticmethod
    def _drain(work: queue.Queue[Any]) -> Iterator[_Changed | None]:
        while (item := work.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _consume(
        self,
        items: Iterator[_Changed | None],
        total: int,
        report: IngestReport,
        progress: ProgressCallback | None,
    ) -> None:
        batch: list[_Changed] = []
        unflushed: list[_Changed] = []
        unflushed_chunks = 0
        for done, item in enumerate(items, 1):
            if item is not None:
                batch.append(item)
            if sum(len(c.chunks) for c in batch) >= EMBED_BATCH_CHUNKS:
                self._write(batch, report)
                unflushed += batch
                unflushed_chunks += sum(len(c.chunks) for c in batch)
                batch = []
                if unflushed_chunks >= FLUSH_EVERY_CHUNKS:
                    self._commit(unflushed)
                    unflushed, unflushed_chunks = [], 0
            if progress is not None:
                progress(Progress(done, total, report.chunks_embedded))
        if batch:
            self._write(batch, report)
            unflushed += batch
        self._commit(unflushed)

    def _write(self, batch: list[_Changed], report: IngestReport) -> None:
        """Embed a batch of files and replace their chunks. A chunk of an edited file whose
        text (with its heading path) is already stored keeps its vector: editing a paragraph
        embeds that paragraph's chunks, and chunks that only moved get their new lines."""
        chunks = [chunk for changed in batch for chunk in changed.chunks]
        edited = [c.document.doc_id for c in batch if c.previous is not None]
        stored = self.store.vectors_by_text(edited)
        plan = plan_chunks(chunks, stored)
        started = time.perf_counter()
        embedded = self.embedder.embed([chunks[i].embed_text for i in plan.embed])
        report.embed_seconds += time.perf_counter() - started
        vectors = plan.vectors(chunks, stored, embedded, self.embedder.dim)
        self.store.delete_docs([changed.document.doc_id for changed in batch])
        self.store.insert_chunks(chunks, vectors)
        report.chunks_embedded += len(plan.embed)
        report.chunks_reused += len(plan.reuse)
        for changed in batch:
            if changed.previous is None:
                report.files_added += 1
            else:
                report.files_updated += 1
                report.chunks_deleted += changed.previous.chunks

    def _commit(self, written: list[_Changed]) -> None:
        """Flush chunks, then record their files: the manifest never runs ahead of the data."""
        self.store.flush()
        self.store.record_files(
            [
                FileRecord(
                    doc_id=c.document.doc_id,
                    root=c.document.root,
                    source=c.document.source,
                    sha256=c.document.sha256,
                    mtime=c.document.mtime,
                    chunks=len(c.chunks),
                    chunking=self.chunking,
                )
                for c in written
            ]
        )
        self.store.flush()

    def _prune(
        self,
        paths: Sequence[Path],
        found: list[Found],
        manifest: dict[str, FileRecord],
        report: IngestReport,
        *,
        prune: bool,
    ) -> None:
        """Delete the chunks of files that vanished from the directories ingested."""
        dirs = [str(Path(p).expanduser().resolve()) for p in paths if Path(p).is_dir()]
        gone = files_removed(manifest, found, dirs, prune=prune, on_disk=os.path.isfile)
        if not gone:
            return
        self.store.delete_docs([record.doc_id for record in gone])
        self.store.flush()
        self.store.forget_files([record.doc_id for record in gone])
        self.store.flush()
        report.files_removed += len(gone)
        report.chunks_deleted += sum(record.chunks for record in gone)


# -- decisions (pure: tests/test_sync_plan.py, and the mutation run, test them without a store) --

FileChange = Literal["new", "changed", "unchanged"]


def file_change(previous: FileRecord | None, sha256: str, chunking: str) -> FileChange:
    """A file read this run against its manifest row: unchanged only when its bytes and the
    chunking recipe (chunker and its settings) are both those stored."""
    if previous is None:
        return "new"
    if previous.sha256 == sha256 and previous.chunking == chunking:
        return "unchanged"
    return "changed"


def files_removed(
    manifest: Mapping[str, FileRecord],
    found: Sequence[Found],
    dirs: Sequence[str],
    *,
    prune: bool,
    on_disk: Callable[[str], bool],
) -> list[FileRecord]:
    """The stored files whose chunks a run deletes: those gone from disk under one of the
    directories ingested (`dirs`, resolved). A file outside them, left out of this run by
    include/exclude patterns, or found but unreadable this time keeps its chunks; with
    `prune=False` (`--keep-missing`) every file does."""
    if not prune:
        return []
    seen = {doc_id_for(str(item.root), item.source) for item in found}
    return [
        record
        for record in manifest.values()
        if record.doc_id not in seen
        and any(_is_under(f"{record.root}/{record.source}", d) for d in dirs)
        and not on_disk(f"{record.root}/{record.source}")
    ]


@dataclass(frozen=True)
class ChunkPlan:
    """Which chunks of a batch are embedded and which keep a stored vector (by position)."""

    embed: list[int]
    reuse: list[int]

    def vectors(
        self, chunks: Sequence[Chunk], stored: Mapping[str, Vectors], embedded: Vectors, dim: int
    ) -> Vectors:
        """Every chunk's vector, in order: its stored one, or the next of `embedded`."""
        vectors = np.empty((len(chunks), dim), dtype=np.float32)
        for i in self.reuse:
            vectors[i] = stored[chunks[i].embed_text]
        vectors[self.embed] = embedded
        return vectors


def plan_chunks(chunks: Sequence[Chunk], stored: Collection[str]) -> ChunkPlan:
    """A chunk whose text with its heading path (`embed_text`) is stored for an edited file
    keeps that vector; the others are embedded. Every chunk is written again with its own
    lines, so one that only moved keeps its vector and gets its new line numbers."""
    embed = [i for i, chunk in enumerate(chunks) if chunk.embed_text not in stored]
    reuse = [i for i, chunk in enumerate(chunks) if chunk.embed_text in stored]
    return ChunkPlan(embed, reuse)


def _escaped(text: str) -> str:
    """`text` on one line, every unprintable character escaped (`\\n`, `\\x1b`)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _is_under(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")
