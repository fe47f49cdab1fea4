"""Live sync: the library's watcher (one sync per burst, edits, save-by-rename, deletes, the
store inside the watched folder), `ossrag ingest --watch` as a subprocess stopped by Ctrl-C,
and `ossrag serve --watch` over HTTP."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO, write_docs
from test_server import LiveServer
from watchfiles import Change

from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.engine.ingest import IngestReport
from ossrag.engine.watch import Synced, _describe, watch_and_sync
from ossrag.errors import ConfigError
from ossrag.http.app import create_app
from ossrag.store.milvus import CollectionInfo, Store

pytestmark = pytest.mark.timeout(180)
SETTLE = 15.0  # seconds a test waits for a sync on a busy machine


class Watching:
    """watch_and_sync in a thread; each Synced lands in a queue."""

    def __init__(self, index: Index, root: Path) -> None:
        self.synced: queue.Queue[Synced] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=watch_and_sync,
            args=([root], lambda: index.ingest([root]), self.synced.put, self.stop),
            kwargs={"ignore": [Path(index.settings.db)]},
            daemon=True,
        )

    def __enter__(self) -> Watching:
        self.thread.start()
        assert self.next().changes == []  # armed, then the catch-up sync
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the watcher did not stop"

    def next(self) -> Synced:
        return self.synced.get(timeout=SETTLE)

    def none_within(self, seconds: float) -> bool:
        try:
            extra = self.synced.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected sync: {extra.changes}")


def test_bursts_edits_renames_and_deletes_each_cost_one_sync(
    tmp_path: Path, embedder: Embedder
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    # the store lives inside the watched folder: its own writes must not trigger syncs
    index = Index(load_settings(db=str(root / "store.db")), embedder=embedder)
    index.ingest([root])
    with Watching(index, root) as watching:
        for n in range(60):  # a burst, like a git checkout
            (root / "burst" / f"f{n:02d}.md").parent.mkdir(exist_ok=True)
            (root / "burst" / f"f{n:02d}.md").write_text(f"# File {n}\n\nzebra number {n}\n")
            (root / "burst" / f"junk{n}.bin").write_bytes(b"\x00")  # not a document
        burst = watching.next()
        assert burst.report.files_added == 60
        # inotify watches a new folder only once it is seen, so files written into it before
        # that are not reported, and one created just before shows only its write ("~"); the
        # sync reads the whole folder and finds them all
        assert burst.changes[0] == "+ burst"
        assert all(re.fullmatch(r"[+~] burst/f\d\d\.md", c) for c in burst.changes[1:]), (
            burst.changes
        )
        assert watching.none_within(2.0)  # the store's own writes did not count

        (root / "burst" / "f07.md").write_text("# File 7\n\nquokka lives here\n")
        edit = watching.next()
        assert (edit.changes, edit.report.files_updated) == (["~ burst/f07.md"], 1)
        assert index.search("quokka", 1, "bm25").passages[0].source == "burst/f07.md"

        # an editor's save: write a temporary file, then rename it over the original
        tmp = root / "burst" / ".f08.md.tmp"
        tmp.write_text("# File 8\n\nplatypus now\n")
        os.replace(tmp, root / "burst" / "f08.md")
        saved = watching.next()
        assert (saved.report.files_updated, saved.report.files_added) == (1, 0)
        assert index.search("platypus", 1, "bm25").passages[0].source == "burst/f08.md"

        os.rename(root / "burst" / "f10.md", root / "burst" / "g10.md")  # a plain rename
        moved = watching.next()
        assert moved.changes == ["- burst/f10.md", "+ burst/g10.md"]
        assert (moved.report.files_added, moved.report.files_removed) == (1, 1)
        assert index.search("zebra number 10", 1, "bm25").passages[0].source == "burst/g10.md"

        (root / "burst" / "f09.md").unlink()
        gone = watching.next()
        assert (gone.changes, gone.report.files_removed) == (["- burst/f09.md"], 1)
        assert "burst/f09.md" not in {r.source for r in index.files()}
        assert gone.status().endswith("0 added, 0 updated, 1 removed, 0 skipped "
                                      f"({gone.report.seconds:.1f}s)")  # fmt: skip
    index.close()


def test_cli_ingest_watch_syncs_and_stops_on_ctrl_c(tmp_path: Path, docs: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OSSRAG_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ossrag", "ingest", str(docs), "--watch", "--db",
         str(tmp_path / "w.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()  # type: ignore[union-attr]

    def wait_for(text: str) -> str:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}")

    wait_for("watching")
    time.sleep(0.5)
    (docs / "notes.txt").write_text("Plain text notes.\n\nThe cluster has five query nodes.\n")
    status = wait_for("notes.txt")
    assert "~ notes.txt → 0 added, 1 updated, 0 removed, 0 skipped" in status
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    out = proc.stdout.read()  # type: ignore[union-attr]
    assert "3 added" in out
    wait_for("stopped watching")


def test_ctrl_c_during_a_sync_lets_it_finish(
    tmp_path: Path, docs: Path, embedder: Embedder
) -> None:
    """Ctrl-C while a burst is being synced: the sync under way finishes (exit 0), so the
    store holds all of the burst or, had the group not closed yet, none of it; never a part."""
    db = tmp_path / "w.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OSSRAG_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ossrag", "ingest", str(docs), "--watch", "--json", "--db",
         str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    while "watching" not in (line := proc.stderr.readline()):
        assert line, "the watcher did not start"
    time.sleep(0.5)
    burst = docs / "burst"
    burst.mkdir()
    paragraphs = "\n\n".join(f"Paragraph {p} of the burst file, about replicas." for p in range(8))
    for n in range(200):
        (burst / f"f{n:03d}.md").write_text(f"# File {n}\n\n{paragraphs}\n")
    time.sleep(1.0)  # the group closes after 0.3 s of quiet: its sync is under way
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest[-2000:]
    assert "stopped watching" in rest
    synced = [json.loads(line) for line in out.splitlines() if line.startswith('{"changes"')]
    index = Index(load_settings(db=str(db)), embedder=embedder)
    stored = sum(record.source.startswith("burst/") for record in index.files())
    index.close()
    assert stored in (0, 200)
    assert [s["files_added"] for s in synced] == ([200] if stored else [])


@pytest.fixture
def watched_server(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[LiveServer, Path]]:
    root = write_docs(tmp_path / "docs")
    settings = load_settings(db=str(tmp_path / "s.db"), watch=[str(root)])
    index = Index(settings, embedder=embedder)
    with LiveServer(create_app(settings, index)) as live:
        yield live, root
    index.close()


def test_serve_watch_makes_new_files_searchable(
    watched_server: tuple[LiveServer, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    live, root = watched_server

    def sources(query: str) -> list[str]:
        body = {"query": query, "top_k": 1, "mode": "bm25"}
        response = httpx.post(live.url + "/v1/search", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return [r["source"] for r in response.json()["results"]]

    deadline = time.monotonic() + SETTLE
    while sources("engine") != ["guide/storage.md"]:  # the first sync at start
        assert time.monotonic() < deadline, "the watched folder was not ingested at start"
        time.sleep(0.2)
    (root / "wombat.md").write_text("# Wombats\n\nA wombat digs burrows.\n")
    deadline = time.monotonic() + SETTLE
    while sources("wombat burrows") != ["wombat.md"]:
        assert time.monotonic() < deadline, "the new file did not become searchable"
        time.sleep(0.2)
    assert "ossrag: " in capfd.readouterr().err


def test_serve_watch_refuses_a_missing_folder(tmp_path: Path, embedder: Embedder) -> None:
    settings = load_settings(db=str(tmp_path / "s.db"), watch=[str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match=r"watch .*nope: not a directory \(OSSRAG_WATCH"):
        create_app(settings, Index(settings, embedder=embedder))


def test_status_line_names_changes_safely(tmp_path: Path) -> None:
    changes = {(Change.added, str(tmp_path / f"n{n}.md")) for n in range(5)}
    changes.add((Change.deleted, str(tmp_path / "evil\x1b]0;pwned\x07.md")))
    described = _describe(changes, [tmp_path])
    assert described[0] == "- evil\\x1b]0;pwned\\x07.md"
    report = IngestReport(files_added=5, files_removed=1, seconds=0.25)
    line = Synced(described, report, 0.0).status()
    assert line.endswith(" - evil\\x1b]0;pwned\\x07.md, + n0.md, + n1.md and 3 more → 5 added, "
                         "0 updated, 1 removed, 0 skipped (0.2s)")  # fmt: skip
    assert "\x1b" not in line and "\x07" not in line


class _PeekingStore(Store):
    """Reads its own info the moment before the info row is written, as a search in another
    thread of the server can while an ingest creates the collection."""

    seen: list[object]

    def _write_info(self, info: CollectionInfo) -> None:
        self.seen = [self.info()]
        super()._write_info(info)


def test_a_collection_being_created_reads_as_empty(tmp_path: Path, embedder: Embedder) -> None:
    store = _PeekingStore(str(tmp_path / "s.db"))
    store.ensure(embedder.name, embedder.dim)
    assert store.seen == [None]  # not "was not made by this ossrag"
    assert store.info() is not None
    store.close()


def test_a_path_reported_several_ways_gets_one_sign_whatever_the_order(tmp_path: Path) -> None:
    def described(*kinds: Change) -> list[str]:
        return _describe([(kind, str(tmp_path / "a.md")) for kind in kinds], [tmp_path])

    for order in ((Change.added, Change.modified), (Change.modified, Change.added)):
        assert described(*order) == ["+ a.md"]  # created, then written
    for order in ((Change.deleted, Change.modified), (Change.modified, Change.deleted)):
        assert described(*order) == ["- a.md"]  # written, then deleted
    for order in ((Change.added, Change.deleted), (Change.deleted, Change.added)):
        assert described(*order) == ["~ a.md"]  # replaced
    assert described(Change.modified) == ["~ a.md"]
