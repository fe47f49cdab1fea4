"""The generation client against a real scripted OpenAI-compatible server (no mocks)."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from llm_server import DIALECTS, Reply, ScriptedLLMServer, harmony_text, think_text
from openai.types.chat.chat_completion_chunk import ChoiceDelta

from ossrag.config import load_settings
from ossrag.engine.index import Index
from ossrag.errors import LLMError
from ossrag.generate.llm import (
    Completion,
    ContentDelta,
    EmptyAnswerError,
    Finished,
    LLMClient,
    LLMConfig,
    LLMEvent,
    ReasoningDelta,
    ReasoningSplitter,
    _reasoning_field,
    explain_length,
    split_reasoning,
)
from ossrag.generate.servers import default_context, server_of

pytestmark = pytest.mark.timeout(30)

MODEL = "gpt-oss-20b"
REASONING = "The user asks about <b>tags</b> & 2 < 3; passage [1] says Milvus indexes vectors."
CONTENT = "Milvus builds an index over the vectors [1]. Note: a < b and x > y."
QUESTION = [{"role": "user", "content": "What does Milvus index?"}]
MARKUP = ("<|", "|>", "<think>", "</think>", "analysis", "assistant")


@pytest.fixture
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(Reply(content=CONTENT, reasoning=REASONING), model=MODEL) as srv:
        yield srv


def client_for(server: ScriptedLLMServer, **overrides: Any) -> LLMClient:
    config = LLMConfig(base_url=server.base_url, model=MODEL, max_retries=0, timeout=5.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return LLMClient(config)


def collect(events: Iterator[LLMEvent]) -> tuple[str, str, Finished]:
    """Concatenate a stream into (reasoning, answer, finished); Finished must come last, once."""
    reasoning: list[str] = []
    answer: list[str] = []
    finished: list[Finished] = []
    for event in events:
        assert not finished, "no event may follow Finished"
        if isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, ContentDelta):
            answer.append(event.text)
        else:
            finished.append(event)
    assert len(finished) == 1
    return "".join(reasoning), "".join(answer), finished[0]


def free_port() -> int:
    """A port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_clean(answer: str) -> None:
    for token in MARKUP:
        assert token not in answer, f"{token!r} leaked into the answer: {answer!r}"


# --------------------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    "wire",
    [
        harmony_text(REASONING, CONTENT),
        think_text(REASONING, CONTENT),
        # a commentary preamble and a raw tool call are not answer text either
        "<|channel|>analysis<|message|>"
        + REASONING
        + "<|end|><|start|>assistant<|channel|>commentary to=functions.search "
        + '<|constrain|>json<|message|>{"q": 1}<|call|>'
        + "<|start|>assistant<|channel|>final<|message|>"
        + CONTENT
        + "<|return|>",
    ],
    ids=["harmony", "think", "harmony-commentary"],
)
def test_splitter_handles_every_split_point(wire: str) -> None:
    expected_reasoning, expected_answer = split_reasoning(wire)
    assert expected_answer == CONTENT
    assert expected_reasoning.startswith(REASONING)
    for cut in range(len(wire) + 1):  # every two-piece split
        splitter = ReasoningSplitter()
        r1, a1 = splitter.feed(wire[:cut])
        r2, a2 = splitter.feed(wire[cut:])
        r3, a3 = splitter.flush()
        assert (r1 + r2 + r3, a1 + a2 + a3) == (expected_reasoning, expected_answer), cut


def test_splitter_plain_text_and_edge_cases() -> None:
    assert split_reasoning("  2 < 3 and <b>bold</b> <") == ("", "2 < 3 and <b>bold</b> <")
    assert split_reasoning("thinking hard</think>\n\nAnswer.") == ("thinking hard", "Answer.")
    assert split_reasoning("<|channel|>final<|message|>Answer<|ret") == ("", "Answer")
    splitter = ReasoningSplitter()
    assert splitter.feed("Answer <|") == ("", "Answer ")  # held back: maybe a marker
    assert splitter.feed("return|>") == ("", "")
    assert splitter.feed(" after") == ("", "")  # a marker: nothing after <|return|> is answer


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("plan</think>Answer <think>more</think> done", ("planmore", "Answer  done")),
        ("x<|channel|>final<|message|>y</think>z", ("", "xyz")),  # harmony: no think prefill
        ("<|start|>assistant<|message|>Hi", ("", "Hi")),  # no channel: the final answer
        ("<|channel|>analysis<|message|>r<|end|><|start|>assistant<|message|>a", ("r", "a")),
        ("<|channel|>final<|message|>Hello <|foo|>world", ("", "Hello world")),  # token dropped
        ("<|channel|>final<|message|>A<|end|> between <|start|>", ("", "A")),
    ],
)
def test_splitter_markup_corners(text: str, split: tuple[str, str]) -> None:
    assert split_reasoning(text) == split


