"""Hostile inputs in one directory: each bad file is one warning line, the rest is ingested."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ossrag.cli.app import EXIT_WARNINGS, app
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.load.files import MAX_DEPTH
from ossrag.store.milvus import Store

GOOD = "# Good\n\nThe cluster keeps three replicas of every segment.\n"

# file name → expected warning (substring), for every file that must be skipped
BAD = {
    "empty.md": "empty.md: empty file",
    "blank.txt": "blank.txt: empty file (only whitespace)",
    "binary.txt": "binary.txt: binary content (NUL byte at offset 4)",
    "latin1.md": "latin1.md: invalid UTF-8 at byte offset 5 (line 1)",
    "huge.md": "huge.md: file too large: 52,428,800 bytes (limit 20,000,000)",
    "fake.pdf": "fake.pdf: not a PDF (no %PDF- header)",
    "self.md": "self.md: symlink loop",
    "new\nline.md": "new\\nline.md: empty file",
    "deep": f"directory nested more than {MAX_DEPTH} levels deep",
}
INGESTED = ["good.md", "naïve 日本.md", "tab\tname.txt"]


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    root = tmp_path / "hostile"
    root.mkdir()
    for name in INGESTED:
        (root / name).write_text(GOOD.replace("Good", name), encoding="utf-8")
    (root / "empty.md").write_bytes(b"")
    (root / "blank.txt").write_text(" \n\t\n")
    (root / "binary.txt").write_bytes(b"\x7fELF\0\0\x01\x02" * 100)
    (root / "latin1.md").write_bytes("# Café\n\ncrème brûlée\n".encode("latin-1"))
    with (root / "huge.md").open("wb") as f:  # sparse: 50 MB in no time and no disk
        f.truncate(50 * 1024 * 1024)
    (root / "fake.pdf").write_text("I am not a PDF\n")
    (root / "self.md").symlink_to("self.md")  # a symlink loop
    (root / "loop").symlink_to(".")  # a directory loop: walked once, no warning
    (root / "new\nline.md").write_bytes(b"")
    deep = root.joinpath(*["deep"] * (MAX_DEPTH + 5))
    deep.mkdir(parents=True)
    (deep / "bottom.md").write_text(GOOD)
    return root


def test_ingest_reports_each_bad_file_once_and_stores_the_rest(hostile: Path, index: Index) -> None:
    report = index.ingest([hostile])
    assert report.files_added == len(INGESTED)
    assert len(report.warnings) == len(BAD)
    for warning in report.warnings:
        assert "\n" not in warning
    for expected in BAD.values():
        assert sum(expected in w for w in report.warnings) == 1, expected
    sources = sorted(r.source for r in index.store.files().values())
    assert sources == sorted(INGESTED)
    assert index.search("how many replicas", k=1).passages[0].source in INGESTED


def test_cli_exits_3_with_one_line_per_warning(
    hostile: Path, tmp_path: Path, embedder: Embedder
) -> None:
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", str(hostile), "--db", db, "--json"])
    assert first.exit_code == EXIT_WARNINGS, first.output
    payload = json.loads(first.stdout)
    assert (payload["files_added"], payload["files_skipped"]) == (len(INGESTED), len(BAD))

    again = runner.invoke(app, ["ingest", str(hostile), "--db", db])
    assert again.exit_code == EXIT_WARNINGS
    assert f"0 added · 0 updated · {len(INGESTED)} unchanged" in again.stdout
    lines = again.stderr.splitlines()
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert len(skipped) == len(BAD), lines
    for expected in BAD.values():
        assert sum(expected in line for line in skipped) == 1, expected

    store = Store(db)
    assert store.ensure(embedder.name, embedder.dim)
    assert store.count() == len(INGESTED)
    store.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_warning(tmp_path: Path, index: Index) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ok.md").write_text(GOOD)
    secret = root / "secret.md"
    secret.write_text(GOOD)
    secret.chmod(0)
    try:
        report = index.ingest([root])
    finally:
        secret.chmod(0o600)
    assert report.files_added == 1
    assert report.warnings == ["secret.md: permission denied"]
