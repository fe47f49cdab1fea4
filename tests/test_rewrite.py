"""Query rewriting through the (scripted) LLM: expansion, fusion, and the offline fallback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import Reply, ScriptedLLMServer

from ossrag.config import Settings, load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.generate.llm import LLMClient, LLMConfig
from ossrag.generate.prompts import EXPAND_PROMPT
from ossrag.generate.rewrite import expand_query


def test_expand_query_parses_lines_and_dedupes() -> None:
    reply = Reply(
        dialect="reasoning",
        reasoning="Italian question; translate.",
        content="1. Where are inserted vectors kept?\n- vector storage MinIO S3\n\nWhere are "
        "inserted vectors kept?\n",
    )
    with ScriptedLLMServer(reply) as server:
        llm = LLMClient(LLMConfig(base_url=server.base_url, model="gpt-oss-20b"))
        queries = expand_query(llm, "Dove sono conservati i vettori?")
        body = server.bodies()[-1]
    assert queries == [
        "Dove sono conservati i vettori?",
        "Where are inserted vectors kept?",
        "vector storage MinIO S3",
    ]
    assert body["reasoning_effort"] == "low"
    assert body["messages"][-1]["content"] == "Dove sono conservati i vettori?"


def test_rewritten_queries_find_what_the_original_cannot(
    settings: Settings, embedder: Embedder, docs: Path
) -> None:
    with ScriptedLLMServer(Reply(content="backup tool snapshot etcd")) as server:
        s = settings.model_copy(update={"base_url": server.base_url, "model": "gpt-oss-20b"})
        index = Index(s, embedder=embedder)
        index.ingest([docs])
        plain = index.search("zzqx qqxz", k=1, mode="bm25")
        rewritten = index.search("zzqx qqxz", k=1, mode="bm25", rewrite=True)
        explained = index.search("zzqx qqxz", k=1, mode="bm25", rewrite=True, explain=True)
        index.close()
    assert plain.passages == []
    explain = explained.passages[0].explain
    assert explain is not None and explain["rewrites"] == ["zzqx qqxz", "backup tool snapshot etcd"]
    assert explain["bm25"]["terms"] == []  # the routes shown are the first query's
    assert "backup tool" in rewritten.passages[0].text
    assert 0 < rewritten.passages[0].score <= 1


def test_rewrite_falls_back_with_notice_when_llm_is_down(index: Index, docs: Path) -> None:
    index.ingest([docs])
    index.settings = index.settings.model_copy(update={"base_url": "http://127.0.0.1:9/v1"})
    result = index.search("backup tool", k=2, rewrite=True)
    assert result.passages and "query rewriting is off" in result.notice
    assert "127.0.0.1:9" in result.notice


ITALIAN = "Dove si trova il cluster e come lo posso usare?"


def scripted(body: dict[str, Any]) -> Reply:
    """Rewrite requests get English queries; every other request gets an answer."""
    if body["messages"][0]["content"] == EXPAND_PROMPT:
        return Reply(content="object storage MinIO\nobject storage")
    return Reply(content="In object storage [1].")


@pytest.fixture
def rewriting(
    settings: Settings, embedder: Embedder, docs: Path
) -> Iterator[tuple[Index, ScriptedLLMServer]]:
    """An index over the docs whose LLM writes English queries when asked to rewrite."""
    with ScriptedLLMServer(Reply(respond=scripted)) as server:
        s = settings.model_copy(update={"base_url": server.base_url, "model": "gpt-oss-20b"})
        index = Index(s, embedder=embedder)
        index.ingest([docs])
        yield index, server
        index.close()


def test_a_foreign_question_is_searched_with_the_llms_english_alone(
    rewriting: tuple[Index, ScriptedLLMServer],
) -> None:
    index, _ = rewriting
    assert "cluster" in index.search(ITALIAN, k=5, mode="bm25").passages[0].text
    result = index.search(ITALIAN, k=5, mode="bm25", rewrite=True)
    # the original's "cluster" (notes.txt) is not searched: only the LLM's English is
    assert result.passages and {p.source for p in result.passages} == {"guide/storage.md"}
    assert result.translation == "object storage MinIO"


def test_ask_rewrites_only_questions_in_another_language(
    rewriting: tuple[Index, ScriptedLLMServer],
) -> None:
    index, server = rewriting
    index.ask("Where is the data kept?")
    english = [b["messages"][0]["content"] for b in server.bodies()]
    answer = index.ask(ITALIAN)
    italian = [b["messages"][0]["content"] for b in server.bodies()[len(english) :]]
    index.settings = index.settings.model_copy(update={"rewrite": "off"})
    index.ask(ITALIAN)
    off = len(server.bodies()) - len(english) - len(italian)
    assert EXPAND_PROMPT not in english and len(english) == 1
    assert italian[0] == EXPAND_PROMPT and len(italian) == 2
    assert answer.passages[0].source == "guide/storage.md"
    assert off == 1


def test_a_question_is_read_once_on_its_way_through_ask(
    rewriting: tuple[Index, ScriptedLLMServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its language tested and the lexicon fetched once per question, on the rewrite path too
    (the rewrite decision, the search and the translation used to repeat both)."""
    index, server = rewriting
    reads: list[str] = []
    read = index.retriever.read
    monkeypatch.setattr(index.retriever, "read", lambda query: reads.append(query) or read(query))
    for question in ("Where is the data kept?", ITALIAN):
        reads.clear()
        index.ask(question)
        assert reads == [question]
    assert server.bodies()[-2]["messages"][0]["content"] == EXPAND_PROMPT  # ITALIAN: rewritten


def test_rewrite_all_rewrites_english_questions_too(
    rewriting: tuple[Index, ScriptedLLMServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    index, server = rewriting
    monkeypatch.setenv("OSSRAG_REWRITE", "all")
    s = index.settings
    index.settings = load_settings(db=s.db, base_url=s.base_url, model=s.model)
    assert index.settings.rewrite == "all"
    answer = index.ask("Where is the data kept?")
    first, second = server.bodies()
    assert first["messages"] == [
        {"role": "system", "content": EXPAND_PROMPT},
        {"role": "user", "content": "Where is the data kept?"},
    ]
    assert second["messages"][0]["content"] != EXPAND_PROMPT  # then the answer
    assert answer.text == "In object storage [1]."
    # the question and the LLM's queries ("object storage MinIO", "object storage") fused
    assert [p.heading for p in answer.passages[:2]] == [
        "Storage guide › Where does the engine keep data?",
        "Storage guide › How do I back up?",
    ]
