"""`ossrag eval answers`: models × efforts, judge scores, resumable cache, JSON and HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from llm_server import Reply, ScriptedLLMServer
from test_report import summary_cells
from typer.testing import CliRunner

from ossrag.cli import app as cli
from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.engine.index import Index
from ossrag.eval.compare import compare, effort_notes, load_cache, summarise
from ossrag.eval.retrieval import load_items

ITEMS = [
    {"id": "q1", "question": "Where does the engine keep inserted vectors?",
     "evidence": ["object storage such as MinIO or S3"], "answer": "In object storage."},
    {"id": "q2", "question": "How many query nodes does the cluster have?",
     "evidence": ["three query nodes"], "answer": "Three."},
]  # fmt: skip


LONG_MODEL = "Qwen/Qwen3-30B-A3B-Instruct-2507"


def respond(body: dict[str, Any]) -> Reply:
    if body["model"] == "judge":
        if "I cannot tell" in body["messages"][-1]["content"]:
            return Reply(content="not json")
        return Reply(content='{"correctness": 4, "faithfulness": 5, "rationale": "Supported."}')
    if body["model"] == "gpt-oss-120b":
        return Reply(content="I cannot tell.", reasoning="short")
    return Reply(
        content="See [1][2][3].", reasoning="x" * 40, first_token_delay_s=0.1, delay_s=0.01
    )


@pytest.fixture
def setup(tmp_path: Path, llm: ScriptedLLMServer, docs: Path) -> tuple[Index, Path]:
    for name in ("gpt-oss-20b", "gpt-oss-120b", "judge"):
        llm.add_model(name, Reply(respond=respond))
    settings = load_settings(
        db=str(tmp_path / "store.db"), base_url=llm.base_url, model="gpt-oss-20b", top_k=3,
        embedder="openai:hashed", embed_base_url=llm.base_url,
    )  # fmt: skip
    index = Index(settings)
    index.ingest([docs])
    question_set = tmp_path / "set.jsonl"
    question_set.write_text("\n".join(json.dumps(item) for item in ITEMS) + "\n")
    return index, question_set


def test_compare_models_and_efforts(setup: tuple[Index, Path], llm: ScriptedLLMServer) -> None:
    index, question_set = setup
    items = load_items(question_set)
    cache = question_set.parent / "cache.jsonl"
    models, efforts = ["gpt-oss-20b", "gpt-oss-120b"], ["low", "high"]
    rows = compare(index, items, models, efforts, judge_model="judge", cache=cache)
    assert [(r.model, r.effort, r.id) for r in rows] == [
        (m, e, i["id"]) for m in models for e in efforts for i in ITEMS
    ]
    answers = [b for b in llm.bodies() if b["model"] != "judge"]
    assert [b["reasoning_effort"] for b in answers] == ["low", "low", "high", "high"] * 2
    small = [r for r in rows if r.model == "gpt-oss-20b"]
    big = [r for r in rows if r.model == "gpt-oss-120b"]
    assert all(r.citation_hit and r.cited == [1, 2, 3] for r in small)
    assert not any(r.citation_hit for r in big)
    assert all(r.reasoning_chars == 40 and r.usage and r.ttft_ms >= 100 for r in small)
    for r in small:  # completion tokens over the time after the first token
        decode_s = (r.total_ms - r.ttft_ms) / 1000
        assert r.tokens_per_s == pytest.approx(r.usage["completion_tokens"] / decode_s, rel=0.01)
    assert all((r.correctness, r.faithfulness) == (4, 5) for r in small)
    assert all(r.correctness is None and "unreadable" in r.rationale for r in big)
    by_model = {(s["model"], s["effort"]): s for s in summarise(rows)}
    assert by_model["gpt-oss-20b", "low"]["citation_hit"] == 1.0
    assert by_model["gpt-oss-120b", "high"]["citation_hit"] == 0.0
    assert by_model["gpt-oss-20b", "high"]["correctness"] == 4.0
    # "See [1][2][3]." is one cited claim its passages do not make; "I cannot tell." cites none.
    assert all((r.claims, r.supported, r.unsupported) == (1, 0, 1) for r in small)
    assert all(r.claims == 0 for r in big)
    assert [by_model["gpt-oss-20b", "low"][k] for k in ("citation_precision", "unsupported_rate")
            ] == [0.0, 1.0]  # fmt: skip
    assert by_model["gpt-oss-120b", "low"]["unsupported_rate"] is None

    # Resumable: a finished run asks nothing again; a cut-short cache redoes only what is missing.
    sent = len(llm.bodies())
    assert compare(index, items, models, efforts, judge_model="judge", cache=cache) == rows
    assert len(llm.bodies()) == sent
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-2]) + "\n{broken\n")
    again = compare(index, items, models, efforts, judge_model="judge", cache=cache)
    assert len(llm.bodies()) == sent + 4  # two answers and their two verdicts
    assert [r.key for r in again] == [r.key for r in rows]
    assert len(load_cache(cache)) == 8
    index.close()


def test_cli_eval_answers(
    setup: tuple[Index, Path], llm: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, question_set = setup
    db = index.settings.db
    index.close()
    runner = CliRunner()
    base = ["--db", db, "--base-url", llm.base_url, "--cache", str(question_set.parent / "c"),
            "--embedder", "openai:hashed", "--embed-base-url", llm.base_url]  # fmt: skip
    bad = runner.invoke(app, ["eval", "answers", str(question_set), "--model", "m",
                              "--effort", "low,extreme", *base])  # fmt: skip
    assert bad.exit_code == 1 and "--effort 'low,extreme'" in bad.stderr
    report = question_set.parent / "report.html"
    result = runner.invoke(
        app,
        ["eval", "answers", str(question_set), "--model", "gpt-oss-20b", "--model",
         "gpt-oss-120b", "--judge", "judge", "--effort", "medium", "--html", str(report),
         "--json", *base],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert len(payload["rows"]) == 4 and len(payload["summary"]) == 2
    rates = {s["model"]: (s["citation_precision"], s["unsupported_rate"])
             for s in payload["summary"]}  # fmt: skip
    assert rates == {"gpt-oss-20b": (0.0, 1.0), "gpt-oss-120b": (None, None)}
    page = report.read_text()
    assert page.count('<svg class="chart"') == 1 and "None" not in page
    # supported and unsupported claims (rates), then errors, in the HTML summary
    assert [row[-3:] for row in summary_cells(page)] == [["0.000", "1.000", "0"],
                                                         ["—", "—", "0"]]  # fmt: skip
    assert (
        "<p>See [1][2][3].</p>" in page
        and "<dt>models</dt><dd>gpt-oss-20b, gpt-oss-120b</dd>" in page
    )
    assert page.count("<strong>Judge:</strong> Supported.") == 2
    # At 80 columns every header and model name stays whole; a long name wraps in its column.
    monkeypatch.setattr(cli.out.console, "width", 80)
    llm.add_model(LONG_MODEL, Reply(respond=respond))
    table = runner.invoke(app, ["eval", "answers", str(question_set), "--model", "gpt-oss-20b",
                                "--model", "gpt-oss-120b", "--model", LONG_MODEL,
                                "--judge", "judge", "--effort", "medium", *base])  # fmt: skip
    assert table.exit_code == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert re.search(r"gpt-oss-20b\s+medium\s+1\.000\s+4\.00\s+5\.00", table.stdout)
    assert re.search(r"gpt-oss-120b\s+medium\s+0\.000\s+—\s+—", table.stdout)
    assert table_models(table.stdout) == ["gpt-oss-20b", "gpt-oss-120b", LONG_MODEL]
    # The claim checks, a line each (wrapped at a space when a long name makes it too long);
    # gpt-oss-120b's scripted answers cite nothing: no claims to check, no line.
    claims = re.findall(
        r"claims (\S+) medium: \d\.\d{3} supported, \d\.\d{3} unsupported",
        " ".join(table.stdout.split()),
    )
    assert claims == ["gpt-oss-20b", LONG_MODEL]


def table_models(stdout: str) -> list[str]:
    """The model column of the eval answers table, each name put together from its lines."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("─")) + 1
    names: list[str] = []
    for line in lines[start:]:
        cells = line.split()
        if not cells:  # the end of the table
            break
        if len(cells) > 1:
            names.append(cells[0])
        else:  # the rest of a wrapped name
            names[-1] += cells[0]
    return names


def test_a_server_that_ignores_the_effort_is_named() -> None:
    def row(model: str, effort: str, chars: float | None) -> dict[str, Any]:
        return {"model": model, "effort": effort, "reasoning_chars": chars}

    summary = [
        row("lmstudio-20b", "low", 400.0),
        row("lmstudio-20b", "high", 420.0),  # within 10 %: ignored
        row("vllm-20b", "low", 400.0),
        row("vllm-20b", "high", 1900.0),
        row("only-medium", "medium", 500.0),
        row("no-reasoning", "low", None),
        row("no-reasoning", "high", 0.0),
    ]
    assert effort_notes(summary) == [
        "lmstudio-20b: 420 characters of reasoning at high effort against 400 at low: the server "
        "seems to ignore the effort; set OSSRAG_EFFORT_STYLE (system sends harmony's Reasoning "
        "line, which every gpt-oss server reads)"
    ]
