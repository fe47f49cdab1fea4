"""PDF, HTML, .docx, .ipynb and source-code loaders on real files made here."""

from __future__ import annotations

import json
from pathlib import Path

import docx
import pypdf
import pytest
from fpdf import FPDF

from ossrag.chunk.chunker import chunk_document
from ossrag.config import load_settings
from ossrag.embed.encoders import Embedder
from ossrag.engine.index import Index
from ossrag.errors import LoadError
from ossrag.load.files import Found, discover, load
from ossrag.records import Chunk, Document

PAGES = [
    "Storage layout. Segments are sealed once they reach their size limit and are then flushed "
    "to object storage by the data nodes.",
    "Compaction merges small segments into larger ones and drops deleted rows for good, which "
    "keeps searches fast over time.",
    "Query nodes load sealed segments into memory and answer searches with their indexes, "
    "while growing segments are searched by brute force.",
]


def write_pdf(path: Path, pages: list[str]) -> Path:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def load_file(path: Path) -> Document:
    return load(Found(root=path.parent, path=path, source=path.name))


def chunks_of(doc: Document, embedder: Embedder, max_tokens: int = 256) -> list[Chunk]:
    return chunk_document(
        doc, max_tokens=max_tokens, count_tokens=embedder.count_tokens, overlap_tokens=0
    )


def reason(path: Path) -> str:
    with pytest.raises(LoadError) as info:
        load_file(path)
    assert "\n" not in str(info.value)
    return info.value.reason


# --------------------------------------------------------------------------- PDF


def test_pdf_pages_become_chunk_page_numbers(tmp_path: Path, embedder: Embedder) -> None:
    doc = load_file(write_pdf(tmp_path / "manual.pdf", PAGES))
    assert doc.meta == {"format": "pages"}
    assert doc.text.count("\n\f\n") == 2
    # a small window so that every page is its own chunk
    chunks = chunks_of(doc, embedder, max_tokens=40)
    assert [c.meta["page"] for c in chunks] == [1, 2, 3]
    for chunk, text in zip(chunks, PAGES, strict=True):
        assert " ".join(chunk.text.split()) == text
    lines = doc.text.split("\n")
    for c in chunks:  # line ranges point into the extracted text
        assert lines[c.start_line - 1].strip() in c.text


def test_pdf_without_text_is_skipped_with_reason(tmp_path: Path) -> None:
    assert "no extractable text in 2 page(s)" in reason(write_pdf(tmp_path / "scan.pdf", ["", ""]))


def test_pdf_sniffed_by_content(tmp_path: Path) -> None:
    fake = tmp_path / "fake.pdf"
    fake.write_text("just some text with a pdf name\n")
    assert reason(fake) == "not a PDF (no %PDF- header)"
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(write_pdf(tmp_path / "ok.pdf", PAGES).read_bytes()[:300])
    assert reason(broken).startswith("unreadable PDF")


def test_encrypted_pdf_is_skipped(tmp_path: Path) -> None:
    writer = pypdf.PdfWriter(clone_from=write_pdf(tmp_path / "plain.pdf", PAGES))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    locked = tmp_path / "locked.pdf"
    writer.write(locked)
    assert reason(locked) == "encrypted PDF (needs a password)"


# --------------------------------------------------------------------------- HTML

PAGE_HTML = """<!doctype html>
<html><head><title>Ignored when there is an h1</title><style>p {color: red}</style></head>
<body>
<nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
<header>Site banner</header>
<main>
  <h1>Backups</h1>
  <p>Back up the <b>bucket</b> with the
     backup tool.</p>
  <h2>Restore</h2>
  <ul><li>Stop the cluster.</li><li>Copy the bucket back.</li></ul>
  <pre>restore --from s3://bucket
  --force</pre>
  <table><tr><th>Tool</th><th>Speed</th></tr><tr><td>backup</td><td>fast</td></tr></table>
  <script>console.log("not content")</script>
</main>
<footer>Copyright</footer>
</body></html>
"""


def test_html_main_content_as_markdown(tmp_path: Path, embedder: Embedder) -> None:
    path = tmp_path / "backup.html"
    path.write_text(PAGE_HTML)
    doc = load_file(path)
    assert doc.meta == {"format": "markdown"}
    assert doc.text == (
        "# Backups\n\n"
        "Back up the bucket with the backup tool.\n\n"
        "## Restore\n\n"
        "- Stop the cluster.\n\n"
        "- Copy the bucket back.\n\n"
        "```\nrestore --from s3://bucket\n  --force\n```\n\n"
        "Tool | Speed\n\n"
        "backup | fast\n"
    )
    paths = {c.heading_path for c in chunks_of(doc, embedder)}
    assert ("Backups", "Restore") in paths


def test_html_without_main_uses_body_and_title(tmp_path: Path) -> None:
    path = tmp_path / "page.htm"
    path.write_text(
        "<html><head><title>Release notes</title></head><body><nav>menu</nav>"
        "<div>Version 2 adds <i>BM25</i>.<div>Nested block.</div>tail</div></body></html>"
    )
    assert load_file(path).text == (
        "# Release notes\n\nVersion 2 adds BM25.\n\nNested block.\n\ntail\n"
    )


def test_binary_html_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "image.html"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    assert reason(path) == "not HTML: binary content (NUL byte at offset 8)"


# --------------------------------------------------------------------------- Word


