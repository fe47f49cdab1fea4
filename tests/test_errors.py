"""One error tree: library messages name settings, and each door words them for its users.

The same failure (the model spent its whole token budget on reasoning) is read through the
library, the CLI, HTTP and an MCP tool; static checks keep every marked setting real, every CLI
flag in the wording table real, and CLI flags out of the library's messages."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import typer.main
from conftest import REPO, write_docs
from llm_server import Reply, ScriptedLLMServer
from test_server import LiveServer
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.cli.words import FLAGS, cli_word
from ossrag.config import Settings, load_settings
from ossrag.engine.index import Index
from ossrag.errors import (
    ConfigError,
    EmbedderError,
    EvalError,
    FilterError,
    LLMError,
    LoadError,
    OssragError,
    StoreError,
    setting,
)
from ossrag.generate.llm import EmptyAnswerError
from ossrag.http.app import create_app
from ossrag.mcp.server import _tool_error

SPENT = Reply(content="", reasoning="thinking " * 20, finish_reason="length")
LIBRARY = ("load", "chunk", "embed", "store", "retrieve", "generate", "engine", "eval")
# Other programs' flags a message may quote: `milvus-lite server` and vLLM's tool calling.
OTHER_PROGRAMS = {"--data-dir", "--port", "--tool-call-parser", "--enable-auto-tool-choice"}


def test_every_user_error_is_an_ossrag_error() -> None:
    for kind in (ConfigError, EmbedderError, EvalError, FilterError, LLMError, StoreError):
        assert issubclass(kind, OssragError)
    assert issubclass(FilterError, ValueError)  # pydantic validators turn it into a 400
    assert str(LoadError("a.md", "bad\nbytes")) == "a.md: bad bytes"


def test_the_library_names_the_setting_and_each_door_words_it() -> None:
    error = EmptyAnswerError(64)
    assert error.settings == ["max_tokens", "effort"]
    assert str(error).endswith("(max_tokens=64) on reasoning before answering: "
                               "raise max_tokens or lower effort")  # fmt: skip
    assert error.worded(cli_word).endswith(
        "raise OSSRAG_MAX_TOKENS / --max-tokens or lower OSSRAG_EFFORT / --effort"
    )
    assert str(_tool_error(error)).endswith("raise the server's OSSRAG_MAX_TOKENS or lower effort")
    assert cli_word("agent_timeout") == "OSSRAG_AGENT_TIMEOUT"  # no flag: the variable alone


@pytest.fixture
def spent_llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(SPENT) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path, spent_llm: ScriptedLLMServer) -> Settings:
    settings = load_settings(
        db=str(tmp_path / "store.db"), base_url=spent_llm.base_url, model="gpt-oss-20b",
        embedder="openai:hashed", embed_base_url=spent_llm.base_url, max_tokens=64,
    )  # fmt: skip
    index = Index(settings)
    index.ingest([write_docs(tmp_path / "docs")])
    index.close()
    return settings


def test_the_cli_names_flags(store: Settings) -> None:
    args = ["ask", "Where is data kept?", "--db", store.db, "--base-url", store.base_url,
            "--embedder", "openai:hashed", "--embed-base-url", store.embed_base_url,
            "--model", "gpt-oss-20b", "--max-tokens", "64"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("raise OSSRAG_MAX_TOKENS / --max-tokens or lower OSSRAG_EFFORT / --effort")


def test_http_names_request_fields_and_server_settings(store: Settings) -> None:
    index = Index(store)
    with LiveServer(create_app(store, index)) as live:
        body = {"model": "ossrag", "messages": [{"role": "user", "content": "Where is data kept?"}]}
        response = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=30)
    index.close()
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("llm_error", "reasoning_effort")
    assert error["message"].endswith(
        "raise the server's OSSRAG_MAX_TOKENS or lower reasoning_effort"
    )


def _marked_settings() -> Iterator[tuple[Path, int, str]]:
    """Every literal `setting("name")` in the package."""
    for path in sorted((REPO / "ossrag").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "setting"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                yield path, node.lineno, node.args[0].value


def test_every_marked_setting_exists() -> None:
    marked = list(_marked_settings())
    assert len(marked) > 20
    unknown = [
        (p.name, line, name) for p, line, name in marked if name not in Settings.model_fields
    ]
    assert unknown == []
    assert setting("db") in f"cannot open ({setting('db')})"


def _cli_options() -> set[str]:
    options: set[str] = set()

    def walk(command: Any) -> None:  # typer's groups need not be click.Group instances
        for param in command.params:
            options.update(param.opts)
        if hasattr(command, "list_commands"):
            context = click.Context(command)
            for name in command.list_commands(context):
                walk(command.get_command(context, name))

    walk(typer.main.get_command(app))
    return options


def test_the_cli_wording_table_matches_the_commands() -> None:
    options = _cli_options()
    assert sorted(flag for flag in FLAGS.values() if flag not in options) == []
    # every option spelled like a setting is in the table, so no hint misses its flag
    spelled = {f"--{name.replace('_', '-')}": name for name in Settings.model_fields}
    # `search --rewrite` adds LLM queries to one search; the `rewrite` setting (off, foreign,
    # all) has no flag
    options.discard("--rewrite")
    missing = sorted(spelled[o] for o in options if o in spelled and spelled[o] not in FLAGS)
    assert missing == []


def test_library_messages_name_no_cli_flag() -> None:
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    found = []
    for package in LIBRARY:
        for path in sorted((REPO / "ossrag" / package).glob("*.py")):
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                ):
                    found += [f"{path.name}:{node.lineno} {f}" for f in flag.findall(node.value)
                              if f not in OTHER_PROGRAMS]  # fmt: skip
    assert found == []
