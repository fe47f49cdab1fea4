"""Terminal rendering shared by `ossrag ask` and `ossrag chat`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

# C0 controls but newline and tab, DEL, C1 controls (ESC and CSI among them), and the Unicode
# bidirectional overrides that can make a line read differently from what it holds.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """`text` with every character that could steer a terminal written as a visible escape
    (ESC becomes `\\x1b`), so a document or a model can never retitle or clear the screen."""
    return _UNSAFE.sub(_visible, text)


def shown(text: str) -> str:
    """`text` made terminal-safe and escaped for interpolation into rich markup."""
    from rich.markup import escape  # rich loads when something is printed with it

    return escape(terminal_safe(text))


class StreamPrinter:
    """Streams the answer to `out`; reasoning, when shown, goes dimmed to `err`, kept apart."""

    def __init__(self, out: Console, err: Console, show_reasoning: bool) -> None:
        self.out, self.err, self.show_reasoning = out, err, show_reasoning
        self._in_reasoning = False

    def reasoning(self, text: str) -> None:
        if not self.show_reasoning:
            return
        if not self._in_reasoning:
            self.err.print("[dim italic]reasoning:[/]")
            self._in_reasoning = True
        self.err.print(terminal_safe(text), end="", style="dim italic", markup=False)

    def content(self, text: str) -> None:
        if self._in_reasoning:
            self.err.print()
            self._in_reasoning = False
        self.out.print(terminal_safe(text), end="", markup=False)
