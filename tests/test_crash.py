"""kill -9 during `ossrag ingest`, then a re-run: the store equals a clean ingest.

The small version of benchmarks/crash_trials.py: one trial on a tiny corpus, killed right after
the first chunks reach the store's write-ahead log (before their files are recorded), then
re-run in this process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index

sys.path.insert(0, str(REPO / "benchmarks"))
from crash_trials import clean_env, compare, ingest_command, make_corpus, snapshot


def kill_after_first_write(command: list[str], env: dict[str, str], wal: Path) -> bool:
    """Run `command`; SIGKILL it as soon as `wal` holds a file. True if it was killed."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if wal.is_dir() and any(wal.iterdir()):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode == -signal.SIGKILL


def test_kill_during_ingest_then_rerun_matches_clean_ingest(
    tmp_path: Path, embedder: Embedder
) -> None:
    corpus = make_corpus(tmp_path / "corpus", files=24, seed=7)
    reference_db = tmp_path / "reference.db"
    index = Index(load_settings(db=str(reference_db)), embedder=embedder)
    assert index.ingest([corpus]).files_added == 24
    index.close()
    reference = snapshot(reference_db, embedder)

    db = tmp_path / "crashed.db"
    env = {**clean_env(tmp_path), "OSSRAG_ENCODER": "fp32"}  # the reference's encoder
    killed = kill_after_first_write(
        ingest_command(corpus, db), env, db / "collections" / "ossrag" / "wal"
    )
    assert killed, "the ingest ended before its first write"
    crashed = snapshot(db, embedder)
    assert crashed.manifest == {}  # chunks were written, their files not yet recorded

    index = Index(load_settings(db=str(db)), embedder=embedder)
    report = index.ingest([corpus])
    index.close()
    assert report.files_added == 24 and report.files_updated == 0
    assert compare(snapshot(db, embedder), reference) == []
