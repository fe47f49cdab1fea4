"""Issue #15's attacks, each reproduced against the real server, store and CLI, and held."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_for_job, write_docs
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from llm_server import Reply, ScriptedLLMServer
from test_server import LiveServer
from typer.testing import CliRunner

from ossrag.cli.app import app as cli_app
from ossrag.config import Settings, load_settings
from ossrag.console import terminal_safe
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.errors import LLMError, LoadError
from ossrag.generate.agent import ToolStep
from ossrag.generate.answer import Answer
from ossrag.generate.llm import LLMClient, LLMConfig
from ossrag.http.app import create_app
from ossrag.http.guards import allowed_host_names, script_hash
from ossrag.load.files import Found, Skipped, discover, load, open_beneath
from ossrag.store.search import milvus_string

SECRET = "zebra marmalade quorum 7731"
runner = CliRunner()


@pytest.fixture(scope="module")
def llm_server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(Reply(content="Copy the bucket [1].")) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("security")
    write_docs(root / "allowed" / "docs")
    (root / "outside").mkdir()
    (root / "outside" / "secret.md").write_text(f"# Secret\n\nThe {SECRET} is private.\n")
    return root


@pytest.fixture(scope="module")
def served(
    workdir: Path, embedder: Embedder, llm_server: ScriptedLLMServer
) -> Iterator[tuple[LiveServer, Index, Settings]]:
    """`ossrag serve`'s default: loopback, no API keys; ingest allowed under allowed/."""
    settings = Settings(
        db=str(workdir / "store.db"),
        base_url=llm_server.base_url,
        model="gpt-oss-20b",
        allowed_roots=[str(workdir / "allowed")],
        _env_file=None,
    )
    index = Index(settings, embedder=embedder)
    index.ingest([workdir / "allowed" / "docs"])
    server = LiveServer(create_app(settings, index))
    with server as live:
        yield live, index, settings
    index.close()


@pytest.fixture(scope="module")
def live(served: tuple[LiveServer, Index, Settings]) -> LiveServer:
    return served[0]


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def sources(http: httpx.Client, query: str) -> list[str]:
    response = http.post("/v1/search", json={"query": query, "top_k": 10})
    assert response.status_code == 200, response.text
    return [r["source"] for r in response.json()["results"]]


# --------------------------------------------------------------------------- 1. DNS rebinding

