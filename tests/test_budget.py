"""Context budget: exact o200k counts, lowest-ranked passages dropped, clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_server import ScriptedLLMServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.engine.index import Index
from ossrag.generate.answer import Answer, Retrieved
from ossrag.generate.budget import (
    HARMONY_OVERHEAD,
    PER_MESSAGE,
    PRIMING,
    Budget,
    ContextBudgetError,
    count_tokens,
    message_tokens,
    prompt_tokens,
)
from ossrag.generate.prompts import build_messages, format_passage
from ossrag.records import Passage


def passage(rank: int, words: int) -> Passage:
    text = " ".join(f"word{rank}x{i}" for i in range(words))
    return Passage(rank, 1.0 / rank, f"c{rank}", f"doc{rank}.md", "", 1, 2, text)


def test_counts_are_real_o200k_tokens() -> None:
    # Known o200k_base ids: "Hello world" -> [13225, 2375]
    assert count_tokens("Hello world") == 2
    assert count_tokens("") == 0
    assert count_tokens("<|endoftext|>") == 7  # special-token lookalikes are plain text
    user = {"role": "user", "content": "Hello world"}
    assert message_tokens(user) == PER_MESSAGE + 2
    assert message_tokens({"role": "assistant", "content": "Hi", "reasoning": "Hello world"}) == (
        PER_MESSAGE + 1 + 2
    )
    assert prompt_tokens([user]) == HARMONY_OVERHEAD + PRIMING + PER_MESSAGE + 2


def test_fit_drops_lowest_ranked_passages_first() -> None:
    passages = [passage(1, 40), passage(2, 40), passage(3, 40)]
    question = "What is stored?"
    two = prompt_tokens(build_messages(question, passages[:2]))
    three = prompt_tokens(build_messages(question, passages))
    assert two < three
    budget = Budget(context_window=two + 100, answer_tokens=100)  # exactly two fit
    fitted = budget.fit(question, passages)
    assert [p.rank for p in fitted.passages] == [1, 2]
    assert fitted.prompt_tokens == two
    assert fitted.dropped == 1
    assert "1 of 3 passages left out" in fitted.notice
    assert "OSSRAG_CONTEXT_WINDOW" in fitted.notice
    assert "[3]" not in fitted.messages[-1]["content"]
    # One token more room is not enough for the third; exactly its size is.
    assert Budget(three + 99, 100).fit(question, passages).dropped == 1
    whole = Budget(three + 100, 100).fit(question, passages)
    assert (whole.dropped, whole.notice, whole.prompt_tokens) == (0, "", three)


def test_estimate_matches_exact_count() -> None:
    """Per-passage costs add up to the whole prompt's count, within one token a passage."""
    passages = [passage(n, 30 + n) for n in range(1, 9)]
    base = prompt_tokens(build_messages("q?", []))
    parts = sum(count_tokens(format_passage(n, p)) + 1 for n, p in enumerate(passages, 1))
    assert abs(prompt_tokens(build_messages("q?", passages)) - (base + parts)) <= len(passages)


def test_question_that_cannot_fit_is_a_clear_error() -> None:
    budget = Budget(context_window=1024, answer_tokens=512)
    with pytest.raises(ContextBudgetError) as info:
        budget.fit("why " * 600, [passage(1, 10)])
    message = str(info.value)
    assert "only 512 fit" in message and "raise context_window" in message
    assert "\n" not in message


def test_defaults_per_server() -> None:
    assert Budget.from_settings(load_settings()) == Budget(8192, 2048)  # default preset: Ollama
    vllm = load_settings(llm="vllm")
    assert Budget.from_settings(vllm) == Budget(131072, 8192)
    assert Budget.from_settings(load_settings(llm="vllm", max_tokens=3000)).answer_tokens == 3000
    custom = load_settings(base_url="http://gpu:11434/v1", context_window=32768, answer_tokens=4096)
    assert Budget.from_settings(custom) == Budget(32768, 4096)
    with pytest.raises(ContextBudgetError, match="lower answer_tokens"):
        Budget.from_settings(load_settings(context_window=4096, answer_tokens=4096))


def test_ask_sends_only_what_fits(tmp_path: Path, llm: ScriptedLLMServer, docs: Path) -> None:
    """Through Index.ask_stream: the request holds the kept passages and an explicit max_tokens."""
    settings = load_settings(
        db=str(tmp_path / "store.db"), base_url=llm.base_url, model="gpt-oss-20b", top_k=3,
        context_window=4096, answer_tokens=2048, embedder="openai:hashed",
        embed_base_url=llm.base_url,  # the scripted server's embeddings: no model to load
    )  # fmt: skip
    index = Index(settings)
    index.ingest([docs])
    three = index.search("Where does the engine keep data?", 3).passages
    assert len(three) == 3
    question = "Where does the engine keep data?"
    exact_two = prompt_tokens(build_messages(question, three[:2]))
    index.settings = load_settings(**{**settings.model_dump(), "context_window": exact_two + 2048})
    index.__dict__.pop("budget", None)
    events = list(index.ask_stream(question))
    index.close()
    retrieved = events[0]
    answer = events[-1]
    assert isinstance(retrieved, Retrieved) and isinstance(answer, Answer)
    assert [p.chunk_id for p in answer.passages] == [p.chunk_id for p in three[:2]]
    assert "1 of 3 passages left out" in answer.notice
    body = llm.bodies()[-1]
    assert body["max_tokens"] == 2048
    assert "[3]" not in body["messages"][-1]["content"]
    assert prompt_tokens(body["messages"]) == exact_two


def test_cli_reports_a_prompt_too_long(tmp_path: Path, llm: ScriptedLLMServer, docs: Path) -> None:
    db = str(tmp_path / "store.db")
    embed = ["--embedder", "openai:hashed", "--embed-base-url", llm.base_url]
    index = Index(load_settings(db=db, embedder="openai:hashed", embed_base_url=llm.base_url))
    index.ingest([docs])
    index.close()
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "ask",
            "why " * 3000,
            "--db",
            db,
            "--base-url",
            llm.base_url,
            "--max-tokens",
            "1000",
            *embed,
        ],
        env={"OSSRAG_CONTEXT_WINDOW": "2048"},
    )
    assert result.exit_code == 1
    assert "error:" in result.stderr and "OSSRAG_CONTEXT_WINDOW" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert llm.bodies() == []  # nothing was sent
