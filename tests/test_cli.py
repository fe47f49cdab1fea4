"""The `ossrag` CLI end to end: real store, real embedder, scripted LLM over HTTP."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from conftest import write_docs
from llm_server import Reply, ScriptedLLMServer
from typer.core import TyperCommand, TyperGroup
from typer.testing import CliRunner

from ossrag.cli import app as cli
from ossrag.cli.app import EXIT_WARNINGS, app, collect_after_start_up
from ossrag.embed.encoders import Embedder

runner = CliRunner()


@pytest.fixture(scope="module")
def store_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One ingested store shared by the read-only tests of this module."""
    tmp = tmp_path_factory.mktemp("cli")
    docs = write_docs(tmp / "docs")
    env = {"OSSRAG_DB": str(tmp / "store.db"), "OSSRAG_CONFIG": str(tmp / "none.toml")}
    result = runner.invoke(app, ["ingest", str(docs), "--json"], env=env)
    assert result.exit_code == 0, result.output
    return env


def run(args: list[str], env: dict[str, str], **extra: str) -> tuple[int, str, str]:
    result = runner.invoke(app, args, env={**env, **extra})
    return result.exit_code, result.stdout, result.stderr


def test_ingest_json_summary_and_noop(store_env: dict[str, str], tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "more", {"a.md": "# A\n\nAlpha text about replicas.\n"})
    env = {**store_env, "OSSRAG_DB": str(tmp_path / "s.db")}
    code, stdout, _ = run(["ingest", str(docs), "--json"], env)
    first = json.loads(stdout)
    assert code == 0
    assert set(first) >= {
        "files_added", "files_updated", "files_unchanged", "files_removed", "files_skipped",
        "chunks_embedded", "chunks_deleted", "warnings",
    }  # fmt: skip
    assert (first["files_added"], first["chunks_embedded"]) == (1, 1)
    code, stdout, _ = run(["ingest", str(docs), "--json"], env)
    assert json.loads(stdout)["files_unchanged"] == 1 and json.loads(stdout)["chunks_embedded"] == 0


