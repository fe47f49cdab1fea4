"""The web UI in a real browser: headless Chromium (Debian's) driven by Playwright, axe-core for
accessibility, under the strict CSP the server sends (any violation fails the test).
Screenshots go to $OSSRAG_ARTIFACTS (default /tmp/ossrag-artifacts); the path is printed."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import isolate_settings, write_docs
from llm_server import Reply, ScriptedLLMServer
from test_server import LiveServer

from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.http.app import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.timeout(120)

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
ARTIFACTS = Path(os.environ.get("OSSRAG_ARTIFACTS", "/tmp/ossrag-artifacts"))
REASONING = "Passage [1] says the engine keeps vectors in object storage."
ANSWER = """\
Inserted vectors live in **object storage** such as MinIO or S3, and metadata in etcd [1].

To back up:

1. Copy the bucket with the backup tool [1].
2. Snapshot etcd.

A search with a limit [2]:

```python
from pymilvus import MilvusClient

client = MilvusClient("milvus_demo.db")
hits = client.search("docs", data=[vector], limit=3)
```"""
ANSWER_TEXT_START = "Inserted vectors live in object storage such as MinIO or S3"
HOSTILE = (
    'A hostile answer <img src="x" onerror="window.pwned=1"> <script>window.pwned=2</script>'
    "[evil](javascript:window.pwned=3) and `[1]` in code [1]."
)


FABRICATED = (
    "The engine keeps inserted vectors in object storage such as MinIO or S3 [1]. "
    "The engine keeps inserted vectors on 42 floppy disks [1]."
)


def respond(body: dict[str, Any]) -> Reply:
    """HOSTILE for a question with "hostile" in it (and for the follow-up rewrite of one, whose
    reply then carries the word on into the answer's prompt), else ANSWER."""
    last = body["messages"][-1]["content"]
    if "hostile" in last:
        return Reply(content=HOSTILE)
    if "fabricated" in last:
        return Reply(content=FABRICATED)
    return Reply(content=ANSWER, reasoning=REASONING, chunk_size=6, delay_s=0.02)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[LiveServer, Path]]:
    """The fixture docs served with an API key; uploads allowed under allowed/."""
    work = tmp_path_factory.mktemp("web")
    allowed = work / "allowed"
    write_docs(allowed / "docs")
    with ScriptedLLMServer(Reply(respond=respond), model="gpt-oss-20b") as llm:
        with pytest.MonkeyPatch.context() as mp:
            isolate_settings(mp, work)
            settings = load_settings(
                db=str(work / "ui.db"),
                base_url=llm.base_url,
                model="gpt-oss-20b",
                api_keys=[KEY],
                allowed_roots=[str(allowed)],
                max_body_bytes=4096,
            )
        index = Index(settings, embedder=embedder)
        index.ingest([allowed / "docs"])
        app = create_app(settings, index)
        try:
            with LiveServer(app) as live:
                yield live, allowed
        finally:
            index.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def blocked_or_broken(message: Any) -> bool:
    """A console error other than an HTTP error status (the 401 before a key is entered)."""
    return message.type == "error" and not message.text.startswith("Failed to load resource")


@pytest.fixture
def open_page(
    browser: Browser, served: tuple[LiveServer, Path]
) -> Iterator[Callable[..., tuple[Page, list[str]]]]:
    """A fresh page on the UI with the API key entered; also the script errors and CSP
    violations it logs."""
    contexts = []

    def make(**options: Any) -> tuple[Page, list[str]]:
        context = browser.new_context(**{"viewport": {"width": 1200, "height": 860}, **options})
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if blocked_or_broken(m) else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        response = page.goto(served[0].url)
        assert response is not None
        assert "default-src 'self'" in response.headers["content-security-policy"]
        page.fill("#api-key", KEY)
        page.press("#api-key", "Tab")
        page.wait_for_function("() => document.querySelector('#stat-files').textContent !== '—'")
        return page, errors

    yield make
    for context in contexts:
        context.close()