def test_splitter_holds_back_only_a_possible_marker() -> None:
    splitter = ReasoningSplitter()
    assert (splitter.feed("plain"), splitter.flush()) == (("", "plain"), ("", ""))
    splitter = ReasoningSplitter()
    assert splitter.feed("A<|") == ("", "A")
    assert (splitter.feed("end|>"), splitter.flush()) == (("", ""), ("", ""))
    splitter = ReasoningSplitter()
    assert splitter.feed("<think>x <") == ("x ", "")
    assert splitter.flush() == ("<", "")  # not a marker after all: reasoning text


# --------------------------------------------------------------------------- dialects


@pytest.mark.parametrize("dialect", DIALECTS)
def test_dialect_streamed(server: ScriptedLLMServer, dialect: str) -> None:
    server.enqueue(Reply(content=CONTENT, reasoning=REASONING, dialect=dialect, chunk_size=5))
    reasoning, answer, finished = collect(client_for(server).stream(QUESTION))
    assert answer == CONTENT
    assert reasoning == ("" if dialect == "none" else REASONING)
    assert finished.finish_reason == "stop"
    assert_clean(answer)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_dialect_complete(server: ScriptedLLMServer, dialect: str) -> None:
    server.enqueue(Reply(content=CONTENT, reasoning=REASONING, dialect=dialect))
    result = client_for(server).complete(QUESTION)
    assert isinstance(result, Completion)
    assert result.content == CONTENT
    assert result.reasoning == ("" if dialect == "none" else REASONING)
    assert result.finish_reason == "stop"
    assert_clean(result.content)


@pytest.mark.parametrize("dialect", ["harmony", "think", "reasoning"])
@pytest.mark.parametrize("chunk_size", range(1, 8))
def test_markers_split_across_chunks(
    server: ScriptedLLMServer, dialect: str, chunk_size: int
) -> None:
    server.enqueue(
        Reply(content=CONTENT, reasoning=REASONING, dialect=dialect, chunk_size=chunk_size)
    )
    reasoning, answer, _ = collect(client_for(server).stream(QUESTION))
    assert (reasoning, answer) == (REASONING, CONTENT)
    assert_clean(answer)


def test_both_reasoning_fields_count_once() -> None:
    # vLLM 0.10-0.11 sent the same text as both `reasoning` and `reasoning_content`
    delta = ChoiceDelta.model_validate({"reasoning": "R", "reasoning_content": "R"})
    assert _reasoning_field(delta) == "R"
    assert _reasoning_field(ChoiceDelta.model_validate({"reasoning_content": "S"})) == "S"


# --------------------------------------------------------------------------- effort


def _last_body(server: ScriptedLLMServer) -> dict[str, Any]:
    body = server.bodies()[-1]
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("style", ["auto", "reasoning_effort"])
def test_effort_as_reasoning_effort(server: ScriptedLLMServer, style: str) -> None:
    client_for(server, effort="high", effort_style=style).complete(QUESTION)
    body = _last_body(server)
    assert body["reasoning_effort"] == "high"
    assert "reasoning" not in body
    assert body["messages"] == QUESTION


def test_effort_openrouter_style(server: ScriptedLLMServer) -> None:
    client = client_for(server, effort="low", effort_style="openrouter", extra_body={"x": 1})
    collect(client.stream(QUESTION))
    body = _last_body(server)
    assert body["reasoning"] == {"effort": "low"}
    assert "reasoning_effort" not in body
    assert body["x"] == 1
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_effort_auto_picks_openrouter_by_host() -> None:
    def style(url: str) -> str:
        return LLMClient(LLMConfig(base_url=url, model=MODEL)).effort_style()

    assert style("https://openrouter.ai/api/v1") == "openrouter"
    assert style("http://localhost:8000/v1") == "reasoning_effort"
    assert style("http://notopenrouter.ai.example/v1") == "reasoning_effort"
    # a local server on its default port is known without a preset (generate.servers)
    assert style("http://localhost:1234/v1") == "system"  # LM Studio
    assert style("http://127.0.0.1:8080/v1") == "chat_template_kwargs"  # llama.cpp
    assert style("http://gpu-box:11434/v1") == "reasoning_effort"  # Ollama


