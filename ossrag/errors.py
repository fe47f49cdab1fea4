"""Every error ossrag raises for its user to act on, in one tree under `OssragError`.

A message is one line: what went wrong, and which setting to change. The library names a
setting by its field in `Settings` through `setting("max_tokens")`, never by a command-line flag
or an HTTP field: `str(error)` shows the field name, and each door words it for its users with
`error.worded(...)` (the CLI as `--max-tokens / OSSRAG_MAX_TOKENS`, HTTP as the request field
`max_tokens` or the server's `OSSRAG_…` setting).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_MARK = re.compile(r"⟦([a-z_]+)⟧")


def setting(name: str) -> str:
    """Mark a setting (a `Settings` field name) in a message, for each door to word."""
    return f"⟦{name}⟧"


def worded(text: str, word: Callable[[str], str] = lambda name: name) -> str:
    """`text` with each marked setting replaced by `word(name)` (by default, the name)."""
    return _MARK.sub(lambda match: word(match.group(1)), text)


def settings_named(text: str) -> list[str]:
    """The settings marked in `text`, in order."""
    return _MARK.findall(text)


def one_line(text: str, limit: int = 200) -> str:
    """`text` on one line (runs of whitespace made one space), cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OssragError(Exception):
    """A failure the user can act on; `str()` names settings by their field names."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return worded(self.message)

    @property
    def settings(self) -> list[str]:
        """The settings the message asks the user to change."""
        return settings_named(self.message)

    def worded(self, word: Callable[[str], str]) -> str:
        """The message with each setting worded for a door."""
        return worded(self.message, word)


class ConfigError(OssragError):
    """A setting has a bad value, or the settings contradict each other."""


class LoadError(OssragError):
    """A file that cannot be turned into a Document. `str(err)` is `"<source>: <reason>"`."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = " ".join(reason.split())  # always one line
        super().__init__(f"{source}: {self.reason}")


class EmbedderError(OssragError):
    """The embedder (or reranker) cannot be loaded or used."""


class StoreError(OssragError):
    """Milvus cannot be opened or used."""


class FilterError(OssragError, ValueError):
    """A search filter (path, type, since) that cannot be used."""


class LLMError(OssragError):
    """The LLM server cannot be reached, refused the request, or answered unusably;
    `status_code`: the HTTP status the server answered with, if any."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class EvalError(OssragError):
    """A question set or an evaluation run that cannot be used."""
