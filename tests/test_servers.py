"""ossrag against Milvus servers started here: `milvus-lite server` and a Milvus 2.3 standalone.

Covers: a server that is down at start, one store shared by two processes, the server going
away in the middle of an ingest (retried with backoff, then a clear error, then a re-run that
completes), `--token` / `OSSRAG_TOKEN` against a server that checks it, and ingest / search /
re-sync on an old real Milvus without BM25.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
from conftest import write_docs
from milvus_lite.adapter.grpc.servicer import MilvusServicer
from milvus_lite.db import MilvusLite
from pymilvus.grpc_gen import milvus_pb2_grpc
from typer.testing import CliRunner

from ossrag.cli.app import app
from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.engine.ingest import IngestReport, Progress
from ossrag.errors import StoreError
from ossrag.store.milvus import Store

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process in its own process group, stopped with everything it spawned."""

    def __init__(self, command: list[str], port: int, log: Path) -> None:
        self.command, self.port, self.log = command, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"port {self.port} not open after {timeout:.0f} s: {self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the group; whatever ignores it (milvus's child does) is killed after 10 s."""
        if self.proc is None:
            return
        for each in (sig, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, each)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait()
        self.proc = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-500:] if self.log.exists() else ""


def lite_server(data_dir: Path, port: int | None = None) -> Server:
    command = [str(BIN / "milvus-lite"), "server", "--data-dir", str(data_dir)]
    port = port or free_port()
    return Server([*command, "--host", "127.0.0.1", "--port", str(port)], port, data_dir / ".log")


def stored(index: Index) -> tuple[int, int, dict[str, str]]:
    """(rows, chunks recorded in the manifest, chunk id → doc id)."""
    manifest = index.store.files()
    return index.store.count(), sum(r.chunks for r in manifest.values()), index.store.chunk_ids()


# --------------------------------------------------------------------------- server down


def test_server_down_at_start_is_one_clear_line(tmp_path: Path, docs: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        StoreError, match=r"cannot open Milvus at http://127\.0\.0\.1:\d+ \(db, token\)"
    ):
        Store(uri)
    result = CliRunner().invoke(app, ["ingest", str(docs), "--db", uri])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(
        f"error: cannot open Milvus at {uri} (OSSRAG_DB / --db, OSSRAG_TOKEN / --token): "
        "Fail connecting"
    )


# --------------------------------------------------------------------------- two processes

OTHER_PROCESS = """
import json, sys
import numpy as np
from ossrag.store.milvus import Store
store = Store(sys.argv[1])
store.ensure(sys.argv[2], int(sys.argv[3]))
vector = np.asarray(json.loads(sys.argv[4]), dtype=np.float32)
print(json.dumps({
    "files": sorted(r.source for r in store.files().values()),
    "count": store.count(),
    "dense": store.search_dense(vector, 1)[0].entity["source"],
    "bm25": store.search_bm25("back up the bucket", 1)[0].entity["source"],
}))
"""


def test_lite_server_shares_one_store_between_processes(
    lite: Server, docs: Path, embedder: Embedder
) -> None:
    index = Index(load_settings(db=lite.uri), embedder=embedder)
    assert index.ingest([docs]).files_added == 3
    vector = json.dumps(embedder.embed_query("which distance metrics are supported").tolist())
    other = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, lite.uri, embedder.name, str(embedder.dim), vector],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    seen = json.loads(other.stdout)
    assert seen == {
        "files": ["guide/search.md", "guide/storage.md", "notes.txt"],
        "count": index.store.count(),
        "dense": "guide/search.md",
        "bm25": "guide/storage.md",
    }
    # and the first process keeps working on the same store
    (docs / "notes.txt").unlink()
    assert index.ingest([docs]).files_removed == 1
    index.close()


# --------------------------------------------------------------------------- server goes away


def ingest_losing_server(
    index: Index, docs: Path, server: Server, restart_after: float | None
) -> IngestReport:
    """Ingest, killing the server once the first file is read; maybe restart it later."""
    restarts: list[threading.Thread] = []

    def on_progress(_: Progress) -> None:
        if not restarts:
            server.stop(signal.SIGKILL)
            restarts.append(threading.Timer(restart_after or 0, server.start))
            if restart_after is not None:
                restarts[0].start()

    try:
        return index.ingest([docs], progress=on_progress)
    finally:
        if restarts and restart_after is not None:
            restarts[0].join()


def test_ingest_rides_out_a_server_restart(lite: Server, docs: Path, embedder: Embedder) -> None:
    index = Index(load_settings(db=lite.uri), embedder=embedder)
    index.store.ensure(embedder.name, embedder.dim)
    report = ingest_losing_server(index, docs, lite, restart_after=1.0)
    assert report.files_added == 3
    rows, recorded, ids = stored(index)
    assert rows == recorded == len(ids) == report.chunks_embedded
    index.close()


