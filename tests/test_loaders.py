from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ossrag.errors import LoadError
from ossrag.load import files as loaders
from ossrag.load import registry
from ossrag.load.files import (
    IGNORED_DIRS,
    SUPPORTED_SUFFIXES,
    Found,
    Skipped,
    discover,
    load,
    matches,
)
from ossrag.load.registry import Loader


def write(path: Path, content: str | bytes = "# Title\n\ntext\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def sources(results: list[Found | Skipped]) -> list[str]:
    return [r.source for r in results if isinstance(r, Found)]


def found_one(path: Path) -> Found:
    (result,) = list(discover([path]))
    assert isinstance(result, Found), result
    return result


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for rel in [
        "a.md",
        "b.markdown",
        "c.txt",
        "d.rst",
        "UPPER.MD",
        "sub/e.md",
        "sub/deeper/f.md",
        "faq/g.md",
        "drafts/h.md",
        "sub/drafts/i.md",
        ".hidden.md",
        ".hidden_dir/j.md",
        "node_modules/pkg/readme.md",
        "__pycache__/k.md",
        ".venv/lib/l.md",
        "venv/m.md",
        "site-packages/n.md",
        "dist/o.md",
    ]:
        write(root / rel)
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\0\0")
    write(root / "notes.xlsx", b"PK\x03\x04")
    write(root / "Makefile", "all:\n")
    return root


# --------------------------------------------------------------------------- discover


def test_discover_walks_sorted_skipping_hidden_junk_and_unsupported(tree: Path) -> None:
    results = list(discover([tree]))
    assert all(isinstance(r, Found) for r in results)
    assert sources(results) == [
        "UPPER.MD",
        "a.md",
        "b.markdown",
        "c.txt",
        "d.rst",
        "drafts/h.md",
        "faq/g.md",
        "sub/deeper/f.md",
        "sub/drafts/i.md",
        "sub/e.md",
    ]
    for r in results:
        assert isinstance(r, Found)
        assert r.root == tree.resolve()
        assert r.path == r.root / r.source
        assert r.path.is_file()


def test_ignored_dirs_constant_covers_common_junk() -> None:
    for name in ["node_modules", "__pycache__", ".git", "venv", ".venv", "site-packages", ".tox"]:
        assert name in IGNORED_DIRS


def test_discover_order_does_not_depend_on_creation_order(tree: Path, tmp_path: Path) -> None:
    found = [r for r in discover([tree]) if isinstance(r, Found)]
    again = tmp_path / "again"
    for r in reversed(found):  # the same files, written last-first
        write(again / r.source)
    assert sources(list(discover([again]))) == [r.source for r in found]
    assert sources(list(discover([again / "sub", again / "a.md"]))) == [
        "deeper/f.md", "drafts/i.md", "e.md", "a.md"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (
            ["*.md"],
            [],
            ["a.md", "drafts/h.md", "faq/g.md", "sub/deeper/f.md", "sub/drafts/i.md", "sub/e.md"],
        ),
        (
            ["*.md"],
            ["faq/*"],
            ["a.md", "drafts/h.md", "sub/deeper/f.md", "sub/drafts/i.md", "sub/e.md"],
        ),
        (
            [],
            ["sub"],
            ["UPPER.MD", "a.md", "b.markdown", "c.txt", "d.rst", "drafts/h.md", "faq/g.md"],
        ),
        (["sub/**/*.md"], [], ["sub/deeper/f.md", "sub/drafts/i.md", "sub/e.md"]),
        (["**/e.md"], [], ["sub/e.md"]),
        (["*.md"], ["drafts", "sub/deeper/*"], ["a.md", "faq/g.md", "sub/e.md"]),
        (["faq"], [], ["faq/g.md"]),
        (["*.txt", "*.rst"], [], ["c.txt", "d.rst"]),
    ],
)
def test_discover_include_exclude(
    tree: Path, include: list[str], exclude: list[str], expected: list[str]
) -> None:
    assert sources(list(discover([tree], include=include, exclude=exclude))) == expected