def test_servers_are_known_by_preset_then_by_url() -> None:
    assert server_of("http://localhost:9/v1", "lmstudio") == "lmstudio"  # the preset wins
    assert server_of("https://eu.openrouter.ai/api/v1") == "openrouter"
    assert server_of("http://localhost:1234/v1") == "lmstudio"
    assert server_of("http://localhost:8000/v1") == ""  # vLLM's port is ossrag serve's too
    assert server_of("http://localhost/v1") == ""
    assert default_context("http://localhost:11434/v1") == 8192
    assert default_context("http://localhost:9/v1", "ollama") == 8192
    assert default_context("http://localhost:8000/v1", "vllm") == 131072


def test_effort_system_style(server: ScriptedLLMServer) -> None:
    client = client_for(server, effort="medium", effort_style="system")
    messages = [{"role": "system", "content": "Answer from the context."}, *QUESTION]
    client.complete(messages, effort="high")  # per-call effort wins over the config
    body = _last_body(server)
    assert body["messages"][0] == {
        "role": "system",
        "content": "Reasoning: high\n\nAnswer from the context.",
    }
    assert "reasoning_effort" not in body and "reasoning" not in body
    assert messages[0]["content"] == "Answer from the context."  # caller's list untouched

    client.complete(QUESTION)  # no system message: one is added
    assert _last_body(server)["messages"] == [
        {"role": "system", "content": "Reasoning: medium"},
        *QUESTION,
    ]


def test_effort_none_style_and_no_effort(server: ScriptedLLMServer) -> None:
    client_for(server, effort="high", effort_style="none").complete(QUESTION)
    client_for(server).complete(QUESTION)
    for body in server.bodies():
        assert not {"reasoning_effort", "reasoning"} & set(body)
        assert body["messages"] == QUESTION


def test_bad_effort_and_bad_url() -> None:
    client = LLMClient(LLMConfig(base_url="http://127.0.0.1:9/v1", model=MODEL))
    with pytest.raises(LLMError, match="set effort to low, medium or high"):
        client.complete(QUESTION, effort="extreme")
    with pytest.raises(LLMError, match="set base_url"):
        LLMClient(LLMConfig(base_url="localhost:8000/v1", model=MODEL))


def test_request_parameters(server: ScriptedLLMServer) -> None:
    client = client_for(server, max_tokens=300)
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    client.complete(QUESTION, tools=tools, temperature=0.5, top_k=20)
    body = _last_body(server)
    assert body["max_tokens"] == 300
    assert body["tools"] == tools
    assert body["temperature"] == 0.5
    assert body["top_k"] == 20  # non-standard fields travel in the body
    collect(client.stream(QUESTION, max_tokens=50))
    assert _last_body(server)["max_tokens"] == 50
    assert server.requests[-1].headers["authorization"] == "Bearer not-needed"


# --------------------------------------------------------------------------- usage, length, tools


def test_usage_passed_through(server: ScriptedLLMServer) -> None:
    usage = {
        "prompt_tokens": 11,
        "completion_tokens": 22,
        "total_tokens": 33,
        "completion_tokens_details": {"reasoning_tokens": 7},
    }
    server.enqueue(Reply(content=CONTENT, usage=usage), Reply(content=CONTENT, usage=usage))
    _, _, finished = collect(client_for(server).stream(QUESTION))
    assert finished.usage == usage
    assert client_for(server).complete(QUESTION).usage == usage


def test_length_with_empty_answer(server: ScriptedLLMServer) -> None:
    spent = Reply(content="", reasoning=REASONING * 3, finish_reason="length", chunk_size=40)
    server.enqueue(spent, spent)
    client = client_for(server, max_tokens=64)
    reasoning, answer, finished = collect(client.stream(QUESTION))
    assert (answer, finished.finish_reason) == ("", "length")
    assert reasoning == REASONING * 3
    result = client.complete(QUESTION)
    assert (result.content, result.finish_reason) == ("", "length")

    text = explain_length(64)
    assert "max_tokens=64" in text and str(EmptyAnswerError(64)).endswith(
        "raise max_tokens or lower effort"
    )
    assert EmptyAnswerError(64).settings == ["max_tokens", "effort"]
    assert isinstance(EmptyAnswerError(None), LLMError)
    assert "default max_tokens" in explain_length(None)


