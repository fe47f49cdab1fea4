"""`ossrag chat` scripted through stdin against the scripted server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_server import Reply, ScriptedLLMServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.cli.chat import ChatSession
from ossrag.config import load_settings
from ossrag.engine.index import Index
from ossrag.generate.answer import Answer
from ossrag.generate.prompts import FOLLOW_UP_PROMPT

STANDALONE = "How do I back up the engine's data?"


def respond(body: dict[str, Any]) -> Reply:
    if body["messages"][0]["content"] == FOLLOW_UP_PROMPT:
        return Reply(content=STANDALONE, reasoning="Resolve 'it'.")
    question = body["messages"][-1]["content"]
    n = sum(m["role"] == "assistant" for m in body["messages"])
    return Reply(content=f"Answer {n} [1].", reasoning=f"secret thoughts {len(question)}")


def test_chat_over_stdin(tmp_path: Path, llm: ScriptedLLMServer, docs: Path) -> None:
    db = str(tmp_path / "store.db")
    embed = ["--embedder", "openai:hashed", "--embed-base-url", llm.base_url]
    index = Index(load_settings(db=db, embedder="openai:hashed", embed_base_url=llm.base_url))
    index.ingest([docs])
    index.close()
    llm.add_model("gpt-oss-20b", Reply(respond=respond))
    script = "\n".join(
        [
            "Where does the engine keep data?",
            "/sources",
            "/effort high",
            "/reasoning on",
            "And how do I back it up?",
            "/reset",
            "/nonsense",
            "What metrics are supported?",
            "/quit",
            "never asked",
        ]
    )
    result = CliRunner().invoke(
        app,
        ["chat", "--db", db, "--base-url", llm.base_url, "--model", "gpt-oss-20b", *embed],
        input=script + "\n",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["Answer 0 [1].", "Answer 1 [1].", "Answer 0 [1]."]
    err = result.stderr
    assert "[1] guide/storage.md" in err  # /sources
    # "Answer 0" is not what passage 1 says: each turn's claims are checked.
    assert err.count("the answer's one claim is not supported by its source") == 3
    assert "  unsupported: Answer 0. [1?]" in err.splitlines()
    assert "reasoning effort: high" in err and "reasoning display: on" in err
    assert f"searching for: {STANDALONE}" in err
    assert "secret thoughts" in err  # shown after /reasoning on
    assert "history cleared" in err and "/effort low|medium|high" in err  # /reset, help
    bodies = llm.bodies()
    assert len(bodies) == 4  # answer, rewrite, answer, answer (no rewrite after /reset)
    first, rewrite, second, third = bodies
    assert "reasoning_effort" in first and first["reasoning_effort"] == "medium"
    assert "Where does the engine keep data?" in rewrite["messages"][1]["content"]
    assert rewrite["reasoning_effort"] == "low" and rewrite["max_tokens"] == 512
    assert second["reasoning_effort"] == "high"
    history = second["messages"][1:3]
    assert history == [
        {"role": "user", "content": "Where does the engine keep data?"},
        {"role": "assistant", "content": "Answer 0 [1]."},
    ]  # earlier reasoning is not sent back
    assert STANDALONE in second["messages"][-1]["content"]
    assert len(third["messages"]) == 2  # /reset emptied the history
    assert all("never asked" not in str(b) for b in bodies)


def test_session_keeps_a_bounded_history(
    tmp_path: Path, llm: ScriptedLLMServer, docs: Path
) -> None:
    settings = load_settings(
        db=str(tmp_path / "s.db"), base_url=llm.base_url, model="gpt-oss-20b",
        embedder="openai:hashed", embed_base_url=llm.base_url,
    )  # fmt: skip
    index = Index(settings)
    index.ingest([docs])
    llm.add_model("gpt-oss-20b", Reply(respond=respond))
    session = ChatSession(index)
    for i in range(8):
        events = list(session.ask(f"question {i} about storage?"))
        assert isinstance(events[-1], Answer)
    index.close()
    assert len(session.history) == 12
    assert session.history[0]["content"] == "question 2 about storage?"
    assert all(set(m) == {"role", "content"} for m in session.history)