def test_docx_heading_styles_become_headings(tmp_path: Path, embedder: Embedder) -> None:
    document = docx.Document()
    document.add_heading("Operations guide", level=0)
    document.add_heading("Scaling", level=1)
    document.add_paragraph("Add query nodes to serve more searches.")
    document.add_paragraph("Watch memory first", style="List Bullet")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "nodes"
    table.rows[0].cells[1].text = "3"
    document.add_heading("Limits", level=2)
    document.add_paragraph("One collection holds up to 65,536 partitions.")
    path = tmp_path / "ops.docx"
    document.save(str(path))
    doc = load_file(path)
    assert doc.text == (
        "# Operations guide\n\n# Scaling\n\nAdd query nodes to serve more searches.\n\n"
        "- Watch memory first\n\nnodes | 3\n\n## Limits\n\n"
        "One collection holds up to 65,536 partitions.\n"
    )
    paths = {c.heading_path for c in chunks_of(doc, embedder)}
    assert ("Scaling", "Limits") in paths


def test_docx_sniffed_by_content(tmp_path: Path) -> None:
    legacy = tmp_path / "old.docx"
    legacy.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100)
    assert "legacy Word .doc" in reason(legacy)
    text = tmp_path / "text.docx"
    text.write_text("not a zip")
    assert reason(text) == "not a .docx file (not a ZIP package)"
    broken = tmp_path / "broken.docx"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    assert reason(broken).startswith("unreadable .docx")


# --------------------------------------------------------------------------- notebooks


def notebook(cells: list[dict[str, object]]) -> str:
    return json.dumps(
        {
            "cells": cells,
            "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def test_notebook_markdown_and_fenced_code(tmp_path: Path, embedder: Embedder) -> None:
    path = tmp_path / "demo.ipynb"
    path.write_text(
        notebook(
            [
                {"cell_type": "markdown", "metadata": {}, "source": ["# Demo\n", "\n", "Intro."]},
                {
                    "cell_type": "code",
                    "metadata": {},
                    "source": "client.search(data=[v])",
                    "outputs": [{"output_type": "stream", "text": "SECRET OUTPUT"}],
                    "execution_count": 1,
                },
                {"cell_type": "raw", "metadata": {}, "source": "raw stuff"},
                {"cell_type": "markdown", "metadata": {}, "source": "## Next\nMore."},
            ]
        )
    )
    doc = load_file(path)
    assert doc.text == (
        "# Demo\n\nIntro.\n\n```python\nclient.search(data=[v])\n```\n\n## Next\nMore.\n"
    )
    chunks = chunks_of(doc, embedder)
    assert {c.heading_path for c in chunks} == {("Demo",), ("Demo", "Next")}


def test_bad_notebooks_are_skipped(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [\n  {"cell_type": "markdown",\n')
    assert reason(bad) == "not a Jupyter notebook: invalid JSON at line 3"
    wrong = tmp_path / "list.ipynb"
    wrong.write_text("[1, 2]")
    assert reason(wrong) == "not a Jupyter notebook: top level is not an object"


# --------------------------------------------------------------------------- source code


def test_source_code_is_plain_text(tmp_path: Path) -> None:
    src = tmp_path / "tool.py"
    src.write_text("def main():\n    return 1\r\n")
    doc = load_file(src)
    assert (doc.text, doc.meta) == ("def main():\n    return 1\n", {"format": "code"})
    binary = tmp_path / "compiled.py"
    binary.write_bytes(b"\x00\x01\x02 not source")
    assert reason(binary) == "binary content (NUL byte at offset 0)"


def test_discover_finds_every_format(tmp_path: Path) -> None:
    for name in ["a.pdf", "b.html", "c.HTM", "d.docx", "e.ipynb", "f.py", "g.ts", "h.png"]:
        (tmp_path / name).write_bytes(b"x")
    found = [item.source for item in discover([tmp_path]) if isinstance(item, Found)]
    assert found == ["a.pdf", "b.html", "c.HTM", "d.docx", "e.ipynb", "f.py", "g.ts"]


# --------------------------------------------------------------------------- end to end


def test_mixed_formats_ingest_and_cite_pages(tmp_path: Path, embedder: Embedder) -> None:
    index = Index(load_settings(db=str(tmp_path / "s.db"), chunk_tokens=48), embedder=embedder)
    root = tmp_path / "mixed"
    root.mkdir()
    write_pdf(root / "manual.pdf", PAGES)
    (root / "backup.html").write_text(PAGE_HTML)
    (root / "util.py").write_text('def compact():\n    """Merge small segments."""\n')
    report = index.ingest([root])
    assert report.files_added == 3 and not report.skipped
    rows = index.store.get_chunks(list(index.store.chunk_ids()))
    pdf = sorted((r["start_line"], r["meta"]["page"]) for r in rows if r["source"] == "manual.pdf")
    assert pdf == [(1, 1), (2, "1-2"), (5, "2-3")]  # overlap repeats the previous page's end
    assert all(r["meta"] == {} for r in rows if r["source"] != "manual.pdf")
    top = index.search("deleted rows are dropped for good", k=1).passages[0]
    assert (top.source, top.meta) == ("manual.pdf", {"page": "1-2"})
    hit = index.search("stop the cluster, copy the bucket back", k=1).passages[0]
    assert (hit.source, hit.heading) == ("backup.html", "Backups › Restore")
    index.close()
