"""Third-party OpenAI clients against `ossrag serve` (the scripted LLM behind it): simonw/llm,
LangChain's ChatOpenAI, and the openai SDK's Responses API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_openai import ChatOpenAI
from llm_server import Reply, ScriptedLLMServer, estimate_usage
from pydantic import BaseModel

# The live server of tests/test_server.py (one per module: a store with the fixture docs,
# served with an API key, the scripted LLM answering ANSWER with REASONING).
from test_server import (  # noqa: F401
    ANSWER,
    KEY,
    REASONING,
    STORAGE_Q,
    LiveServer,
    live,
    llm_server,
    served,
    workdir,
)

from ossrag.generate.usage import complete_usage, counted_usage
from ossrag.http.responses import ResponseMemory

pytestmark = pytest.mark.timeout(120)

FOOTNOTE = (
    "\n\nSources:\n[1] guide/storage.md › Storage guide › Where does the engine keep data? "
    "(lines 6-8)"
)
FOLLOW_UP = "And how do I back it up?"
STANDALONE = "How do I back up the engine's data?"
BACKUP_FOOTNOTE = (
    "\n\nSources:\n[1] guide/storage.md › Storage guide › How do I back up? (lines 10-12)"
)


def counted(body: dict[str, Any], reasoning: str = REASONING, text: str = ANSWER) -> dict[str, Any]:
    """The usage ossrag reports for an LLM that sent none: o200k counts of what went out and
    came back (its exact figures for a known prompt: test_counted_usage_has_openais_shape)."""
    return counted_usage(body["messages"], reasoning, text)


@pytest.fixture
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


# --------------------------------------------------------------------------- usage


def test_usage_is_counted_when_the_llm_reports_none(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    llm_server.enqueue(Reply(content=ANSWER, reasoning=REASONING, send_usage=False))
    response = client.chat.completions.create(model="ossrag", messages=[ask()])
    assert response.usage is not None
    assert response.usage.model_dump(exclude_none=True) == counted(llm_server.bodies()[-1])

    llm_server.enqueue(Reply(content=ANSWER, reasoning=REASONING, send_usage=False))
    stream = client.chat.completions.create(
        model="ossrag", messages=[ask()], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert [c.usage is not None for c in chunks].count(True) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == counted(llm_server.bodies()[-1])
    assert all("usage" in c.model_fields_set for c in chunks)  # null until the last, as OpenAI


def test_counted_usage_has_openais_shape() -> None:
    question = [{"role": "user", "content": "How is data stored in milvus?"}]
    # 8 question tokens + 4 of harmony framing + 99 for the server's system message and priming
    assert counted_usage(question, "The user asks.", "In object storage [1].") == {
        "prompt_tokens": 111,
        "completion_tokens": 10,
        "total_tokens": 121,
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    partial = {"prompt_tokens": 5}  # a count missing: ossrag's own, whole
    assert complete_usage(partial, [], "x", "y")["completion_tokens"] == 2
    assert complete_usage({"prompt_tokens": 5, "completion_tokens": 0}, [], "x", "y") == {
        "prompt_tokens": 5,
        "completion_tokens": 0,
        "total_tokens": 5,
    }


def test_usage_reported_by_the_llm_is_passed_through(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    usage = {"prompt_tokens": 321, "completion_tokens": 45}  # no total: ossrag adds it
    llm_server.enqueue(Reply(content=ANSWER, usage=usage))
    response = client.chat.completions.create(model="ossrag", messages=[ask()])
    assert response.usage is not None
    assert response.usage.model_dump(exclude_none=True) == {**usage, "total_tokens": 366}


def test_system_messages_reach_the_prompt_after_ossrags_rules(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    system = {"role": "system", "content": "Answer in French."}
    client.chat.completions.create(model="ossrag", messages=[system, ask()])
    sent = llm_server.bodies()[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[0]["content"].startswith("You answer questions using only the numbered passages")
    assert sent[0]["content"].endswith(
        "\n\nInstructions from the user (the rules above still apply):\nAnswer in French."
    )


def ask(question: str = STORAGE_Q) -> dict[str, str]:
    return {"role": "user", "content": question}


# --------------------------------------------------------------------------- simonw/llm


@pytest.fixture
def llm_cli(live: LiveServer, tmp_path: Path) -> Any:
    """Run the `llm` CLI with a user dir that knows ossrag as an OpenAI-compatible model."""
    user_dir = tmp_path / "llm-user"
    user_dir.mkdir()
    (user_dir / "extra-openai-models.yaml").write_text(
        f"- model_id: ossrag\n  model_name: ossrag\n  api_base: {live.url}/v1\n"
        "  api_key_name: ossrag\n"
    )
    (user_dir / "keys.json").write_text(json.dumps({"ossrag": KEY}))
    env = {**os.environ, "LLM_USER_PATH": str(user_dir)}

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "llm", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def test_llm_cli_streamed_no_stream_and_a_follow_up(
    llm_cli: Any, llm_server: ScriptedLLMServer
) -> None:
    assert llm_cli("-m", "ossrag", STORAGE_Q) == ANSWER + FOOTNOTE + "\n"
    streamed_usage = estimated(llm_server.bodies()[-1])
    assert llm_cli("-m", "ossrag", "--no-stream", STORAGE_Q) == ANSWER + FOOTNOTE + "\n"
    usage = estimated(llm_server.bodies()[-1])
    logs = json.loads(llm_cli("logs", "-n", "2", "--json"))
    assert [log["response_json"]["object"] for log in logs] == [
        "chat.completion.chunk",
        "chat.completion",
    ]
    assert [(log["input_tokens"], log["output_tokens"]) for log in logs] == [
        (streamed_usage["prompt_tokens"], streamed_usage["completion_tokens"]),
        (usage["prompt_tokens"], usage["completion_tokens"]),
    ]

    llm_server.enqueue(Reply(content=STANDALONE))  # the engine's follow-up rewrite
    assert llm_cli("-c", FOLLOW_UP) == ANSWER + BACKUP_FOOTNOTE + "\n"
    rewrite, answer = llm_server.bodies()[-2:]
    first_turn = f"user: {STORAGE_Q}\nassistant: {ANSWER}{FOOTNOTE}"  # as llm sent it back
    assert rewrite["messages"][1]["content"] == f"{first_turn}\n\nLast question: {FOLLOW_UP}"
    sent = answer["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert (sent[1]["content"], sent[2]["content"]) == (STORAGE_Q, ANSWER + FOOTNOTE)
    assert STANDALONE in sent[3]["content"]


# --------------------------------------------------------------------------- LangChain


class Storage(BaseModel):
    where: str
    citations: list[int]


def test_langchain_invoke_stream_usage_and_structured_output(
    live: LiveServer, llm_server: ScriptedLLMServer
) -> None:
    chat = ChatOpenAI(
        model="ossrag", base_url=live.url + "/v1", api_key=KEY, max_retries=0, stream_usage=True
    )
    message = chat.invoke(STORAGE_Q)
    assert message.content == ANSWER + FOOTNOTE
    body = llm_server.bodies()[-1]
    expected = estimated(body)
    assert message.usage_metadata is not None
    assert dict(message.usage_metadata) == {
        "input_tokens": expected["prompt_tokens"],
        "output_tokens": expected["completion_tokens"],
        "total_tokens": expected["total_tokens"],
        "input_token_details": {},
        "output_token_details": {
            "reasoning": expected["completion_tokens_details"]["reasoning_tokens"]
        },
    }

    chunks = list(chat.stream(STORAGE_Q))
    assert "".join(str(c.content) for c in chunks) == ANSWER + FOOTNOTE
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1
    assert with_usage[0].usage_metadata is not None
    assert (
        with_usage[0].usage_metadata["total_tokens"]
        == estimated(llm_server.bodies()[-1])["total_tokens"]
    )

    reply = {"where": "object storage", "citations": [1]}
    llm_server.enqueue(Reply(content=json.dumps(reply), reasoning=REASONING))
    structured = chat.with_structured_output(Storage, method="json_schema")
    assert structured.invoke(STORAGE_Q) == Storage(**reply)
    sent = llm_server.bodies()[-1]
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["where", "citations"]


def estimated(body: dict[str, Any]) -> dict[str, Any]:
    """The scripted LLM's own usage for its default reply to `body`."""
    return estimate_usage(body, Reply(content=ANSWER, reasoning=REASONING))


