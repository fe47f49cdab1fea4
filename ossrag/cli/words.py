"""How the CLI names a setting in a message: its environment variable, and the flag that sets
it where one exists (`OSSRAG_MAX_TOKENS / --max-tokens`)."""

from __future__ import annotations

from ossrag.errors import OssragError

# Settings with a flag, by the flag; a test holds this against the commands' options.
FLAGS = {
    "db": "--db",
    "token": "--token",
    "collection": "--collection",
    "collections": "--collection",
    "embedder": "--embedder",
    "embed_base_url": "--embed-base-url",
    "top_k": "-k",
    "mode": "--mode",
    "effort": "--effort",
    "llm": "--llm",
    "base_url": "--base-url",
    "model": "--model",
    "api_key": "--api-key",
    "max_tokens": "--max-tokens",
    "context_window": "--context-window",
    "answer_tokens": "--answer-tokens",
    "host": "--host",
    "port": "--port",
    "api_keys": "--api-keys",
    "api_keys_file": "--api-keys-file",
    "allowed_roots": "--allowed-root",
    "cors_origins": "--cors-origin",
    "allowed_hosts": "--allowed-host",
    "insecure": "--insecure",
    "watch": "--watch",
    "request_timeout": "--request-timeout",
}


def cli_word(name: str) -> str:
    """A setting as a CLI user sets it."""
    env = f"OSSRAG_{name.upper()}"
    return f"{env} / {FLAGS[name]}" if name in FLAGS else env


def cli_message(exc: BaseException) -> str:
    """An error's message in the CLI's words."""
    return exc.worded(cli_word) if isinstance(exc, OssragError) else str(exc)
