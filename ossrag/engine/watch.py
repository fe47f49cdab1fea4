"""Live sync: watch folders and bring the store in line whenever their files change.

`watchfiles` reports changes in groups: a group closes once the folders have been quiet for
`quiet_ms`, or after `max_wait_ms` of steady change. Each group costs one sync (the usual
incremental ingest of the watched folders, which also removes deleted files), so an editor's
save-by-rename or a `git checkout` of 500 files is one sync, not 500. A Milvus Lite store is
held by one process: to watch and serve at once, use `ossrag serve --watch DIR`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, DefaultFilter, watch

from ossrag.console import terminal_safe
from ossrag.engine.ingest import IngestReport
from ossrag.load.files import SUPPORTED_SUFFIXES

QUIET_MS = 300  # a group of changes closes after this much quiet
MAX_WAIT_MS = 10_000  # ... or after this long, even while files keep changing
SHOWN_CHANGES = 3  # changed files named in a status line


@dataclass(frozen=True)
class Synced:
    """One sync after a group of changes: which files changed, what the sync did."""

    changes: list[str]  # "+ a.md", "~ b.md", "- c.md": relative to the watched folder
    report: IngestReport
    finished: float  # Unix time

    def status(self) -> str:
        """One status line: time, files changed, what the store did."""
        r = self.report
        shown = ", ".join(self.changes[:SHOWN_CHANGES]) or "synced"
        more = len(self.changes) - SHOWN_CHANGES
        if more > 0:
            shown += f" and {more} more"
        clock = time.strftime("%H:%M:%S", time.localtime(self.finished))
        return (
            f"{clock} {shown} → {r.files_added} added, {r.files_updated} updated, "
            f"{r.files_removed} removed, {len(r.skipped)} skipped ({r.seconds:.1f}s)"
        )


class _DocsFilter(DefaultFilter):
    """Files ossrag can load (and folders, whose removal removes files), outside the store."""

    def __call__(self, change: Change, path: str) -> bool:
        suffix = Path(path).suffix.lower()
        folder_like = suffix == "" or Path(path).is_dir()
        return (suffix in SUPPORTED_SUFFIXES or folder_like) and super().__call__(change, path)


def _describe(changes: Iterable[tuple[Change, str]], roots: Sequence[Path]) -> list[str]:
    """Changed paths relative to their watched folder, one sign each, sorted, control
    characters escaped (a file name must not drive the terminal). A group is a set, so a path
    reported several ways gets one sign whatever the order: created (then written) is "+",
    (written then) deleted is "-", anything else, such as deleted and created again, is "~"."""
    kinds: dict[str, set[Change]] = {}
    for change, raw in changes:
        path = Path(raw)
        shown = raw
        for root in roots:
            if path.is_relative_to(root):
                shown = path.relative_to(root).as_posix()
                break
        kinds.setdefault(shown, set()).add(change)
    return [f"{_sign(kinds[name])} {terminal_safe(name)}" for name in sorted(kinds)]


def _sign(kinds: set[Change]) -> str:
    if Change.added in kinds and Change.deleted not in kinds:
        return "+"
    if Change.deleted in kinds and Change.added not in kinds:
        return "-"
    return "~"


def watch_and_sync(
    paths: Sequence[Path],
    sync: Callable[[], IngestReport],
    on_sync: Callable[[Synced], None],
    stop: threading.Event,
    *,
    ignore: Sequence[Path] = (),
    quiet_ms: int = QUIET_MS,
    max_wait_ms: int = MAX_WAIT_MS,
) -> None:
    """Call `sync` once the watch is armed (catching up with changes made before), then once
    per group of changes under `paths` until `stop` is set, reporting each through `on_sync`.
    A sync under way when `stop` is set finishes first, so the store is never left mid-write.
    `ignore`: paths whose changes do not count (the store itself)."""
    roots = [Path(p).expanduser().resolve() for p in paths]
    watch_filter = _DocsFilter(ignore_paths=[Path(p).expanduser().resolve() for p in ignore])
    armed = False
    for changes in watch(
        *roots,
        watch_filter=watch_filter,
        debounce=max_wait_ms,
        step=quiet_ms,
        stop_event=stop,
        raise_interrupt=False,
        rust_timeout=500,
        yield_on_timeout=True,  # an empty group first, once armed: the catch-up sync
    ):
        if not changes and armed:
            continue
        armed = True
        report = sync()
        on_sync(Synced(_describe(changes, roots), report, time.time()))
        if stop.is_set():
            break