ROUTES = [
    ("GET", "/", None),
    ("GET", "/static/app.js", None),
    ("GET", "/docs", None),
    ("GET", "/openapi.json", None),
    ("GET", "/readyz", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/search", {"query": "backup"}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "backup?"}]}),
    ("GET", "/v1/ingest", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_rebound_host_name_is_refused_on_every_route(
    http: httpx.Client, live: LiveServer, method: str, path: str, body: Any
) -> None:
    evil = http.request(method, path, json=body, headers={"Host": f"evil.example:{live.port}"})
    assert evil.status_code == 400
    assert evil.json()["error"]["param"] == "Host"
    assert evil.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
def test_loopback_names_are_answered(http: httpx.Client, live: LiveServer, host: str) -> None:
    response = http.post(
        "/v1/search", json={"query": "backup"}, headers={"Host": f"{host}:{live.port}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["source"] == "guide/storage.md"


def test_healthz_answers_any_host(http: httpx.Client) -> None:
    response = http.get("/healthz", headers={"Host": "evil.example"})
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_allowed_hosts_add_names(served: tuple[LiveServer, Index, Settings]) -> None:
    _, index, settings = served
    extra = settings.model_copy(update={"allowed_hosts": ["rag.internal", "*.corp.example"]})
    with (
        LiveServer(create_app(extra, index)) as other,
        httpx.Client(base_url=other.url) as client,
    ):
        codes = [
            client.get("/v1/models", headers={"Host": host}).status_code
            for host in ("rag.internal", "a.corp.example", "evil.example", "corp.example.evil")
        ]
    assert codes == [200, 200, 400, 400]


def test_allowed_host_names_for_the_bound_address() -> None:
    base = Settings(_env_file=None)
    assert allowed_host_names(base) == ["localhost", "127.0.0.1", "[::1]"]
    bound = base.model_copy(update={"host": "192.0.2.7", "allowed_hosts": ["Docs.Example"]})
    assert allowed_host_names(bound) == [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "docs.example",
        "192.0.2.7",
    ]
    v6 = base.model_copy(update={"host": "2001:db8::5"})
    assert allowed_host_names(v6)[-1] == "[2001:db8::5]"
    everywhere = allowed_host_names(base.model_copy(update={"host": "0.0.0.0"}))
    assert everywhere[:3] == ["localhost", "127.0.0.1", "[::1]"] and len(everywhere) >= 4


# --------------------------------------------------------------------------- 2. ingest TOCTOU


def test_a_link_planted_after_the_request_is_checked_is_never_read(
    http: httpx.Client, served: tuple[LiveServer, Index, Settings], workdir: Path
) -> None:
    race = workdir / "allowed" / "race"
    write_docs(race, {"ok.md": "# Ok\n\nAn ordinary note about compaction.\n"})
    jobs = served[0].server.config.app.state.jobs  # the one ingest worker
    gate = threading.Event()
    jobs._executor.submit(gate.wait)  # a slow job ahead in the queue, released below
    try:
        response = http.post("/v1/ingest", json={"paths": [str(race)]})
        assert response.status_code == 202, response.text  # checked: no link yet
        (race / "leak.md").symlink_to(workdir / "outside" / "secret.md")
    finally:
        gate.set()
    job = wait_for_job(http, response.json()["id"])
    assert job["status"] == "done", job
    assert job["report"]["files_added"] == 1
    assert job["report"]["warnings"] == ["leak.md: links outside the allowed roots"]
    assert "race/leak.md" not in sources(http, SECRET) and "leak.md" not in sources(http, SECRET)


def test_a_directory_swapped_for_a_link_after_resolution_is_not_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_docs(root, {"sub/a.md": "# A\n\nInside.\n"})
    write_docs(outside, {"a.md": f"# A\n\n{SECRET}\n"})
    found = next(item for item in discover([root]) if isinstance(item, Found))
    assert load(found, roots=[root.resolve()]).text == "# A\n\nInside.\n"
    (root / "sub" / "a.md").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(outside)  # swapped in after the path was resolved
    with pytest.raises(LoadError, match=r"^sub/a\.md: a symbolic link appeared after"):
        open_beneath(root.resolve(), Path("sub/a.md"), "sub/a.md")
    with pytest.raises(LoadError, match=r"^sub/a\.md: links outside the allowed roots$"):
        load(found, roots=[root.resolve()])


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.md")
    found = Found(root=tmp_path, path=tmp_path / "pipe.md", source="pipe.md")
    with pytest.raises(LoadError, match=r"^pipe\.md: not a regular file$"):
        load(found, roots=[tmp_path.resolve()])


# --------------------------------------------------------------------------- 3. no 500s


@pytest.mark.parametrize(
    ("name", "reason"), [("a\x00b", "embedded null byte"), ("a" * 300, "File name too long")]
)
def test_unusable_ingest_paths_are_a_400_naming_the_field(
    http: httpx.Client, workdir: Path, name: str, reason: str
) -> None:
    paths = [str(workdir / "allowed" / "docs"), f"{workdir}/allowed/{name}"]
    response = http.post("/v1/ingest", json={"paths": paths})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("paths[1]: unusable path") and reason in message


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
HOSTILE_TEXT = st.text() | st.sampled_from(
    [
        *["", " ", "\x00", "a\x00b", "\x1b[2J", "é" * 3000, "[" * 500, "../../etc/passwd", "/"],
        *["/tmp/a\x00b", "/" + "a" * 300, "/tmp/" + "b/" * 2000, "\ud7ff"],
    ]
)
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", 3]), "text": JSON})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]) | JSON},
    optional={"content": HOSTILE_TEXT | st.lists(PART, max_size=3) | JSON},
)
BODIES = {
    "/v1/search": st.fixed_dictionaries(
        {},
        optional={
            "query": HOSTILE_TEXT | JSON,
            "top_k": st.integers(-5, 200) | JSON,
            "mode": st.sampled_from(["hybrid", "dense", "bm25", "other"]) | JSON,
        },
    ),
    "/v1/chat/completions": st.fixed_dictionaries(
        {"messages": st.lists(MESSAGE, max_size=3) | JSON},
        optional={
            "model": st.sampled_from(["ossrag", "ossrag-bm25", "nope"]) | JSON,
            "stream": st.booleans() | JSON,
            "top_k": st.integers(-5, 200) | JSON,
            "reasoning_effort": st.sampled_from(["low", "high", "max"]) | JSON,
            "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json"])})
            | JSON,
        },
    ),
    "/v1/ingest": st.fixed_dictionaries(
        {"paths": st.lists(HOSTILE_TEXT, max_size=3) | JSON},
        optional={
            "include": st.lists(HOSTILE_TEXT, max_size=2) | JSON,
            "prune": st.booleans() | JSON,
        },
    ),
}


