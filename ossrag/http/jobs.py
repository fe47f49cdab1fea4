"""Ingest over HTTP: paths checked against the allowed roots, jobs run one at a time in the
background with progress, and `serve --watch` folders kept in sync."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ossrag.console import terminal_safe
from ossrag.engine.index import Index
from ossrag.engine.ingest import IngestReport, Progress
from ossrag.errors import ConfigError, EmbedderError, StoreError
from ossrag.http.errors import ApiError, http_message
from ossrag.http.schemas import IngestRequest
from ossrag.load.files import Found, discover

log = logging.getLogger(__name__)
MAX_JOBS = 100  # ingest jobs remembered
# An ingest gives way to searches on the CPU. Its thread, and the threads it starts (the file
# reader, the passage encoder's pool: see MiniLMEmbedder), run INGEST_NICE steps below the
# server's priority (Linux, where each thread has its own; elsewhere at the server's), so a
# search takes a core as soon as it needs one while the ingest uses the rest. While it runs,
# Python passes the interpreter between threads every INGEST_SWITCH_INTERVAL seconds instead of
# every 5 ms (search p95 during a partial ingest 23-25 -> 20 ms). With the question encoder's
# own session and line ranges read in memory: search p95 during a full ingest of the Milvus docs
# on 2 busy cores 164-281 -> 21-26 ms, max 0.9-1.7 s -> 71-226 ms, the ingest as long
# (benchmarks/search_during_ingest.py). A busy machine's other processes get the CPU first too.
INGEST_NICE = 10
INGEST_SWITCH_INTERVAL = 0.001


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
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="ossrag-ingest", initializer=_give_way
        )
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
        return self._executor.submit(_switching_often, self.index.ingest, paths).result()

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
            report = _switching_often(
                index.ingest,
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
            job.status, job.error = "failed", http_message(exc) or type(exc).__name__
            if not isinstance(exc, (StoreError, EmbedderError)):
                log.exception("ingest job %s failed", job.id)
        finally:
            job.finished = time.time()


def _give_way() -> None:
    """Lower this thread's CPU priority by INGEST_NICE (on Linux: nice is per thread there)."""
    if sys.platform == "linux":
        thread = threading.get_native_id()
        nice = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, nice + INGEST_NICE))


def _switching_often(
    ingest: Callable[..., IngestReport], *args: Any, **kwargs: Any
) -> IngestReport:
    """Run an ingest with the interpreter switching threads every INGEST_SWITCH_INTERVAL."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(INGEST_SWITCH_INTERVAL)
    try:
        return ingest(*args, **kwargs)
    finally:
        sys.setswitchinterval(previous)


class FolderWatcher:
    """`ossrag serve --watch DIR`: keeps folders in sync from a background thread, one sync
    per settled group of changes (see ossrag.engine.watch), through the ingest thread."""

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
        from ossrag.engine.watch import watch_and_sync

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