# --------------------------------------------------------------------------- Responses API

EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",  # the reasoning item
    "response.content_part.added",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.output_item.added",  # the message
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def squeeze(kinds: list[str]) -> list[str]:
    """Event types with runs of the same delta type collapsed to one."""
    return [k for i, k in enumerate(kinds) if not (k.endswith(".delta") and kinds[i - 1] == k)]


def test_responses_api_non_streamed_with_instructions(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    response = client.responses.create(
        model="ossrag", input=STORAGE_Q, instructions="Answer like a pirate.",
        reasoning={"effort": "high"}, extra_body={"top_k": 2},
    )  # fmt: skip
    assert response.status == "completed" and response.object == "response"
    assert response.id.startswith("resp_")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert [c.text for c in reasoning.content] == [REASONING]
    assert response.output_text == ANSWER + FOOTNOTE  # no reasoning in the text
    usage = estimated(llm_server.bodies()[-1])
    assert response.usage is not None
    assert response.usage.model_dump(exclude_none=True) == {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {
            "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"]
        },
        "total_tokens": usage["total_tokens"],
    }
    sources = (response.model_extra or {})["sources"]
    assert [(s["n"], s["source"], s["cited"]) for s in sources] == [
        (1, "guide/storage.md", True),
        (2, "guide/search.md", False),
    ]
    sent = llm_server.bodies()[-1]
    assert sent["reasoning_effort"] == "high"
    assert sent["messages"][0]["content"].endswith(
        "Instructions from the user (the rules above still apply):\nAnswer like a pirate."
    )
    assert client.responses.retrieve(response.id).output_text == ANSWER + FOOTNOTE


