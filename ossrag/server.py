"""`ossrag serve`: the RAG pipeline as an OpenAI-compatible API, plus a small web UI.

A thin HTTP shell over `ossrag.Index`. One process serves many clients: the embedder and the
Milvus client are loaded once at startup, and every blocking stage (embedding, search, the LLM
stream, ingest) runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.to_thread
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from ossrag.agent import ToolStep
from ossrag.budget import ContextBudgetError
from ossrag.config import ConfigError, Effort, Mode, Settings
from ossrag.console import terminal_safe
from ossrag.embeddings import EmbedderError
from ossrag.filters import Filter, FilterError, filter_from_json
from ossrag.http_guards import (
    HostCheck,
    PlainErrorsAsJson,
    SecurityHeaders,
    allowed_host_names,
    script_hash,
)
from ossrag.index import Index
from ossrag.ingest import IngestReport, Progress
from ossrag.llm import ContentDelta, LLMError, ReasoningDelta
from ossrag.loaders import Found, discover
from ossrag.mcp_server import http_door
from ossrag.models import Passage
from ossrag.rag import Answer, AskEvent, Retrieved, Rewritten
from ossrag.responses import ResponseMemory, ResponseShapes, ResponsesRequest, ResponseStream
from ossrag.retrieval import SearchResult
from ossrag.store import StoreError
from ossrag.structured import (
    BASE_SCHEMA,
    StructuredAnswerError,
    check_schema,
    citation_numbers,
)
from ossrag.usage import counted_usage

log = logging.getLogger("ossrag.server")

WEB_DIR = Path(__file__).parent / "web"
# The RAG "models": the configured retrieval mode, or one forced; the agent searches by itself.
MODELS: dict[str, Mode | None] = {
    "ossrag": None,
    "ossrag-hybrid": "hybrid",
    "ossrag-dense": "dense",
    "ossrag-bm25": "bm25",
    "ossrag-agent": None,
}
AGENT_MODEL = "ossrag-agent"
WORKER_THREADS = 64  # concurrent blocking calls (each open answer stream holds one)
GRACE_SECONDS = 30  # on shutdown, open streams get this long to finish
MAX_JOBS = 100  # ingest jobs remembered

T = TypeVar("T")


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def _error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _error_response(status: int, message: str, kind: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(_error_body(message, kind), status_code=status, headers=headers)


def _api_error(exc: Exception) -> ApiError:
    """A library error as the HTTP error a client should see."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextBudgetError):
        return ApiError(400, str(exc))
    if isinstance(exc, LLMError):
        return ApiError(502, str(exc), "llm_error")
    if isinstance(exc, (StoreError, EmbedderError)):
        return ApiError(503, str(exc), "server_error")
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the request took longer than OSSRAG_REQUEST_TIMEOUT", "timeout")
    log.error("unexpected error", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")


# --------------------------------------------------------------------------- request bodies


FILTER_DOC = (
    'ossrag: only passages of these files, e.g. {"path": ["guide/*"], "type": ["md"], '
    '"since": "2026-01-31"}'
)


def _filter(value: dict[str, Any] | None) -> Filter:
    """The request's `filter` object, or ApiError(400) naming the bad field."""
    try:
        return filter_from_json(value)
    except FilterError as exc:
        raise ApiError(400, str(exc)) from None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_have_text(
        cls, content: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        if isinstance(content, list):
            for i, part in enumerate(content):
                if part.get("type") == "text" and not isinstance(part.get("text"), str):
                    raise ValueError(f"part {i} is of type text but has no string 'text'")
        return content

    @property
    def text(self) -> str:
        """The message's text; content parts other than text are ignored."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class JsonSchemaFormat(BaseModel):
    """`response_format.json_schema`; its name, description and strict flag are not needed."""

    model_config = ConfigDict(extra="allow")

    schema_: dict[str, Any] = Field(alias="schema")


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: prose, a JSON answer (ossrag's), or the client's schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def answer_schema(self, field: str = "response_format.json_schema") -> dict[str, Any] | None:
        """The schema the answer must match, or None for prose; errors name `field`."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return BASE_SCHEMA
        if self.json_schema is None:
            raise ApiError(400, f"{field}: required when type is json_schema")
        try:
            return check_schema(self.json_schema.schema_)
        except StructuredAnswerError as exc:
            raise ApiError(400, f"{field}.schema: {exc}") from None


class ChatRequest(BaseModel):
    """OpenAI's chat-completions body; fields ossrag does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = "ossrag"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    reasoning_effort: Effort | None = None
    response_format: ResponseFormat | None = None
    top_k: int | None = Field(None, ge=1, le=100, description="ossrag: passages to retrieve")
    footnotes: bool = Field(True, description="ossrag: append a Sources list to the answer")
    filter: dict[str, Any] | None = Field(None, description=FILTER_DOC)


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    top_k: int | None = Field(None, ge=1, le=100)
    mode: Mode | None = None
    filter: dict[str, Any] | None = Field(None, description=FILTER_DOC)
    collection: str | None = Field(None, description="ossrag: collection (default: the first)")
    explain: bool = Field(False, description="add each passage's ranks and scores per route")

    @field_validator("query")
    @classmethod
    def _has_words(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is only whitespace")
        return query


class IngestRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description="absolute paths under an allowed root")
    include: list[str] = []
    exclude: list[str] = []
    prune: bool = Field(True, description="remove files that disappeared from the directories")
    collection: str | None = Field(default=None, description="collection (default: the first)")


# --------------------------------------------------------------------------- ingest jobs


@dataclass
class IngestJob:
    """One background ingest and its progress."""

    id: str
    paths: list[str]
    status: str = "queued"  # queued | running | done | failed | cancelled
    files_done: int = 0
    files_total: int = 0
    chunks_embedded: int = 0
    report: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "paths": self.paths,
            "status": self.status,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "chunks_embedded": self.chunks_embedded,
            "report": self.report,
            "error": self.error,
            "created": self.created,
            "finished": self.finished,
        }


class _Cancelled(Exception):
    """Raised from the progress callback to stop an ingest when the server shuts down."""


class IngestJobs:
    """Ingests run one at a time in a background thread (they all write the one store)."""

    def __init__(self, index: Index, roots: Sequence[Path]) -> None:
        self.index = index
        self.roots = list(roots)  # every file is checked under them again as it is read
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ossrag-ingest")
        self._jobs: dict[str, IngestJob] = {}
        self._stop = threading.Event()

    def submit(
        self, paths: list[Path], request: IngestRequest, index: Index | None = None
    ) -> IngestJob:
        """Queue an ingest into `index` (default: the jobs' own)."""
        job = IngestJob(uuid.uuid4().hex[:12], [str(p) for p in paths])
        self._jobs[job.id] = job
        for old in list(self._jobs)[:-MAX_JOBS]:
            if self._jobs[old].finished is not None:
                del self._jobs[old]
        self._executor.submit(self._run, job, paths, request, index or self.index)
        return job

    def sync(self, paths: list[Path]) -> IngestReport:
        """Ingest `paths` on the ingest thread (after jobs already queued) and wait for it."""
        return self._executor.submit(self.index.ingest, paths).result()

    def get(self, job_id: str) -> IngestJob | None:
        return self._jobs.get(job_id)

    def all(self) -> list[IngestJob]:
        return list(self._jobs.values())

    def shutdown(self) -> None:
        """Stop the running ingest after its current file (the store stays consistent)."""
        self._stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: IngestJob, paths: list[Path], request: IngestRequest, index: Index) -> None:
        job.status = "running"

        def progress(p: Progress) -> None:
            job.files_done, job.files_total, job.chunks_embedded = (
                p.files_done,
                p.files_total,
                p.chunks_embedded,
            )
            if self._stop.is_set():
                raise _Cancelled

        try:
            report = index.ingest(
                paths,
                include=request.include,
                exclude=request.exclude,
                prune=request.prune,
                progress=progress,
                roots=self.roots,
            )
            job.report, job.status = report.to_dict(), "done"
        except _Cancelled:
            job.status, job.error = "cancelled", "the server shut down"
        except Exception as exc:  # a background job reports every failure in its status
            job.status, job.error = "failed", str(exc) or type(exc).__name__
            if not isinstance(exc, (StoreError, EmbedderError)):
                log.exception("ingest job %s failed", job.id)
        finally:
            job.finished = time.time()


class FolderWatcher:
    """`ossrag serve --watch DIR`: keeps folders in sync from a background thread, one sync
    per settled group of changes (see ossrag.watch), through the ingest thread."""

    def __init__(self, index: Index, jobs: IngestJobs, paths: list[Path]) -> None:
        for path in paths:
            if not path.expanduser().is_dir():
                raise ConfigError(f"watch {path}: not a directory (OSSRAG_WATCH / --watch)")
        self.index, self.jobs, self.paths = index, jobs, [p.expanduser() for p in paths]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (and create the collections now, before anyone searches)."""
        if self.paths:
            self.index.store.ensure(self.index.embedder.name, self.index.embedder.dim)
            self._thread = threading.Thread(target=self._run, name="ossrag-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching; a sync under way finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        from ossrag.watch import watch_and_sync

        settings = self.index.settings
        shown = ", ".join(str(p) for p in self.paths)
        _status(f"watching {shown}")
        try:
            watch_and_sync(
                self.paths,
                lambda: self.jobs.sync(self.paths),
                lambda synced: _status(synced.status()),
                self._stop,
                ignore=[] if settings.is_server else [Path(settings.db)],
            )
        except Exception as exc:  # the server keeps serving; the terminal says why
            _status(f"stopped watching {shown}: {exc}")
            if not isinstance(exc, (StoreError, EmbedderError)):
                log.exception("watching %s failed", shown)


def _status(line: str) -> None:
    """A status line on the server's terminal (stderr), control characters escaped."""
    print(f"ossrag: {terminal_safe(line)}", file=sys.stderr, flush=True)


def check_ingest_paths(
    paths: Sequence[str], roots: Sequence[str], include: Sequence[str], exclude: Sequence[str]
) -> list[Path]:
    """The paths resolved, if each lies under an allowed root and no symlink below it leads
    out of them; otherwise ApiError(400) naming the path. No file is opened here."""
    if not roots:
        raise ApiError(400, "ingest over HTTP is off: set OSSRAG_ALLOWED_ROOTS / --allowed-root")
    allowed = resolve_roots(roots)

    def inside(path: Path) -> bool:
        return any(path.is_relative_to(root) for root in allowed)

    resolved: list[Path] = []
    for i, raw in enumerate(paths):
        field = f"paths[{i}]"
        try:
            path = Path(raw)
            if not path.is_absolute():
                raise ApiError(400, f"{field}: ingest path {raw!r} must be absolute")
            real = path.resolve()
            if not inside(real):
                raise ApiError(400, f"{field}: ingest path {raw!r} is outside the allowed roots")
            if not real.exists():
                raise ApiError(400, f"{field}: ingest path {raw!r}: no such file or directory")
            for item in discover([real], include, exclude):
                if isinstance(item, Found) and not inside(Path(os.path.realpath(item.path))):
                    raise ApiError(
                        400,
                        f"{field}: ingest path {raw!r}: {item.path} links outside the allowed "
                        "roots",
                    )
        except (ValueError, OSError) as exc:  # a NUL byte, a name too long, a loop…
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ApiError(400, f"{field}: unusable path {raw!r}: {reason}") from None
        resolved.append(real)
    return resolved


def resolve_roots(roots: Sequence[str]) -> list[Path]:
    """The allowed roots as resolved directories."""
    return [Path(root).expanduser().resolve() for root in roots]


# --------------------------------------------------------------------------- helpers


def load_api_keys(settings: Settings) -> list[str]:
    """Keys from OSSRAG_API_KEYS and the lines of OSSRAG_API_KEYS_FILE (# comments allowed)."""
    keys = list(settings.api_keys)
    if settings.api_keys_file:
        try:
            lines = Path(settings.api_keys_file).expanduser().read_text().splitlines()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the API keys file {settings.api_keys_file} "
                f"(OSSRAG_API_KEYS_FILE / --api-keys-file): {exc.strerror or exc}"
            ) from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return keys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warm_up(index: Index) -> None:
    """Load the embedder and open the store now, once, rather than on the first request."""
    index.embedder.embed_query("warm up")
    index.store.info()
    _ = index.llm


async def _in_thread(fn: Callable[[], T], timeout: float) -> T:
    """Run a blocking call in a worker thread, giving up (TimeoutError) after `timeout` s."""
    with anyio.fail_after(timeout):
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)


