"""Read-only store overview and drag-and-drop upload for the web UI (routes of `ossrag serve`).

`GET /v1/store`: files, chunks, last sync and ingest jobs. `POST /v1/upload?name=F`: the raw
request body (at most OSSRAG_MAX_UPLOAD_BYTES) saved as F in an `uploads` directory inside the
first allowed root, then ingested through the same checks and job queue as `POST /v1/ingest`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.params import Depends

from ossrag.config import Settings
from ossrag.engine.index import Index
from ossrag.http.errors import ApiError, api_error
from ossrag.http.jobs import IngestJobs, check_ingest_paths
from ossrag.http.schemas import IngestRequest
from ossrag.load.files import loader_for

UPLOAD_DIR = "uploads"  # inside the first allowed root
MAX_FILES_LISTED = 1000
UNLIMITED = 2**62  # lifts the app's body limit for one route
_UNSAFE = re.compile(r"[^\w.\- ]+")


def safe_name(raw: str) -> str:
    """A file name without directories, control bytes or odd characters; ApiError if none is
    left or its type cannot be ingested."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", base).strip().rstrip(". ")[:120]
    if not name or name.startswith("."):
        raise ApiError(400, f"name {raw[:80]!r}: not a usable file name")
    if loader_for(name) is None:
        suffix = Path(name).suffix or "(none)"
        raise ApiError(400, f"name {name!r}: unsupported file type {suffix!r}")
    return name


def store_overview(index: Index, jobs: IngestJobs) -> dict[str, Any]:
    """Counts, the files (by source), the newest finished ingest and every remembered job."""
    status = index.status(check_llm=False)
    records = (
        sorted(index.store.files().values(), key=lambda r: r.source) if status["files"] else []
    )
    finished = [j.finished for j in jobs.all() if j.status == "done" and j.finished]
    return {
        "collection": status["collection"],
        "files": status["files"],
        "chunks": status["chunks"],
        "embedder": status["embedder"]["name"],
        "last_sync": max(finished, default=None),
        "file_list": [
            {"source": r.source, "root": r.root, "chunks": r.chunks, "mtime": r.mtime}
            for r in records[:MAX_FILES_LISTED]
        ],
        "jobs": [job.to_dict() for job in jobs.all()],
    }


def web_router(
    settings: Settings, index: Index, jobs: IngestJobs, auth: list[Depends]
) -> APIRouter:
    """The routes, behind the same API-key dependency as the rest of the API."""
    router = APIRouter(dependencies=auth, tags=["ossrag"])

    @router.get("/v1/store")
    async def store() -> dict[str, Any]:
        """Files, chunks, last sync (a finished ingest of this server) and ingest jobs."""
        try:
            return await anyio.to_thread.run_sync(store_overview, index, jobs)
        except Exception as exc:
            raise api_error(exc) from None

    # Starlette's own limit answers 413 in plain text: this route counts the bytes itself.
    @router.post("/v1/upload", status_code=202, max_body_size=UNLIMITED)
    async def upload(
        request: Request, name: str = Query(min_length=1, max_length=255)
    ) -> dict[str, Any]:
        """Save the body as `name` in the uploads directory and start ingesting it."""
        if not settings.allowed_roots:
            raise ApiError(400, "upload is off: set OSSRAG_ALLOWED_ROOTS / --allowed-root")
        filename = safe_name(name)
        limit = settings.max_upload_bytes
        too_large = ApiError(413, f"body: the file is larger than {limit} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > limit:
                raise too_large
        if not data:
            raise ApiError(400, "body: the file is empty")
        folder = Path(settings.allowed_roots[0]).expanduser().resolve() / UPLOAD_DIR
        target = await anyio.to_thread.run_sync(_save, folder, filename, bytes(data))
        paths = await anyio.to_thread.run_sync(
            check_ingest_paths, [str(target)], settings.allowed_roots, [], []
        )
        job = jobs.submit(paths, IngestRequest(paths=[str(target)], prune=False))
        return {**job.to_dict(), "saved": str(target)}

    return router


def _save(folder: Path, name: str, data: bytes) -> Path:
    """Write atomically (a temp file renamed), never through a symlink planted at the name."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.is_symlink():
        raise ApiError(400, f"name {name!r}: a link of that name is in the uploads directory")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
