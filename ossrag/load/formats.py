"""Loaders for PDF, HTML, Word (.docx), Jupyter notebooks and source code.

Each turns a file's bytes into text the chunker already understands, after a content sniff that
turns a wrong file behind a known suffix into a one-line skip reason:

* PDF (pypdf) → format ``"pages"``: each page's text, pages separated by a line holding only a
  form feed (``\\f``). Line numbers count lines of that extracted text; the chunker gives every
  chunk ``meta["page"]`` (1-based, the page the chunk starts on).
* HTML (selectolax) → markdown: the main content (``<main>``, ``<article>``, ``[role=main]``,
  else ``<body>`` without navigation, header, footer, scripts), ``<h1>``–``<h6>`` as ``#``
  headings (the page ``<title>`` when there is no ``<h1>``), lists as ``-`` items, ``<pre>``
  as fenced code, table rows as ``a | b``.
* ``.docx`` (python-docx) → markdown: "Title"/"Heading N" paragraph styles become headings,
  list styles ``-`` items, tables ``a | b`` rows.
* ``.ipynb`` (JSON) → markdown: markdown cells as they are, code cells fenced in the notebook's
  language; outputs are left out.
* Source code (``.py``, ``.js``, …) → plain text, strict UTF-8.

Heavy libraries are imported on first use, so importing ossrag stays fast.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ossrag.errors import one_line
from ossrag.load.registry import (
    ContentError,
    Loader,
    decode_text,
    normalize_newlines,
    register_loader,
)

__all__ = ["CODE_SUFFIXES", "PAGE_BREAK", "docx_text", "html_text", "notebook_text", "pdf_text"]

#: The line between two pages of a PDF's text.
PAGE_BREAK = "\f"

CODE_SUFFIXES = (
    ".py .pyi .js .mjs .cjs .jsx .ts .tsx .go .rs .java .kt .scala .c .h .cc .cpp .hpp .cs .rb "
    ".php .swift .lua .r .jl .sh .bash .zsh .sql .proto"
).split()

_SNIFF = 8192
_SPACES = re.compile(r"\s+")


def _sniff_not_binary(data: bytes, kind: str) -> None:
    nul = data.find(b"\0", 0, _SNIFF)
    if nul >= 0:
        raise ContentError(f"not {kind}: binary content (NUL byte at offset {nul})")


# --------------------------------------------------------------------------- PDF


def pdf_text(_path: Path, data: bytes) -> str:
    """Every page's text, pages separated by a form-feed line."""
    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise ContentError("not a PDF (no %PDF- header)")
    import logging

    import pypdf
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns on every harmless quirk
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ContentError("encrypted PDF (needs a password)")
        pages = [normalize_newlines(page.extract_text() or "") for page in reader.pages]
    except ContentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise ContentError(f"unreadable PDF: {one_line(str(exc) or type(exc).__name__)}") from None
    if not any(page.strip() for page in pages):
        raise ContentError(
            f"PDF has no extractable text in {len(pages)} page(s) (scanned? run OCR first)"
        )
    return f"\n{PAGE_BREAK}\n".join(page.strip("\n").replace(PAGE_BREAK, " ") for page in pages)


# --------------------------------------------------------------------------- HTML

_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_DROP = "script, style, noscript, template, svg, iframe, nav, header, footer, aside, form, button"
_BLOCKS = frozenset(
    "address article aside blockquote body dd details div dl dt fieldset figcaption figure "
    "footer header hr li main ol p section summary table tbody thead tfoot tr td th ul".split()
)


def html_text(_path: Path, data: bytes) -> str:
    """The page's main content as markdown-ish text with ``#`` headings."""
    _sniff_not_binary(data, "HTML")
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(data)
    title_node = tree.css_first("title")
    title = _SPACES.sub(" ", title_node.text()).strip() if title_node else ""
    root = next(
        (n for sel in ("main", "article", "[role=main]") if (n := tree.css_first(sel))), None
    )
    if root is None:
        root = tree.body or tree.root
    if root is None:
        raise ContentError("not HTML: nothing to parse")
    for node in root.css(_DROP):
        node.decompose()
    blocks: list[str] = []
    _html_blocks(root, blocks)
    if title and not any(b.startswith("# ") for b in blocks):
        blocks.insert(0, f"# {title}")
    return "\n\n".join(blocks) + "\n"


