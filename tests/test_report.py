"""The eval reports: made-up rows rendered through the real code, read as HTML and in Chromium."""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_web_ui import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, serious_violations

from ossrag.eval.compare import Row, summarise
from ossrag.eval.report import answers_html, fmt, retrieval_html
from ossrag.eval.retrieval import EvalItem, EvalReport, Outcome
from ossrag.records import Passage

INFO = {
    "question set": "milvus-faq.jsonl (3 questions)",
    "models": "gpt-oss-20b, gpt-oss-120b, Qwen/Qwen3-30B-A3B-Instruct-2507",
    "efforts": "low, high",
    "judge": "gpt-oss-120b",
    "embedder": "minilm",
    "retrieval": "hybrid, top 5",
    "date": "2026-11-30 08:00 UTC",
}
QUESTIONS = [
    ("q1", "en", "Where does Milvus keep inserted vectors?", "In object storage (MinIO or S3)."),
    ("q2", "it", "Come si fa il backup di Milvus?", "Copy the bucket, then snapshot etcd."),
    ("q3", "de", "Wie viele Query-Nodes hat der Cluster?", "Three."),
]
PASSAGE = {
    "n": 1, "rank": 1, "score": 0.82, "source": "faq/storage.md",
    "heading": "Storage › Where is data kept?", "start_line": 12, "end_line": 15,
    "text": "Milvus keeps inserted vectors in object storage such as MinIO or S3.",
}  # fmt: skip


MISSED = {
    ("gpt-oss-20b", "low", "q3"),
    ("gpt-oss-120b", "low", "q2"),
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "low", "q1"),
}


def made_up_rows() -> list[Row]:
    """Three models, two efforts for one of them, one unjudged model, an error, a hostile
    answer, and one answer with code."""
    specs = [
        ("gpt-oss-20b", "low", 900.0, 4, 45.2),
        ("gpt-oss-20b", "high", 2450.0, 5, 44.8),
        ("gpt-oss-120b", "low", 1830.0, 5, 21.5),
        ("gpt-oss-120b", "high", 5200.0, 5, 20.9),
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", "low", 1200.0, None, 60.3),
    ]
    rows = []
    for model, effort, total, score, speed in specs:
        for i, (qid, lang, question, reference) in enumerate(QUESTIONS):
            hit = (model, effort, qid) not in MISSED
            error = "LLM request failed: 503" if model.startswith("Qwen") and qid == "q3" else ""
            answer = "Inserted vectors live in **object storage** [1]."
            if qid == "q2":
                answer = "Back up with:\n\n```bash\nmilvus-backup create -n nightly\n```\n\n[1]"
            if model == "gpt-oss-120b" and qid == "q3":
                answer = (
                    "Three <script>alert(1)</script> query nodes [1]. ![x](https://x.test/a.png)"
                )
            rows.append(
                Row(
                    model=model,
                    effort=effort,
                    id=qid,
                    question=question,
                    answer="" if error else answer,
                    reasoning_chars=0 if error else 120,
                    ttft_ms=0.0 if error else total / 4 + i,
                    total_ms=0.0 if error else total + i,
                    tokens_per_s=None if error else speed,
                    usage=None,
                    cited=[] if error else [1],
                    citation_hit=hit and not error,
                    error=error,
                    correctness=None if score is None or error else score - (qid == "q3"),
                    faithfulness=None if score is None or error else 5,
                    rationale="" if score is None or error else "Matches the reference.",
                    lang=lang,
                    reference=reference,
                    reasoning="" if error else "The passage [1] names object storage.",
                    passages=[] if error else [PASSAGE],
                    claims=0 if error else 2,  # a missed citation: one claim unsupported
                    supported=0 if error else 1 + int(hit),
                    unsupported=0 if error else int(not hit),
                )
            )
    return rows


def made_up_retrieval() -> list[EvalReport]:
    def passage(rank: int, source: str) -> Passage:
        return Passage(rank, 1 / rank, f"c{rank}", source, "FAQ › Storage", rank, rank + 3, "t")

    reports = []
    for name, ranks, ms in (("ossrag", [1, 2, None], 31.0), ("tutorial", [3, None, None], 12.5)):
        report = EvalReport(name)
        for (qid, lang, question, _), rank in zip(QUESTIONS, ranks, strict=True):
            item = EvalItem(
                id=qid, question=question, lang=lang, source="faq/storage.md",
                evidence=["object storage such as MinIO"],
            )  # fmt: skip
            top = [passage(r, f"faq/doc{r}.md") for r in range(1, 6)]
            report.outcomes.append(Outcome(item, rank, ms / 1000, top))
        reports.append(report)
    return reports


