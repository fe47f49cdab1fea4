"""`ossrag serve` over real HTTP: uvicorn on a loopback port, Milvus Lite, the scripted LLM."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from conftest import EmbedderProxy, isolate_settings, wait_for_job, write_docs
from fastapi import FastAPI
from llm_server import Reply, ScriptedLLMServer
from pydantic import BaseModel
from typer.testing import CliRunner

from ossrag.cli.app import app as cli_app
from ossrag.config import Settings, load_settings
from ossrag.embed.encoders import Embedder, Vectors
from ossrag.engine.index import Index
from ossrag.errors import ConfigError
from ossrag.generate.prompts import FOLLOW_UP_PROMPT
from ossrag.http.app import check_bind, create_app
from ossrag.http.jobs import INGEST_NICE, INGEST_SWITCH_INTERVAL, IngestJobs
from ossrag.http.schemas import IngestRequest

pytestmark = pytest.mark.timeout(60)

KEY = "test-key-123"
MODEL = "gpt-oss-20b"
REASONING = "The user asks where data lives; passage [1] says object storage."
ANSWER = "The engine keeps vectors in object storage such as MinIO or S3 [1]."
STORAGE_Q = "Where does the engine keep inserted vectors?"


class LiveServer:
    """A uvicorn server for an app, on a free loopback port, in a background thread."""

    def __init__(self, app: FastAPI, grace: float | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=grace)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def llm_server() -> Iterator[ScriptedLLMServer]:
    reply = Reply(content=ANSWER, reasoning=REASONING, chunk_size=6)
    with ScriptedLLMServer(reply, model=MODEL) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def served(
    workdir: Path, embedder: Embedder, llm_server: ScriptedLLMServer
) -> Iterator[tuple[LiveServer, Index, Settings]]:
    """One store with the fixture docs, served with an API key; ingest allowed under allowed/."""
    allowed = workdir / "allowed"
    write_docs(allowed / "docs")
    with pytest.MonkeyPatch.context() as mp:
        isolate_settings(mp, workdir)
        settings = load_settings(
            db=str(workdir / "store.db"),
            base_url=llm_server.base_url,
            model=MODEL,
            api_keys=[KEY],
            allowed_roots=[str(allowed)],
            max_body_bytes=4096,
        )
    index = Index(settings, embedder=embedder)
    index.ingest([allowed / "docs"])
    with LiveServer(create_app(settings, index)) as live:
        yield live, index, settings
    index.close()


@pytest.fixture
def live(served: tuple[LiveServer, Index, Settings]) -> LiveServer:
    return served[0]


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


def ask(question: str = STORAGE_Q) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


# --------------------------------------------------------------------------- health and auth


def test_health_routes_need_no_key(live: LiveServer) -> None:
    assert httpx.get(live.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(live.url + "/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"ready": True}  # the store path and LLM URL need a key


def test_readyz_shows_its_checks_to_a_key_holder(http: httpx.Client) -> None:
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["milvus"]["ok"] and checks["embedder"]["ok"] and checks["llm"]["ok"]
    assert set(checks) == {"milvus", "embedder", "llm"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/models", None, 200),
        ("POST", "/v1/search", {"query": "storage"}, 200),
        ("POST", "/v1/chat/completions", {"model": "ossrag", "messages": ask()}, 200),
        ("POST", "/v1/ingest", {"paths": ["/etc"]}, 400),  # outside the allowed roots
        ("GET", "/v1/ingest", None, 200),
        ("GET", "/v1/ingest/nope", None, 404),
    ],
)
def test_every_api_route_needs_the_key(
    live: LiveServer,
    llm_server: ScriptedLLMServer,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    calls = len(llm_server.requests)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        response = httpx.request(method, live.url + path, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]["message"]
    assert len(llm_server.requests) == calls  # nothing reached the LLM
    ok = httpx.request(
        method, live.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert ok.status_code == status, ok.text


def test_openai_sdk_with_a_wrong_key_gets_authentication_error(live: LiveServer) -> None:
    wrong = openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_cors_is_off_by_default(live: LiveServer) -> None:
    preflight = httpx.options(
        live.url + "/v1/search",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_oversize_bodies_get_413(http: httpx.Client) -> None:
    big = {"query": "x" * 5000}
    response = http.post("/v1/search", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "Content Too Large"  # JSON, like every error
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(big).encode()

    response = http.post(
        "/v1/search", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_serve_refuses_a_public_address_without_a_key() -> None:
    with pytest.raises(ConfigError, match=r"refusing to serve on 0\.0\.0\.0"):
        check_bind(load_settings(host="0.0.0.0"), [])
    check_bind(load_settings(host="0.0.0.0", insecure=True), [])
    check_bind(load_settings(host="0.0.0.0"), ["k"])
    check_bind(load_settings(host="127.0.0.1"), [])
    check_bind(load_settings(host="::1"), [])

    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to serve on 0.0.0.0" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- OpenAI protocol


def test_models_lists_the_rag_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["ossrag", "ossrag-hybrid", "ossrag-dense", "ossrag-bm25", "ossrag-agent"]


def test_stream_parsed_by_the_openai_sdk(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    earlier = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is in the search guide?"},
        {"role": "assistant", "content": "Metrics and filters [1]."},
    ]
    llm_server.enqueue(Reply(content=STORAGE_Q))  # the follow-up, rewritten to stand alone
    stream = client.chat.completions.create(
        model="ossrag",
        messages=[*earlier, *ask()],
        stream=True,
        reasoning_effort="high",
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices
    )
    assert reasoning == REASONING
    assert content.startswith(ANSWER)
    assert "passage [1] says" not in content  # reasoning never leaks into the answer
    assert content.endswith("\n\nSources:\n[1] guide/storage.md › Storage guide › "
                            "Where does the engine keep data? (lines 6-8)")  # fmt: skip
    assert len(chunks) > 5  # really streamed, delta by delta
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"
    sources = (chunks[0].model_extra or {})["sources"]
    assert sources[0]["n"] == 1 and sources[0]["source"] == "guide/storage.md"
    assert "object storage" in sources[0]["text"]
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None

    rewrite, sent = llm_server.bodies()[-2:]
    assert rewrite["messages"][0]["content"] == FOLLOW_UP_PROMPT
    assert sent["reasoning_effort"] == "high"
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "user"]  # earlier turns as history
    assert sent["messages"][1]["content"] == "What is in the search guide?"
    last = sent["messages"][-1]["content"]
    assert STORAGE_Q in last and "object storage" in last  # retrieved for the last question


def test_harmony_markup_from_the_llm_becomes_a_reasoning_field(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    llm_server.enqueue(Reply(content=ANSWER, reasoning=REASONING, dialect="harmony"))
    chunks = list(client.chat.completions.create(model="ossrag", messages=ask(), stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices
    )
    assert reasoning == REASONING and content.startswith(ANSWER)
    assert "<|" not in content and "analysis" not in content


def test_non_streamed_completion(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="ossrag-dense",
        messages=ask(),
        extra_body={"footnotes": False, "top_k": 2},
    )
    message = response.choices[0].message
    assert message.content == ANSWER
    assert (message.model_extra or {})["reasoning"] == REASONING
    sources = (response.model_extra or {})["sources"]
    assert len(sources) == 2 and sources[0]["cited"] and not sources[1]["cited"]
    assert response.choices[0].finish_reason == "stop" and response.usage is not None


class StorageAnswer(BaseModel):
    where: str
    citations: list[int]


def test_response_format_json_schema_parsed_by_the_openai_sdk(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    reply = {"where": "object storage", "citations": [1]}
    llm_server.enqueue(Reply(content=json.dumps(reply), reasoning=REASONING))
    response = client.chat.completions.parse(
        model="ossrag", messages=ask(), response_format=StorageAnswer
    )
    message = response.choices[0].message
    assert message.parsed == StorageAnswer(**reply)
    assert json.loads(message.content or "") == reply  # the JSON alone: no Sources footnote
    assert (message.model_extra or {})["reasoning"] == REASONING
    sources = (response.model_extra or {})["sources"]
    assert [s["cited"] for s in sources][:2] == [True, False]
    sent = llm_server.bodies()[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["where", "citations"]
    assert "object storage" in sent["messages"][-1]["content"]  # answered over the passages


def test_json_object_answer_streams_as_json(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    reply = {
        "answer": "In object storage [1].",
        "citations": [1],
        "confidence": 0.9,
        "follow_up_questions": [],
    }
    llm_server.enqueue(Reply(content=json.dumps(reply), reasoning=REASONING))
    chunks = list(
        client.chat.completions.create(
            model="ossrag", messages=ask(), stream=True, response_format={"type": "json_object"}
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices
    )
    assert json.loads(content) == reply and reasoning == REASONING
    assert (chunks[0].model_extra or {})["sources"][0]["source"] == "guide/storage.md"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert (finish[0].model_extra or {})["cited"] == [1]
    schema = llm_server.bodies()[-1]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["answer", "citations", "confidence", "follow_up_questions"]


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        ({"type": "xml"}, "response_format.type: Input should be"),
        ({"type": "json_schema"}, "response_format.json_schema: required"),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array"}}},
            "response_format.json_schema.schema: must be an object schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"schema": {"properties": {"a": 1}}}},
            "response_format.json_schema.schema: not a valid JSON schema",
        ),
    ],
)
def test_unusable_response_format_is_a_400_naming_the_field(
    client: openai.OpenAI,
    llm_server: ScriptedLLMServer,
    response_format: dict[str, Any],
    message: str,
) -> None:
    calls = len(llm_server.bodies())
    with pytest.raises(openai.BadRequestError, match=re.escape(message)):
        client.chat.completions.create(
            model="ossrag",
            messages=ask(),
            response_format=response_format,  # type: ignore[arg-type]
        )
    assert len(llm_server.bodies()) == calls  # refused before any LLM call


def test_json_answer_that_never_matches_is_a_clear_502(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    llm_server.enqueue(Reply(content="In object storage."), Reply(content='{"where": 3}'))
    with pytest.raises(openai.APIStatusError, match="did not match the JSON schema") as failed:
        client.chat.completions.parse(model="ossrag", messages=ask(), response_format=StorageAnswer)
    assert failed.value.status_code == 502


def test_chat_errors_are_openai_shaped(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=ask())
    with pytest.raises(openai.BadRequestError, match="reasoning_effort"):
        client.chat.completions.create(
            model="ossrag",
            messages=ask(),
            reasoning_effort="extreme",
        )
    with pytest.raises(openai.BadRequestError, match="no text"):
        client.chat.completions.create(
            model="ossrag",
            messages=[{"role": "system", "content": "hi"}],
        )
    # The LLM fails before answering: an HTTP error, even for a stream.
    llm_server.enqueue(Reply(status=400, error="bad things"))
    with pytest.raises(openai.APIStatusError, match="bad things") as failed:
        client.chat.completions.create(model="ossrag", messages=ask(), stream=True)
    assert failed.value.status_code == 502


def test_llm_failure_mid_stream_arrives_as_an_error_event(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    llm_server.enqueue(Reply(content=ANSWER * 3, chunk_size=4, drop_after_chunks=5))
    stream = client.chat.completions.create(model="ossrag", messages=ask(), stream=True)
    with pytest.raises(openai.APIError, match="dropped the connection"):
        list(stream)


# --------------------------------------------------------------------------- search and ingest


def test_search_returns_passages_with_scores(http: httpx.Client) -> None:
    response = http.post("/v1/search", json={"query": STORAGE_Q, "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "hybrid" and len(body["results"]) == 2
    top = body["results"][0]
    assert top["source"] == "guide/storage.md" and top["score"] > body["results"][1]["score"]
    assert {"heading", "start_line", "end_line", "text"} <= set(top)
    assert http.post("/v1/search", json={"query": ""}).status_code == 400
    assert "translation" not in body  # an English question is searched as written


def test_search_reports_the_words_a_foreign_question_was_searched_with(
    http: httpx.Client,
) -> None:
    question = "Dove tiene il motore i vettori inseriti? Sono in un bucket?"
    body = http.post("/v1/search", json={"query": question, "top_k": 1}).json()
    assert "vectors" in body["translation"].split() and body["results"]


def test_ingest_refuses_paths_outside_the_allowed_roots(
    served: tuple[LiveServer, Index, Settings], http: httpx.Client, workdir: Path
) -> None:
    _, index, settings = served
    root = Path(settings.allowed_roots[0])
    secret = workdir / "secret"
    secret.mkdir(exist_ok=True)
    (secret / "secret.md").write_text("# Secret\n\nThe password is zanzibarquux.\n")
    (root / "link.md").symlink_to(secret / "secret.md")
    (root / "linkdir").mkdir()
    (root / "linkdir" / "inner").symlink_to(secret, target_is_directory=True)
    files_before = len(index.store.files())
    jobs_before = http.get("/v1/ingest").json()["jobs"]
    refused = {
        "relative": ["docs"],
        "outside": [str(secret)],
        "dotdot": [f"{root}/docs/../../secret"],
        "symlinked file": [str(root / "link.md")],
        "symlink below a directory": [str(root / "linkdir")],
        "one bad among good": [str(root / "docs"), "/etc/passwd"],
        "missing": [str(root / "nope")],
    }
    try:
        for case, paths in refused.items():
            response = http.post("/v1/ingest", json={"paths": paths})
            assert response.status_code == 400, (case, response.text)
            assert "error" in response.json(), case
        message = http.post("/v1/ingest", json={"paths": [str(root / "linkdir")]}).json()
        assert "links outside the allowed roots" in message["error"]["message"]
        assert http.get("/v1/ingest").json()["jobs"] == jobs_before  # nothing started
        assert len(index.store.files()) == files_before
        hits = http.post("/v1/search", json={"query": "zanzibarquux", "mode": "bm25"}).json()
        assert hits["results"] == []
    finally:
        (root / "link.md").unlink()
        (root / "linkdir" / "inner").unlink()


def test_ingest_runs_in_the_background(
    served: tuple[LiveServer, Index, Settings], http: httpx.Client
) -> None:
    root = Path(served[2].allowed_roots[0])
    new = root / "new"
    new.mkdir()
    (new / "fresh.md").write_text("# Fresh\n\nThe quokkaphant lives in the new folder.\n")
    response = http.post("/v1/ingest", json={"paths": [str(new)]})
    assert response.status_code == 202, response.text
    job = wait_for_job(http, response.json()["id"])
    assert job["status"] == "done", job
    assert job["files_done"] == job["files_total"] == 1
    assert job["report"]["files_added"] == 1 and job["report"]["chunks_embedded"] >= 1
    assert any(j["id"] == job["id"] for j in http.get("/v1/ingest").json()["jobs"])
    hits = http.post("/v1/search", json={"query": "quokkaphant", "mode": "bm25"}).json()
    assert hits["results"][0]["source"] == "fresh.md"
    assert http.get("/v1/ingest/nope").status_code == 404


def test_ingests_give_way_to_searches(settings: Settings, embedder: Embedder, docs: Path) -> None:
    """A job and a watched folder's sync embed on a thread INGEST_NICE below the server's
    priority (Linux), with the interpreter switching threads every INGEST_SWITCH_INTERVAL s;
    the rest of the server keeps both."""
    seen: list[tuple[int, float]] = []

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    class Recording(EmbedderProxy):
        def embed(self, texts: Sequence[str]) -> Vectors:
            seen.append((priority(), sys.getswitchinterval()))
            return self.inner.embed(texts)

    index = Index(settings, embedder=Recording(embedder))
    jobs = IngestJobs(index, [docs.resolve()])
    ours = (priority(), sys.getswitchinterval())
    watched = write_docs(docs.parent / "watched", {"later.md": "# Later\n\nWatched words.\n"})
    try:
        job = jobs.submit([docs.resolve()], IngestRequest(paths=[str(docs)]))
        report = jobs.sync([watched])  # after the job, on the same thread
    finally:
        jobs.shutdown()
        index.close()
    assert job.status == "done" and report.files_added == 1
    lowered = min(19, ours[0] + INGEST_NICE) if sys.platform == "linux" else ours[0]
    assert seen == [(lowered, INGEST_SWITCH_INTERVAL)] * 2
    assert (priority(), sys.getswitchinterval()) == ours


def test_a_second_process_is_pointed_to_the_server_mode(
    served: tuple[LiveServer, Index, Settings],
) -> None:
    db = served[2].db  # Store() opens Milvus when a call needs it (a search may need none)
    code = f"from ossrag.store.milvus import Store, StoreError\ntry:\n    Store({db!r}).files()\n"
    code += "except StoreError as exc:\n    print(exc)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "open in another process" in result.stdout, result.stdout + result.stderr
    assert "milvus-lite server" in result.stdout


# --------------------------------------------------------------------------- timeouts and shutdown


def test_slow_answers_hit_the_request_timeout(
    served: tuple[LiveServer, Index, Settings], llm_server: ScriptedLLMServer
) -> None:
    _, index, settings = served
    quick = settings.model_copy(update={"request_timeout": 1.0})
    with LiveServer(create_app(quick, index)) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key=KEY, max_retries=0)
        llm_server.enqueue(Reply(content=ANSWER, first_token_delay_s=10))
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as timed_out:
            client.chat.completions.create(model="ossrag", messages=ask())
        assert timed_out.value.status_code == 504
        assert time.monotonic() - started < 8  # the 1 s timeout, not the 10 s answer


def test_a_client_hanging_up_mid_stream_does_not_hurt_the_server(
    live: LiveServer, client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    llm_server.enqueue(Reply(content=ANSWER * 5, chunk_size=2, delay_s=0.05))
    body = {"model": "ossrag", "messages": ask(), "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", live.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        assert next(response.iter_lines()).startswith("data: ")
    started = time.monotonic()
    answer = client.chat.completions.create(model="ossrag", messages=ask())
    assert answer.choices[0].message.content.startswith(ANSWER)
    assert time.monotonic() - started < 5


def test_graceful_shutdown_lets_an_open_stream_finish(
    served: tuple[LiveServer, Index, Settings], llm_server: ScriptedLLMServer
) -> None:
    _, index, settings = served
    live = LiveServer(create_app(settings, index), grace=10).start()
    llm_server.enqueue(Reply(content=ANSWER, reasoning=REASONING, chunk_size=4, delay_s=0.03))
    body = {"model": "ossrag", "messages": ask(), "stream": True}
    lines: list[str] = []
    with httpx.stream(
        "POST",
        live.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    ) as response:
        events = response.iter_lines()
        lines.append(next(events))
        live.server.should_exit = True  # as on SIGTERM
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections while draining
            httpx.get(live.url + "/healthz", timeout=2)
        lines += list(events)
    live.thread.join(10)
    assert not live.thread.is_alive()
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    content = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1])
    assert content.startswith(ANSWER)
