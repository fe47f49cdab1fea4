"""Follow-ups are rewritten to stand alone by the engine, so every door retrieves for them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import write_docs
from llm_server import Reply, ScriptedLLMServer
from test_server import LiveServer

from ossrag.config import Settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.generate.answer import Answer, Retrieved, Rewritten
from ossrag.generate.prompts import FOLLOW_UP_PROMPT
from ossrag.http.app import create_app

STANDALONE = {
    "And how do I protect it against loss?": "How do I back up the engine's data?",
    "Which ones does it offer for that?": "Which similarity metrics are supported for vectors?",
}


def respond(body: dict[str, Any]) -> Reply:
    """Rewrites follow-ups like a model would; answers name the question they were given."""
    messages = body["messages"]
    if messages[0]["content"] == FOLLOW_UP_PROMPT:
        last = messages[-1]["content"].rsplit("Last question: ", 1)[1]
        return Reply(content=STANDALONE[last])
    question = messages[-1]["content"].rsplit("<question>\n", 1)[1].split("\n</question>")[0]
    return Reply(content=f"Answer to: {question} [1]")


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[LiveServer, Index, ScriptedLLMServer]]:
    root = tmp_path_factory.mktemp("followups")
    with ScriptedLLMServer(Reply(respond=respond), model="gpt-oss-20b") as llm:
        settings = Settings(
            db=str(root / "store.db"), base_url=llm.base_url, model="gpt-oss-20b", _env_file=None
        )
        index = Index(settings, embedder=embedder)
        index.ingest([write_docs(root / "docs")])
        with LiveServer(create_app(settings, index)) as live:
            yield live, index, llm
        index.close()


def test_a_three_turn_conversation_over_http_retrieves_for_each_rewritten_follow_up(
    served: tuple[LiveServer, Index, ScriptedLLMServer],
) -> None:
    live, _, llm = served
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="none", max_retries=0)
    messages: list[Any] = []
    first_sources = []
    for question in ["Where does the engine keep data?", *STANDALONE]:
        messages.append({"role": "user", "content": question})
        reply = client.chat.completions.create(model="ossrag", messages=messages)
        answer = reply.choices[0].message.content or ""
        messages.append({"role": "assistant", "content": answer})
        top = (reply.model_extra or {})["sources"][0]
        first_sources.append((top["source"], top["heading"]))
        expected = STANDALONE.get(question, question)
        assert answer.startswith(f"Answer to: {expected} [1]"), answer
    assert first_sources == [
        ("guide/storage.md", "Storage guide › Where does the engine keep data?"),
        ("guide/storage.md", "Storage guide › How do I back up?"),
        ("guide/search.md", "Search guide › Similarity metrics"),
    ]
    rewrites = [b for b in llm.bodies() if b["messages"][0]["content"] == FOLLOW_UP_PROMPT]
    assert len(rewrites) == 2
    assert rewrites[1]["messages"][1]["content"].startswith(
        "user: Where does the engine keep data?\nassistant: Answer to: Where does the engine"
    )


def test_the_library_reports_the_rewritten_question(
    served: tuple[LiveServer, Index, ScriptedLLMServer],
) -> None:
    _, index, _ = served
    history = [
        {"role": "user", "content": "Where does the engine keep data?"},
        {"role": "assistant", "content": "In object storage [1]."},
    ]
    events = list(index.ask_stream("And how do I protect it against loss?", history=history))
    assert events[0] == Rewritten("How do I back up the engine's data?")
    assert isinstance(events[1], Retrieved)
    assert events[1].result.passages[0].heading == "Storage guide › How do I back up?"
    assert isinstance(events[-1], Answer)
    assert events[-1].question == "How do I back up the engine's data?"
    # Without history nothing is rewritten: no extra LLM call, the question as given.
    alone = list(index.ask_stream("Where does the engine keep data?"))
    assert not any(isinstance(e, Rewritten) for e in alone)


def test_the_structured_answer_rewrites_too(
    served: tuple[LiveServer, Index, ScriptedLLMServer], tmp_path: Path
) -> None:
    _, index, llm = served
    history = [{"role": "user", "content": "Where does the engine keep data?"}]
    llm.enqueue(
        Reply(content="How do I back up the engine's data?"),
        Reply(
            content='{"answer": "Copy the bucket [1].", "citations": [1], "confidence": 0.9, '
            '"follow_up_questions": []}'
        ),
    )
    answer = index.ask_structured("And how do I protect it against loss?", history=history)
    assert answer.data["answer"] == "Copy the bucket [1]."
    assert answer.passages[0].heading == "Storage guide › How do I back up?"


# --------------------------------------------------------------------------- the agent over HTTP


def test_ossrag_agent_streams_its_tool_steps_as_reasoning_then_the_answer(
    served: tuple[LiveServer, Index, ScriptedLLMServer],
) -> None:
    live, _, llm = served
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="none", max_retries=0)
    assert "ossrag-agent" in [m.id for m in client.models.list().data]
    search = Reply(tool_calls=[{"name": "search_docs", "arguments": {"query": "backup", "k": 2}}])
    llm.enqueue(search, Reply(content="Copy the bucket, then snapshot etcd [1].", chunk_size=5))
    stream = client.chat.completions.create(
        model="ossrag-agent",
        messages=[{"role": "user", "content": "How do I back up?"}],
        stream=True,
    )
    chunks = list(stream)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning == "searching: backup → [1] [2]\n"
    assert content.startswith("Copy the bucket, then snapshot etcd [1].\n\nSources:\n[1] guide/")
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    extra = final.model_extra or {}
    assert [s["source"] for s in extra["sources"]][:1] == ["guide/storage.md"]
    assert extra["cited"] == [1]
    claims = [(c["text"], c["verdict"], [e["start_line"] for e in c["evidence"]])
              for c in extra["claims"]]  # fmt: skip
    assert claims == [("Copy the bucket, then snapshot etcd.", "supported", [12])]
    tools = llm.bodies()[-2]["tools"]
    assert [t["function"]["name"] for t in tools] == ["search_docs", "open_source"]


def test_ossrag_agent_refuses_a_json_schema(
    served: tuple[LiveServer, Index, ScriptedLLMServer],
) -> None:
    live, _, _ = served
    response = httpx.post(
        live.url + "/v1/chat/completions",
        json={
            "model": "ossrag-agent",
            "messages": [{"role": "user", "content": "How do I back up?"}],
            "response_format": {"type": "json_object"},
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "response_format: not available with ossrag-agent"
    )
