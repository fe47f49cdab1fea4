"""Filters (path glob, type, since) in every door: the library, the CLI, HTTP; and the same
results from a Lite store's in-memory index as from Milvus's own boolean expression, on a
`milvus-lite server`."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from conftest import REPO, write_docs
from llm_server import Reply, ScriptedLLMServer
from test_server import LiveServer
from test_servers import Server
from typer.testing import CliRunner

from ossrag.choices import Mode
from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.errors import FilterError
from ossrag.http.app import create_app
from ossrag.store.filters import Filter, filter_from_json, make_filter, parse_since

pytestmark = pytest.mark.timeout(120)

KEY = "filter-key"
METRICS = ["guide/search.md", 3, 10]
FILTERS = ["guide/search.md", 12, 14]
STORAGE = ["guide/storage.md", 6, 8]
NOTES = ["notes.txt", 1, 3]


def _where(results: list[dict[str, object]]) -> list[list[object]]:
    return [[r["source"], r["start_line"], r["end_line"]] for r in results]


# --------------------------------------------------------------------------- the predicate


def test_filter_accepts_by_glob_type_and_time() -> None:
    f = make_filter(["guide/*", "notes.txt"], ["MD", ".txt"], "2026-01-31")
    assert f == Filter(("guide/*", "notes.txt"), ("md", "txt"), datetime(2026, 1, 31).timestamp())
    new = datetime(2026, 2, 1).timestamp()
    assert f.accepts("guide/a.md", new)
    assert f.accepts("notes.txt", new)
    assert not f.accepts("guide/a.md", datetime(2026, 1, 30, 23, 59).timestamp())
    assert not f.accepts("guide/a.pdf", new)
    assert not f.accepts("other/a.md", new)
    assert make_filter(["faq"]).accepts("faq/sub/b.md", 0)  # a folder selects what is below
    assert make_filter(["*.md"]).accepts("deep/er/x.md", 0)  # '*' crosses folders
    assert not Filter() and Filter().accepts("anything", 0)


def test_since_takes_dates_times_and_spans() -> None:
    assert parse_since("2026-03-01T12:30") == datetime(2026, 3, 1, 12, 30).timestamp()
    assert parse_since("2026-03-01T12:30+00:00") == 1772368200.0
    week = datetime.now().timestamp() - parse_since("1w")
    assert 7 * 86400 - 5 < week < 7 * 86400 + 5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("guide/*", "filter: must be an object with path, type and since"),
        ({"paths": ["a"]}, "filter.paths: unknown field (use path, type, since)"),
        ({"path": 3}, "filter.path: a string or a list of strings"),
        ({"type": ["md", 1]}, "filter.type: a string or a list of strings"),
        ({"type": "exe"}, "filter.type 'exe': not a type ossrag ingests (bash, c, "),
        ({"since": 20260101}, "filter.since: must be a date string like 2026-01-31"),
        ({"since": "tomorrow"}, "filter.since 'tomorrow': use a date like 2026-01-31"),
        ({"path": ["\x1b[31m"]}, "filter.path '\\x1b[31m': a non-empty glob like"),
    ],
)
def test_bad_filter_objects_name_the_field(value: object, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        filter_from_json(value)
    assert str(caught.value).startswith(message)


def test_filter_from_json_takes_strings_or_lists() -> None:
    assert filter_from_json({"path": "guide/*", "type": ["md"]}) == Filter(("guide/*",), ("md",))
    assert filter_from_json(None) == Filter()


# --------------------------------------------------------------------------- library


def test_filtered_search_returns_k_when_k_match(index: Index, docs: Path) -> None:
    index.ingest([docs])
    question = "query nodes"
    assert [p.source for p in index.search(question, 1).passages] == ["notes.txt"]
    md = index.search(question, 3, where=make_filter(types=["md"]))
    assert [[p.source, p.start_line, p.end_line] for p in md.passages] == [
        FILTERS, METRICS, STORAGE
    ]  # fmt: skip
    for mode in ("dense", "bm25"):
        only = index.search("engine data", 5, mode, where=make_filter(["guide/storage.md"]))
        assert {p.source for p in only.passages} == {"guide/storage.md"}, mode
    none = index.search(question, 3, where=make_filter(types=["pdf"]))
    assert (none.passages, none.notice) == ([], "no stored file matches the filter")


def test_since_follows_the_files_modification_time(index: Index, docs: Path) -> None:
    old = datetime(2020, 1, 1).timestamp()
    for name in ("guide/storage.md", "notes.txt"):
        os.utime(docs / name, (old, old))
    index.ingest([docs])
    recent = index.search("engine storage", 5, where=make_filter(since="2021-01-01"))
    assert {p.source for p in recent.passages} == {"guide/search.md"}
    older = index.search("engine storage", 5, where=make_filter(since="2019-12-31"))
    assert {p.source for p in older.passages} == {"guide/search.md", "guide/storage.md",
                                                   "notes.txt"}  # fmt: skip


# --------------------------------------------------------------------------- CLI


def test_cli_search_and_ask_take_filters(
    settings_db: Path, llm: ScriptedLLMServer, embedder: Embedder
) -> None:
    runner = CliRunner()
    base = ["--db", str(settings_db)]
    found = runner.invoke(
        app, ["search", "query nodes", "-k", "2", "--path", "guide/*", "--type", "md", *base,
              "--json"],
    )  # fmt: skip
    assert found.exit_code == 0, found.output
    assert _where(json.loads(found.stdout)["results"]) == [FILTERS, METRICS]

    asked = runner.invoke(
        app, ["ask", "Where is data kept?", "--path", "notes.txt", "--base-url", llm.base_url,
              "--model", "gpt-oss-20b", *base, "--json"],
    )  # fmt: skip
    assert asked.exit_code == 0, asked.output
    assert [c["source"] for c in json.loads(asked.stdout)["citations"]] == ["notes.txt"]
    prompt = json.dumps(llm.bodies()[-1]["messages"])
    assert "three query nodes" in prompt and "object storage" not in prompt

    env = {**os.environ, "PYTHONPATH": str(REPO)}  # and as a separate process
    process = subprocess.run(
        [sys.executable, "-m", "ossrag", "search", "query nodes", "-k", "3", "--type", "md",
         *base, "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-2000:]
    assert _where(json.loads(process.stdout)["results"]) == [FILTERS, METRICS, STORAGE]

    since = ["search", "query nodes", "-k", "1", *base, "--json", "--since"]
    later = json.loads(runner.invoke(app, [*since, "2100-01-01"]).stdout)
    assert (later["results"], later["notice"]) == ([], "no stored file matches the filter")
    assert _where(json.loads(runner.invoke(app, [*since, "1d"]).stdout)["results"]) == [NOTES]

    bad = runner.invoke(app, ["search", "x", "--type", "exe", *base])
    assert bad.exit_code == 1
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith("error: type 'exe': not a type ossrag ingests (")


@pytest.fixture
def settings_db(tmp_path: Path, docs: Path, embedder: Embedder) -> Path:
    index = Index(load_settings(db=str(tmp_path / "cli.db")), embedder=embedder)
    index.ingest([docs])
    index.close()
    return tmp_path / "cli.db"


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[LiveServer, ScriptedLLMServer]]:
    root = tmp_path_factory.mktemp("filters-http")
    write_docs(root / "docs")
    with ScriptedLLMServer(Reply(content="Three query nodes [1].")) as llm:
        settings = load_settings(
            db=str(root / "s.db"), base_url=llm.base_url, model="gpt-oss-20b", api_keys=[KEY]
        )
        index = Index(settings, embedder=embedder)
        index.ingest([root / "docs"])
        with LiveServer(create_app(settings, index)) as live:
            yield live, llm
        index.close()


def _post(live: LiveServer, path: str, body: dict[str, object]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(live.url + path, json=body, headers=headers, timeout=30)


def test_http_search_and_chat_take_a_filter(
    served: tuple[LiveServer, ScriptedLLMServer],
) -> None:
    live, llm = served
    body = {"query": "query nodes", "top_k": 2, "filter": {"path": "guide/*", "type": "md"}}
    assert _where(_post(live, "/v1/search", body).json()["results"]) == [FILTERS, METRICS]
    chat = _post(live, "/v1/chat/completions", {
        "model": "ossrag", "messages": [{"role": "user", "content": "How many query nodes?"}],
        "filter": {"path": ["guide/storage.md"]},
    })  # fmt: skip
    assert chat.status_code == 200, chat.text
    assert {s["source"] for s in chat.json()["sources"]} == {"guide/storage.md"}
    assert "three query nodes" not in json.dumps(llm.bodies()[-1]["messages"])


@pytest.mark.parametrize("path", ["/v1/search", "/v1/chat/completions"])
def test_http_bad_filter_is_a_400_naming_the_field(
    served: tuple[LiveServer, ScriptedLLMServer], path: str
) -> None:
    live, llm = served
    calls = len(llm.requests)
    body = {"query": "x", "model": "ossrag", "messages": [{"role": "user", "content": "x"}],
            "filter": {"since": "someday"}}  # fmt: skip
    response = _post(live, path, body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("filter.since 'someday': use a date")
    assert len(llm.requests) == calls


# --------------------------------------------------------------------------- Lite vs server


def _corpus(root: Path, files: int = 60) -> Path:
    """One-chunk files in three folders and three types, with spread modification times;
    words drawn with skewed weights, so that scores rarely tie."""
    rng = random.Random(7)
    words = (
        "vector index segment replica query node collection partition schema bucket storage "
        "metric filter search embedding cluster shard flush compaction proxy coordinator "
        "channel timestamp consistency quota backup snapshot analyzer"
    ).split()
    weights = [1 / (rank + 1) for rank in range(len(words))]
    for n in range(files):
        folder, suffix = ("alpha", "beta", "gamma")[n % 3], (".md", ".txt", ".rst")[n % 7 % 3]
        path = root / folder / f"doc{n:02d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        shuffled = rng.sample(words, len(words))  # each file its own favourite words
        text = " ".join(rng.choices(shuffled, weights, k=rng.randint(12, 60)))
        path.write_text(f"# Doc {n}\n\n{text}.\n", encoding="utf-8")
        stamp = datetime(2025, 1 + n % 12, 1).timestamp()
        os.utime(path, (stamp, stamp))
    return root


FILTER_CASES = [
    make_filter(["beta/*"]),
    make_filter(types=["txt"]),
    make_filter(["alpha", "gamma/doc1*"], ["md", "rst"]),
    make_filter(since="2025-10-01"),
    make_filter(["beta/doc04.txt"]),  # one file: fewer than k match
    make_filter(types=["md", "txt"]),  # most files: the expression names those it drops
]


@pytest.mark.timeout(300)
def test_lite_memory_index_and_milvus_expression_agree(
    tmp_path: Path, lite: Server, embedder: Embedder
) -> None:
    corpus = _corpus(tmp_path / "corpus")
    # Milvus's weighted fusion (RRF sums tie often, and ties break differently)
    local = Index(load_settings(db=str(tmp_path / "l.db"), fusion="weighted"), embedder=embedder)
    remote = Index(load_settings(db=lite.uri, fusion="weighted"), embedder=embedder)
    for index in (local, remote):
        index.ingest([corpus])
    assert local.store._search_index() is not None  # the in-memory index answers locally
    assert remote.store._search_index() is None  # the server gets an expression
    modes: list[Mode] = ["dense", "bm25", "hybrid"]
    mtime = {record.source: record.mtime for record in local.files()}
    compared = 0
    for where in FILTER_CASES:
        for mode in modes:
            for query in ("replica shard flush", "collection schema partition"):
                mine = local.retriever.chunks(query, 8, mode, where).passages
                theirs = remote.retriever.chunks(query, 8, mode, where).passages
                assert [p.chunk_id for p in mine] == [p.chunk_id for p in theirs], (where, mode)
                assert [p.score for p in mine] == pytest.approx([p.score for p in theirs],
                                                                 rel=1e-4)  # fmt: skip
                assert all(where.accepts(p.source, mtime[p.source]) for p in mine)
                compared += len(mine)
    assert compared == 244  # k = 8 whenever 8 chunks match (BM25 needs a query word)
    local.close()
    remote.close()


def test_cli_chat_and_eval_retrieval_take_filters(
    settings_db: Path, llm: ScriptedLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    chat = runner.invoke(
        app, ["chat", "--db", str(settings_db), "--base-url", llm.base_url, "--model",
              "gpt-oss-20b", "--type", "txt"],
        input="Where is data kept?\n/quit\n",
    )  # fmt: skip
    assert chat.exit_code == 0, chat.stderr
    prompt = json.dumps(llm.bodies()[-1]["messages"])
    assert "three query nodes" in prompt and "object storage" not in prompt

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    corpus = write_docs(tmp_path / "corpus")
    qset = tmp_path / "set.jsonl"
    item = {"id": "a", "question": "Where are inserted vectors kept?",
            "evidence": ["keeps inserted vectors in object storage"]}  # fmt: skip
    qset.write_text(json.dumps(item) + "\n")
    args = ["eval", "retrieval", str(qset), "--corpus", str(corpus), "--json"]
    recall = {
        flags: json.loads(runner.invoke(app, [*args, *flags]).stdout)["recall@10"]
        for flags in ((), ("--path", "guide/storage.md"), ("--type", "txt"))
    }
    assert recall == {(): 1.0, ("--path", "guide/storage.md"): 1.0, ("--type", "txt"): 0.0}
