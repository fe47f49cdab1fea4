"""The Milvus side: a chunk collection (dense + BM25) and a per-file manifest collection."""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from ossrag.embed.crosslingual import Lexicon
from ossrag.embed.encoders import Vectors
from ossrag.embed.lexical import bm25_terms
from ossrag.errors import StoreError, setting
from ossrag.records import Chunk
from ossrag.store.filters import Filter
from ossrag.store.fusion import WEIGHTED_DENSE_WEIGHT, FusionRule, Reciprocal, Relative, Weighted
from ossrag.store.local import Changes, IndexSearcher, LocalCopy
from ossrag.store.memory import SearchIndex
from ossrag.store.search import Hit, Scope, Searcher, doc_id_filter, milvus_string

if TYPE_CHECKING:  # pymilvus (0.4 s to import) is imported when a Store first talks to Milvus
    from pymilvus import MilvusClient, MilvusException

SCHEMA_VERSION = 2  # 2: the manifest records how each file was chunked
INFO_ID = "__ossrag_collection__"
CHUNK_FIELDS = ["id", "doc_id", "source", "heading", "start_line", "end_line", "text", "meta"]


#: Seconds to wait before each new try when the Milvus server cannot be reached.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _milvus_error(exc: Exception) -> MilvusException | None:
    """`exc` if it is pymilvus's error (it cannot be while pymilvus is not imported)."""
    pymilvus = sys.modules.get("pymilvus")
    return exc if pymilvus is not None and isinstance(exc, pymilvus.MilvusException) else None