def _location(p: Passage) -> str:
    where = p.source + (f" › {p.heading}" if p.heading else "")
    return f"{where} (lines {p.start_line}-{p.end_line})"


def _sources(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    return [{"n": n, **p.to_dict()} for n, p in enumerate(passages, 1)]


def _footnotes(answer: Answer) -> str:
    cited = answer.cited
    if not cited:
        return ""
    lines = [f"[{n}] {_location(answer.passages[n - 1])}" for n in cited]
    return "\n\nSources:\n" + "\n".join(lines)


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _conversation(
    messages: Sequence[ChatMessage], field: str
) -> tuple[str, list[dict[str, str]], str]:
    """The last user message, the user/assistant turns before it, and the text of the system
    (or developer) messages: the client's instructions. Errors name `field`."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None or not messages[last].text.strip():
        raise ApiError(400, f"{field}: the last user message has no text to answer")
    history = [
        {"role": m.role, "content": m.text}
        for m in messages[:last]
        if m.role in ("user", "assistant") and m.text
    ]
    instructions = "\n\n".join(
        m.text for m in messages if m.role in ("system", "developer") and m.text.strip()
    )
    return messages[last].text, history, instructions


def _agent_events(index: Index, question: str, options: dict[str, Any]) -> Iterator[AskEvent]:
    """The agent's answer as the events of a prose one: each tool step ("searching: …") is
    streamed as reasoning, so chat UIs show it where they show the model's thinking."""
    for event in index.agent_stream(question, **options):
        yield ReasoningDelta(f"{event.summary}\n") if isinstance(event, ToolStep) else event


def _usage(answer: Answer) -> dict[str, Any]:
    """The answer's usage in OpenAI's shape (the engine counts it when the LLM sent none)."""
    return answer.usage or counted_usage((), answer.reasoning, answer.text)


class _Turn:
    """One answer through the engine, as every OpenAI endpoint serves it: ask_stream's events
    (or a JSON answer as such events), pulled in worker threads within the request timeout."""

    def __init__(
        self,
        index: Index,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        fields: tuple[str, str],
        timeout: float,
        effort: Effort | None = None,
        top_k: int | None = None,
        schema: dict[str, Any] | None = None,
        footnotes: bool = True,
        where: Filter | None = None,
    ) -> None:
        """`model` is one of MODELS (a collection's model name resolved by Collections)."""
        input_field, format_field = fields  # named in errors: ("messages", "response_format")
        self.question, self.history, instructions = _conversation(messages, input_field)
        options: dict[str, Any] = {
            "k": top_k,
            "mode": MODELS[model],
            "effort": effort,
            "history": self.history,
            "instructions": instructions,
            "where": where,
        }
        self.events: Iterator[AskEvent]
        if model == AGENT_MODEL:
            if schema is not None:
                raise ApiError(400, f"{format_field}: not available with {AGENT_MODEL}")
            self.events = _agent_events(index, self.question, options)
        elif schema is None:
            self.events = index.ask_stream(self.question, **options)
        else:
            self.events = self._structured(index, self.question, schema, options)
        # A JSON answer is sent as the JSON alone: no footnotes, citations from its own field.
        self.footnotes = footnotes and schema is None
        self.json_cited: list[int] | None = None
        self.deadline = time.monotonic() + timeout

    def _structured(
        self, index: Index, question: str, schema: dict[str, Any], options: dict[str, Any]
    ) -> Iterator[AskEvent]:
        """A validated JSON answer (see ossrag.structured) as the events of a prose one."""
        answer = index.ask_structured(question, schema, **options)
        self.json_cited = citation_numbers(answer.data)
        text = json.dumps(answer.data, ensure_ascii=False)
        mode = options["mode"] or index.settings.mode
        yield Retrieved(SearchResult(answer.passages, mode, answer.notice))
        if answer.reasoning:
            yield ReasoningDelta(answer.reasoning)
        yield ContentDelta(text)
        yield Answer(
            question, text, answer.reasoning, answer.passages, "stop", answer.usage,
            answer.timings, answer.notice, claims=answer.claims,
        )  # fmt: skip

    def cited(self, answer: Answer) -> list[int]:
        return answer.cited if self.json_cited is None else self.json_cited

    def footnote(self, answer: Answer) -> str:
        """The "Sources:" text appended to the answer, if any."""
        return _footnotes(answer) if self.footnotes else ""

    def sources(self, answer: Answer) -> list[dict[str, Any]]:
        cited = self.cited(answer)
        return [{**s, "cited": s["n"] in cited} for s in _sources(answer.passages)]

    async def next_event(self) -> AskEvent | None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return await _in_thread(lambda: next(self.events, None), remaining)

    async def finish(self) -> Answer:
        """The whole answer (for a non-streamed response); errors as ApiError."""
        answer: Answer | None = None
        try:
            while (event := await self.next_event()) is not None:
                if isinstance(event, Answer):
                    answer = event
        except Exception as exc:
            raise _api_error(exc) from None
        finally:
            self.close()
        assert answer is not None, "stream_answer always ends with an Answer"
        return answer

    async def start(self) -> list[AskEvent]:
        """The events up to the first from the LLM, so that a dead LLM is an HTTP error rather
        than a broken stream."""
        first: list[AskEvent] = []
        try:
            while not first or isinstance(first[-1], (Rewritten, Retrieved)):
                event = await self.next_event()
                if event is None:
                    break
                first.append(event)
        except Exception as exc:
            self.close()
            raise _api_error(exc) from None
        return first

    async def rest(self, first: list[AskEvent]) -> AsyncIterator[AskEvent]:
        """`first`, then the remaining events (the caller closes the turn when done)."""
        for event in first:
            yield event
        while (later := await self.next_event()) is not None:
            yield later

    def close(self) -> None:
        """Close the generator, and with it the LLM stream (unless a worker still runs it:
        then it is closed when that worker returns and the generator is collected)."""
        close = getattr(self.events, "close", None)
        if close is not None:
            with suppress(ValueError):
                close()


def _event_stream(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Chat:
    """One chat completion: the pieces of an OpenAI response around a _Turn."""

    def __init__(self, index: Index, request: ChatRequest, timeout: float, base: str) -> None:
        """`base`: the model of MODELS that request.model stands for (see Collections)."""
        self.request = request
        self.turn = _Turn(
            index,
            model=base,
            messages=request.messages,
            fields=("messages", "response_format"),
            timeout=timeout,
            effort=request.reasoning_effort,
            top_k=request.top_k,
            schema=request.response_format.answer_schema() if request.response_format else None,
            footnotes=request.footnotes,
            where=_filter(request.filter),
        )
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.include_usage = bool((request.stream_options or {}).get("include_usage"))

    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        """One SSE chunk; `delta=None` makes the usage-only chunk (no choices). With
        `include_usage`, the other chunks carry `"usage": null`, as OpenAI's do."""
        choices = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.request.model,
                "system_fingerprint": None,
                "choices": choices,
                **({"usage": None} if self.include_usage else {}),
                **extra,
            }
        )

    def completion(self, answer: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text + self.turn.footnote(answer),
            "refusal": None,
            "annotations": [],
            "reasoning": answer.reasoning or None,
        }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason or "stop",
                }
            ],
            "usage": _usage(answer),
            "sources": self.turn.sources(answer),
            "claims": [claim.to_dict() for claim in answer.claims],
            **({"notice": answer.notice} if answer.notice else {}),
        }

    async def stream(self, first: list[AskEvent]) -> AsyncIterator[bytes]:
        """SSE chunks shaped like OpenAI's; `first` are the events already pulled."""
        sources_sent = False
        try:
            async for event in self.turn.rest(first):
                if isinstance(event, Retrieved):
                    sources_sent = True
                    notice = {"notice": event.result.notice} if event.result.notice else {}
                    yield self.chunk(
                        {"role": "assistant", "content": ""},
                        sources=_sources(event.result.passages),
                        **notice,
                    )
                elif isinstance(event, ReasoningDelta):
                    yield self.chunk({"reasoning": event.text})
                elif isinstance(event, ContentDelta):
                    yield self.chunk({"content": event.text})
                elif isinstance(event, Answer):
                    if notes := self.turn.footnote(event):
                        yield self.chunk({"content": notes})
                    # The agent finds its passages as it goes: they are listed at the end.
                    late = {} if sources_sent else {"sources": _sources(event.passages)}
                    cited = self.turn.cited(event)
                    claims = [claim.to_dict() for claim in event.claims]
                    yield self.chunk(
                        {}, event.finish_reason or "stop", cited=cited, **late, claims=claims
                    )
                    if self.include_usage:
                        yield self.chunk(None, usage=_usage(event))
            yield b"data: [DONE]\n\n"
        except Exception as exc:  # headers are sent: the error travels as an SSE event
            error = _api_error(exc)
            yield _sse(_error_body(str(error), error.kind))
        finally:
            self.turn.close()


