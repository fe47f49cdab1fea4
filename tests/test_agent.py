"""The agent loop against the scripted server: tool calls, numbering, bounds and fallbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_docs
from llm_server import Reply, ScriptedLLMServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.engine.index import Index
from ossrag.generate.agent import (
    FINAL_NOTE,
    PREAMBLE_CHARS,
    Agent,
    AgentEvent,
    ToolStep,
    json_tool_call,
)
from ossrag.generate.answer import Answer, Retrieved
from ossrag.generate.llm import ContentDelta, ReasoningDelta
from ossrag.generate.servers import reasoning_field


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(Reply(content="default answer [1].")) as s:
        yield s


@pytest.fixture(scope="module")
def shared_index(
    tmp_path_factory: pytest.TempPathFactory, server: ScriptedLLMServer
) -> Iterator[Index]:
    root = tmp_path_factory.mktemp("agent")
    settings = load_settings(
        db=str(root / "store.db"), base_url=server.base_url, model="gpt-oss-20b", api_key="x",
        effort="medium", context_window=32768, answer_tokens=2048,
        embedder="openai:hashed", embed_base_url=server.base_url,  # the server's own embeddings
    )  # fmt: skip
    index = Index(settings)
    index.ingest([write_docs(root / "docs")])
    yield index
    index.close()


@pytest.fixture
def index(shared_index: Index, server: ScriptedLLMServer) -> Index:
    server.requests.clear()
    return shared_index


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def scripted(*turns: Callable[[dict[str, Any]], Reply]) -> Reply:
    """A reply that picks turn n by how many tool results the request already holds."""
    return Reply(respond=lambda body: turns[min(len(tool_messages(body)), len(turns) - 1)](body))


def call(name: str, arguments: Any, reasoning: str = "") -> Callable[[dict[str, Any]], Reply]:
    return lambda body: Reply(
        tool_calls=[{"name": name, "arguments": arguments}], reasoning=reasoning
    )


def answer(text: str) -> Callable[[dict[str, Any]], Reply]:
    return lambda body: Reply(content=text, reasoning="Enough found.")


def run(index: Index, **agent_options: Any) -> list[AgentEvent]:
    if agent_options:
        agent = Agent(index.retriever, index.store, index.llm, index.budget, **agent_options)
        return list(agent.stream("How do I back up?"))
    return list(index.agent_stream("How do I back up?"))


def final(events: list[AgentEvent]) -> Answer:
    assert isinstance(events[-1], Answer)
    return events[-1]


def test_search_then_answer_keeps_reasoning(index: Index, server: ScriptedLLMServer) -> None:
    reply = scripted(
        call("search_docs", {"query": "backup etcd", "k": 2}, "I should search the docs."),
        answer("Copy the bucket, then snapshot etcd [1]."),
    )
    server.enqueue(reply, reply)
    events = run(index)
    steps = [e for e in events if isinstance(e, ToolStep)]
    assert [s.summary.split(" →")[0] for s in steps] == ["searching: backup etcd"]
    assert steps[0].numbers == (1, 2)
    result = final(events)
    assert result.text == "Copy the bucket, then snapshot etcd [1]."
    assert result.cited == [1] and len(result.passages) == 2
    assert "snapshot etcd" in result.passages[0].text
    assert "I should search the docs." in result.reasoning
    assert result.steps == [steps[0].summary]
    assert [(c.verdict, [(e.n, e.start_line) for e in c.evidence]) for c in result.claims] == [
        ("supported", [(1, 12)])
    ]  # the agent's answer is checked too (words alone: the index's embedder is not MiniLM)
    assert any(isinstance(e, ReasoningDelta) for e in events)
    first, second = server.bodies()
    assert first["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in first["tools"]] == ["search_docs", "open_source"]
    assert first["max_tokens"] == 2048
    assistant = second["messages"][-2]
    assert assistant["role"] == "assistant"
    assert assistant["reasoning"] == "I should search the docs."  # chain of thought kept
    assert assistant["tool_calls"][0]["function"]["name"] == "search_docs"
    tool = second["messages"][-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert tool["content"].startswith("[1] ") and "[2] " in tool["content"]


def test_a_preamble_before_tool_calls_is_not_streamed_as_answer(
    index: Index, server: ScriptedLLMServer
) -> None:
    preamble = "Let me look that up in the docs."
    reply = scripted(
        lambda body: Reply(
            content=preamble,
            tool_calls=[{"name": "search_docs", "arguments": {"query": "backup etcd", "k": 1}}],
        ),
        answer("Copy the bucket, then snapshot etcd [1]."),
    )
    server.enqueue(reply, reply)
    events = run(index)
    streamed = "".join(e.text for e in events if isinstance(e, ContentDelta))
    assert streamed == "Copy the bucket, then snapshot etcd [1]."
    assert preamble in "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    result = final(events)
    assert result.text == streamed and preamble in result.reasoning
    assert server.bodies()[1]["messages"][-2]["content"] == preamble  # the model keeps its words


def test_a_long_answer_still_streams_after_the_preamble_hold(
    index: Index, server: ScriptedLLMServer
) -> None:
    text = "Copy the bucket with the backup tool, then snapshot etcd [1]. " * 20
    server.enqueue(Reply(content=text, chunk_size=8))
    events = run(index)
    deltas = [e.text for e in events if isinstance(e, ContentDelta)]
    assert "".join(deltas) == text and final(events).text == text.strip()
    assert PREAMBLE_CHARS < len(deltas[0]) <= PREAMBLE_CHARS + 8  # held, then flushed at once
    assert len(deltas) > 100  # and the rest streamed as it came


def test_passages_are_numbered_globally(index: Index, server: ScriptedLLMServer) -> None:
    reply = scripted(
        call("search_docs", {"query": "backup etcd snapshot", "k": 1}),
        call("search_docs", {"query": "similarity metrics cosine", "k": 1}),
        call("open_source", {"source": "guide/storage.md", "start_line": 1, "end_line": 200}),
        answer("Metrics [2]; backups [1]."),
    )
    server.enqueue(*[reply] * 4)
    events = run(index)
    steps = [e for e in events if isinstance(e, ToolStep)]
    result = final(events)
    assert [s.numbers for s in steps] == [(1,), (2,), (3, 1)]  # [1] keeps its number
    assert steps[2].summary == "opening: guide/storage.md lines 1-200 → [3] [1]"
    assert [p.rank for p in result.passages] == [1, 2, 3]
    assert len({p.chunk_id for p in result.passages}) == 3
    assert [p.source for p in result.passages] == [
        "guide/storage.md", "guide/search.md", "guide/storage.md",
    ]  # fmt: skip
    assert "snapshot etcd" in result.passages[0].text
    assert "cosine" in result.passages[1].text
    # open_source returns the file's stored chunks in line order
    assert result.passages[2].start_line < result.passages[0].start_line
    tool = tool_messages(server.bodies()[-1])[-1]["content"]
    assert tool.index("[3] guide/storage.md") < tool.index("[1] guide/storage.md")
    assert result.cited == [2, 1]


def test_malformed_arguments_are_reported_to_the_model(
    index: Index, server: ScriptedLLMServer
) -> None:
    reply = scripted(call("search_docs", '{"query": "backup'), answer("Not found."))
    server.enqueue(reply, reply)
    events = run(index)
    step = next(e for e in events if isinstance(e, ToolStep))
    assert "invalid JSON" in step.error and step.numbers == ()
    tool = tool_messages(server.bodies()[-1])[0]
    assert tool["content"].startswith("error: ") and '{"query": "...", "k": 5}' in tool["content"]
    assert final(events).text == "Not found."
    assert final(events).passages == []


def test_loop_is_bounded_by_tool_calls(index: Index, server: ScriptedLLMServer) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        if "tools" in body:  # the model would search forever
            n = len(tool_messages(body))
            return Reply(tool_calls=[{"name": "search_docs", "arguments": {"query": f"q{n}"}}])
        return Reply(content="Best effort [1].")

    server.enqueue(*[Reply(respond=respond)] * 3)
    result = final(run(index, max_calls=2))
    bodies = server.bodies()
    assert len(bodies) == 3
    assert "tools" not in bodies[-1] and bodies[-1]["messages"][-1]["content"] == FINAL_NOTE
    assert "limit of 2 tool calls" in result.notice and "(agent_max_calls)" in result.notice
    assert result.text == "Best effort [1]." and result.passages


def test_loop_is_bounded_by_time(index: Index, server: ScriptedLLMServer) -> None:
    server.enqueue(Reply(content="Quick answer."))
    result = final(run(index, timeout=1e-9))
    assert "ran out of time" in result.notice
    assert "tools" not in server.bodies()[0]


@pytest.mark.parametrize(
    "refusal",
    [
        Reply(
            status=400,
            error='"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser',
        ),
        Reply(content='{"name": "search_docs", "arguments": {"query": "backup"}}'),
    ],
    ids=["http-400", "json-in-content"],
)
def test_falls_back_to_single_shot(index: Index, server: ScriptedLLMServer, refusal: Reply) -> None:
    server.enqueue(refusal, Reply(content="Snapshot etcd [1]."))
    events = run(index)
    assert isinstance(events[0], Retrieved) and events[0].result.passages
    assert not any(isinstance(e, ContentDelta) and "{" in e.text for e in events)
    result = final(events)
    assert result.text == "Snapshot etcd [1]."
    assert "answered from a single search" in result.notice
    assert "tools" not in server.bodies()[-1]


def test_other_errors_are_not_hidden(index: Index, server: ScriptedLLMServer) -> None:
    from ossrag.errors import LLMError

    server.enqueue(Reply(status=400, error="bad temperature"))
    with pytest.raises(LLMError, match="bad temperature"):
        run(index)


def test_helpers() -> None:
    assert reasoning_field("http://localhost:8000/v1") == "reasoning"
    assert reasoning_field("http://localhost:1234/v1") == "reasoning_content"
    assert json_tool_call('```json\n{"name": "open_source", "arguments": {}}\n```')
    assert not json_tool_call('{"answer": 1}') and not json_tool_call("text [1]")


def test_cli_agent(index: Index, server: ScriptedLLMServer, tmp_path: Path) -> None:
    reply = scripted(call("search_docs", {"query": "backup"}), answer("Snapshot etcd [1]."))
    server.enqueue(reply, reply)
    s = index.settings
    index.close()  # Milvus Lite: one client per store at a time
    index.__dict__.pop("store", None)
    index.__dict__.pop("retriever", None)
    result = CliRunner().invoke(
        app,
        ["ask", "How do I back up?", "--agent", "--db", s.db, "--base-url", s.base_url,
         "--model", "gpt-oss-20b", "--embedder", s.embedder, "--embed-base-url", s.base_url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    assert "searching: backup" in result.stderr
    assert "Snapshot etcd [1]." in result.stdout and "Sources" in result.stdout


def test_tool_results_are_cut_to_the_context_window(
    index: Index, server: ScriptedLLMServer
) -> None:
    from ossrag.generate.agent import TOOLS
    from ossrag.generate.budget import Budget, prompt_tokens
    from ossrag.generate.prompts import AGENT_PROMPT

    start = [
        {"role": "system", "content": AGENT_PROMPT},
        {"role": "user", "content": "How do I back up?"},
    ]
    limit = prompt_tokens(start, TOOLS) + 120  # room for the tool call and about one passage
    reply = scripted(
        call("search_docs", {"query": "engine data backup etcd", "k": 5}), answer("[1]")
    )
    server.enqueue(reply, reply)
    agent = Agent(index.retriever, index.store, index.llm, Budget(limit + 512, 512))
    result = final(list(agent.stream("How do I back up?")))
    tool = tool_messages(server.bodies()[-1])[0]["content"]
    assert "more passages omitted: the context window is full" in tool
    assert len(result.passages) == 1  # the room held one of the five found
    assert "[1]" in tool and "[2]" not in tool
    assert "tools" not in server.bodies()[-1]
    assert "context window filled up" in result.notice


def test_agent_limits_are_settings(
    index: Index, server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def searching_forever(body: dict[str, Any]) -> Reply:
        if "tools" in body:
            n = len(tool_messages(body))
            return Reply(tool_calls=[{"name": "search_docs", "arguments": {"query": f"q{n}"}}])
        return Reply(content="Best effort [1].")

    saved = index.settings
    same = ("db", "base_url", "model", "api_key", "context_window", "answer_tokens")
    same += ("embedder", "embed_base_url")
    try:
        monkeypatch.setenv("OSSRAG_AGENT_MAX_CALLS", "3")
        index.settings = load_settings(**{name: getattr(saved, name) for name in same})
        server.enqueue(*[Reply(respond=searching_forever)] * 4)
        result = final(run(index))
        assert len(server.bodies()) == 4  # three searches, then the answer without tools
        assert "limit of 3 tool calls" in result.notice
        monkeypatch.setenv("OSSRAG_AGENT_TIMEOUT", "1e-9")
        index.settings = load_settings(**{name: getattr(saved, name) for name in same})
        server.enqueue(Reply(content="Quick answer."))
        assert "ran out of time" in final(run(index)).notice
        assert len(server.bodies()) == 5 and "tools" not in server.bodies()[-1]
    finally:
        index.settings = saved
