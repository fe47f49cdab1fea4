"""Retrieval evaluation: the scorer on known inputs, the question-set reader, the CLI shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import write_docs
from llm_server import Reply, ScriptedLLMServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.config import Settings
from ossrag.embed.encoders import Embedder
from ossrag.errors import EvalError
from ossrag.eval.retrieval import (
    EvalItem,
    first_relevant,
    load_items,
    metrics,
    retrieval_reports,
    tutorial_chunks,
)
from ossrag.records import Document


def test_first_relevant_collapses_whitespace() -> None:
    texts = ["nothing here", "the data   is\n  flushed to disk", "flushed to disk again"]
    assert first_relevant(texts, ["is flushed to disk"]) == 2
    assert first_relevant(texts, ["absent", "again"]) == 3
    assert first_relevant(texts, ["absent"]) is None


def test_metrics_on_known_ranks() -> None:
    result = metrics([1, 3, None, 6])
    assert result["n"] == 4
    assert result["recall@1"] == 0.25
    assert result["recall@3"] == 0.5
    assert result["recall@5"] == 0.5
    assert result["recall@10"] == 0.75
    assert result["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 6) / 4)
    assert metrics([11])["mrr@10"] == 0.0


def test_load_items_names_line_and_field(tmp_path: Path) -> None:
    good = {"id": "q1", "question": "Q?", "lang": "en", "source": "a.md", "evidence": ["x"]}
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "evidence": "x"}) + "\n")
    with pytest.raises(EvalError, match=r"set.jsonl:3: field 'evidence'"):
        load_items(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(EvalError, match=r"set.jsonl:2: not JSON"):
        load_items(path)
    path.write_text(json.dumps(good) + "\n")
    assert [item.id for item in load_items(path)] == ["q1"]


def test_tutorial_chunks_split_on_hash_space() -> None:
    text = "# Title\nintro\n## Part\nbody line\n"
    doc = Document(text=text, source="a.md", root="/r", mtime=0.0, sha256="0")
    chunks = tutorial_chunks(doc)
    assert [c.text for c in chunks] == ["Title\nintro\n#", "Part\nbody line\n"]
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 3), (3, 5)]


def test_cli_eval_retrieval_json_with_baseline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    corpus = write_docs(tmp_path / "corpus")
    items = [
        {"id": "a", "question": "Where does the engine keep inserted vectors?", "lang": "en",
         "evidence": ["keeps inserted vectors in object storage"]},
        {"id": "b", "question": "Come faccio il backup?", "lang": "it",
         "evidence": ["Copy the bucket with the backup tool"]},
        {"id": "c", "question": "unanswerable", "lang": "en", "evidence": ["no such text"]},
    ]  # fmt: skip
    qset = tmp_path / "set.jsonl"
    qset.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    args = ["eval", "retrieval", str(qset), "--corpus", str(corpus), "--baseline", "tutorial"]
    result = CliRunner().invoke(app, [*args, "--json", "--show-misses"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("n", "recall@1", "recall@3", "recall@5", "recall@10", "mrr@10"):
        assert key in report and key in report["baselines"]["tutorial"]
    assert report["n"] == 3
    assert set(report["by_lang"]) == {"en", "it"}
    assert set(report["latency_ms"]) >= {"p50", "p95"}
    assert report["recall@10"] == pytest.approx(2 / 3, abs=1e-3)
    assert [m["id"] for m in report["misses"]["ossrag"]] == ["c"]
    # A second run reuses the cached stores: nothing is embedded again, same numbers.
    page = tmp_path / "report.html"
    again = json.loads(CliRunner().invoke(app, [*args, "--json", "--html", str(page)]).stdout)
    assert again["recall@10"] == report["recall@10"]
    html = page.read_text()
    assert "None" not in html and html.count('<details class="question">') == 3
    assert re.findall(r'<td class="text" data-sort="(\w+)">', html) == ["ossrag", "tutorial"]
    assert f"<dt>corpus</dt><dd>{corpus}</dd>" in html


def test_tutorial_baseline_returns_its_pieces_as_stored(
    tmp_path: Path, monkeypatch, settings: Settings, embedder: Embedder
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = "# Backups\nCopy the bucket.\n## Restore\nCopy the bucket back.\n## Verify\nCount.\n"
    (corpus / "backups.md").write_text(text, encoding="utf-8")
    items = [EvalItem(id="a", question="copy the bucket", evidence=["Copy the bucket"])]
    reports = retrieval_reports(settings, items, corpus=corpus, baseline="tutorial", k=3,
                                embedder=embedder)  # fmt: skip
    pieces = [c.text for c in tutorial_chunks(Document(text, "backups.md", "/r", 0.0, "0"))]
    tutorial = [p.text for p in reports[1].outcomes[0].top]
    # adjacent pieces of one file are not joined into one passage, as ossrag's search would
    assert sorted(tutorial) == sorted(pieces)


def test_cli_eval_bad_set_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    result = CliRunner().invoke(app, ["eval", "retrieval", str(bad)])
    assert result.exit_code == 1
    assert "bad.jsonl:1: field 'question'" in result.stderr


def test_failed_rewrites_are_reported_not_hidden(
    tmp_path: Path, monkeypatch, settings: Settings, embedder: Embedder
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    corpus = write_docs(tmp_path / "corpus")
    items = [
        EvalItem(id="a", question="Where are vectors kept?", evidence=["object storage"]),
        EvalItem(id="b", question="How many query nodes?", evidence=["three query nodes"]),
    ]
    with ScriptedLLMServer(Reply(content="vector storage")) as server:
        # the server answers (so rewriting is on) but has no such model: every rewrite fails
        s = settings.model_copy(update={"base_url": server.base_url, "model": "no-such-model"})
        report = retrieval_reports(s, items, corpus=corpus, rewrite=True, embedder=embedder)[0]
    # each question once: the warm-up search of the first is not a question of its own
    assert report.notice.startswith("2 of 2 rewrites failed (those questions were searched ")
    assert "no-such-model" in report.notice
    assert [o.rank for o in report.outcomes] == [1, 1]  # searched as written