@pytest.mark.parametrize("route", sorted(BODIES))
def test_no_generated_body_gets_a_5xx(http: httpx.Client, route: str) -> None:
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(body=BODIES[route] | JSON, raw=st.none() | st.binary(max_size=64))
    @example(body={"paths": ["/tmp/a\x00b"]}, raw=None)  # the 500s issue #15 found, always tried
    @example(body={"paths": ["/" + "a" * 300]}, raw=None)
    def check(body: Any, raw: bytes | None) -> None:
        if raw is None:
            response = http.post(route, json=body)
        else:
            headers = {"Content-Type": "application/json"}
            response = http.post(route, content=raw, headers=headers)
        assert response.status_code < 500, (body, raw, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"message", "type"}

    check()


def test_deeply_nested_json_is_a_4xx(http: httpx.Client) -> None:
    response = http.post(
        "/v1/search",
        content=b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (
            "/v1/search",
            {"query": " \t\n "},
            "body.query: Value error, the query is only whitespace",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
            "body.messages.0.content: Value error, part 0 is of type text but has no string 'text'",
        ),
    ],
)
def test_empty_questions_are_400s(
    http: httpx.Client, route: str, body: dict[str, Any], field: str
) -> None:
    response = http.post(route, json=body)
    assert (response.status_code, response.json()["error"]["message"]) == (400, field)


# --------------------------------------------------------------------------- 4. headers


@pytest.mark.parametrize(
    "path", ["/", "/static/app.js", "/v1/models", "/openapi.json", "/nope", "/healthz"]
)
def test_security_headers_on_pages_files_and_api(http: httpx.Client, path: str) -> None:
    headers = http.get(path).headers
    assert headers["content-security-policy"] == (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


def test_refused_hosts_get_the_headers_too(http: httpx.Client) -> None:
    response = http.get("/", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_api_docs_allow_exactly_their_own_inline_script(http: httpx.Client) -> None:
    response = http.get("/docs")
    scripts = re.findall(r"<script>(.*?)</script>", response.text, flags=re.S)
    assert len(scripts) == 1
    csp = response.headers["content-security-policy"]
    assert f"script-src 'self' {script_hash(scripts[0])};" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]


# --------------------------------------------------------------------------- 5. terminal escapes

EVIL_TEXT = "Title trick \x1b]0;pwned\x07 and clear \x1b[2J here, C1 \x9b31m, bidi \u202eabc."
EVIL_NAME = "evil\x1b[31mred.md"


def test_terminal_safe_escapes_every_steering_character() -> None:
    assert terminal_safe(EVIL_TEXT) == (
        "Title trick \\x1b]0;pwned\\x07 and clear \\x1b[2J here, C1 \\x9b31m, bidi \\u202eabc."
    )
    assert terminal_safe("tabs\tand\nnewlines stay; é and 日本 too") == (
        "tabs\tand\nnewlines stay; é and 日本 too"
    )
    assert terminal_safe("\x00\x08\x0b\x0c\r\x7f") == "\\x00\\x08\\x0b\\x0c\\x0d\\x7f"


@pytest.fixture(scope="module")
def evil_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("evil")
    docs = write_docs(root / "docs", {EVIL_NAME: f"# Evil \x1b[2J heading\n\n{EVIL_TEXT}\n"})
    env = {"OSSRAG_DB": str(root / "store.db"), "OSSRAG_CONFIG": str(root / "none.toml")}
    result = runner.invoke(cli_app, ["ingest", str(docs)], env=env)
    assert result.exit_code == 0, result.output
    return env


def assert_inert(output: str) -> None:
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", output), repr(output)


def test_search_prints_documents_inert(evil_env: dict[str, str]) -> None:
    result = runner.invoke(cli_app, ["search", "title trick clear"], env=evil_env)
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout + result.stderr)
    assert "evil\\x1b[31mred.md › Evil \\x1b[2J heading" in result.stdout
    assert "Title trick \\x1b]0;pwned\\x07 and clear \\x1b[2J here" in result.stdout


