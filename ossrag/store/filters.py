"""Search filters: which files a search may return passages from.

A `Filter` is one predicate over a stored file (its source as shown, its type, its modification
time), the same in every door (CLI `--path/--type/--since`, the `filter` object over HTTP and
MCP). The store evaluates it against its file manifest and applies the result before ranking:
the in-memory index of a Lite store masks rows, a Milvus server gets a `doc_id in [...]`
expression. Either way, k passages come back whenever k passages match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ossrag.errors import FilterError
from ossrag.load.files import SUPPORTED_SUFFIXES, matches

_RELATIVE = re.compile(r"(\d+)\s*([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
MAX_PATTERNS = 50


@dataclass(frozen=True)
class Filter:
    """Files whose source matches a `paths` glob, whose type is in `types`, modified at or
    after `since` (Unix time). An empty field places no condition."""

    paths: tuple[str, ...] = ()
    types: tuple[str, ...] = ()  # extensions, lower-case, without the dot
    since: float | None = None

    def __bool__(self) -> bool:
        return bool(self.paths or self.types or self.since is not None)

    def accepts(self, source: str, mtime: float) -> bool:
        """Does a stored file (source relative to its root, modification time) pass?"""
        if self.paths and not any(matches(source, pattern) for pattern in self.paths):
            return False
        if self.types and source.rsplit(".", 1)[-1].lower() not in self.types:
            return False
        return self.since is None or mtime >= self.since

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": list(self.paths),
            "type": list(self.types),
            "since": _iso(self.since) if self.since is not None else None,
        }


def make_filter(
    paths: Iterable[str] = (), types: Iterable[str] = (), since: str | None = None
) -> Filter:
    """A Filter from user input (globs, types like `md` or `.pdf`, a date), checked."""
    path_list = tuple(_path(p) for p in paths)
    type_list = tuple(dict.fromkeys(_type(t) for t in types))
    if len(path_list) > MAX_PATTERNS or len(type_list) > MAX_PATTERNS:
        raise FilterError(f"filter: at most {MAX_PATTERNS} paths and types")
    return Filter(path_list, type_list, parse_since(since) if since else None)


def filter_from_json(value: Any, field: str = "filter") -> Filter:
    """A Filter from a JSON object `{"path": glob | [globs], "type": ..., "since": date}`."""
    if value is None:
        return Filter()
    if not isinstance(value, Mapping):
        raise FilterError(f"{field}: must be an object with path, type and since")
    unknown = sorted(set(value) - {"path", "type", "since"})
    if unknown:
        raise FilterError(f"{field}.{unknown[0]}: unknown field (use path, type, since)")
    since = value.get("since")
    if since is not None and not isinstance(since, str):
        raise FilterError(f"{field}.since: must be a date string like 2026-01-31")
    try:
        return make_filter(
            _strings(value.get("path"), f"{field}.path"),
            _strings(value.get("type"), f"{field}.type"),
            since,
        )
    except FilterError as exc:
        message = str(exc)
        raise FilterError(message if message.startswith(field) else f"{field}.{message}") from None


def parse_since(text: str) -> float:
    """Unix time from an ISO date or datetime (local time unless it says otherwise), or from
    a span back from now: `36h`, `7d`, `2w`."""
    text = text.strip()
    if m := _RELATIVE.fullmatch(text):
        span = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        return (datetime.now(UTC) - span).timestamp()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"since {text!r}: use a date like 2026-01-31, a time like 2026-01-31T09:30, "
            "or a span back from now like 7d, 36h, 2w"
        ) from None
    return when.timestamp()  # a naive datetime is local time


def _path(pattern: str) -> str:
    cleaned = pattern.strip()
    if not cleaned or not cleaned.isprintable() or len(cleaned) > 1000:
        raise FilterError(f"path {pattern!r}: a non-empty glob like 'guide/*' or '*.md'")
    return cleaned


def _type(name: str) -> str:
    cleaned = name.strip().lower().removeprefix(".")
    if f".{cleaned}" not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(s[1:] for s in SUPPORTED_SUFFIXES))
        raise FilterError(f"type {name!r}: not a type ossrag ingests ({supported})")
    return cleaned


def _strings(value: Any, field: str) -> Sequence[str]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise FilterError(f"{field}: a string or a list of strings")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