def test_responses_api_streamed_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="ossrag", input=STORAGE_Q, stream=True))
    assert squeeze([e.type for e in events]) == EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert (reasoning, text) == (REASONING, ANSWER + FOOTNOTE)
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == ANSWER + FOOTNOTE
    assert done.response.usage is not None and done.response.usage.total_tokens > 0
    assert {e.response.id for e in events if hasattr(e, "response")} == {done.response.id}

    # The SDK's own accumulator checks that every event fits the ones before it.
    with client.responses.stream(model="ossrag", input=STORAGE_Q) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output_text == ANSWER + FOOTNOTE


def test_responses_api_with_the_agent(client: openai.OpenAI, llm_server: ScriptedLLMServer) -> None:
    search = Reply(tool_calls=[{"name": "search_docs", "arguments": {"query": "backup", "k": 2}}])
    answer = "Copy the bucket, then snapshot etcd [1]."
    llm_server.enqueue(search, Reply(content=answer))
    events = list(client.responses.create(model="ossrag-agent", input="How do I back up?",
                                          instructions="Be brief.", stream=True))  # fmt: skip
    assert squeeze([e.type for e in events]) == EVENTS
    done = events[-1]
    assert done.type == "response.completed"
    reasoning = done.response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert [c.text for c in reasoning.content] == ["searching: backup → [1] [2]\n"]
    assert done.response.output_text.startswith(answer + "\n\nSources:\n[1] guide/storage.md")
    sources = (done.response.model_extra or {})["sources"]
    assert [(s["n"], s["cited"]) for s in sources] == [(1, True), (2, False)]
    system = llm_server.bodies()[-1]["messages"][0]["content"]
    assert system.endswith("(the rules above still apply):\nBe brief.")


