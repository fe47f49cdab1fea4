"""File formats, a registry keyed by suffix: a `Loader` turns a path and its raw bytes into
text plus a format name that tells the chunker how to split it. Markdown, reStructuredText and
plain text are built in; `ossrag.load.formats` registers the rest."""

from __future__ import annotations

from collections.abc import Callable, KeysView
from dataclasses import dataclass
from pathlib import Path

_BINARY_SNIFF_BYTES = 8192


class ContentError(ValueError):
    """Raised by a :class:`Loader` when the bytes are unusable; ``load`` adds the source."""


@dataclass(frozen=True)
class Loader:
    """How to turn one kind of file into text.

    ``format`` names the text's syntax for the chunker ("markdown", "rst", "text"; anything else
    is chunked as plain text). ``extract(path, data)`` returns the text, with ``\\n`` newlines,
    or raises :class:`ContentError` with a short reason.
    """

    format: str
    extract: Callable[[Path, bytes], str]


def decode_text(data: bytes) -> str:
    """Strict UTF-8 (a leading BOM is dropped) with newlines normalised to ``\\n``.

    Raises ContentError for NUL bytes in the first 8 KB (binary file) or invalid UTF-8, giving
    the byte offset (in the raw file) and line of the first bad byte.
    """
    nul = data.find(b"\0", 0, _BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise ContentError(f"binary content (NUL byte at offset {nul})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        offset = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, offset) + 1
        raise ContentError(
            f"invalid UTF-8 at byte offset {offset} (line {line}): {e.reason}"
        ) from None
    return normalize_newlines(text)


def normalize_newlines(text: str) -> str:
    """``\\r\\n`` and lone ``\\r`` become ``\\n`` so that line numbers match editors."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _text_loader(fmt: str) -> Loader:
    return Loader(format=fmt, extract=lambda _path, data: decode_text(data))


_LOADERS: dict[str, Loader] = {
    ".md": _text_loader("markdown"),
    ".markdown": _text_loader("markdown"),
    ".txt": _text_loader("text"),
    ".rst": _text_loader("rst"),
}

#: Suffixes (lower-case, with the dot) that have a loader. A live view of the registry:
#: it includes anything added later with :func:`register_loader`.
SUPPORTED_SUFFIXES: KeysView[str] = _LOADERS.keys()


def register_loader(suffix: str, loader: Loader, *, replace: bool = False) -> None:
    """Make files ending in ``suffix`` (e.g. ``".pdf"``, case-insensitive) loadable."""
    key = suffix.lower()
    if not key.startswith(".") or len(key) < 2:
        raise ValueError(f"suffix must look like '.ext', got {suffix!r}")
    if key in _LOADERS and not replace:
        raise ValueError(f"a loader for {key} is already registered (pass replace=True)")
    _LOADERS[key] = loader


def loader_for(path: Path | str) -> Loader | None:
    """The registered loader for a file name, or None when its suffix is not supported."""
    return _LOADERS.get(Path(path).suffix.lower())


def supported_list() -> str:
    """The supported suffixes, sorted, for messages."""
    return ", ".join(sorted(_LOADERS))
