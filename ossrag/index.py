"""`Index`: the library's front door. The CLI and the HTTP server are thin shells over it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from ossrag.config import Mode, Settings, load_settings
from ossrag.embeddings import Embedder, load_embedder
from ossrag.ingest import Ingestor, IngestReport, ProgressCallback
from ossrag.llm import LLMClient, LLMConfig
from ossrag.rag import Answer, AskEvent, stream_answer
from ossrag.retrieval import Retriever, SearchResult
from ossrag.store import Store


class Index:
    """A document index in Milvus with its embedder, retriever and LLM, from one Settings."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if store is not None:
            self.__dict__["store"] = store

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.db, self.settings.collection, self.settings.token)

    @cached_property
    def embedder(self) -> Embedder:
        s = self.settings
        return load_embedder(s.embedder, s.embed_base_url or s.base_url, s.embed_api_key)

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(self.store, self.embedder)

    @cached_property
    def llm(self) -> LLMClient:
        s = self.settings
        return LLMClient(
            LLMConfig(
                base_url=s.base_url,
                model=s.model,
                api_key=s.api_key,
                effort=s.effort,
                effort_style=s.effort_style,
                max_tokens=s.max_tokens,
                timeout=s.timeout,
            )
        )

    def ingest(
        self,
        paths: Sequence[Path | str],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        prune: bool = True,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        ingestor = Ingestor(
            self.store,
            self.embedder,
            chunk_tokens=self.settings.chunk_tokens,
            chunk_overlap=self.settings.chunk_overlap,
        )
        return ingestor.run(
            [Path(p) for p in paths],
            include=include,
            exclude=exclude,
            prune=prune,
            progress=progress,
        )

    def search(self, query: str, k: int | None = None, mode: Mode | None = None) -> SearchResult:
        return self.retriever.search(query, k or self.settings.top_k, mode or self.settings.mode)

    def ask_stream(
        self,
        question: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        effort: str | None = None,
        history: Sequence[dict[str, Any]] = (),
    ) -> Iterator[AskEvent]:
        """Retrieve, then stream the answer: see `ossrag.rag.stream_answer`."""
        started = time.perf_counter()
        result = self.search(question, k, mode)
        retrieve_ms = (time.perf_counter() - started) * 1000
        yield from stream_answer(
            question,
            result,
            self.llm,
            effort=effort or self.settings.effort,
            history=history,
            retrieve_ms=retrieve_ms,
        )

    def ask(self, question: str, **options: Any) -> Answer:
        for event in self.ask_stream(question, **options):
            if isinstance(event, Answer):
                return event
        raise AssertionError("stream_answer always ends with an Answer")

    def status(self, check_llm: bool = True) -> dict[str, Any]:
        info = self.store.info()
        files = len(self.store.files()) if info else 0
        chunks = self.store.count() if info else 0
        s = self.settings
        ok, detail = self.llm.check() if check_llm else (False, "not checked")
        return {
            "db": s.db,
            "collection": s.collection,
            "files": files,
            "chunks": chunks,
            "embedder": {
                "name": info.embedder if info else s.embedder,
                "dim": info.dim if info else None,
            },
            "bm25": info.bm25 if info else None,
            "llm": {"base_url": s.base_url, "model": s.model, "ok": ok, "detail": detail},
        }

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
