"""Finding document files on disk and loading them into :class:`~ossrag.records.Document`.

Two steps, kept separate so the caller can report progress and errors per file:

* :func:`discover` walks the paths the user named and yields :class:`Found` for every
  document file (or :class:`Skipped` for a path it cannot use, with a reason);
* :func:`load` reads one :class:`Found` into a :class:`Document`, raising :class:`LoadError`
  (whose ``str`` is a one-line ``"<source>: <reason>"``) for files that cannot be used.

File formats are a registry keyed by suffix (:func:`register_loader`). A :class:`Loader` turns
a path and its raw bytes into text plus a format name that tells the chunker how to split it
("markdown", "rst", "text"). PDF, HTML, .docx, .ipynb and source code are registered
by :mod:`ossrag.load.formats` behind the same interface.

Include/exclude patterns (see :func:`matches`) are shell globs matched against the file's path
relative to the directory the user named, with forward slashes, e.g. ``--include '*.md'
--exclude 'faq/*'``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase, translate
from functools import lru_cache
from pathlib import Path

from ossrag.errors import LoadError
from ossrag.load import formats  # noqa: F401  (registers PDF, HTML, DOCX, notebooks, code)
from ossrag.load.registry import (
    SUPPORTED_SUFFIXES,
    ContentError,
    Loader,
    loader_for,
    register_loader,
    supported_list,
)
from ossrag.records import Document

__all__ = [
    "DEFAULT_MAX_BYTES",
    "IGNORED_DIRS",
    "SUPPORTED_SUFFIXES",
    "ContentError",
    "Found",
    "LoadError",
    "Loader",
    "Skipped",
    "discover",
    "load",
    "loader_for",
    "matches",
    "register_loader",
]

DEFAULT_MAX_BYTES = 20_000_000

#: Directory names never descended into while walking (hidden names, starting with ".",
#: are skipped too). Only applies below a directory the user named, never to the named path.
IGNORED_DIRS: frozenset[str] = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        "__pycache__",
        "site-packages",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "_build",  # Sphinx output: holds copies of every source as _sources/*.txt
        "dist",
    }
)

#: Directories nested deeper than this below a named directory are reported, not walked.
MAX_DEPTH = 64


# --------------------------------------------------------------------------- errors & results


@dataclass(frozen=True)
class Found:
    """A document file to load.

    ``root`` is the absolute (resolved) directory the user named, or the parent directory of a
    file named directly; ``path`` is the file to open; ``source`` is ``path`` relative to
    ``root`` with forward slashes.
    """

    root: Path
    path: Path
    source: str


@dataclass(frozen=True)
class Skipped:
    """A path that :func:`discover` will not yield as a document, and why."""

    path: Path
    reason: str


# --------------------------------------------------------------------------- include / exclude


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """fnmatch-style glob to regex; ``**/`` additionally matches zero directories."""
    parts = pattern.split("**/")
    # fnmatch's '*' already crosses '/', so '**' is just '*'; only '**/' needs the extra
    # "or nothing" so that 'docs/**/*.md' matches 'docs/a.md'.
    body = "(?:.*/)?".join(translate(p).removeprefix("(?s:").removesuffix(")\\Z") for p in parts)
    return re.compile(f"(?s:{body})\\Z")


def matches(relpath: str, pattern: str) -> bool:
    """Does a glob ``pattern`` select the file at ``relpath`` (posix, relative to its root)?

    * The pattern is matched against the whole relative path, case-sensitively, with
      fnmatch rules: ``*``, ``?`` and ``[...]`` — and ``*`` also matches ``/``, so ``*.md``
      selects markdown files at any depth. ``**/`` may also match no directory at all.
    * It also selects everything below a matching directory: ``faq`` or ``faq/*`` select
      ``faq/a.md`` and ``faq/sub/b.md``.
    * A pattern without ``/`` is also tried against each single path component, like
      .gitignore: ``drafts`` selects ``a/drafts/x.md``, ``README.md`` any README.md.
    """
    pattern = pattern.strip().removeprefix("./")
    if not pattern:
        return False
    pattern = pattern.rstrip("/") or pattern
    rx = _glob_regex(pattern)
    if rx.match(relpath):
        return True
    parts = relpath.split("/")
    for i in range(1, len(parts)):
        if rx.match("/".join(parts[:i])):
            return True
    return "/" not in pattern and any(fnmatchcase(p, pattern) for p in parts)


def _filter_reason(relpath: str, include: Sequence[str], exclude: Sequence[str]) -> str | None:
    for pat in exclude:
        if matches(relpath, pat):
            return f"excluded by pattern {pat!r}"
    if include and not any(matches(relpath, pat) for pat in include):
        return "not matched by any include pattern"
    return None


# --------------------------------------------------------------------------- discovery


def discover(
    paths: Sequence[Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Iterator[Found | Skipped]:
    """Yield every document file under ``paths``, in a deterministic (name-sorted) order.

    * A directory is walked recursively. Below it, hidden entries (name starting with ".")
      and :data:`IGNORED_DIRS` are skipped, files with unsupported suffixes are silently
      ignored, symlinks are followed but each real directory is walked once (no loops), and
      a file reached twice (e.g. through a symlink) is yielded once. A directory more than
      :data:`MAX_DEPTH` levels down is Skipped.
    * A file named directly is yielded whatever its name, with its parent as root; if its
      suffix has no loader it is :class:`Skipped`.
    * ``include``/``exclude`` are globs (see :func:`matches`) against the path relative to
      the root: a file is kept if it matches some include pattern (or there are none) and no
      exclude pattern. Files named directly that are filtered out are reported as Skipped;
      filtered files found by walking are not reported.
    * A path that does not exist is Skipped with reason "no such file or directory".
    """
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    for arg in paths:
        p = Path(arg).expanduser()
        try:
            st = p.stat()
        except FileNotFoundError:
            kind = "broken symbolic link" if p.is_symlink() else "no such file or directory"
            yield Skipped(p, kind)
            continue
        except OSError as e:
            yield Skipped(p, _os_reason(e))
            continue
        if stat.S_ISDIR(st.st_mode):
            root = p.resolve()
            yield from _walk(root, root, "", include, exclude, seen_dirs, seen_files)
        elif stat.S_ISREG(st.st_mode):
            root = p.absolute().parent.resolve()
            path = root / p.name
            if loader_for(p) is None:
                yield Skipped(
                    p,
                    f"unsupported file type {p.suffix or '(none)'!r} "
                    f"(supported: {supported_list()})",
                )
                continue
            reason = _filter_reason(p.name, include, exclude)
            if reason:
                yield Skipped(p, reason)
                continue
            real = os.path.realpath(path)
            if real in seen_files:
                yield Skipped(p, "already included")
                continue
            seen_files.add(real)
            yield Found(root=root, path=path, source=p.name)
        else:
            yield Skipped(p, "not a regular file or directory")


def _walk(
    root: Path,
    directory: Path,
    rel: str,
    include: Sequence[str],
    exclude: Sequence[str],
    seen_dirs: set[str],
    seen_files: set[str],
) -> Iterator[Found | Skipped]:
    if rel.count("/") >= MAX_DEPTH:
        yield Skipped(directory, f"directory nested more than {MAX_DEPTH} levels deep")
        return
    real = os.path.realpath(directory)
    if real in seen_dirs:
        return
    seen_dirs.add(real)
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        yield Skipped(directory, _os_reason(e))
        return
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        relpath = f"{rel}{name}"
        try:
            is_dir = entry.is_dir()  # follows symlinks
            is_file = not is_dir and entry.is_file()
        except OSError:
            is_dir = is_file = False
        if is_dir:
            if name in IGNORED_DIRS or any(matches(relpath, pat) for pat in exclude):
                continue
            yield from _walk(
                root, Path(entry.path), relpath + "/", include, exclude, seen_dirs, seen_files
            )
            continue
        if loader_for(name) is None:
            continue
        if not is_file:
            if entry.is_symlink():
                yield Skipped(Path(entry.path), _dangling_reason(entry.path))
            continue
        if _filter_reason(relpath, include, exclude):
            continue
        real_file = os.path.realpath(entry.path)
        if real_file in seen_files:
            continue
        seen_files.add(real_file)
        yield Found(root=root, path=Path(entry.path), source=relpath)


def _os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "no such file or directory"
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return (e.strerror or type(e).__name__).lower()


def _dangling_reason(path: str) -> str:
    """Why a symbolic link leads to no file: a loop, or a missing target."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
    return "broken symbolic link"


# --------------------------------------------------------------------------- loading


def load(
    found: Found, max_bytes: int = DEFAULT_MAX_BYTES, roots: Sequence[Path] | None = None
) -> Document:
    """Read one file into a Document (``meta={"format": ...}``, sha256 of the raw bytes).

    With ``roots`` (resolved directories), the file is read only if the file actually opened
    lies under one of them: see :func:`open_beneath`.

    Raises LoadError for: unsupported type, missing/unreadable file, a file outside ``roots``,
    empty (or whitespace-only) file, more than ``max_bytes`` bytes, binary content (NUL bytes
    in the first 8 KB) or invalid UTF-8 (with the byte offset). Newlines are normalised to
    ``\\n``.
    """
    source = found.source
    loader = loader_for(found.path)
    if loader is None:
        raise LoadError(source, f"unsupported file type (supported: {supported_list()})")
    try:
        fd = _open_file(found, roots)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise LoadError(source, "not a regular file")
            if st.st_size > max_bytes:
                raise LoadError(source, _too_large(st.st_size, max_bytes))
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise LoadError(source, _os_reason(e)) from None
    if len(data) > max_bytes:  # grew since fstat
        raise LoadError(source, _too_large(len(data), max_bytes))
    if not data:
        raise LoadError(source, "empty file")
    try:
        text = loader.extract(found.path, data)
    except ContentError as e:
        raise LoadError(source, str(e)) from None
    if not text.strip():
        raise LoadError(source, "empty file (only whitespace)")
    return Document(
        text=text,
        source=source,
        root=str(found.root),
        mtime=st.st_mtime,
        sha256=hashlib.sha256(data).hexdigest(),
        meta={"format": loader.format},
    )


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def _open_file(found: Found, roots: Sequence[Path] | None) -> int:
    """A read-only descriptor of the file (never blocking on a FIFO), checked against roots."""
    if roots is None:
        return os.open(found.path, _READ_FLAGS)
    real = os.path.realpath(found.path)
    for root in roots:
        if Path(real).is_relative_to(root):
            return open_beneath(root, Path(real).relative_to(root), found.source)
    raise LoadError(found.source, "links outside the allowed roots")


def open_beneath(root: Path, relative: Path, source: str) -> int:
    """Open ``root / relative`` one component at a time without following any symbolic link.

    ``relative`` comes from a resolved path, so it holds no link when it is checked; a link
    swapped in after that check (a time-of-check to time-of-use race) makes the open fail
    here instead of leading outside ``root``.
    """
    parts = relative.parts
    if not parts:
        raise LoadError(source, "not a regular file")
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_NOFOLLOW | (_READ_FLAGS if last else os.O_RDONLY | os.O_DIRECTORY)
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise LoadError(
                        source, "a symbolic link appeared after the path was checked"
                    ) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _too_large(size: int, limit: int) -> str:
    return f"file too large: {size:,} bytes (limit {limit:,})"
