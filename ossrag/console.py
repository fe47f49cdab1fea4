"""Terminal rendering shared by `ossrag ask` and `ossrag chat`."""

from __future__ import annotations

from rich.console import Console


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
        self.err.print(text, end="", style="dim italic", markup=False)

    def content(self, text: str) -> None:
        if self._in_reasoning:
            self.err.print()
            self._in_reasoning = False
        self.out.print(text, end="", markup=False)