def test_responses_api_follow_up_with_previous_response_id(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    first = client.responses.create(model="ossrag", input=STORAGE_Q, instructions="Be brief.")
    llm_server.enqueue(Reply(content=STANDALONE))  # the engine's follow-up rewrite
    follow_up = client.responses.create(
        model="ossrag",
        previous_response_id=first.id,
        input=[{"role": "user", "content": [{"type": "input_text", "text": FOLLOW_UP}]}],
        stream=True,
    )
    assert list(follow_up)[-1].type == "response.completed"
    sent = llm_server.bodies()[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert (sent[1]["content"], sent[2]["content"]) == (STORAGE_Q, ANSWER)
    assert "Be brief." not in sent[0]["content"]  # instructions are not carried over
    assert STANDALONE in sent[3]["content"]
    rewrite = llm_server.bodies()[-2]["messages"][1]["content"]
    assert rewrite == f"user: {STORAGE_Q}\nassistant: {ANSWER}\n\nLast question: {FOLLOW_UP}"

    private = client.responses.create(model="ossrag", input=STORAGE_Q, store=False)
    with pytest.raises(openai.NotFoundError, match="previous_response_id: no stored response"):
        client.responses.create(model="ossrag", input=FOLLOW_UP, previous_response_id=private.id)


def test_responses_api_json_schema_and_a_failing_llm(
    client: openai.OpenAI, llm_server: ScriptedLLMServer
) -> None:
    reply = {"where": "object storage", "citations": [1]}
    llm_server.enqueue(Reply(content=json.dumps(reply), reasoning=REASONING))
    parsed = client.responses.parse(model="ossrag", input=STORAGE_Q, text_format=Storage)
    assert parsed.output_parsed == Storage(**reply)
    assert json.loads(parsed.output_text) == reply  # the JSON alone: no Sources footnote
    sent = llm_server.bodies()[-1]
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["where", "citations"]

    llm_server.enqueue(Reply(content=ANSWER, reasoning=REASONING, drop_after_chunks=4))
    events = list(client.responses.create(model="ossrag", input=STORAGE_Q, stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.error is not None
    assert failed.response.error.code == "server_error"
    assert "dropped the connection mid-answer" in failed.response.error.message


def test_responses_api_needs_the_key(live: LiveServer) -> None:
    assert httpx.post(live.url + "/v1/responses", json={"input": "q"}).status_code == 401
    assert httpx.get(live.url + "/v1/responses/resp_x").status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model": "ossrag"}, 400, "body.input"),
        ({"model": "ossrag", "input": [{"content": "no role"}]}, 400, "body.input"),
        ({"model": "ossrag", "input": [{"role": "assistant", "content": "hi"}]}, 400, "input:"),
        ({"model": "ossrag", "input": "q", "reasoning": {"effort": "max"}}, 400,
         "reasoning.effort"),
        ({"model": "ossrag", "input": "q", "text": {"format": {"type": "json_schema"}}}, 400,
         "text.format.schema"),
        ({"model": "nope", "input": "q"}, 404, "model 'nope'"),
        ({"model": "ossrag-agent", "input": "q", "text": {"format": {"type": "json_object"}}},
         400, "text.format: not available with ossrag-agent"),
        ({"model": "ossrag", "input": "q", "previous_response_id": "resp_x"}, 404,
         "previous_response_id"),
    ],
)  # fmt: skip
def test_responses_api_errors_name_the_field(
    live: LiveServer, body: dict[str, Any], status: int, field: str
) -> None:
    response = httpx.post(
        live.url + "/v1/responses", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == status
    assert field in response.json()["error"]["message"]


def test_response_memory_keeps_the_latest() -> None:
    memory = ResponseMemory(size=2)
    for n in range(3):
        memory.remember({"id": f"resp_{n}"}, [{"role": "user", "content": str(n)}])
    assert memory.get("resp_0") is None
    remembered = memory.get("resp_2")
    assert remembered is not None and remembered.turns == [{"role": "user", "content": "2"}]
    assert memory.get("resp_1") is not None


def test_response_memory_forgets_the_oldest_past_its_byte_budget() -> None:
    """A long conversation's responses each hold all of it: the budget bounds the memory."""
    memory = ResponseMemory(size=100, max_bytes=2000)
    turns: list[dict[str, str]] = []
    for n in range(6):
        turns = [*turns, {"role": "user", "content": "x" * 150}]
        memory.remember({"id": f"resp_{n}"}, turns)
    # held: 16-byte JSON + 150 bytes a turn, so resp_n holds 16 + 150 (n + 1)
    assert [memory.get(f"resp_{n}") is not None for n in range(6)] == [False] * 4 + [True] * 2
    assert memory.bytes == (16 + 750) + (16 + 900)
    huge = [{"role": "user", "content": "y" * 5000}]
    memory.remember({"id": "resp_huge"}, huge)  # the newest stays, whatever its size
    assert memory.get("resp_huge") is not None and memory.get("resp_5") is None
    assert memory.bytes == 19 + 5000


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
TEXT = st.text() | st.sampled_from(["", " ", "\x00", "\x1b[2J", "[" * 500, "\ud7ff"])
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "reasoning", "function_call_output", ""]) | JSON,
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | JSON,
        "content": TEXT
        | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["input_text", "x"]),
                                          "text": JSON}), max_size=3)
        | JSON,
    },
)  # fmt: skip
RESPONSES_BODY = st.fixed_dictionaries(
    {"input": TEXT | st.lists(ITEM, max_size=3) | JSON},
    optional={
        "model": st.sampled_from(["ossrag", "nope"]) | JSON,
        "instructions": TEXT | JSON,
        "previous_response_id": st.sampled_from(["resp_x", ""]) | JSON,
        "stream": st.booleans() | JSON,
        "store": st.booleans() | JSON,
        "reasoning": st.fixed_dictionaries({"effort": st.sampled_from(["low", "max"]) | JSON}),
        "text": st.fixed_dictionaries(
            {"format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_schema"])},
                                             optional={"schema": JSON})}
        ) | JSON,
    },
)  # fmt: skip


def test_no_generated_responses_body_gets_a_5xx(live: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(body=RESPONSES_BODY | JSON)
    def check(body: Any) -> None:
        response = httpx.post(live.url + "/v1/responses", json=body, headers=headers, timeout=30)
        assert response.status_code < 500, (body, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"message", "type"}

    check()
