"""The web UI in a real browser: headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import REPO
from llm_server import Reply, ScriptedLLMServer
from test_server import LiveServer

from ossrag.config import load_settings
from ossrag.embeddings import Embedder
from ossrag.index import Index
from ossrag.server import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.timeout(90)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "ui-key"
REASONING = "Passage [1] says the engine keeps vectors in object storage."
ANSWER = "Inserted vectors live in object storage such as MinIO or S3 [1], metadata in etcd [1]."


@pytest.fixture
def page() -> Iterator[Page]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        blocked: list[str] = []  # the server's CSP must never have to block the UI's own code
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on(
                "console",
                lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
            )
            yield page
        finally:
            browser.close()
        assert blocked == []


@pytest.fixture
def ui(
    embedder: Embedder, docs: Path, tmp_path: Path
) -> Iterator[tuple[LiveServer, ScriptedLLMServer]]:
    reply = Reply(content=ANSWER, reasoning=REASONING, chunk_size=4, delay_s=0.04)
    with ScriptedLLMServer(reply, model="gpt-oss-20b") as llm:
        allowed = tmp_path / "allowed"
        allowed.mkdir()
        (allowed / "extra.md").write_text("# Extra\n\nOne more small file.\n")
        settings = load_settings(
            db=str(tmp_path / "ui.db"),
            base_url=llm.base_url,
            model="gpt-oss-20b",
            api_keys=[KEY],
            allowed_roots=[str(allowed)],
        )
        index = Index(settings, embedder=embedder)
        index.ingest([docs])
        try:
            with LiveServer(create_app(settings, index)) as live:
                yield live, llm
        finally:
            index.close()


def test_chat_streams_cites_and_hides_reasoning(
    ui: tuple[LiveServer, ScriptedLLMServer], page: Page, tmp_path: Path
) -> None:
    live, llm = ui
    page.goto(live.url)
    page.fill("#api-key", KEY)
    page.press("#api-key", "Tab")
    page.select_option("#effort", "high")
    page.fill("#question", "Where does the engine keep inserted vectors?")
    page.click("#ask")

    # The answer streams in: seen part-way, then whole.
    page.wait_for_function(
        "() => { const a = document.querySelector('.answer');"
        " return a && a.dataset.state === 'streaming' && a.textContent.length > 0; }",
        polling=20,
    )
    partial = page.text_content(".answer")
    page.wait_for_selector(".answer[data-state=done]", timeout=20_000)
    final = page.text_content(".answer")
    assert final == ANSWER
    assert partial and len(partial) < len(final) and final.startswith(partial)
    assert llm.bodies()[-1]["reasoning_effort"] == "high"

    # Reasoning stays hidden until toggled.
    assert not page.is_visible(".reasoning-text")
    page.click(".reasoning summary")
    assert page.is_visible(".reasoning-text")
    assert page.text_content(".reasoning-text") == REASONING
    assert REASONING not in final

    # A citation opens its passage.
    assert page.locator(".answer .cite").count() == 2
    page.click(".answer .cite >> nth=0")
    assert page.is_visible("#passage")
    assert page.text_content("#passage-source") == "guide/storage.md"
    heading = page.text_content("#passage-heading")
    assert heading == "Storage guide › Where does the engine keep data?"
    assert page.text_content("#passage-lines") == "lines 6–8"
    assert "object storage" in page.text_content("#passage-text")
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "web_ui.png"), full_page=True)
    page.click("#passage-close")

    # The ingest panel starts a job and shows it finish.
    allowed = tmp_path / "allowed"
    page.fill("#ingest-paths", str(allowed))
    page.click("#ingest-form button")
    page.wait_for_selector("#jobs li[data-status=done]", timeout=20_000)
    assert "1/1 files" in page.text_content("#jobs li")
    assert not page.is_visible("#ingest-error")


def test_api_docs_render_with_no_network(
    ui: tuple[LiveServer, ScriptedLLMServer], page: Page
) -> None:
    live, _ = ui
    outside: list[str] = []

    def only_loopback(route: Any) -> None:
        if route.request.url.startswith(live.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(live.url + "/docs")
    page.wait_for_selector('.opblock-summary-path[data-path="/v1/search"]', timeout=20_000)
    schema = page.request.get(live.url + "/openapi.json").json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    assert operations >= 5 and page.locator(".opblock").count() == operations  # each one shown
    assert outside == []