def test_ask_and_chat_print_model_output_inert(
    evil_env: dict[str, str], llm_server: ScriptedLLMServer
) -> None:
    echo = Reply(content=f"It says: {EVIL_TEXT} [1]", reasoning="Echo \x1b]0;x\x07 it.")
    env = {**evil_env, "OSSRAG_BASE_URL": llm_server.base_url, "OSSRAG_MODEL": "gpt-oss-20b"}
    llm_server.enqueue(echo, echo)
    asked = runner.invoke(cli_app, ["ask", "title trick?", "--show-reasoning"], env=env)
    chatted = runner.invoke(cli_app, ["chat"], env=env, input="title trick?\n/sources\n")
    for result in (asked, chatted):
        assert result.exit_code == 0, result.output
        assert_inert(result.stdout + result.stderr)
        assert "It says: Title trick \\x1b]0;pwned\\x07" in result.stdout
    assert "Echo \\x1b]0;x\\x07 it." in asked.stderr
    assert "evil\\x1b[31mred.md" in asked.stdout and "evil\\x1b[31mred.md" in chatted.stderr


# --------------------------------------------------------------------------- 6. filters never prune


def test_an_include_filter_keeps_what_it_leaves_out_cli(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    env = {"OSSRAG_DB": str(tmp_path / "s.db"), "OSSRAG_CONFIG": str(tmp_path / "none.toml")}

    def ingest(*extra: str) -> dict[str, Any]:
        result = runner.invoke(cli_app, ["ingest", str(docs), "--json", *extra], env=env)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    assert ingest()["files_added"] == 3
    filtered = ingest("--include", "*.txt")
    assert (filtered["files_unchanged"], filtered["files_removed"]) == (1, 0)
    status = json.loads(runner.invoke(cli_app, ["status", "--json"], env=env).stdout)
    assert status["files"] == 3
    (docs / "guide" / "search.md").unlink()  # gone from disk: pruned even when filtered out
    assert ingest("--include", "*.txt")["files_removed"] == 1
    assert ingest("--exclude", "guide")["files_removed"] == 0
    status = json.loads(runner.invoke(cli_app, ["status", "--json"], env=env).stdout)
    assert status["files"] == 2


def test_an_include_filter_keeps_what_it_leaves_out_http(http: httpx.Client, workdir: Path) -> None:
    before = sources(http, "Where does the engine keep data?")
    assert before[0] == "guide/storage.md"
    docs = str(workdir / "allowed" / "docs")
    response = http.post("/v1/ingest", json={"paths": [docs], "include": ["*.txt"]})
    assert response.status_code == 202, response.text
    report = wait_for_job(http, response.json()["id"])["report"]
    assert (report["files_removed"], report["chunks_deleted"], report["files_unchanged"]) == (
        0,
        0,
        1,
    )
    assert sources(http, "Where does the engine keep data?") == before


# --------------------------------------------------------------------------- 7. agent and quoting

HOSTILE_NAMES = [
    "café.md",
    "日本語.md",
    "emoji😀.md",
    'quote"d.md',
    "it's.md",
    "back\\slash.md",
    "new\nline.md",
    "carriage\rreturn.md",
    "tab\tname.md",
    "bell\x07.md",
    "a\\u00e9.md",
]


def test_filter_strings_reach_milvus_intact(index: Index, tmp_path: Path) -> None:
    docs = write_docs(
        tmp_path / "docs", {name: f"# N\n\nNote {i}.\n" for i, name in enumerate(HOSTILE_NAMES)}
    )
    report = index.ingest([docs])
    assert report.files_added == len(HOSTILE_NAMES), report.warnings
    index.store.memory_index = False  # read in Milvus, through its filter grammar
    for i, name in enumerate(HOSTILE_NAMES):
        rows = index.store.chunks_in_range(name, 1, 10, 5)
        assert [(row["source"], row["text"]) for row in rows] == [(name, f"# N\n\nNote {i}.")]
    assert milvus_string('a"b\\c\nd\re\tf é') == '"a\\"b\\\\c\\nd\\re\tf é"'


@pytest.fixture
def agent_index(
    tmp_path: Path, embedder: Embedder, llm_server: ScriptedLLMServer
) -> Iterator[Index]:
    settings = load_settings(
        db=str(tmp_path / "s.db"), base_url=llm_server.base_url, model="gpt-oss-20b"
    )
    index = Index(settings, embedder=embedder)
    index.ingest([write_docs(tmp_path / "docs", {"café.md": "# Café\n\nThe café opens at 8.\n"})])
    yield index
    index.close()


def scripted_open(args: dict[str, Any]) -> Reply:
    def respond(body: dict[str, Any]) -> Reply:
        if any(m["role"] == "tool" for m in body["messages"]):
            return Reply(content="It opens at 8 [1].")
        return Reply(tool_calls=[{"name": "open_source", "arguments": args}])

    return Reply(respond=respond)


@pytest.mark.parametrize("memory_index", [True, False], ids=["in-memory index", "milvus"])
def test_agent_opens_a_non_ascii_source(
    agent_index: Index, llm_server: ScriptedLLMServer, memory_index: bool
) -> None:
    reply = scripted_open({"source": "café.md", "start_line": 1, "end_line": 5})
    llm_server.enqueue(reply, reply)
    agent_index.store.memory_index = memory_index  # a Lite store reads its index; others Milvus
    events = list(agent_index.agent_stream("When does the café open?"))
    steps = [e for e in events if isinstance(e, ToolStep)]
    assert [(s.summary, s.error, s.numbers) for s in steps] == [
        ("opening: café.md lines 1-5 → [1]", "", (1,))
    ]
    answer = events[-1]
    assert isinstance(answer, Answer) and answer.text == "It opens at 8 [1]."
    assert [p.source for p in answer.passages] == ["café.md"]


def test_a_store_error_inside_a_tool_is_told_to_the_model(
    agent_index: Index, llm_server: ScriptedLLMServer
) -> None:
    reply = scripted_open({"source": "café.md", "start_line": 1, "end_line": 10**30})
    llm_server.enqueue(reply, reply)
    agent_index.store.memory_index = False  # read in Milvus, which refuses a line past int64
    events = list(agent_index.agent_stream("When does the café open?"))
    steps = [e for e in events if isinstance(e, ToolStep)]
    assert len(steps) == 1 and steps[0].error.startswith("Milvus at ")
    tool = [m for m in llm_server.bodies()[-1]["messages"] if m["role"] == "tool"]
    assert tool[0]["content"].startswith("error: Milvus at ")
    assert isinstance(events[-1], Answer) and events[-1].text == "It opens at 8 [1]."


# --------------------------------------------------------------------------- 8-12. smaller faults


def test_ask_json_with_the_llm_down_prints_sources_and_the_error(evil_env: dict[str, str]) -> None:
    env = {**evil_env, "OSSRAG_BASE_URL": "http://127.0.0.1:9/v1", "OSSRAG_TIMEOUT": "2"}
    result = runner.invoke(cli_app, ["ask", "title trick?", "--json"], env=env)
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["answer"] is None
    assert payload["error"].startswith("cannot reach the LLM at http://127.0.0.1:9/v1")
    assert [c["source"] for c in payload["citations"]] == [EVIL_NAME]


def test_a_timeout_says_how_often_and_how_long_it_waited(llm_server: ScriptedLLMServer) -> None:
    slow = Reply(content="late", first_token_delay_s=1.5)
    llm_server.enqueue(slow, slow, slow)
    config = LLMConfig(
        base_url=llm_server.base_url, model="gpt-oss-20b", timeout=0.3, max_retries=2
    )
    with LLMClient(config) as client, pytest.raises(LLMError) as caught:
        client.complete([{"role": "user", "content": "hi"}])
    assert re.fullmatch(
        r"the LLM at \S+ did not answer within 0\.3 s on any of 3 tries, \d+ s in all: "
        r"raise the timeout \(timeout\), lower the reasoning effort, or "
        r"check the server",
        str(caught.value),
    ), str(caught.value)
    time.sleep(1.5)  # let the slow replies drain before the next test uses the server


def test_a_symlink_loop_is_called_a_loop(tmp_path: Path) -> None:
    (tmp_path / "self.md").symlink_to("self.md")
    (tmp_path / "a.md").symlink_to("b.md")
    (tmp_path / "b.md").symlink_to("a.md")
    (tmp_path / "gone.md").symlink_to("nowhere.md")
    walked = [(item.path.name, item.reason) for item in discover([tmp_path])]
    assert walked == [
        ("a.md", "symlink loop"),
        ("b.md", "symlink loop"),
        ("gone.md", "broken symbolic link"),
        ("self.md", "symlink loop"),
    ]
    named = list(discover([tmp_path / "self.md"]))
    assert named == [Skipped(tmp_path / "self.md", "symlink loop")]