def _milvus_call(
    action: str,
) -> Callable[[Callable[Concatenate[Store, _P], _R]], Callable[Concatenate[Store, _P], _R]]:
    """Retry a Store method with backoff while the server is unreachable (every call is
    idempotent), loading the collections again if a restarted server released them; then, or
    on any other Milvus error, raise a one-line StoreError."""

    def wrap(method: Callable[Concatenate[Store, _P], _R]) -> Callable[Concatenate[Store, _P], _R]:
        @functools.wraps(method)
        def call(self: Store, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            reloaded = False
            tries = 0
            while True:
                try:
                    if reloaded and not self._loaded:
                        self._load()
                    return method(self, *args, **kwargs)
                except Exception as error:
                    if (exc := _milvus_error(error)) is None:
                        raise
                    from pymilvus.client.types import Status

                    message = " ".join(str(exc.message or exc).split())
                    if "call load()" in message and not reloaded:
                        reloaded, self._loaded = True, False
                        continue
                    if exc.code != Status.CONNECT_FAILED:
                        raise StoreError(
                            f"Milvus at {self.uri} failed to {action}: {message}"
                        ) from None
                    tries += 1
                    if tries > len(self.retry_delays):
                        raise StoreError(
                            f"lost the connection to Milvus at {self.uri} while trying to "
                            f"{action} ({tries} tries): is the server running? "
                            f"({setting('db')})"
                        ) from None
                    time.sleep(self.retry_delays[tries - 1])

        return call

    return wrap


def _locked_elsewhere(path: Path) -> bool:
    """Does another process hold Milvus Lite's lock on this store?"""
    lock = path / "LOCK"
    if not lock.exists():
        return False
    with lock.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection was built with, kept in its manifest's INFO_ID row."""

    embedder: str
    dim: int
    bm25: bool
    schema: int = SCHEMA_VERSION
    generation: str = ""  # changes before every batch of writes: tags saved search indexes


@dataclass(frozen=True)
class FileRecord:
    """One manifest row: a file whose chunks are all stored and flushed."""

    doc_id: str
    root: str
    source: str
    sha256: str
    mtime: float
    chunks: int
    chunking: str = ""  # the chunker and its settings: a change re-chunks the file


def _is_local(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://"))


class Store:
    """A Milvus Lite path or a Milvus server URI, holding one ossrag collection pair.

    A Milvus Lite store is searched through an in-memory `SearchIndex` of its rows (unless
    `memory_index` is off): Lite's own engine is pure Python. The index is rebuilt when the
    collection's generation changes, and Milvus answers while a batch of writes is unflushed.

    A Lite store is opened on the first call that needs Milvus: while the sidecar of its saved
    index is current (see local.LocalCopy.read_sidecar), `info`, `ensure`, the searches and the
    lexicon need none, so a one-shot search neither imports pymilvus nor starts Lite. A process
    that runs for long calls `open` (servers, chat) to hold the store as before. A server is
    connected at once.
    """

    def __init__(
        self,
        uri: str,
        collection: str = "ossrag",
        token: str = "",
        *,
        memory_index: bool = True,
        client: MilvusClient | None = None,
    ) -> None:
        """`client`: another Store's connection to the same Milvus, shared (this Store's
        close then leaves it open)."""
        self.uri = uri
        self.collection = collection
        self.files_collection = f"{collection}_files"
        self._token = token
        self._owns_client = client is None
        self._client = client
        self._connect_lock = threading.Lock()
        self.retry_delays: Sequence[float] = RETRY_DELAYS
        self.memory_index = memory_index and _is_local(uri)
        self._info: CollectionInfo | None = None
        self._loaded = False
        self._writing = False
        self._syncing = False  # an ingest is under way: readers keep the last complete index
        self._local: LocalCopy | None = None
        if _is_local(uri):
            path = Path(uri).expanduser()
            if not path.name.endswith(".db"):
                raise StoreError(f"Milvus Lite path {uri!r} must end in .db (set {setting('db')})")
            self._local = LocalCopy(
                path, path / "ossrag-search" / collection, self._all_rows, self._rows_of
            )
        elif client is None:
            self._client = self._connect(uri, token)
        # The generation the sidecar vouches for; the lock orders sidecar writes after a
        # write's start (`_begin_write` removes it), so none vouches for a store being written.
        self._current = ""
        self._sidecar_lock = threading.Lock()
        self._manifest: tuple[str, dict[str, FileRecord]] | None = None  # (generation, files)
        # Since the generation the last index was built at: the files whose chunks writes
        # touched (None: unknown, the next index reads every row). Guarded by _sidecar_lock.
        self._changes: tuple[str, set[str]] | None = None
        self._creating = False  # between the manifest collection and its info row

    @property
    def client(self) -> MilvusClient:
        """The connection to Milvus, opened on first use (for Lite: the store opened and locked).
        Collection info taken from the sidecar is read again from Milvus then."""
        if self._client is None:
            with self._connect_lock:
                if self._client is None:
                    client = self._connect(self.uri, self._token)
                    if self._info is not None:  # from the sidecar: its collections exist
                        self._load(client)
                    self._client = client
                    self._info = None
        return self._client

    def open(self) -> None:
        """Connect now and read the collection info from Milvus. A Lite store is then held
        (locked) until `close`: a process that runs for long opens it, so that no other process
        writes under it."""
        _ = self.client
        self.info()

    @property
    def connected(self) -> bool:
        """Has this Store talked to Milvus (or been given a connection)?"""
        return self._client is not None

    @cached_property
    def _milvus(self) -> MilvusSearcher:
        return MilvusSearcher(self.client, self.collection)

    @staticmethod
    def _connect(uri: str, token: str) -> MilvusClient:
        from pymilvus import MilvusClient

        is_local = _is_local(uri)
        if is_local:
            # Milvus Lite serves gRPC inside this process and logs a traceback for each RPC it
            # does not implement (query_iterator asks for one and then works without it).
            logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
            # A store locked by another process is reported below, without the engine's traceback.
            logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
            # ... and pymilvus warns that it then uses a client-side timestamp, which is right
            # for a store this process alone writes.
            logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
            path = Path(uri).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path)
        try:
            return MilvusClient(uri=uri, token=token, timeout=30)
        except Exception as exc:
            message = getattr(exc, "message", "") or str(exc) or type(exc).__name__
            message = message.splitlines()[0]
            if is_local and _locked_elsewhere(Path(uri)):
                raise StoreError(
                    f"{uri} is open in another process; share it with `milvus-lite server "
                    f"--data-dir {uri} --port 19531` and set {setting('db')} to http://127.0.0.1:19531"
                ) from None
            # a server refusing the token looks like one that is down: name both settings
            settings = setting("db") + ("" if is_local else f", {setting('token')}")
            raise StoreError(f"cannot open Milvus at {uri} ({settings}): {message}") from None

    def close(self) -> None:
        """Disconnect; for Milvus Lite also stop its in-process server and release the lock."""
        if not self._owns_client or self._client is None:
            return
        self._client.close()
        if _is_local(self.uri):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(Path(self.uri).expanduser()))
            with self._sidecar_lock:
                info = self._info
                current = info is not None and info.generation == self._current != ""
                if self._local is not None and info is not None and current and not self._writing:
                    self._local.refresh_sidecar(asdict(info))

    # -- collections -------------------------------------------------------------------------

    @_milvus_call("read the collection info")
    def info(self) -> CollectionInfo | None:
        """The collection's recorded embedder and features, or None if it does not exist: from
        the sidecar while it is current and Milvus is not open yet, else from Milvus."""
        if self._info is None and not self.connected and (known := self._sidecar_info()):
            self._info = known
        if self._info is None and self.client.has_collection(self.files_collection):
            self._load()
            rows = self.client.get(self.files_collection, ids=[INFO_ID], output_fields=["root"])
            if not rows and self._creating:
                return None  # another thread of this process is creating it: empty until then
            try:
                self._info = CollectionInfo(**json.loads(rows[0]["root"]))
            except (IndexError, ValueError, TypeError):
                raise StoreError(
                    f"collection {self.collection!r} at {self.uri} was not made by this ossrag: "
                    f"choose another name with {setting('collection')}"
                ) from None
        return self._info

    @_milvus_call("create the collections")
    def ensure(self, embedder: str, dim: int) -> CollectionInfo:
        """Create the collections on first use; refuse a different embedder afterwards."""
        info = self.info()
        if info is None:
            self._creating = True
            try:
                info = self._create(embedder, dim)
            finally:
                self._creating = False
        if info.schema != SCHEMA_VERSION:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} was made by an older ossrag "
                f"(schema {info.schema}, now {SCHEMA_VERSION}): ingest into a new "
                f"{setting('collection')} or delete the store and ingest again"
            )
        self.check_embedder(embedder, dim)
        if self.connected:  # else the first call that needs Milvus loads the collections
            self._load()
        return info

    def check_embedder(self, embedder: str, dim: int) -> None:
        info = self.info()
        if info is not None and (info.embedder, info.dim) != (embedder, dim):
            raise StoreError(
                f"collection {self.collection!r} was built with embedder {info.embedder} "
                f"({info.dim}-d), not {embedder} ({dim}-d): set {setting('embedder')} to "
                f"{info.embedder}, or use another {setting('collection')}"
            )

    def _create(self, embedder: str, dim: int) -> CollectionInfo:
        from pymilvus import DataType, MilvusException

        if self.client.has_collection(self.collection):
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} exists but has no ossrag manifest: "
                f"choose another name with {setting('collection')}"
            )
        try:
            info = self._create_chunks(embedder, dim, bm25=True)
        except MilvusException:
            self.client.drop_collection(self.collection)
            info = self._create_chunks(embedder, dim, bm25=False)
        files = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        files.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=64)
        files.add_field("root", DataType.VARCHAR, max_length=4096)
        files.add_field("source", DataType.VARCHAR, max_length=4096)
        files.add_field("sha256", DataType.VARCHAR, max_length=64)
        files.add_field("mtime", DataType.DOUBLE)
        files.add_field("chunks", DataType.INT64)
        files.add_field("chunking", DataType.VARCHAR, max_length=256)
        files.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants one vector field
        index = self.client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(
            self.files_collection, schema=files, index_params=index, consistency_level="Strong"
        )
        self._write_info(info)
        self.client.flush(self.files_collection)
        return info

    def _write_info(self, info: CollectionInfo) -> None:
        """Milvus Lite forgets collection descriptions on reopen: keep our facts in a row."""
        self._upsert_files([FileRecord(INFO_ID, json.dumps(asdict(info)), "", "", 0.0, 0)])
        self._info = info

    def _begin_write(self, doc_ids: Iterable[str] = ()) -> None:
        """Before a write of the chunks of `doc_ids` (none: of the manifest only), recorded for
        the next index; before the first write since the last flush, the sidecar is removed,
        then a new generation written, so no saved search index of the old contents is used
        again, even if this process dies mid-write."""
        with self._sidecar_lock:
            if not self._writing:
                if self._local is not None:
                    self._local.remove_sidecar()
                self._current = ""
                self.open()  # the info rewritten next is Milvus's, not the sidecar's
                info = self.info()
                if info is not None:
                    if self._changes is None and info.generation and self.memory_index:
                        self._changes = (info.generation, set())
                    self._write_info(replace(info, generation=uuid.uuid4().hex))
                self._writing = True
            if self._changes is not None:
                self._changes[1].update(doc_ids)

    def _sidecar_info(self) -> CollectionInfo | None:
        """The collection info the sidecar records, if it is current."""
        facts = self._local.read_sidecar() if self._local is not None else None
        try:
            info = CollectionInfo(**facts) if facts else None
        except TypeError:
            return None
        if info is not None and info.generation:
            self._current = info.generation
            return info
        return None

    def _record_current(self, index: SearchIndex) -> None:
        """Write the sidecar once `index` (saved) is of the generation Milvus holds, and nothing
        is being written: the next process can then search without opening Milvus."""
        if self._local is None or not index.generation or self._current == index.generation:
            return
        with self._sidecar_lock:
            info = self._info
            if self._writing or info is None or info.generation != index.generation:
                return
            if self._local.saved == index.generation:
                self._local.write_sidecar(asdict(info))
                self._current = index.generation

    def _create_chunks(self, embedder: str, dim: int, bm25: bool) -> CollectionInfo:
        from pymilvus import DataType, Function, FunctionType

        info = CollectionInfo(embedder=embedder, dim=dim, bm25=bm25)
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=64)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        schema.add_field("heading", DataType.VARCHAR, max_length=4096)
        schema.add_field("start_line", DataType.INT64)
        schema.add_field("end_line", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=65535)
        schema.add_field("meta", DataType.JSON)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("dense", index_type="AUTOINDEX", metric_type="IP")
        if bm25:
            schema.add_field(
                "terms",
                DataType.VARCHAR,
                max_length=65535,
                enable_analyzer=True,
                analyzer_params={"tokenizer": "standard"},
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["terms"],
                    output_field_names=["sparse"],
                )
            )
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        else:
            schema.add_field("terms", DataType.VARCHAR, max_length=65535)
        self.client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong"
        )
        return info

    def _load(self, client: MilvusClient | None = None) -> None:
        """A store reopened by a new process has its collections released: load them."""
        if not self._loaded:
            for name in (self.collection, self.files_collection):
                (client or self.client).load_collection(name)
            self._loaded = True

    @_milvus_call("list the collections")
    def collection_names(self) -> list[str]:
        """The ossrag collections in this store: those with a file manifest beside them."""
        names = set(self.client.list_collections())
        return sorted(n for n in names if f"{n}_files" in names)

    @_milvus_call("drop the collections")
    def drop(self) -> None:
        with self._sidecar_lock:
            if self._local is not None:
                self._local.remove_sidecar()
            self._current = ""
            self._changes = None
        for name in (self.collection, self.files_collection):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        self._info = None
        self._loaded = False
        if self._local is not None:
            self._local.index = None

    # -- writes ------------------------------------------------------------------------------

    @_milvus_call("write chunks")
    def insert_chunks(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        rows = [
            {
                "id": chunk.id,
                "doc_id": chunk.doc_id,
                "source": chunk.source,
                "heading": chunk.heading,
                "start_line": chunk.start_line,
                "end_line": chunk.end_line,
                "text": chunk.text,
                "meta": chunk.meta,
                "dense": vector.tolist(),
                "terms": bm25_terms(chunk.embed_text),
            }
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        if rows:
            self._begin_write(chunk.doc_id for chunk in chunks)
            self.client.upsert(self.collection, rows)

    @_milvus_call("delete chunks")
    def delete_docs(self, doc_ids: Iterable[str]) -> None:
        """Remove every chunk of these files (the manifest rows stay until `forget_files`)."""
        self._delete_by_doc_id(self.collection, doc_ids)

    @_milvus_call("record files")
    def record_files(self, records: Sequence[FileRecord]) -> None:
        if records:
            self._begin_write()
            self._upsert_files(records)

    def _upsert_files(self, records: Sequence[FileRecord]) -> None:
        rows = [{**asdict(record), "unused": [0.0, 0.0]} for record in records]
        self.client.upsert(self.files_collection, rows)

    @_milvus_call("forget files")
    def forget_files(self, doc_ids: Iterable[str]) -> None:
        self._delete_by_doc_id(self.files_collection, doc_ids)

    def _delete_by_doc_id(self, collection: str, doc_ids: Iterable[str]) -> None:
        """Delete rows of these doc ids, 500 ids to a filter expression."""
        ids = list(doc_ids)
        if ids:
            self._begin_write(ids if collection == self.collection else ())
        for start in range(0, len(ids), 500):
            self.client.delete(collection, filter=doc_id_filter(ids[start : start + 500]))

    @_milvus_call("flush")
    def flush(self) -> None:
        """Seal written rows: unflushed rows are searched ~50x slower in Milvus Lite."""
        for name in (self.collection, self.files_collection):
            self.client.flush(name)
        self._writing = False

    # -- reads -------------------------------------------------------------------------------

    @_milvus_call("read the file manifest")
    def files(self) -> dict[str, FileRecord]:
        """The manifest: every fully stored file by doc id."""
        fields = ["doc_id", "root", "source", "sha256", "mtime", "chunks", "chunking"]
        rows = self._query_all(self.files_collection, f"doc_id != {milvus_string(INFO_ID)}", fields)
        return {row["doc_id"]: FileRecord(**{f: row[f] for f in fields}) for row in rows}

    @_milvus_call("read the file manifest")
    def scope(self, where: Filter) -> Scope:
        """The stored files `where` accepts and those it does not (see ossrag.store.filters)."""
        files = self._cached_files()
        kept = frozenset(d for d, r in files.items() if where.accepts(r.source, r.mtime))
        return Scope(kept, frozenset(files) - kept)

    def _cached_files(self) -> dict[str, FileRecord]:
        """The manifest, read once per generation of a Lite store this process writes (during
        an ingest, the last complete one, as for the in-memory index)."""
        if self._syncing and self._manifest is not None:
            return self._manifest[1]
        info = self.info()
        if not self.memory_index or self._writing or info is None or not info.generation:
            return self.files()
        if self._manifest is None or self._manifest[0] != info.generation:
            self._manifest = (info.generation, self.files())
        return self._manifest[1]

    @_milvus_call("list chunks")
    def chunk_ids(self, doc_ids: Sequence[str] | None = None) -> dict[str, str]:
        """Chunk id → doc id, for all chunks or those of some files."""
        expr = 'id != ""' if doc_ids is None else doc_id_filter(doc_ids)
        rows = self._query_all(self.collection, expr, ["id", "doc_id"])
        return {row["id"]: row["doc_id"] for row in rows}

    @_milvus_call("read stored vectors")
    def vectors_by_text(self, doc_ids: Sequence[str]) -> dict[str, Vectors]:
        """The stored vector of each chunk of these files, keyed by the text it was embedded
        from (heading path, then text: `Chunk.embed_text`)."""
        if not doc_ids:
            return {}
        rows = self._query_all(
            self.collection, doc_id_filter(doc_ids), ["heading", "text", "dense"]
        )
        return {
            (f"{row['heading']}\n{row['text']}" if row["heading"] else row["text"]): np.asarray(
                row["dense"], dtype=np.float32
            )
            for row in rows
        }

    @_milvus_call("count chunks")
    def count(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    @_milvus_call("read chunks")
    def get_chunks(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return list(self.client.get(self.collection, ids=list(ids), output_fields=CHUNK_FIELDS))

    @_milvus_call("read chunks")
    def chunks_in_range(
        self, source: str, start_line: int, end_line: int, limit: int
    ) -> list[dict[str, Any]]:
        """Chunks of `source` overlapping the line range, in line order, from what searches
        read (during an ingest, the last complete in-memory index: no wait on the writer)."""
        return self._searcher().in_range(source, start_line, end_line, limit)

    def _query_all(
        self, collection: str, expr: str, fields: list[str], batch_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        iterator = self.client.query_iterator(
            collection, batch_size=batch_size, filter=expr, output_fields=fields
        )
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()

    @_milvus_call("search")
    def search_dense(self, vector: Vectors, limit: int, scope: Scope | None = None) -> list[Hit]:
        """The nearest chunks by inner product; only those of `scope`'s files when given."""
        return self._searcher().dense(vector, limit, scope)

    @_milvus_call("search")
    def search_bm25(self, query: str, limit: int, scope: Scope | None = None) -> list[Hit]:
        """The chunks BM25 ranks best for the query's terms (none: no hits)."""
        terms = bm25_terms(query)
        return self._searcher().bm25(terms, limit, scope) if terms else []

    @_milvus_call("search")
    def search_hybrid(
        self,
        vector: Vectors,
        query: str,
        limit: int,
        depth: int,
        fusion: FusionRule,
        scope: Scope | None = None,
    ) -> list[Hit]:
        """Dense and BM25 routes, `depth` candidates each, fused as `fusion` says (a query
        without terms is searched dense)."""
        terms = bm25_terms(query)
        if not terms:
            return self._searcher().dense(vector, limit, scope)
        return self._searcher().hybrid(vector, terms, limit, depth, fusion, scope)

    def _searcher(self) -> Searcher:
        """The in-memory copy when it can answer, otherwise Milvus."""
        index = self._search_index()
        return IndexSearcher(index) if index is not None else self._milvus

    @contextmanager
    def syncing(self) -> Iterator[None]:
        """While an ingest writes: searches keep using the last complete in-memory index (and
        lexicon) instead of waiting behind the writer; `prepare_search` swaps in the new one."""
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False

    @_milvus_call("build the search index")
    def prepare_search(self) -> None:
        """Build (or load) the in-memory index of what is stored now, and let searches use it."""
        info = self.info()
        if self._local is None or not self.memory_index or self._writing:
            return
        if info is not None and info.bm25:
            self._record_current(self._index_of(self._local, info))

    def _search_index(self) -> SearchIndex | None:
        """The in-memory index to search, or None to search in Milvus: during an ingest, the
        last complete one; otherwise the current generation's, built when missing."""
        if self._local is None or not self.memory_index:
            return None
        if self._local.index is not None and self._syncing:
            return self._local.index
        info = self.info()
        if self._writing or info is None or not info.bm25:
            return None
        index = self._index_of(self._local, info)
        self._record_current(index)
        return index

    def _index_of(self, local: LocalCopy, info: CollectionInfo) -> SearchIndex:
        """The index of the generation Milvus holds, built from the last one and the files
        writes touched since, when known; from then on the touched files count from it."""
        with self._sidecar_lock:
            started = self._changes
            changes = started and Changes(started[0], frozenset(started[1]))
        index = local.index_of(info.generation, info.dim, changes)
        with self._sidecar_lock:  # unless a write began meanwhile (its base is then unknown)
            if self._changes is started and not self._writing:
                self._changes = None
        return index

    def _rows_of(self, doc_ids: Collection[str]) -> Iterator[dict[str, Any]]:
        """Every chunk row of these files with its vector and terms, 500 files to a query."""
        self._load()
        fields = [*CHUNK_FIELDS, "dense", "terms"]
        ids = sorted(doc_ids)
        for start in range(0, len(ids), 500):
            expr = doc_id_filter(ids[start : start + 500])
            yield from self._query_all(self.collection, expr, fields, batch_size=16384)

    def _all_rows(self) -> Iterator[dict[str, Any]]:
        """Every chunk row with its vector and terms, for the in-memory index."""
        self._load()
        # Milvus's largest page: Lite's iterator costs per page (100k rows: 53 s at 1000, 25 s).
        fields = [*CHUNK_FIELDS, "dense", "terms"]
        return self._query_all(self.collection, 'id != ""', fields, batch_size=16384)

    def lexicon(self) -> Lexicon | None:
        """The corpus vocabulary for questions in other languages (see ossrag.embed.crosslingual).

        Needs the in-memory index (the words come from its rows) and the word encoder; None
        otherwise. Saved beside the index and rebuilt with it, embedding only new words. During
        an ingest, the last complete one.
        """
        if self._syncing and self._local is not None and self._local.lexicon is not None:
            return self._local.lexicon
        return self.prepare_lexicon()

    @_milvus_call("build the cross-lingual lexicon")
    def prepare_lexicon(self) -> Lexicon | None:
        """The lexicon of the index searched now, built (or loaded) if it is of an older one."""
        index = self._search_index()
        if index is None or self._local is None:
            return None
        return self._local.lexicon_of(index)


class MilvusSearcher:
    """A `Searcher` that asks Milvus: any server, or Lite while it has unflushed writes."""

    def __init__(self, client: MilvusClient, collection: str) -> None:
        self.client = client
        self.collection = collection

    def dense(self, vector: Vectors, limit: int, scope: Scope | None) -> list[Hit]:
        result = self.client.search(
            self.collection,
            data=[vector.tolist()],
            anns_field="dense",
            limit=limit,
            filter=scope.expr() if scope else "",
            output_fields=CHUNK_FIELDS,
            search_params={"metric_type": "IP"},
        )
        return [Hit(hit["distance"], hit["entity"]) for hit in result[0]]

    def bm25(self, terms: str, limit: int, scope: Scope | None) -> list[Hit]:
        result = self.client.search(
            self.collection,
            data=[terms],
            anns_field="sparse",
            limit=limit,
            filter=scope.expr() if scope else "",
            output_fields=CHUNK_FIELDS,
            search_params={"metric_type": "BM25"},
        )
        # Milvus Lite returns BM25 scores negated (best = most negative); make higher better.
        return [Hit(abs(hit["distance"]), hit["entity"]) for hit in result[0]]

    def in_range(
        self, source: str, start_line: int, end_line: int, limit: int
    ) -> list[dict[str, Any]]:
        expr = (
            f"source == {milvus_string(source)} and end_line >= {int(start_line)} "
            f"and start_line <= {int(end_line)}"
        )
        rows = self.client.query(
            self.collection, filter=expr, output_fields=CHUNK_FIELDS, limit=limit
        )
        return sorted(rows, key=lambda row: int(row["start_line"]))

    def hybrid(
        self,
        vector: Vectors,
        terms: str,
        limit: int,
        depth: int,
        fusion: FusionRule,
        scope: Scope | None,
    ) -> list[Hit]:
        """Milvus has no `Relative` fusion (its idf stays inside the server): such searches are
        fused with its weighted ranker at its default share."""
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        expr = scope.expr() if scope else ""
        requests = [
            AnnSearchRequest(
                data=[vector.tolist()],
                anns_field="dense",
                param={"metric_type": "IP"},
                limit=depth,
                expr=expr or None,
            ),
            AnnSearchRequest(
                data=[terms],
                anns_field="sparse",
                param={"metric_type": "BM25"},
                limit=depth,
                expr=expr or None,
            ),
        ]
        if isinstance(fusion, Relative):
            fusion = Weighted(WEIGHTED_DENSE_WEIGHT)
        ranker: RRFRanker | WeightedRanker = (
            RRFRanker(fusion.k)
            if isinstance(fusion, Reciprocal)
            else WeightedRanker(fusion.dense_weight, 1 - fusion.dense_weight, norm_score=True)
        )
        result = self.client.hybrid_search(
            self.collection, reqs=requests, ranker=ranker, limit=limit, output_fields=CHUNK_FIELDS
        )
        return [Hit(hit["distance"], hit["entity"]) for hit in result[0]]
