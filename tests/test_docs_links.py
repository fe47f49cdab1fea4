"""Every relative link in README.md and docs/*.md points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.DOTALL | re.MULTILINE)


def relative_links(page: Path) -> list[str]:
    """The page's link targets outside code, without web addresses or same-page anchors."""
    text = CODE.sub("", page.read_text(encoding="utf-8"))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def test_the_pages_have_links() -> None:
    """The check reads real links: the README links every docs page."""
    linked = {link.split("#")[0] for link in relative_links(REPO / "README.md")}
    docs = {f"docs/{page.name}" for page in PAGES[1:]}
    assert docs <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    """A link's file part (its anchor aside) names an existing file."""
    missing = [
        link
        for link in relative_links(page)
        if not (page.parent / link.split("#")[0]).resolve().is_file()
    ]
    assert missing == []