def test_ingest_with_skips_exits_with_warning_code(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    docs = write_docs(tmp_path / "d", {"ok.md": "# Ok\n\nFine.\n", "empty.md": ""})
    env = {**store_env, "OSSRAG_DB": str(tmp_path / "s.db")}
    code, stdout, stderr = run(["ingest", str(docs), str(tmp_path / "nope.md")], env)
    assert code == EXIT_WARNINGS
    assert "1 added" in stdout
    assert "empty.md" in stderr and "nope.md" in stderr
    assert "Traceback" not in stdout + stderr


def test_search_json_shape(store_env: dict[str, str]) -> None:
    code, stdout, _ = run(["search", "where are vectors kept", "-k", "2", "--json"], store_env)
    assert code == 0
    results = json.loads(stdout)["results"]
    assert len(results) == 2
    assert set(results[0]) >= {
        "rank", "score", "source", "heading", "start_line", "end_line", "text"
    }  # fmt: skip
    assert results[0]["source"] == "guide/storage.md"
    assert results[0]["heading"] == "Storage guide › Where does the engine keep data?"
    assert results[0]["score"] >= results[1]["score"] > 0


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_modes(store_env: dict[str, str], mode: str) -> None:
    code, stdout, _ = run(["search", "backup tool snapshot", "--mode", mode, "--json"], store_env)
    assert code == 0
    top = json.loads(stdout)["results"][0]
    assert "backup" in top["text"]


def test_search_prints_location(store_env: dict[str, str]) -> None:
    code, stdout, _ = run(["search", "similarity metrics", "-k", "1"], store_env)
    assert code == 0
    assert "guide/search.md › Search guide › Similarity metrics" in stdout
    assert "lines 3-" in stdout


@pytest.mark.parametrize("dialect", ["reasoning", "reasoning_content", "harmony", "think"])
def test_ask_json_separates_reasoning(store_env: dict[str, str], dialect: str) -> None:
    reply = Reply(
        dialect=dialect,
        reasoning="The user asks where data lives; passage 1 says object storage.",
        content="Vectors are kept in object storage such as MinIO or S3 [1].",
        chunk_size=5,
    )
    with ScriptedLLMServer(reply) as server:
        code, stdout, stderr = run(
            ["ask", "Where are vectors kept?", "--json", "-k", "2", "--effort", "high"],
            store_env,
            OSSRAG_BASE_URL=server.base_url,
            OSSRAG_MODEL="gpt-oss-20b",
        )
        body = server.bodies()[-1]
    assert code == 0, stderr
    answer = json.loads(stdout)
    assert answer["answer"] == "Vectors are kept in object storage such as MinIO or S3 [1]."
    assert "passage 1 says" in answer["reasoning"]
    assert "<|" not in answer["answer"] and "think>" not in answer["answer"]
    assert [c["n"] for c in answer["citations"]] == [1, 2]
    assert answer["citations"][0]["cited"] is True
    assert answer["citations"][0]["source"] == "guide/storage.md"
    assert set(answer) >= {"answer", "reasoning", "citations", "usage", "timings"}
    assert body["reasoning_effort"] == "high"
    prompt = body["messages"][-1]["content"]
    assert "<context>" in prompt and "<question>" in prompt
    assert "untrusted" in body["messages"][0]["content"]


def test_ask_streams_answer_and_hides_reasoning(store_env: dict[str, str]) -> None:
    reply = Reply(reasoning="secret chain of thought", content="Object storage [1].")
    with ScriptedLLMServer(reply) as server:
        env = {"OSSRAG_BASE_URL": server.base_url, "OSSRAG_MODEL": "gpt-oss-20b"}
        code, stdout, stderr = run(["ask", "Where are vectors kept?"], store_env, **env)
        assert code == 0
        assert "Object storage [1]." in stdout and "Sources" in stdout
        assert "secret chain of thought" not in stdout + stderr
        code, stdout, stderr = run(
            ["ask", "Where are vectors kept?", "--show-reasoning"], store_env, **env
        )
        assert "secret chain of thought" in stderr
        assert "secret chain of thought" not in stdout


def test_ask_unreachable_llm_shows_sources_and_one_line_error(store_env: dict[str, str]) -> None:
    code, stdout, stderr = run(
        ["ask", "Where are vectors kept?", "--base-url", "http://127.0.0.1:9/v1"], store_env
    )
    assert code == 1
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "http://127.0.0.1:9/v1" in error_lines[0] and "OSSRAG_BASE_URL" in error_lines[0]
    assert "guide/storage.md" in stderr  # the retrieved sources are still shown
    assert "Traceback" not in stdout + stderr


def test_ask_length_with_empty_answer_is_explained(store_env: dict[str, str]) -> None:
    reply = Reply(reasoning="thinking " * 20, content="", finish_reason="length")
    with ScriptedLLMServer(reply) as server:
        code, _, stderr = run(
            ["ask", "Where?", "--max-tokens", "50"],
            store_env,
            OSSRAG_BASE_URL=server.base_url,
            OSSRAG_MODEL="gpt-oss-20b",
        )
    assert code == 1
    assert "max_tokens=50" in stderr and "--effort" in stderr


def test_status_json(store_env: dict[str, str]) -> None:
    with ScriptedLLMServer(Reply(content="ok")) as server:
        code, stdout, _ = run(
            ["status", "--json"], store_env, OSSRAG_BASE_URL=server.base_url,
            OSSRAG_MODEL="gpt-oss-20b",
        )  # fmt: skip
    status = json.loads(stdout)
    assert code == 0
    assert status["files"] == 3 and status["chunks"] == 5
    assert status["embedder"] == {"name": "minilm", "dim": 384}
    assert status["llm"]["ok"] is True and status["llm"]["model"] == "gpt-oss-20b"
    assert status["collection"] == "ossrag"


def test_bad_setting_is_one_line(store_env: dict[str, str]) -> None:
    code, _, stderr = run(["search", "x"], store_env, OSSRAG_TOP_K="many")
    assert code == 1
    assert stderr.strip().startswith("error: bad setting OSSRAG_TOP_K / -k: Input should be")
    assert "OSSRAG_TOP_K" in stderr and "Traceback" not in stderr


def test_bad_db_path_is_one_line(store_env: dict[str, str], tmp_path: Path) -> None:
    code, _, stderr = run(["search", "x", "--db", str(tmp_path / "store.sqlite")], store_env)
    assert code == 1 and "must end in .db" in stderr and "Traceback" not in stderr


def test_cli_start_up_leaves_heavy_libraries_for_the_commands_that_use_them() -> None:
    # `ossrag --help` took a second when the CLI imported the engine (pymilvus, onnxruntime,
    # numpy), openai and the server at start-up; pydantic-settings costs a tenth more.
    heavy = {"pymilvus", "onnxruntime", "openai", "torch", "numpy", "fastapi", "pydantic_settings"}
    code = f"import sys, ossrag.cli; print(sorted({heavy!r} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"


def test_a_json_search_loads_no_rich_and_no_blas_thread_pool(store_env: dict[str, str]) -> None:
    code = (
        "import os, runpy, sys\n"
        "sys.argv = ['ossrag', 'search', 'where are vectors kept', '--json']\n"
        "try:\n    runpy.run_module('ossrag', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'), file=sys.stderr)\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'], file=sys.stderr)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | store_env
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert json.loads(done.stdout)["results"]
    assert done.stderr.strip().splitlines()[-2:] == ["[]", "1"]  # set before numpy loaded


def test_the_collector_is_off_for_start_up_and_back_after_it() -> None:
    frozen = gc.get_freeze_count()
    try:
        timer = collect_after_start_up(0.05)
        assert not gc.isenabled()
        timer.join()
        # back on, with what start-up made frozen: later full collections skip it
        assert gc.isenabled() and gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_packages_names_load_when_first_asked_for() -> None:
    code = (
        "import sys, ossrag\n"
        "print('ossrag.engine.index' in sys.modules)\n"
        "from ossrag import Index, Passage\n"
        "print(Index.__module__, ossrag.Passage is Passage, ossrag.Index is Index)\n"
        "getattr(ossrag, 'Nope')"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert imported.stdout.split() == ["False", "ossrag.engine.index", "True", "True"]
    assert imported.stderr.strip().endswith(
        "AttributeError: module 'ossrag' has no attribute 'Nope'"
    )


def test_each_command_takes_its_group_of_the_shared_settings_options() -> None:
    shared = {f.name for f in fields(cli.Flags)}

    def options(command: TyperCommand) -> list[str]:
        return [p.opts[-1] for p in command.params if p.name in shared]

    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    commands = {
        f"{name} {sub}".strip(): command
        for name, top in group.commands.items()
        for sub, command in (top.commands.items() if isinstance(top, TyperGroup) else [("", top)])
    }
    # Each command's settings options in the order its --help lists them: every --db comes with
    # its --token, every --embedder with its --embed-base-url.
    store, embed = "--db --token --collection", "--embedder --embed-base-url"
    llm = "--llm --base-url --model --api-key"
    assert {name: " ".join(options(command)) for name, command in commands.items()} == {
        "ingest": f"{store} {embed}",
        "search": f"--top-k --mode {store} {embed} {llm}",
        "ask": f"--top-k --mode --effort {store} {embed} {llm} --max-tokens --context-window "
        "--answer-tokens",
        "chat": f"--top-k --mode --effort {store} {embed} {llm} --max-tokens",
        "status": f"{store} {llm}",
        "eval retrieval": f"--mode {store} {embed} {llm}",
        "eval answers": f"--top-k --mode {store} {embed} --base-url --api-key --max-tokens",
        "serve": f"--top-k --mode --effort {store} {embed} {llm} --max-tokens",
        "mcp": f"--top-k --mode --effort {store} {embed} {llm}",
    }


def test_ingest_embeds_without_pytorch(embedder: Embedder, tmp_path: Path) -> None:
    """Passages go through the exported ONNX encoder: an ingest never loads PyTorch."""
    embedder.embed_query("export the encoder into the user cache, if it is not there yet")
    docs = write_docs(tmp_path / "docs", {"a.md": "# A\n\nAlpha text about replicas.\n"})
    code = (
        "import sys; from ossrag import Index, load_settings\n"
        f"index = Index(load_settings(db={str(tmp_path / 's.db')!r}, translate=False))\n"
        f"print(index.ingest([{str(docs)!r}]).chunks_embedded, 'torch' in sys.modules)"
    )
    ingested = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ingested.returncode == 0, ingested.stderr
    assert ingested.stdout.split() == ["1", "False"]