def test_tool_calls_streamed_and_complete(server: ScriptedLLMServer) -> None:
    calls: list[dict[str, Any]] = [
        {"name": "search", "arguments": {"query": "milvus index types", "k": 5}},
        {"name": "open", "arguments": '{"source": "a.md"}'},
    ]
    server.enqueue(Reply(tool_calls=calls, reasoning="I should search.", chunk_size=3))
    _, answer, finished = collect(client_for(server).stream(QUESTION))
    assert answer == ""
    assert finished.finish_reason == "tool_calls"
    assert [c.name for c in finished.tool_calls] == ["search", "open"]
    assert finished.tool_calls[0].parse_arguments() == {"query": "milvus index types", "k": 5}
    assert finished.tool_calls[1].parse_arguments() == {"source": "a.md"}
    assert all(c.id for c in finished.tool_calls)

    server.enqueue(Reply(tool_calls=calls[:1]))
    result = client_for(server).complete(QUESTION)
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls[0].name == "search"
    assert result.tool_calls[0].parse_arguments()["k"] == 5


def test_respond_hook_sees_tool_results(server: ScriptedLLMServer) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        if any(m.get("role") == "tool" for m in body["messages"]):
            return Reply(content="Found it [1].")
        return Reply(tool_calls=[{"name": "search", "arguments": {"query": "x"}}])

    server.add_model(MODEL, Reply(respond=respond))
    client = client_for(server)
    first = client.complete(QUESTION)
    call = first.tool_calls[0]
    messages: list[dict[str, Any]] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "[1] Milvus docs"},
    ]
    assert client.complete(messages).content == "Found it [1]."


# --------------------------------------------------------------------------- failures


def test_connection_refused_is_fast_and_named() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = LLMClient(LLMConfig(base_url=url, model=MODEL, max_retries=0))
    started = time.monotonic()
    with pytest.raises(LLMError) as err:
        collect(client.stream(QUESTION))
    message = str(err.value)
    assert url in message and "base_url" in message and "connection refused" in message
    assert "\n" not in message
    with pytest.raises(LLMError, match="set base_url"):
        client.complete(QUESTION)
    assert time.monotonic() - started < 10  # no retry, no waiting out the 120 s timeout


def test_500_then_success_is_retried(server: ScriptedLLMServer) -> None:
    server.enqueue(Reply(status=500, retry_after=0.01), Reply(status=503, retry_after=0.01))
    client = client_for(server, max_retries=2)
    _, answer, _ = collect(client.stream(QUESTION))
    assert answer == CONTENT
    assert len(server.bodies()) == 3


def test_429_is_retried_then_reported(server: ScriptedLLMServer) -> None:
    server.enqueue(Reply(status=429, retry_after=0.01))
    assert client_for(server, max_retries=1).complete(QUESTION).content == CONTENT

    server.enqueue(*[Reply(status=429, retry_after=0.01, error="slow down")] * 2)
    with pytest.raises(LLMError) as err:
        client_for(server, max_retries=1).complete(QUESTION)
    assert "HTTP 429" in str(err.value) and "slow down" in str(err.value)
    assert err.value.status_code == 429
    assert len(server.bodies()) == 4


def test_persistent_500_names_status_and_message(server: ScriptedLLMServer) -> None:
    server.enqueue(Reply(status=500, error="CUDA out of memory\nat line 3"))
    with pytest.raises(LLMError) as err:
        collect(client_for(server).stream(QUESTION))
    message = str(err.value)
    assert "HTTP 500" in message and "CUDA out of memory at line 3" in message
    assert server.base_url in message and "\n" not in message


def test_401_mentions_api_key() -> None:
    with ScriptedLLMServer(Reply(content="hi"), model=MODEL, api_key="s3cret") as srv:
        with pytest.raises(LLMError) as err:
            client_for(srv).complete(QUESTION)
        assert "set api_key" in str(err.value) and err.value.status_code == 401
        assert client_for(srv, api_key="s3cret").complete(QUESTION).content == "hi"
        ok, message = client_for(srv).check()
        assert not ok and "set api_key" in message


def test_404_mentions_model(server: ScriptedLLMServer) -> None:
    with pytest.raises(LLMError) as err:
        collect(client_for(server, model="gpt-oss-999b").stream(QUESTION))
    message = str(err.value)
    assert "gpt-oss-999b" in message and "set model" in message
    assert err.value.status_code == 404


def test_mid_stream_drop(server: ScriptedLLMServer) -> None:
    server.enqueue(Reply(content=CONTENT, reasoning=REASONING, chunk_size=4, drop_after_chunks=6))
    received: list[LLMEvent] = []
    with pytest.raises(LLMError, match="mid-answer") as err:
        for event in client_for(server).stream(QUESTION):
            received.append(event)
    assert received and not any(isinstance(e, Finished) for e in received)
    assert server.base_url in str(err.value)