class _Cells(HTMLParser):
    """The summary table's cells (first table of the page), row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tables = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables += 1
        if self.tables == 1 and tag == "tr":
            self.rows.append([])
        if self.tables == 1 and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def summary_cells(page: str) -> list[list[str]]:
    parser = _Cells()
    parser.feed(page)
    return [row for row in parser.rows if row]


def test_fmt_one_format_per_kind() -> None:
    assert [fmt(None, "rate"), fmt(float("nan"), "ms"), fmt(0.5, "rate")] == ["—", "—", "0.500"]
    assert [fmt(1234.56, "ms"), fmt(4.5, "score"), fmt(21.54, "speed")] == ["1,235", "4.50", "21.5"]
    assert fmt(12000, "int") == "12,000"


def test_answers_report_structure() -> None:
    rows = made_up_rows()
    page = answers_html(rows, summarise(rows), "ossrag answers: milvus-faq.jsonl", INFO)
    assert "None" not in page and "nan" not in page
    cells = summary_cells(page)
    assert [c[:2] for c in cells] == [
        ["gpt-oss-20b", "low"],
        ["gpt-oss-20b", "high"],
        ["gpt-oss-120b", "low"],
        ["gpt-oss-120b", "high"],
        ["Qwen/Qwen3-30B-A3B-Instruct-2507", "low"],
    ]
    # model, effort, questions, cited, correct, faithful, TTFT, total, tok/s, reasoning,
    # supported and unsupported claims (shares of all cited claims), errors
    assert cells[0] == ["gpt-oss-20b", "low", "3", "0.667", "3.67", "5.00", "226", "901", "45.2",
                        "120", "0.833", "0.167", "0"]  # fmt: skip
    assert cells[4][3:6] == ["0.500", "—", "—"] and cells[4][-3:] == ["0.750", "0.250", "1"]
    assert "Not plotted (no value): Qwen/Qwen3-30B-A3B-Instruct-2507 · low" in page
    number = re.compile(r"^(—|\d{1,3}(,\d{3})*(\.\d+)?)$")
    assert all(number.match(c) for row in cells for c in row[2:])
    # Self-contained: one script (the sorter), nothing loaded (an image in an answer stays a
    # link), the hostile answer escaped.
    assert page.count("<script>") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert " src=" not in page and "<link" not in page and "<img" not in page
    # Settings, both charts and a drill-down per question with its parts.
    for key, value in INFO.items():
        assert f"<dt>{key}</dt><dd>{value}</dd>" in page
    assert page.count('<svg class="chart"') == 2 and "per language" in page
    assert page.count('<details class="question">') == 3
    assert page.count('<details class="reasoning">') == 14  # 15 answers, one failed
    assert page.count("<strong>Judge:</strong> Matches the reference.") == 12
    assert "LLM request failed: 503" in page
    assert '<code class="language-bash">milvus-backup create -n nightly' in page
    assert "[1] faq/storage.md › Storage › Where is data kept? · lines 12–15" in page


def test_retrieval_report_structure() -> None:
    page = retrieval_html(made_up_retrieval(), "ossrag retrieval: milvus-faq.jsonl", INFO)
    assert "None" not in page
    cells = summary_cells(page)
    assert cells == [
        ["ossrag", "3", "0.333", "0.667", "0.667", "0.667", "0.500", "31.0", "31.0"],
        ["tutorial", "3", "0.000", "0.333", "0.333", "0.333", "0.111", "12.5", "12.5"],
    ]
    assert page.count('<details class="question">') == 3
    assert page.count('<span class="badge bad">miss</span>') == 3
    assert "Recall@5 per language" in page and page.count('<svg class="chart"') == 2


@pytest.fixture(scope="module")
def chromium() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM) or not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_reports_sort_in_the_browser(chromium: Any, tmp_path: Path) -> None:
    rows = made_up_rows()
    answers = tmp_path / "answers.html"
    answers.write_text(answers_html(rows, summarise(rows), "ossrag answers: milvus-faq", INFO))
    retrieval = tmp_path / "retrieval.html"
    retrieval.write_text(retrieval_html(made_up_retrieval(), "ossrag retrieval: faq", INFO))
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(answers.as_uri())
    wrap = "(() => { const t = document.querySelector('.table-wrap');"
    wrap += " return t.scrollWidth - t.clientWidth; })()"
    assert page.evaluate(wrap) == 0  # every column in view, no sideways scrolling
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report_answers_top.png"))

    def column(n: int) -> list[str]:
        return page.locator(f"table.sortable tbody td:nth-child({n})").all_inner_texts()

    page.click("th:nth-child(5) button")  # correct (1–5): descending, missing last
    assert column(5) == ["4.67", "4.67", "4.67", "3.67", "—"]
    assert page.get_attribute("th:nth-child(5)", "aria-sort") == "descending"
    page.click("th:nth-child(5) button")
    assert column(5) == ["3.67", "4.67", "4.67", "4.67", "—"]
    page.click("th:nth-child(8) button")  # answer p50 (ms): numbers, not strings
    assert column(8) == ["5,201", "2,451", "1,831", "1,200", "901"]
    page.click("th:nth-child(1) button")
    assert column(1) == [
        "Qwen/Qwen3-30B-A3B-Instruct-2507", "gpt-oss-20b", "gpt-oss-20b",
        "gpt-oss-120b", "gpt-oss-120b",
    ]  # fmt: skip
    page.screenshot(path=str(ARTIFACTS / "report_answers.png"), full_page=True)
    page.click("details.question >> nth=1")
    page.click("details.question >> nth=1 >> details.reasoning summary >> nth=0")
    page.screenshot(path=str(ARTIFACTS / "report_answers_question.png"), full_page=True)
    assert serious_violations(page) == []
    page.goto(retrieval.as_uri())
    page.click("th:nth-child(7) button")
    assert column(1) == ["ossrag", "tutorial"]
    page.screenshot(path=str(ARTIFACTS / "report_retrieval.png"), full_page=True)
    print(f"screenshots: {ARTIFACTS}/report_*.png")
    assert serious_violations(page) == []
    assert all(url.startswith("file://") for url in requests)
    page.close()