def test_matches_semantics() -> None:
    assert matches("a.md", "*.md")
    assert matches("x/y/a.md", "*.md")  # '*' crosses '/'
    assert matches("faq/a.md", "faq/*")
    assert matches("faq/sub/a.md", "faq/*")
    assert matches("faq/sub/a.md", "faq")  # everything below a matching directory
    assert matches("faq/sub/a.md", "faq/")
    assert matches("a/drafts/b.md", "drafts")  # slash-less pattern: any component
    assert matches("a/README.md", "README.md")
    assert matches("docs/a.md", "docs/**/*.md")  # '**/' may match no directory
    assert matches("docs/x/y/a.md", "docs/**/*.md")
    assert matches("a.md", "./a.md")
    assert not matches("faq.md", "faq/*")
    assert not matches("a/faqs/b.md", "faq")
    assert not matches("a.markdown", "*.md")
    assert not matches("A.md", "a.md")  # case-sensitive
    assert not matches("a.md", "")


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "a.md")
    write(root / "sub/b.md")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "self").symlink_to(".", target_is_directory=True)
    (root / "link.md").symlink_to(root / "a.md")  # same file twice: yielded once
    assert sources(list(discover([root]))) == ["a.md", "sub/b.md"]


def test_symlinked_dir_outside_root_is_followed(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere/x.md")
    root = tmp_path / "docs"
    write(root / "a.md")
    (root / "ext").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert sources(list(discover([root]))) == ["a.md", "ext/x.md"]


def test_broken_symlink_with_supported_suffix_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "a.md")
    (root / "gone.md").symlink_to(root / "missing.md")
    (root / "gone.png").symlink_to(root / "missing.png")  # not a document: silent
    results = list(discover([root]))
    assert sources(results) == ["a.md"]
    skipped = [r for r in results if isinstance(r, Skipped)]
    assert [(s.path.name, s.reason) for s in skipped] == [("gone.md", "broken symbolic link")]


def test_explicit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "docs/sub/page.md")
    r = found_one(f)
    assert r.root == (tmp_path / "docs/sub").resolve()
    assert r.source == "page.md"
    assert r.path == r.root / "page.md"
    # relative path, and hidden file named explicitly is fine
    h = write(tmp_path / "docs/.secret.md")
    monkeypatch.chdir(tmp_path / "docs")
    r = found_one(Path(".secret.md"))
    assert r.source == ".secret.md"
    assert r.root == (tmp_path / "docs").resolve()
    assert r.path.samefile(h)


def test_explicit_unsupported_file_is_skipped(tmp_path: Path) -> None:
    f = write(tmp_path / "report.xlsx", b"PK\x03\x04")
    (result,) = list(discover([f]))
    assert isinstance(result, Skipped)
    assert result.path == f
    assert "unsupported file type '.xlsx'" in result.reason
    assert ".md" in result.reason


def test_missing_path_is_skipped(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    results = list(discover([missing, tmp_path / "nope.md"]))
    assert results == [
        Skipped(missing, "no such file or directory"),
        Skipped(tmp_path / "nope.md", "no such file or directory"),
    ]


def test_explicit_file_filtered_and_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    a = write(root / "a.md")
    results = list(discover([root, a], exclude=["b*"]))
    assert sources(results) == ["a.md"]
    assert results[1] == Skipped(a, "already included")
    (r,) = list(discover([a], exclude=["a.md"]))
    assert r == Skipped(a, "excluded by pattern 'a.md'")
    (r,) = list(discover([a], include=["*.txt"]))
    assert r == Skipped(a, "not matched by any include pattern")


def test_multiple_roots_and_hidden_named_root(tmp_path: Path) -> None:
    write(tmp_path / ".notes/n.md")
    write(tmp_path / "docs/d.md")
    results = list(discover([tmp_path / "docs", tmp_path / ".notes"]))
    assert [(r.root.name, r.source) for r in results if isinstance(r, Found)] == [
        ("docs", "d.md"),
        (".notes", "n.md"),
    ]


# --------------------------------------------------------------------------- load


def test_load_document(tmp_path: Path) -> None:
    raw = "\ufeff# Title\r\n\r\nline two\rline three\n".encode()
    f = write(tmp_path / "docs/page.md", raw)
    found = found_one(tmp_path / "docs")
    doc = load(found)
    assert doc.text == "# Title\n\nline two\nline three\n"
    assert doc.source == "page.md"
    assert doc.root == str((tmp_path / "docs").resolve())
    assert doc.sha256 == hashlib.sha256(raw).hexdigest()
    assert doc.mtime == f.stat().st_mtime
    assert doc.meta == {"format": "markdown"}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.md", "markdown"), ("a.markdown", "markdown"), ("a.txt", "text"), ("a.rst", "rst")],
)
def test_load_formats(tmp_path: Path, name: str, fmt: str) -> None:
    write(tmp_path / name, "hello\n")
    assert load(found_one(tmp_path / name)).meta["format"] == fmt