def _html_blocks(node: Any, out: list[str], prefix: str = "") -> None:
    """Append ``node``'s children as markdown blocks to ``out``."""
    inline: list[str] = []

    def flush() -> None:
        text = _SPACES.sub(" ", "".join(inline)).strip()
        inline.clear()
        if text:
            out.append(prefix + text)

    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            inline.append(child.text(deep=False))
        elif tag in _HEADINGS:
            flush()
            heading = _SPACES.sub(" ", child.text()).strip()
            if heading:
                out.append("#" * _HEADINGS[tag] + " " + heading)
        elif tag == "pre":
            flush()
            code = child.text().strip("\n")
            fence = "~~~~" if "```" in code else "```"
            out.append(f"{fence}\n{code}\n{fence}")
        elif tag == "br":
            inline.append("\n")
        elif tag == "tr":
            flush()
            cells = [_SPACES.sub(" ", c.text()).strip() for c in child.css("td, th")]
            if any(cells):
                out.append(" | ".join(cells))
        elif tag == "li":
            flush()
            _html_blocks(child, out, "- ")
        elif tag in _BLOCKS:
            flush()
            _html_blocks(child, out)
        elif tag not in ("-comment", "img", "head", "title", "meta", "link"):
            inline.append(child.text())
    flush()


# --------------------------------------------------------------------------- Word


def docx_text(_path: Path, data: bytes) -> str:
    """Paragraphs and tables in order; heading styles become ``#`` headings."""
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise ContentError("legacy Word .doc format inside a .docx name: save it as .docx")
    if not data.startswith(b"PK\x03\x04"):
        raise ContentError("not a .docx file (not a ZIP package)")
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                for row in item.rows:
                    cells = [" ".join(cell.text.split()) for cell in row.cells]
                    if any(cells):
                        blocks.append(" | ".join(cells))
                continue
            text = " ".join(item.text.split())
            if text:
                blocks.append(_docx_prefix(item.style.name if item.style else "") + text)
    except Exception as exc:  # zip, XML and missing-part errors of many kinds
        raise ContentError(
            f"unreadable .docx: {one_line(str(exc) or type(exc).__name__)}"
        ) from None
    return "\n\n".join(blocks) + "\n"


def _docx_prefix(style: str) -> str:
    if style == "Title":
        return "# "
    if m := re.fullmatch(r"Heading ([1-9])", style):
        return "#" * min(int(m.group(1)), 6) + " "
    if style.startswith("List"):
        return "- "
    return ""


# --------------------------------------------------------------------------- notebooks


def notebook_text(_path: Path, data: bytes) -> str:
    """Markdown cells verbatim, code cells fenced; outputs dropped."""
    text = decode_text(data)
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContentError(f"not a Jupyter notebook: invalid JSON at line {exc.lineno}") from None
    if not isinstance(notebook, dict):
        raise ContentError("not a Jupyter notebook: top level is not an object")
    cells = notebook.get("cells")
    if cells is None:  # nbformat 3 keeps cells in worksheets
        cells = [c for ws in notebook.get("worksheets") or [] for c in ws.get("cells") or []]
    if not isinstance(cells, list):
        raise ContentError("not a Jupyter notebook: 'cells' is not a list")
    meta = notebook.get("metadata") or {}
    language = (meta.get("kernelspec") or {}).get("language") or (
        meta.get("language_info") or {}
    ).get("name", "")
    blocks: list[str] = []
    for cell in cells:
        if not isinstance(cell, dict):
            continue
        source = _cell_source(cell.get("source", cell.get("input", "")))
        if not source.strip():
            continue
        if cell.get("cell_type") == "markdown":
            blocks.append(source.strip("\n"))
        elif cell.get("cell_type") == "code":
            fence = "~~~~" if "```" in source else "```"
            blocks.append(f"{fence}{language}\n{source.strip(chr(10))}\n{fence}")
    return "\n\n".join(blocks) + "\n"


def _cell_source(source: Any) -> str:
    if isinstance(source, list):
        source = "".join(str(part) for part in source)
    return normalize_newlines(str(source))


# --------------------------------------------------------------------------- registration


def _code_text(_path: Path, data: bytes) -> str:
    return decode_text(data)


def _register(suffixes: Iterable[str], fmt: str, extract: Callable[[Path, bytes], str]) -> None:
    for suffix in suffixes:
        register_loader(suffix, Loader(format=fmt, extract=extract), replace=True)


_register([".pdf"], "pages", pdf_text)
_register([".html", ".htm", ".xhtml"], "markdown", html_text)
_register([".docx"], "markdown", docx_text)
_register([".ipynb"], "markdown", notebook_text)
_register(CODE_SUFFIXES, "code", _code_text)
