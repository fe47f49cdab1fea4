"""`ossrag serve`: the engine as an OpenAI-compatible API, plus the web UI and the MCP mount.

A thin HTTP shell over `ossrag.Index`. One process serves many clients: the embedder and the
Milvus client are loaded once at startup, and every blocking stage (embedding, search, the LLM
stream, ingest) runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

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
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from ossrag.config import Settings
from ossrag.engine.index import Index
from ossrag.errors import ConfigError
from ossrag.http.chat import MODELS, Chat, Responses, event_stream, in_thread
from ossrag.http.errors import ApiError, api_error, error_response
from ossrag.http.guards import (
    HostCheck,
    PlainErrorsAsJson,
    SecurityHeaders,
    allowed_host_names,
    script_hash,
)
from ossrag.http.jobs import FolderWatcher, IngestJobs, check_ingest_paths, resolve_roots
from ossrag.http.responses import ResponseMemory, ResponsesRequest
from ossrag.http.schemas import ChatRequest, IngestRequest, SearchRequest, parse_filter
from ossrag.mcp.server import http_door

log = logging.getLogger("ossrag.http.app")

WEB_DIR = Path(__file__).parent / "web"
WORKER_THREADS = 64  # concurrent blocking calls (each open answer stream holds one)
GRACE_SECONDS = 30  # on shutdown, open streams get this long to finish


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
    """Load the embedder and open the store now, once, rather than on the first request (and
    hold a Lite store while serving: see Store.open)."""
    index.embedder.embed_query("warm up")
    index.store.open()
    _ = index.llm


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
            response = error_response(
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
    default = collections.index(None)  # --watch syncs into the first collection
    hosts = allowed_host_names(settings)
    mcp = http_door(default, ask=True, hosts=hosts, origins=settings.cors_origins,
                    collections=collections.indexes)  # fmt: skip
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
        return error_response(exc.status, str(exc), exc.kind, exc.param)

    @app.exception_handler(HTTPException)
    async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return error_response(400, f"{where}: {first['msg']}", "invalid_request_error")

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
        chat = Chat(chat_index, body, timeout, base)
        if not body.stream:
            return JSONResponse(chat.completion(await chat.turn.finish()))
        return event_stream(chat.stream(await chat.turn.start()))

    @app.post("/v1/responses", dependencies=auth, tags=["openai"], response_model=None)
    async def responses(body: ResponsesRequest) -> Response:
        """OpenAI's Responses API over the same engine turn as chat completions."""
        answer_index, base = collections.model(body.model)
        answering = Responses(answer_index, body, memory, timeout, base)
        if not body.stream:
            return JSONResponse(answering.completed(await answering.turn.finish()))
        return event_stream(answering.stream(await answering.turn.start()))

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
            where = parse_filter(body.filter)
            index = collections.index(body.collection)
            result = await in_thread(
                lambda: index.search(
                    body.query, body.top_k, body.mode, where=where, explain=body.explain
                ),
                timeout,
            )
        except Exception as exc:
            raise api_error(exc) from None
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
        paths = await in_thread(
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

    from ossrag.http.webapi import web_router  # it imports this module, so not at the top

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
    # MCP over streamable HTTP (ossrag.mcp.server), behind the same keys as the API.
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