def test_stream_without_finish_reason_is_an_error(server: ScriptedLLMServer) -> None:
    server.enqueue(Reply(content=CONTENT, finish_reason=None))
    with pytest.raises(LLMError, match="ended before"):
        collect(client_for(server).stream(QUESTION))


def test_timeouts_name_the_setting(server: ScriptedLLMServer) -> None:
    slow = Reply(content=CONTENT, first_token_delay_s=1.0)
    server.enqueue(slow, slow)
    client = client_for(server, timeout=0.2)
    with pytest.raises(LLMError, match=r"raise the timeout \(timeout\)"):
        collect(client.stream(QUESTION))
    with pytest.raises(LLMError, match=r"raise the timeout \(timeout\)"):
        client.complete(QUESTION)


# --------------------------------------------------------------------------- check


def test_check(server: ScriptedLLMServer) -> None:
    assert client_for(server).check() == (True, "1 model")
    server.add_model("gpt-oss-120b", Reply(content="big"))
    ok, message = client_for(server, model="other").check()
    assert ok and message.startswith("2 models") and "set the model setting" in message

    url = f"http://127.0.0.1:{free_port()}/v1"
    ok, message = LLMClient(LLMConfig(base_url=url, model=MODEL)).check()
    assert not ok and url in message and "\n" not in message


# --------------------------------------------------------------------------- the fixture itself


def test_many_concurrent_streams(server: ScriptedLLMServer) -> None:
    server.add_model(MODEL, Reply(content=CONTENT, reasoning=REASONING, delay_s=0.002))
    client = client_for(server)
    answers: list[str] = []

    def ask() -> None:
        answers.append(collect(client.stream(QUESTION))[1])

    threads = [threading.Thread(target=ask) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [CONTENT] * 24


def test_embeddings_endpoint(server: ScriptedLLMServer) -> None:
    api = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    texts = ["Milvus builds vector indexes", "vector indexes in Milvus", "bake a cake"]
    for fmt in (openai.omit, "float"):  # the client asks for base64 unless told otherwise
        response = api.embeddings.create(model="m", input=texts, encoding_format=fmt)
        vectors = [d.embedding for d in response.data]
        assert [len(v) for v in vectors] == [384] * 3
        assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)

        def cos(a: list[float], b: list[float]) -> float:
            return sum(x * y for x, y in zip(a, b, strict=True))

        assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    assert server.bodies("/v1/embeddings")[0]["encoding_format"] == "base64"
    one = api.embeddings.create(model="m", input="bake a cake", dimensions=64).data[0].embedding
    assert len(one) == 64


def test_standalone_server_runs() -> None:
    port = free_port()
    script = Path(__file__).with_name("llm_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"127.0.0.1:{port}/v1" in proc.stdout.readline()
        client = LLMClient(LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model=MODEL))
        result = client.complete(QUESTION)
        assert "[1]" in result.content and result.reasoning
        models = json.loads(
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
            .models.with_raw_response.list()
            .text
        )
        assert {m["id"] for m in models["data"]} == {"gpt-oss-20b", "gpt-oss-120b"}
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.mark.parametrize(
    ("preset", "style"),
    [
        ("ollama", "reasoning_effort"),
        ("vllm", "reasoning_effort"),
        ("lmstudio", "system"),
        ("llamacpp", "chat_template_kwargs"),
        ("openrouter", "openrouter"),
        ("", "reasoning_effort"),
    ],
)
def test_each_preset_sends_the_effort_its_server_reads(preset: str, style: str) -> None:
    config = LLMConfig(base_url="http://localhost:9/v1", model=MODEL, preset=preset)
    assert LLMClient(config).effort_style() == style


def test_llamacpp_gets_the_effort_in_the_chat_template_kwargs(server: ScriptedLLMServer) -> None:
    client = client_for(server, effort="high", preset="llamacpp")
    client.complete(QUESTION)
    body = _last_body(server)
    assert body["chat_template_kwargs"] == {"reasoning_effort": "high"}
    assert body["reasoning_effort"] == "high"  # newer builds read the field itself
    assert body["messages"] == QUESTION


def test_lmstudio_gets_harmonys_reasoning_line(server: ScriptedLLMServer) -> None:
    settings = load_settings(llm="lmstudio", base_url=server.base_url, model=MODEL, effort="high")
    with Index(settings) as index:
        index.llm.complete(QUESTION)
    body = _last_body(server)
    assert body["messages"][0] == {"role": "system", "content": "Reasoning: high"}
    assert "reasoning_effort" not in body