def load_error(tmp_path: Path, content: bytes, name: str = "bad.md", **kw: int) -> LoadError:
    write(tmp_path / name, content)
    with pytest.raises(LoadError) as info:
        load(found_one(tmp_path / name), **kw)
    err = info.value
    assert err.source == name
    assert str(err) == f"{name}: {err.reason}"
    assert "\n" not in str(err)
    return err


def test_load_empty(tmp_path: Path) -> None:
    assert load_error(tmp_path, b"").reason == "empty file"
    assert "empty" in load_error(tmp_path, b"  \n\n\t\n", "blank.md").reason


def test_load_binary(tmp_path: Path) -> None:
    err = load_error(tmp_path, b"# hi\n\x00\x01\x02 binary")
    assert err.reason.startswith("binary content")
    assert "offset 5" in err.reason


def test_load_invalid_utf8(tmp_path: Path) -> None:
    err = load_error(tmp_path, b"ok line\nabc\xff\xfe rest")
    assert "invalid UTF-8" in err.reason
    assert "byte offset 11" in err.reason
    assert "line 2" in err.reason
    # the offset is into the raw file, BOM included
    err = load_error(tmp_path, b"\xef\xbb\xbfab\xff", "bom.md")
    assert "byte offset 5" in err.reason
    # latin-1 text is not silently mis-decoded
    assert "invalid UTF-8" in load_error(tmp_path, "café".encode("latin-1"), "l1.md").reason


def test_load_too_large(tmp_path: Path) -> None:
    err = load_error(tmp_path, b"x" * 2000, max_bytes=1000)
    assert "too large" in err.reason
    assert "2,000" in err.reason
    assert "1,000" in err.reason
    write(tmp_path / "ok.md", b"x" * 1000)
    assert load(found_one(tmp_path / "ok.md"), max_bytes=1000).text == "x" * 1000


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: permission bits do not stop root from reading a file",
)
def test_load_unreadable(tmp_path: Path) -> None:
    f = write(tmp_path / "secret.md")
    found = found_one(f)
    f.chmod(0)
    try:
        with pytest.raises(LoadError) as info:
            load(found)
        assert info.value.reason == "permission denied"
    finally:
        f.chmod(0o644)


def test_load_permission_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same as above, but runs as root too: the OS refusal is simulated."""
    f = write(tmp_path / "secret.md")
    found = found_one(f)

    def refuse(*_args: object, **_kw: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(loaders.os, "open", refuse)
    with pytest.raises(LoadError, match=r"^secret\.md: permission denied$"):
        load(found)


def test_load_vanished_file(tmp_path: Path) -> None:
    f = write(tmp_path / "gone.md")
    found = found_one(f)
    f.unlink()
    with pytest.raises(LoadError, match=r"^gone\.md: no such file or directory$"):
        load(found)


def test_register_loader(tmp_path: Path) -> None:
    try:
        registry.register_loader(
            ".SHOUT", Loader(format="text", extract=lambda _p, data: data.decode().upper())
        )
        assert ".shout" in SUPPORTED_SUFFIXES  # a live view of the registry
        write(tmp_path / "docs/a.shout", "hello")
        (found,) = list(discover([tmp_path / "docs"]))
        assert isinstance(found, Found)
        doc = load(found)
        assert doc.text == "HELLO"
        assert doc.meta == {"format": "text"}
        with pytest.raises(ValueError, match="already registered"):
            registry.register_loader(".shout", Loader("text", lambda _p, d: ""))
        with pytest.raises(ValueError, match="suffix"):
            registry.register_loader("shout", Loader("text", lambda _p, d: ""))
    finally:
        registry._LOADERS.pop(".shout", None)
    assert ".shout" not in SUPPORTED_SUFFIXES


def test_supported_suffixes() -> None:
    assert {".markdown", ".md", ".rst", ".txt", ".pdf", ".html", ".docx", ".ipynb", ".py"} <= set(
        SUPPORTED_SUFFIXES
    )