def _responses_turn(
    index: Index, request: ResponsesRequest, memory: ResponseMemory, timeout: float, base: str
) -> _Turn:
    """The engine turn for a Responses API request, after the remembered conversation."""
    earlier: list[dict[str, str]] = []
    if request.previous_response_id is not None:
        previous = memory.get(request.previous_response_id)
        if previous is None:
            raise ApiError(
                404,
                f"previous_response_id: no stored response {request.previous_response_id!r} "
                f"(the server remembers its last {memory.size}, until it restarts)",
                "not_found",
            )
        earlier = previous.turns
    schema = None
    if request.text is not None and request.text.format.type != "text":
        text_format = request.text.format
        if text_format.type == "json_schema" and text_format.schema_ is None:
            raise ApiError(400, "text.format.schema: required when type is json_schema")
        json_schema = (
            None if text_format.schema_ is None else JsonSchemaFormat(schema=text_format.schema_)
        )
        schema = ResponseFormat(type=text_format.type, json_schema=json_schema).answer_schema(
            "text.format"
        )
    return _Turn(
        index,
        model=base,
        messages=[ChatMessage(**m) for m in request.messages(earlier)],
        fields=("input", "text.format"),
        timeout=timeout,
        effort=request.reasoning.effort if request.reasoning else None,
        top_k=request.top_k,
        schema=schema,
        footnotes=request.footnotes,
    )