def test_server_gone_for_good_is_a_clear_error_and_rerun_completes(
    lite: Server, docs: Path, embedder: Embedder
) -> None:
    index = Index(load_settings(db=lite.uri), embedder=embedder)
    index.store.ensure(embedder.name, embedder.dim)
    index.store.retry_delays = (0.1, 0.2, 0.4)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        ingest_losing_server(index, docs, lite, restart_after=None)
    assert time.monotonic() - started > 0.7  # it did wait between tries
    message = str(info.value)
    assert message.startswith(f"lost the connection to Milvus at {lite.uri} while trying to ")
    assert message.endswith("(4 tries): is the server running? (db)")
    index.close()

    lite.start()
    again = Index(load_settings(db=lite.uri), embedder=embedder)
    report = again.ingest([docs])
    assert report.files_added == 3
    rows, recorded, ids = stored(again)
    assert rows == recorded == len(ids) == report.chunks_embedded
    again.close()


# --------------------------------------------------------------------------- token

TOKEN = "root:Milvus"


class TokenCheck(grpc.ServerInterceptor):
    """What a Milvus with authorization enabled does: every call whose `authorization` header
    is not the token (base64, as pymilvus sends it) is refused as unauthenticated."""

    def __init__(self, token: str) -> None:
        self.expected = base64.b64encode(token.encode()).decode()
        self.sent: list[str] = []  # the header of every call, in order

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        self.sent.append(str(sent))
        if sent == self.expected:
            return continuation(details)
        return grpc.unary_unary_rpc_method_handler(
            lambda _, context: context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong token")
        )


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[str, TokenCheck]]:
    """The `milvus-lite server` gRPC service, in this process, behind a token check."""
    check = TokenCheck(TOKEN)
    db = MilvusLite(str(tmp_path / "guarded"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[check])
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", check
    server.stop(grace=1)
    db.close()


@pytest.mark.store
def test_token_flag_and_environment_reach_the_server(guarded: tuple[str, TokenCheck]) -> None:
    """`milvus-lite server` accepts any token, so the server here checks it as Milvus with
    authorization does; `ossrag status` connects, reads the store and checks the LLM."""
    uri, check = guarded
    status = ["status", "--db", uri, "--json", "--base-url", f"http://127.0.0.1:{free_port()}/v1"]
    runner = CliRunner()
    answers: list[tuple[int, set[str]]] = []
    for flags, env in [
        (["--token", TOKEN], None),
        ([], TOKEN),
        (["--token", TOKEN], "root:wrong"),  # the flag wins
        (["--token", "root:wrong"], None),
        ([], None),
    ]:
        check.sent.clear()
        result = runner.invoke(app, [*status, *flags], env={"OSSRAG_TOKEN": env})
        answers.append((result.exit_code, set(check.sent)))
        if result.exit_code == 0:
            assert json.loads(result.stdout)["files"] == 0 and len(check.sent) > 1
        else:
            assert result.stderr.startswith(f"error: cannot open Milvus at {uri}")
    right, wrong = {check.expected}, {base64.b64encode(b"root:wrong").decode()}
    assert answers == [(0, right), (0, right), (0, right), (1, wrong), (1, {""})]


# --------------------------------------------------------------------------- Milvus standalone


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server cannot run here; in CI (CI=true) fail it: there it must run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def test_an_unavailable_server_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^CI: no server$"):
        unavailable("no server")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"^no server$"):
        unavailable("no server")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Milvus 2.3.5 from the PyPI package `milvus`, every port chosen free."""
    binary = shutil.which("milvus-server", path=str(BIN)) or shutil.which("milvus-server")
    if binary is None:
        unavailable("milvus-server not installed (pip install milvus==2.3.5)")
    data = tmp_path_factory.mktemp("milvus-standalone")
    names = "proxy etcd root-coord proxy-internal query-coord query-node index-coord index-node "
    ports = {name: free_port() for name in (names + "data-coord data-node").split()}
    flags = [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    server = Server([binary, "--data", str(data), *flags], ports["proxy"], data / "server.log")
    try:
        server.start(timeout=180)
        deadline = time.monotonic() + 120
        while True:  # the port opens before the coordinators are ready
            try:
                Store(server.uri).close()
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    except (RuntimeError, StoreError) as exc:
        server.stop()
        unavailable(f"Milvus standalone did not start: {' '.join(str(exc).split())[:300]}")
    yield server
    server.stop()


def test_standalone_milvus_ingest_search_resync(
    standalone: Server, tmp_path: Path, embedder: Embedder
) -> None:
    docs = write_docs(tmp_path / "docs")
    served = Index(load_settings(db=standalone.uri, collection="t_resync"), embedder=embedder)
    local = Index(load_settings(db=str(tmp_path / "local.db")), embedder=embedder)
    try:
        assert served.ingest([docs]).files_added == 3
        assert served.store.info() is not None and not served.store.info().bm25  # type: ignore[union-attr]
        result = served.search("which distance metrics are supported", k=2)
        assert result.mode == "dense" and "no BM25" in result.notice
        assert result.passages[0].source == "guide/search.md"

        (docs / "notes.txt").write_text("Plain text notes.\n\nThe cluster has five query nodes.\n")
        (docs / "guide" / "storage.md").unlink()
        report = served.ingest([docs])
        assert (report.files_updated, report.files_removed, report.files_unchanged) == (1, 1, 1)
        assert (
            served.search("how many query nodes", k=1)
            .passages[0]
            .text.endswith("five query nodes.")
        )

        local.ingest([docs])  # the same files into Milvus Lite: the same chunks
        rows, recorded, ids = stored(served)
        assert rows == recorded == len(ids)
        assert ids == local.store.chunk_ids()
    finally:
        served.store.drop()
        served.close()
        local.close()
