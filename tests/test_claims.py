"""Claim verification: splitting, scoring, and the flag in every door (library, CLI, HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import SHARED, write_docs
from llm_server import Reply, ScriptedLLMServer
from test_server import LiveServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.generate.claims import (
    Evidence,
    Verifier,
    missing_facts,
    passage_sentences,
    plain,
    split_claims,
)
from ossrag.http.app import create_app
from ossrag.records import Passage

pytestmark = pytest.mark.timeout(120)

QUESTION = "Where are vectors kept?"
TRUE = "The engine keeps inserted vectors in object storage such as MinIO or S3"
FABRICATED = "Backups are encrypted with AES-256 every 6 hours"
# A real passage ([1], guide/storage.md lines 6-8) cited for a claim it does not make.
ANSWER = f"{TRUE} [1]. {FABRICATED} [1]."
EVIDENCE = {
    "n": 1,
    "quote": "The engine keeps inserted vectors in object storage such as MinIO or S3, and "
    "metadata in etcd.",
    "start_line": 8,
    "end_line": 8,
}


def test_split_claims_citation_styles() -> None:
    answer = (
        "Call `client.create_collection()` first [1]. It is free.[2] Use e.g. HNSW. [3]\n\n"
        "- Two sources [1, 2]\n- Adjacent ones [1][3]\n\n"
        "```python\nx = 1  [4]\n```\n"
        "Version 2.3 is out [2]. Nothing cited here."
    )
    assert split_claims(answer) == [
        ("Call `client.create_collection()` first.", [1]),
        ("It is free.", [2]),
        ("Use e.g. HNSW.", [3]),
        ("Two sources", [1, 2]),
        ("Adjacent ones", [1, 3]),
        ("Version 2.3 is out.", [2]),
    ]


def test_passage_sentences_carry_file_lines() -> None:
    text = (
        "## Limits\n\nA collection holds at most\n1,024 partitions. Each is a *subset*.\n\n"
        "- [Keys](k.md) hash"
    )
    passage = Passage(1, 1.0, "c", "a.md", "", 20, 25, text)
    assert [(s.text, s.start_line, s.end_line) for s in passage_sentences(3, passage)] == [
        ("Limits", 20, 20),
        ("A collection holds at most 1,024 partitions.", 22, 23),
        ("Each is a subset.", 23, 23),
        ("Keys hash", 25, 25),
    ]


def test_plain_drops_markup_and_control_bytes() -> None:
    assert (
        plain("See [the **docs**](x.md) <b>now</b>\x1b[2J\x07 { #anchor }")
        == "See the docs now [2J"
    )


def test_missing_facts_numbers_names_polarity() -> None:
    source = ["Milvus returns success when data reaches the queue. It does not flush at once."]
    assert missing_facts("Milvus returns success after 10 seconds.", source) == ("10", "after")
    # A name that opens the sentence is not checked (it cannot be told from a capital).
    assert missing_facts("Cassandra returns success; it does not flush.", source) == ()
    assert missing_facts("It returns success, then `flush_all()` runs.", source) == ("flush_all()",)
    assert missing_facts("Milvus flushes two queues.", ["There are 2 queues."]) == ()


def test_verifier_verdicts_with_minilm(embedder: Embedder) -> None:
    text = (
        "# Partitions\n\nUpon the creation of a collection, a default partition named _default "
        "is created. You can create a maximum of 1,024 partitions within a collection."
    )
    passage = Passage(1, 1.0, "c", "p.md", "Partitions", 10, 12, text)
    verifier = Verifier(embedder.embed_queries)
    claims = verifier.check(
        "A collection can have up to 1,024 partitions [1]. "
        "A collection can have up to 4,096 partitions [1]. "
        "Partitions are stored on GPUs [2].",
        [passage],
    )
    assert [(c.verdict, c.reason) for c in claims] == [
        ("supported", ""),
        ("unsupported", "not in the source: 4096"),
        ("unsupported", "cites no passage given"),
    ]
    assert claims[0].evidence == (
        Evidence(1, "You can create a maximum of 1,024 partitions within a collection.", 12, 12),
    )


# -- the doors -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    tmp = tmp_path_factory.mktemp("claims")
    index = Index(load_settings(db=str(tmp / "store.db")), embedder=embedder)
    index.ingest([write_docs(tmp / "docs")])
    index.close()
    return tmp / "store.db"


@pytest.fixture
def llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(Reply(content=ANSWER, chunk_size=7)) as server:
        yield server


def _check(claims: list[dict[str, object]]) -> None:
    assert [(c["text"], c["citations"], c["verdict"]) for c in claims] == [
        (f"{TRUE}.", [1], "supported"),
        (f"{FABRICATED}.", [1], "unsupported"),
    ]
    assert claims[0]["evidence"] == [EVIDENCE]
    assert claims[1]["reason"] == "not in the source: 256, 6, aes, every"


def test_library_flags_the_fabricated_claim(
    store: Path, embedder: Embedder, llm: ScriptedLLMServer
) -> None:
    settings = load_settings(db=str(store), base_url=llm.base_url, model="gpt-oss-20b")
    index = Index(settings, embedder=embedder)
    try:
        answer = index.ask(QUESTION, k=2)
    finally:
        index.close()
    assert answer.passages[0].source == "guide/storage.md"
    _check([c.to_dict() for c in answer.claims])
    assert answer.to_dict()["claims"] == [c.to_dict() for c in answer.claims]
    assert answer.timings["verify_ms"] > 0


def test_cli_marks_the_unsupported_citation(store: Path, llm: ScriptedLLMServer) -> None:
    env = {"OSSRAG_DB": str(store), "OSSRAG_BASE_URL": llm.base_url, "OSSRAG_MODEL": "gpt-oss-20b"}
    runner = CliRunner()
    result = runner.invoke(app, ["ask", QUESTION, "-k", "2"], env=env)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index("1 of 2 claims is not supported by its source")
    assert lines[at + 1] == f"  unsupported: {FABRICATED}. [1?]"
    assert lines[at + 2] == "Sources"

    result = runner.invoke(app, ["ask", QUESTION, "-k", "2", "--show-evidence"], env=env)
    lines = result.stdout.splitlines()
    at = lines.index(f"  supported: {TRUE}. [1]")
    assert lines[at + 1] == f"      [1] lines 8-8: {EVIDENCE['quote']}"
    assert lines[at + 2 : at + 4] == [
        f"  unsupported: {FABRICATED}. [1?]",
        "      not in the source: 256, 6, aes, every",
    ]

    result = runner.invoke(app, ["ask", QUESTION, "-k", "2", "--json"], env=env)
    _check(json.loads(result.stdout)["claims"])


def test_http_carries_claims_next_to_sources(
    store: Path, embedder: Embedder, llm: ScriptedLLMServer
) -> None:
    settings = load_settings(db=str(store), base_url=llm.base_url, model="gpt-oss-20b")
    index = Index(settings, embedder=embedder)
    body = {"model": "ossrag", "messages": [{"role": "user", "content": QUESTION}], "top_k": 2}
    try:
        with LiveServer(create_app(settings, index)) as live, httpx.Client(timeout=60) as http:
            response = http.post(f"{live.url}/v1/chat/completions", json=body)
            assert response.status_code == 200
            completion = response.json()
            assert completion["sources"][0]["source"] == "guide/storage.md"
            _check(completion["claims"])

            with http.stream(
                "POST", f"{live.url}/v1/chat/completions", json={**body, "stream": True}
            ) as stream:
                events = [
                    json.loads(line[6:])
                    for line in stream.iter_lines()
                    if line.startswith("data: {")
                ]
    finally:
        index.close()
    final = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0] is events[-1]
    _check(final[0]["claims"])
    assert all("claims" not in e for e in events[:-1])


LABELED = Path(__file__).resolve().parents[1] / "benchmarks" / "questions" / "claims.jsonl"
KINDS = {
    "supported": {"copy", "paraphrase", "italian"},
    "unsupported": {"wrong_passage", "number", "name", "fabricated", "italian_fabricated",
                    "italian_number"},
}  # fmt: skip


def test_labeled_set_is_well_formed() -> None:
    items = [json.loads(line) for line in LABELED.read_text(encoding="utf-8").splitlines()]
    assert len(items) >= 150 and len({i["id"] for i in items}) == len(items)
    assert all(i["kind"] in KINDS[i["label"]] for i in items)
    assert {i["corpus"] for i in items} == {"milvus-docs", "fastapi-docs"}
    assert {i["kind"] for i in items} == KINDS["supported"] | KINDS["unsupported"]
    corpus = SHARED / "corpus"
    if corpus.is_dir():  # every passage's lines exist in its file
        for i in items:
            lines = (corpus / i["corpus"] / i["source"]).read_text(encoding="utf-8").split("\n")
            assert 1 <= i["start_line"] < i["end_line"] <= len(lines), i["id"]


def test_structured_answer_claims(store: Path, embedder: Embedder, tmp_path: Path) -> None:
    data = {"answer": ANSWER, "citations": [1], "confidence": 0.5, "follow_up_questions": []}
    with ScriptedLLMServer(Reply(content=json.dumps(data))) as llm:
        settings = load_settings(db=str(store), base_url=llm.base_url, model="gpt-oss-20b")
        index = Index(settings, embedder=embedder)
        try:
            answer = index.ask_structured(QUESTION, k=2)
        finally:
            index.close()
        _check([c.to_dict() for c in answer.claims])
        schema = tmp_path / "schema.json"
        schema.write_text("{}", encoding="utf-8")
        env = {"OSSRAG_DB": str(store), "OSSRAG_BASE_URL": llm.base_url,
               "OSSRAG_MODEL": "gpt-oss-20b"}  # fmt: skip
        args = ["ask", QUESTION, "-k", "2", "--json-schema", str(schema)]
        result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.stderr
    _check(json.loads(result.stdout)["claims"])