class _Responses:
    """One Responses API answer: the response object or its event stream around a _Turn."""

    def __init__(
        self,
        index: Index,
        request: ResponsesRequest,
        memory: ResponseMemory,
        timeout: float,
        base: str,
    ) -> None:
        self.request, self.memory = request, memory
        self.turn = _responses_turn(index, request, memory, timeout, base)
        self.shapes = ResponseShapes(request)

    def remember(self, answer: Answer, response: dict[str, Any]) -> None:
        """Store the response and its conversation for previous_response_id (unless
        `store` is false)."""
        if self.request.store:
            turn = [
                {"role": "user", "content": self.turn.question},
                {"role": "assistant", "content": answer.text},
            ]
            self.memory.remember(response, [*self.turn.history, *turn])

    def extra(self, answer: Answer) -> dict[str, Any]:
        notice = {"notice": answer.notice} if answer.notice else {}
        return {"sources": self.turn.sources(answer), **notice}

    def completed(self, answer: Answer) -> dict[str, Any]:
        text = answer.text + self.turn.footnote(answer)
        output = self.shapes.output(answer.reasoning, text)
        response = self.shapes.response("completed", output, _usage(answer), **self.extra(answer))
        self.remember(answer, response)
        return response

    async def stream(self, first: list[AskEvent]) -> AsyncIterator[bytes]:
        """The Responses API's events; `first` are the engine events already pulled."""
        stream = ResponseStream(self.shapes)
        try:
            async for event in self.turn.rest(first):
                chunks: list[bytes] = []
                if isinstance(event, Retrieved) and not stream.started:
                    notice = {"notice": event.result.notice} if event.result.notice else {}
                    chunks = stream.start(sources=_sources(event.result.passages), **notice)
                elif not stream.started and not isinstance(event, Rewritten):
                    chunks = stream.start()  # the agent finds its sources as it goes
                if isinstance(event, ReasoningDelta):
                    chunks += stream.reasoning_delta(event.text)
                elif isinstance(event, ContentDelta):
                    chunks += stream.text_delta(event.text)
                elif isinstance(event, Answer):
                    if notes := self.turn.footnote(event):
                        chunks += stream.text_delta(notes)
                    closing, response = stream.finish(_usage(event), **self.extra(event))
                    chunks += closing
                    self.remember(event, response)
                for chunk in chunks:
                    yield chunk
        except Exception as exc:  # headers are sent: the error travels as events
            for chunk in stream.failed(str(_api_error(exc)), "server_error"):
                yield chunk
        finally:
            self.turn.close()


