"""GET /v1/store and POST /v1/upload: the web UI's routes, over real HTTP on a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import isolate_settings, wait_for_job, write_docs
from test_server import LiveServer

from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.http.app import create_app
from ossrag.http.webapi import safe_name

KEY = "store-key"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[httpx.Client, Path]]:
    work = tmp_path_factory.mktemp("webapi")
    allowed = work / "allowed"
    write_docs(allowed / "docs")
    with pytest.MonkeyPatch.context() as mp:
        isolate_settings(mp, work)
        settings = load_settings(
            db=str(work / "store.db"),
            base_url="http://127.0.0.1:9/v1",
            api_keys=[KEY],
            allowed_roots=[str(allowed)],
            max_body_bytes=4096,
            max_upload_bytes=8192,
        )
    index = Index(settings, embedder=embedder)
    index.ingest([allowed / "docs"])
    with (
        LiveServer(create_app(settings, index)) as live,
        httpx.Client(
            base_url=live.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        ) as http,
    ):
        yield http, allowed
    index.close()


def test_store_then_upload(served: tuple[httpx.Client, Path]) -> None:
    http, allowed = served
    anonymous = httpx.Client(base_url=str(http.base_url), timeout=30)
    assert anonymous.get("/v1/store").status_code == 401
    assert anonymous.post("/v1/upload", params={"name": "a.md"}, content=b"# a").status_code == 401
    assert not (allowed / "uploads" / "a.md").exists()
    store = http.get("/v1/store").json()
    assert (store["files"], store["last_sync"], store["jobs"]) == (3, None, [])
    assert [f["source"] for f in store["file_list"]] == [
        "guide/search.md",
        "guide/storage.md",
        "notes.txt",
    ]
    assert sum(f["chunks"] for f in store["file_list"]) == store["chunks"]

    # The name loses its directories and odd characters; the file lands in allowed/uploads.
    # Larger than other bodies may be (max_body_bytes), within the upload limit.
    body = b"# Quotas\n\nEach tenant may keep 1000 collections.\n" + b"More text.\n" * 500
    started = http.post("/v1/upload", params={"name": "../../etc/quota notes!.md"}, content=body)
    assert started.status_code == 202, started.text
    saved = allowed / "uploads" / "quota notes_.md"
    assert started.json()["saved"] == str(saved) and saved.read_bytes() == body
    job = wait_for_job(http, started.json()["id"])
    assert (job["status"], job["report"]["files_added"]) == ("done", 1)
    store = http.get("/v1/store").json()
    assert store["files"] == 4 and store["last_sync"] == job["finished"]
    assert "quota notes_.md" in [f["source"] for f in store["file_list"]]
    assert [j["id"] for j in store["jobs"]] == [job["id"]]


@pytest.mark.parametrize(
    ("params", "body", "status", "message"),
    [
        ({"name": "tool.exe"}, b"MZ", 400, "name 'tool.exe': unsupported file type '.exe'"),
        ({"name": "../.md"}, b"x", 400, "name '../.md': not a usable file name"),
        ({"name": "a.md"}, b"", 400, "body: the file is empty"),
        ({"name": "a.md"}, b"x" * 9000, 413, "body: the file is larger than 8192 bytes"),
        (
            {"name": "a.md"},
            iter([b"x" * 5000] * 2),
            413,
            "body: the file is larger than 8192 bytes",
        ),
        ({}, b"x", 400, "query.name: Field required"),
    ],
)
def test_upload_refusals(
    served: tuple[httpx.Client, Path],
    params: dict[str, str],
    body: bytes | Iterator[bytes],
    status: int,
    message: str,
) -> None:
    http, allowed = served
    response = http.post("/v1/upload", params=params, content=body)
    assert response.status_code == status
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert not (allowed / "uploads" / "a.md").exists()


def test_upload_never_follows_a_planted_link(
    served: tuple[httpx.Client, Path], tmp_path: Path
) -> None:
    http, allowed = served
    outside = tmp_path / "outside.md"
    outside.write_text("untouched")
    (allowed / "uploads").mkdir(exist_ok=True)
    (allowed / "uploads" / "link.md").symlink_to(outside)
    response = http.post("/v1/upload", params={"name": "link.md"}, content=b"# overwritten")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "name 'link.md': a link of that name is in the uploads directory"
    )
    assert outside.read_text() == "untouched"


def test_upload_is_off_without_allowed_roots(tmp_path: Path, embedder: Embedder) -> None:
    settings = load_settings(db=str(tmp_path / "s.db"), base_url="http://127.0.0.1:9/v1")
    index = Index(settings, embedder=embedder)
    try:
        with LiveServer(create_app(settings, index)) as live:
            response = httpx.post(live.url + "/v1/upload?name=a.md", content=b"x", timeout=30)
    finally:
        index.close()
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "upload is off: set OSSRAG_ALLOWED_ROOTS / --allowed-root"
    )


def test_safe_name() -> None:
    assert safe_name("C:\\Users\\me\\Report (v2).PDF") == "Report _v2_.PDF"
    assert safe_name("notes\x1b[31m.md") == "notes_31m.md"
    assert safe_name("é.md") == "é.md"