def chat_requests(page: Page) -> list[dict[str, Any]]:
    """The bodies the page POSTs to /v1/chat/completions, as they are sent."""
    sent: list[dict[str, Any]] = []

    def record(request: Any) -> None:
        if request.url.endswith("/v1/chat/completions"):
            sent.append(json.loads(request.post_data))

    page.on("request", record)
    return sent


def ask(page: Page, question: str) -> None:
    """Type a question and send it with Enter; wait until the answer is complete."""
    done = page.locator(".answer[data-state=done], .answer[data-state=failed]").count()
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('.answer[data-state=done], .answer[data-state=failed]')"
        f".length > {done}",
        timeout=20_000,
    )


def serious_violations(page: Page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: {v['nodes'][0]['target']})"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")


def test_conversation_markdown_citations(open_page: Any) -> None:
    page, errors = open_page(permissions=["clipboard-read", "clipboard-write"])
    sent = chat_requests(page)
    page.select_option("#effort", "high")
    page.select_option("#mode", "ossrag-dense")
    page.fill("#question", "Where does the engine keep inserted vectors?")
    page.click("#ask")

    # The answer streams in (seen part-way), then renders as markdown.
    page.wait_for_function(
        "() => { const a = document.querySelector('.answer');"
        " return a && a.dataset.state === 'streaming' && a.textContent.length > 0; }",
        polling=10,
    )
    partial = page.text_content(".answer") or ""
    page.wait_for_selector(".answer[data-state=done]", timeout=20_000)
    answer = page.locator(".answer").first
    assert 0 < len(partial) < len(answer.text_content() or "")
    assert sent[0]["model"] == "ossrag-dense" and sent[0]["reasoning_effort"] == "high"
    assert page.text_content(".meta") == "high effort · dense"
    assert answer.locator("p").first.inner_text().startswith(ANSWER_TEXT_START)
    assert answer.locator("strong").inner_text() == "object storage"
    assert answer.locator("ol > li").all_inner_texts() == [
        "Copy the bucket with the backup tool 1?.",  # [1] is where data is kept, not backups
        "Snapshot etcd.",
    ]
    code = answer.locator("pre code")
    assert code.inner_text().strip() == ANSWER.split("```python\n")[1].removesuffix("\n```")
    assert "language-python" in (code.get_attribute("class") or "")
    assert answer.locator("pre code .hljs-keyword").all_inner_texts() == ["from", "import"]
    assert answer.locator("pre code .hljs-string").all_inner_texts() == [
        '"milvus_demo.db"',
        '"docs"',
    ]
    # The engine's verdicts: [1] (where data is kept) supports the first claim only.
    assert answer.locator(".cite").all_inner_texts() == ["1", "1?", "2?"]
    assert page.text_content(".claims-note") == "2 of 3 claims are not supported by their sources."

    # Copy buttons: the code block's and the whole answer's.
    answer.locator(".copy-code").click()
    assert page.evaluate("navigator.clipboard.readText()").strip() == code.inner_text().strip()
    page.click(".copy-answer")
    assert page.evaluate("navigator.clipboard.readText()") == ANSWER

    # Reasoning stays collapsed until opened.
    assert not page.is_visible(".reasoning-text")
    page.click(".reasoning summary")
    assert page.text_content(".reasoning-text") == REASONING

    # A chip previews its passage on hover and opens it on click.
    chip = answer.locator(".cite").first
    chip.hover()
    assert page.is_visible("#preview")
    preview = page.text_content("#preview strong")
    assert preview == (
        "[1] guide/storage.md › Storage guide › Where does the engine keep data? › lines 6–8"
    )
    page.keyboard.press("Escape")
    assert not page.is_visible("#preview")
    chip.click()
    assert page.is_visible("#passage") and not page.is_visible("#preview")
    assert page.text_content("#passage-source") == "guide/storage.md"
    assert (
        page.text_content("#passage-heading") == "Storage guide › Where does the engine keep data?"
    )
    assert page.text_content("#passage-lines") == "lines 6–8"
    assert page.locator("#passage-text h2").inner_text() == "Where does the engine keep data?"
    numbered = page.locator("#passage-numbered li")
    assert numbered.evaluate_all("items => items.map(i => i.value)") == [6, 7, 8]
    hits = page.locator("#passage-numbered li.hit")
    assert hits.evaluate_all("items => items.map(i => i.value)") == [8]
    assert "object storage such as MinIO" in hits.inner_text()
    screenshot(page, "web_ui_passage.png")
    assert serious_violations(page) == []
    page.keyboard.press("Escape")
    assert not page.is_visible("#passage")

    # Shift+Enter is a new line; Enter sends a follow-up with the whole conversation.
    page.click("#question")
    page.keyboard.type("And the")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("metadata?")
    assert page.input_value("#question") == "And the\nmetadata?"
    assert len(sent) == 1
    page.press("#question", "Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('.answer[data-state=done]').length === 2", timeout=20_000
    )
    assert [(m["role"], m["content"]) for m in sent[1]["messages"]] == [
        ("user", "Where does the engine keep inserted vectors?"),
        ("assistant", ANSWER),
        ("user", "And the\nmetadata?"),
    ]
    assert sent[1]["model"] == "ossrag-dense" and sent[1]["reasoning_effort"] == "high"
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "web_ui_light.png")
    assert serious_violations(page) == []

    # Hostile markdown is sanitized: no script runs, no handler or javascript: link survives.
    ask(page, "hostile input please")
    last = page.locator(".answer").last
    assert page.evaluate("window.pwned") is None
    assert last.locator("script, img, [onerror]").count() == 0
    assert last.locator("a").get_attribute("href") is None
    assert last.locator("code").inner_text() == "[1]"
    assert last.locator(".cite").all_inner_texts() == ["1?"]  # supported by no passage

    # New chat empties the thread and the conversation sent.
    page.click("#new-chat")
    assert page.locator(".turn").count() == 0 and page.is_visible("#empty")
    ask(page, "Where does the engine keep inserted vectors?")
    assert [m["role"] for m in sent[-1]["messages"]] == ["user"]
    assert errors == []  # nothing blocked by the CSP, no script error