# --------------------------------------------------------------------------- the app

_bearer = HTTPBearer(auto_error=False, description="one of OSSRAG_API_KEYS")


async def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With API keys configured, the request must carry one as a Bearer token."""
    keys: list[str] = request.app.state.api_keys
    if not keys:
        return
    given = credentials.credentials.encode() if credentials else b""
    if not any(hmac.compare_digest(given, key.encode()) for key in keys):
        raise ApiError(
            401,
            "missing or wrong API key: send Authorization: Bearer <key>",
            "authentication_error",
        )


class Collections:
    """The collections a server offers: an index each (sharing one embedder and Milvus
    connection), each a model `ossrag/<name>` with its variants (`ossrag/<name>-bm25`,
    `ossrag/<name>-agent`, …); the first is also plain `ossrag`. Without `names`, the index's
    own collection is served as the plain models alone."""

    def __init__(self, index: Index, names: Sequence[str]) -> None:
        named = list(dict.fromkeys(names))
        self.default = named[0] if named else index.settings.collection
        self.indexes = {name: index.sibling(name) for name in named or [self.default]}
        self.models: dict[str, tuple[str, str]] = {}  # name → (collection, MODELS key)
        for collection in ("", *named):
            for base in MODELS:
                name = f"ossrag/{collection}{base.removeprefix('ossrag')}" if collection else base
                self.models[name] = (collection or self.default, base)

    def index(self, name: str | None) -> Index:
        """The index of a collection (None: the default); ApiError(404) for others."""
        found = self.indexes.get(name or self.default)
        if found is None:
            served = ", ".join(self.indexes)
            raise ApiError(404, f"collection {name!r} is not served: use one of {served}",
                           "not_found")  # fmt: skip
        return found

    def model(self, name: str) -> tuple[Index, str]:
        """The index and the model of MODELS a name stands for; ApiError(404) if none."""
        if name not in self.models:
            raise ApiError(
                404,
                f"model {name!r} does not exist: use one of {', '.join(self.models)}",
                "model_not_found",
            )
        collection, base = self.models[name]
        return self.indexes[collection], base


def has_key(authorization: str | None, keys: Sequence[str]) -> bool:
    """Does an Authorization header carry one of `keys` as a Bearer token (or are there none)?"""
    if not keys:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    return any(hmac.compare_digest(given, key.encode()) for key in keys)


class KeyedApp:
    """An ASGI app (the MCP transport) behind the same API keys as the routes."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if scope["type"] == "http" and not has_key(authorization, self.keys):
            response = _error_response(
                401, "missing or wrong API key: send Authorization: Bearer <key>",
                "authentication_error",
            )  # fmt: skip
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(settings: Settings, index: Index | None = None) -> FastAPI:
    """The API and web UI over `index` (made from `settings` and closed with the app if None).

    `settings` configures the server (keys, roots, limits); the index's own settings configure
    retrieval and the LLM.
    """
    owned = index is None
    ix = index if index is not None else Index(settings)
    collections = Collections(ix, settings.collections)
    keys = load_api_keys(settings)
    jobs = IngestJobs(ix, resolve_roots(settings.allowed_roots))
    memory = ResponseMemory()
    timeout = settings.request_timeout
    default = collections.index(None)  # MCP and --watch serve the first collection
    hosts = allowed_host_names(settings)
    mcp = http_door(default, ask=True, hosts=hosts, origins=settings.cors_origins)
    watcher = FolderWatcher(default, jobs, [Path(p) for p in settings.watch])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        ix.batch_queries()
        await anyio.to_thread.run_sync(warm_up, ix)
        await anyio.to_thread.run_sync(watcher.start)
        async with mcp.running():  # a mounted app's own lifespan never runs
            yield
        await anyio.to_thread.run_sync(watcher.stop)
        await anyio.to_thread.run_sync(jobs.shutdown)
        if owned:
            ix.close()

    app = FastAPI(
        title="ossrag",
        summary="Answers from your documents, as an OpenAI-compatible model",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package: no CDN, works offline
        redoc_url=None,
    )
    app.state.index, app.state.jobs = ix, jobs
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Starlette's body limit as the innermost middleware (not FastAPI's app-wide one, which
    # sits outside them all), so its 413 gets the JSON shape and the security headers.
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes)
    app.add_middleware(PlainErrorsAsJson)
    if "*" not in hosts:
        app.add_middleware(HostCheck, allowed_hosts=hosts)
    docs_page = _api_docs_page()
    app.add_middleware(SecurityHeaders, path_csp={"/docs": _docs_csp(docs_page)})

    app.state.api_keys = keys
    auth = [Depends(require_key)]

    @app.exception_handler(ApiError)
    async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, str(exc), exc.kind)

    @app.exception_handler(HTTPException)
    async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error_response(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return _error_response(400, f"{where}: {first['msg']}", "invalid_request_error")

    # -- health

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> JSONResponse:
        """Readiness: Milvus reachable, embedder loaded, LLM answering. With API keys set,
        only a request carrying one sees the checks (they name the store and the LLM)."""

        def checks() -> dict[str, dict[str, Any]]:
            try:
                ix.store.client.list_collections()
                milvus = {"ok": True, "detail": ix.settings.db}
            except Exception as exc:
                milvus = {"ok": False, "detail": str(exc).splitlines()[0] if str(exc) else ""}
            loaded = "embedder" in ix.__dict__
            embedder = {"ok": loaded, "detail": ix.embedder.name if loaded else "not loaded"}
            ok, detail = ix.llm.check()
            return {"milvus": milvus, "embedder": embedder, "llm": {"ok": ok, "detail": detail}}

        result = await anyio.to_thread.run_sync(checks)
        ready = all(check["ok"] for check in result.values())
        status = 200 if ready else 503
        try:
            await require_key(request, credentials)
        except ApiError:
            return JSONResponse({"ready": ready}, status_code=status)
        return JSONResponse({"ready": ready, "checks": result}, status_code=status)

    # -- OpenAI-compatible

    @app.get("/v1/models", dependencies=auth, tags=["openai"])
    async def models() -> dict[str, Any]:
        """The RAG "models": `ossrag` uses the configured retrieval mode."""
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "ossrag"}
            for name in collections.models
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", dependencies=auth, tags=["openai"], response_model=None)
    async def chat_completions(body: ChatRequest) -> Response:
        """Retrieve for the last user message and answer with the configured LLM."""
        chat_index, base = collections.model(body.model)
        chat = _Chat(chat_index, body, timeout, base)
        if not body.stream:
            return JSONResponse(chat.completion(await chat.turn.finish()))
        return _event_stream(chat.stream(await chat.turn.start()))

    @app.post("/v1/responses", dependencies=auth, tags=["openai"], response_model=None)
    async def responses(body: ResponsesRequest) -> Response:
        """OpenAI's Responses API over the same engine turn as chat completions."""
        answer_index, base = collections.model(body.model)
        answering = _Responses(answer_index, body, memory, timeout, base)
        if not body.stream:
            return JSONResponse(answering.completed(await answering.turn.finish()))
        return _event_stream(answering.stream(await answering.turn.start()))

    @app.get("/v1/responses/{response_id}", dependencies=auth, tags=["openai"])
    async def stored_response(response_id: str) -> dict[str, Any]:
        """A response stored by this server (the last ones, in memory)."""
        remembered = memory.get(response_id)
        if remembered is None:
            raise ApiError(404, f"no stored response {response_id!r}", "not_found")
        return remembered.response

    # -- ossrag

    @app.post("/v1/search", dependencies=auth, tags=["ossrag"])
    async def search(body: SearchRequest) -> dict[str, Any]:
        """Passages with scores (higher is better); no LLM."""
        try:
            where = _filter(body.filter)
            index = collections.index(body.collection)
            result = await _in_thread(
                lambda: index.search(
                    body.query, body.top_k, body.mode, where=where, explain=body.explain
                ),
                timeout,
            )
        except Exception as exc:
            raise _api_error(exc) from None
        return {
            "results": [p.to_dict() for p in result.passages],
            "mode": result.mode,
            **({"notice": result.notice} if result.notice else {}),
            **({"translation": result.translation} if result.translation else {}),
        }

    @app.post("/v1/ingest", dependencies=auth, tags=["ossrag"], status_code=202)
    async def ingest(body: IngestRequest) -> dict[str, Any]:
        """Start ingesting paths under the allowed roots; poll GET /v1/ingest/{id}."""
        roots = settings.allowed_roots
        index = collections.index(body.collection)
        paths = await _in_thread(
            lambda: check_ingest_paths(body.paths, roots, body.include, body.exclude), timeout
        )
        return jobs.submit(paths, body, index).to_dict()

    @app.get("/v1/ingest", dependencies=auth, tags=["ossrag"])
    async def ingest_jobs() -> dict[str, Any]:
        """Every remembered ingest job, newest last."""
        return {"jobs": [job.to_dict() for job in jobs.all()]}

    @app.get("/v1/ingest/{job_id}", dependencies=auth, tags=["ossrag"])
    async def ingest_job(job_id: str) -> dict[str, Any]:
        """Progress of one ingest job."""
        job = jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no ingest job {job_id!r}", "not_found")
        return job.to_dict()

    from ossrag.webapi import web_router  # it imports this module, so not at the top

    app.include_router(web_router(settings, ix, jobs, auth))

    # -- web UI (static files only: every data route above needs a key)

    @app.get("/", include_in_schema=False)
    async def web_ui() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(docs_page)

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    # MCP over streamable HTTP (ossrag.mcp_server), behind the same keys as the API.
    app.router.routes.append(Route("/mcp", KeyedApp(mcp.app, keys), include_in_schema=False))
    return app


def _api_docs_page() -> str:
    """Swagger UI's page, its assets served from the swagger-ui-bundle package (no CDN)."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="ossrag API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )
    return bytes(page.body).decode()


def _docs_csp(page: str) -> str:
    """/docs's CSP: Swagger UI's one inline script allowed by its hash, and its inline styles."""
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    return (
        f"default-src 'self'; script-src 'self' {' '.join(script_hash(s) for s in scripts)}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


# --------------------------------------------------------------------------- runner


def check_bind(settings: Settings, keys: Sequence[str]) -> None:
    """Refuse to expose an unauthenticated server beyond this machine unless told to."""
    if not keys and not settings.insecure and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to serve on {settings.host} without an API key: set OSSRAG_API_KEYS / "
            "--api-keys (or --insecure to allow anyone who can reach it)"
        )


def serve(settings: Settings) -> None:
    """Run the API and web UI until interrupted; open streams get GRACE_SECONDS to finish."""
    check_bind(settings, load_api_keys(settings))
    index = Index(settings)
    try:
        warm_up(index)
        app = create_app(settings, index)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=GRACE_SECONDS,
            log_level="info",
        )
    finally:
        index.close()
