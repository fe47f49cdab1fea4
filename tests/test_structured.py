"""Structured answers: schema requested, validated on our side, one retry, then a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llm_server import Reply, ScriptedLLMServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.engine.index import Index
from ossrag.generate.budget import Budget
from ossrag.generate.llm import LLMClient, LLMConfig
from ossrag.generate.structured import (
    BASE_SCHEMA,
    StructuredAnswerError,
    answer_structured,
    check_schema,
    extend_schema,
    load_schema,
)
from ossrag.records import Passage
from ossrag.retrieve.retriever import SearchResult

PASSAGES = [
    Passage(1, 0.9, "c1", "guide/storage.md", "Storage", 6, 8, "Data lives in object storage."),
    Passage(2, 0.5, "c2", "guide/backup.md", "Backup", 1, 3, "Snapshot etcd to back up."),
]
RESULT = SearchResult(PASSAGES, "hybrid")


def good(**extra: Any) -> str:
    return json.dumps(
        {"answer": "In object storage [1].", "citations": [1], "confidence": 0.8,
         "follow_up_questions": ["How do I back up?"], **extra}
    )  # fmt: skip


def ask(server: ScriptedLLMServer, schema: dict[str, Any] = BASE_SCHEMA) -> Any:
    with LLMClient(LLMConfig(base_url=server.base_url, model="gpt-oss-20b")) as llm:
        return answer_structured("Where is data?", RESULT, llm, Budget(16384, 1024), schema=schema)


def test_valid_answer_first_time(llm: ScriptedLLMServer) -> None:
    llm.enqueue(Reply(content=good(), reasoning="The first passage says so."))
    result = ask(llm)
    assert result.data["citations"] == [1] and result.attempts == 1
    assert result.reasoning == "The first passage says so."
    body = llm.bodies()[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == BASE_SCHEMA
    assert body["max_tokens"] == 1024 and body.get("stream") is not True
    assert '"follow_up_questions"' in body["messages"][0]["content"]  # schema in the prompt too
    out = result.to_dict()
    assert out["result"]["answer"] == "In object storage [1]."
    assert out["sources"][0] == {"n": 1, "source": "guide/storage.md", "lines": [6, 8]}


def test_schema_violation_is_fixed_on_retry(llm: ScriptedLLMServer) -> None:
    bad = json.dumps({"answer": "In object storage [1].", "citations": [1]})
    llm.enqueue(Reply(content=bad), Reply(content="```json\n" + good() + "\n```"))
    result = ask(llm)
    assert result.attempts == 2
    retry = llm.bodies()[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": bad}
    assert "'confidence' is a required property" in retry[-1]["content"]


def test_unknown_citation_is_fixed_on_retry(llm: ScriptedLLMServer) -> None:
    wrong = good().replace('"citations": [1]', '"citations": [1, 7]')
    llm.enqueue(Reply(content=wrong), Reply(content=good()))
    assert ask(llm).attempts == 2
    assert (
        "citations [7] do not exist: cite only passages 1 to 2"
        in (llm.bodies()[1]["messages"][-1]["content"])
    )


def test_violating_twice_is_a_clear_error(llm: ScriptedLLMServer) -> None:
    llm.enqueue(
        Reply(content="Data is in object storage [1]."),
        Reply(content=good().replace('"In object storage [1]."', "3")),
    )
    with pytest.raises(StructuredAnswerError) as info:
        ask(llm)
    message = str(info.value)
    assert message.startswith("the model's answer did not match the JSON schema after a retry")
    assert "answer: 3 is not of type 'string'" in message and "\n" not in message
    assert len(llm.bodies()) == 2


def test_server_without_response_format_gets_the_schema_in_the_prompt(
    llm: ScriptedLLMServer,
) -> None:
    llm.enqueue(Reply(status=400, error="response_format json_schema is not supported"))
    llm.enqueue(Reply(content=good()))
    result = ask(llm)
    assert "response_format" not in llm.bodies()[1]
    assert "schema in prompt" in result.notice


def test_user_schema_extends_the_base(llm: ScriptedLLMServer, tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    extra = {"properties": {"language": {"enum": ["en", "it"]}}, "required": ["language"]}
    path.write_text(json.dumps(extra))
    schema = load_schema(path)
    assert set(schema["required"]) == {*BASE_SCHEMA["required"], "language"}
    llm.enqueue(Reply(content=good()), Reply(content=good(language="en")))
    result = ask(llm, schema)
    assert result.data["language"] == "en" and result.attempts == 2


def test_a_clients_own_schema_is_used_as_given(llm: ScriptedLLMServer) -> None:
    schema = check_schema(
        {"type": "object", "properties": {"where": {"type": "string"}, "citations": {}},
         "required": ["where"]}
    )  # fmt: skip
    llm.enqueue(Reply(content='{"where": "MinIO"}'))
    assert ask(llm, schema).data == {"where": "MinIO"}  # no base fields asked for
    # Citation numbers are still checked wherever the answer has them.
    llm.enqueue(Reply(content='{"where": "MinIO", "citations": [7]}'), Reply(content="[1]"))
    with pytest.raises(StructuredAnswerError, match="did not match the JSON schema after a retry"):
        ask(llm, schema)
    assert "citations [7] do not exist" in llm.bodies()[-1]["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"type": "array"}', "must be an object schema"),
        ('{"properties": {"x": {"type": "strange"}}}', "not a valid JSON schema"),
    ],
)
def test_bad_schema_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.json"
    path.write_text(text)
    with pytest.raises(StructuredAnswerError, match=message) as info:
        load_schema(path)
    assert str(path) in str(info.value)
    with pytest.raises(StructuredAnswerError, match="cannot read"):
        load_schema(tmp_path / "missing.json")
    assert extend_schema(None) is BASE_SCHEMA


def test_cli_json_schema(tmp_path: Path, llm: ScriptedLLMServer, docs: Path) -> None:
    db = str(tmp_path / "store.db")
    embed = ["--embedder", "openai:hashed", "--embed-base-url", llm.base_url]
    index = Index(load_settings(db=db, embedder="openai:hashed", embed_base_url=llm.base_url))
    index.ingest([docs])
    index.close()
    llm.enqueue(Reply(content=good()))
    bad_schema = tmp_path / "bad.json"
    bad_schema.write_text("[")
    runner = CliRunner()
    base = ["--db", db, "--base-url", llm.base_url, "--model", "gpt-oss-20b", *embed]
    failed = runner.invoke(app, ["ask", "Where?", "--json-schema", str(bad_schema), *base])
    assert failed.exit_code == 1, failed.stderr or repr(failed.exception)
    assert "bad.json is not valid JSON" in failed.stderr
    schema = tmp_path / "schema.json"
    schema.write_text("{}")
    result = runner.invoke(app, ["ask", "Where is data?", "--json-schema", str(schema), *base])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["result"]["citations"] == [1] and payload["attempts"] == 1
    assert payload["sources"][0]["n"] == 1