def test_unsupported_claims_are_marked_and_evidence_opens_its_lines(open_page: Any) -> None:
    page, errors = open_page()
    page.fill("#question", "fabricated: where does the engine keep inserted vectors?")
    page.click("#ask")
    page.wait_for_selector(".answer[data-state=done]", timeout=20_000)
    answer = page.locator(".answer").first
    assert answer.locator(".cite").all_inner_texts() == ["1", "1?"]
    assert answer.locator(".cite.unsupported").get_attribute("title") == (
        "not supported by this source"
    )
    assert page.text_content(".claims-note") == "1 of 2 claims is not supported by its source."
    answer.locator(".cite").first.click()  # the supported claim: its evidence is highlighted
    assert page.locator("#passage-numbered li.hit").evaluate_all(
        "els => els.map(e => e.value)"
    ) == [8]
    assert page.text_content("#passage-match") == (
        "· 1 highlighted: the sentence that supports the claim"
    )
    page.keyboard.press("Escape")
    assert errors == []


def test_store_panel_upload_and_jobs(open_page: Any, served: tuple[LiveServer, Path]) -> None:
    page, errors = open_page()
    _, allowed = served
    assert page.text_content("#stat-files") == "3"
    chunks = int(page.text_content("#stat-chunks") or "0")
    assert chunks > 0
    page.click("#files-box summary")
    assert page.locator("#files li > span:first-child").all_inner_texts() == [
        "guide/search.md",
        "guide/storage.md",
        "notes.txt",
    ]

    # Drop a file: it is saved under allowed/uploads and ingested as a job with progress.
    drop = page.evaluate_handle(
        "() => { const dt = new DataTransfer();"
        " dt.items.add(new File(['# Dropped\\n\\nA dropped note about quotas.\\n'],"
        " '../drop me.md'));"
        " return dt; }"
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
    page.wait_for_selector("#jobs li[data-status=done]", timeout=20_000)
    assert (allowed / "uploads" / "drop me.md").read_text() == (
        "# Dropped\n\nA dropped note about quotas.\n"
    )
    job = page.locator("#jobs li").first
    assert job.locator(".job-paths").inner_text() == "drop me.md"
    assert job.locator(".job-line").inner_text() == "done · 1/1 files · 1 chunk embedded"
    assert job.locator("progress").evaluate("p => [p.value, p.max]") == [1, 1]
    page.wait_for_function("() => document.querySelector('#stat-files').textContent === '4'")
    # Synced today: the box shows the time of day alone, the full date in its tooltip.
    assert re.fullmatch(r"\d{1,2}:\d{2}( [AP]M)?", page.text_content("#stat-sync") or "")
    assert str(datetime.date.today().year) in (page.get_attribute("#stat-sync", "title") or "")
    assert page.locator("#files li .muted").all_inner_texts()[-1] == "1 chunk"
    assert not page.is_visible("#ingest-error")

    # A file type ossrag cannot read is refused with the server's message.
    bad = page.evaluate_handle(
        "() => { const dt = new DataTransfer();"
        " dt.items.add(new File(['MZ'], 'tool.exe')); return dt; }"
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": bad})
    page.wait_for_selector("#ingest-error:not([hidden])")
    assert page.text_content("#ingest-error") == (
        "tool.exe: name 'tool.exe': unsupported file type '.exe'"
    )

    # Folders on the server are ingested by path, as before.
    page.fill("#ingest-paths", str(allowed / "docs"))
    page.click("#ingest-form button")
    page.wait_for_function(
        "() => document.querySelectorAll('#jobs li[data-status=done]').length === 2",
        timeout=20_000,
    )
    assert not page.is_visible("#ingest-error")
    assert serious_violations(page) == []
    assert errors == []


def test_dark_and_narrow(open_page: Any) -> None:
    page, errors = open_page(color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 20, 27)"
    ask(page, "Where does the engine keep inserted vectors?")
    page.locator(".answer .cite").first.hover()
    screenshot(page, "web_ui_dark.png")
    assert serious_violations(page) == []

    # A phone-sized screen: nothing scrolls sideways; the store panel is a drawer Esc closes.
    narrow, narrow_errors = open_page(viewport={"width": 390, "height": 800}, is_mobile=True)
    ask(narrow, "Where does the engine keep inserted vectors?")
    width = narrow.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    assert not narrow.is_visible("#store")
    screenshot(narrow, "web_ui_narrow.png")
    narrow.click("#store-toggle")
    assert narrow.is_visible("#store")
    assert narrow.get_attribute("#store-toggle", "aria-expanded") == "true"
    screenshot(narrow, "web_ui_narrow_store.png")
    assert serious_violations(narrow) == []
    narrow.keyboard.press("Escape")
    assert not narrow.is_visible("#store")

    # The agent is one more mode (with no tool call scripted, its answer cites nothing).
    sent = chat_requests(narrow)
    narrow.click("#new-chat")
    narrow.select_option("#mode", "ossrag-agent")
    ask(narrow, "Where does the engine keep inserted vectors?")
    assert sent[0]["model"] == "ossrag-agent"
    assert narrow.text_content(".meta") == "medium effort · agent (the model searches)"
    assert narrow.locator(".answer strong").inner_text() == "object storage"
    assert errors == [] and narrow_errors == []


def test_api_docs_render_with_no_network(browser: Browser, served: tuple[LiveServer, Path]) -> None:
    live, _ = served
    outside: list[str] = []

    def only_loopback(route: Any) -> None:
        if route.request.url.startswith(live.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page = browser.new_page()
    page.route("**/*", only_loopback)
    page.goto(live.url + "/docs")
    page.wait_for_selector('.opblock-summary-path[data-path="/v1/search"]', timeout=20_000)
    schema = page.request.get(live.url + "/openapi.json").json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    assert operations >= 5 and page.locator(".opblock").count() == operations  # each one shown
    assert outside == []
    page.close()
