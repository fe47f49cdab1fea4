"""The engine's answer events on a terminal, the same for `ossrag ask` and `ossrag chat`."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from ossrag.console import StreamPrinter, shown
from ossrag.generate.agent import ToolStep
from ossrag.generate.answer import Answer, Retrieved, Rewritten
from ossrag.generate.llm import ContentDelta, ReasoningDelta
from ossrag.records import Passage


class EventPrinter:
    """Prints each event as it comes: the rewritten question and the agent's tool steps dimmed
    and notices in yellow on stderr, reasoning (when shown) dimmed on stderr, the answer on
    stdout; `quiet` prints nothing (JSON output). Keeps the passages and the final Answer."""

    def __init__(
        self, out: Console, err: Console, show_reasoning: bool, *, quiet: bool = False
    ) -> None:
        self.err, self.quiet = err, quiet
        self.stream = StreamPrinter(out, err, show_reasoning and not quiet)
        self.passages: list[Passage] = []
        self.answer: Answer | None = None

    def __call__(self, event: Any) -> None:
        if isinstance(event, Retrieved):
            self.passages = event.result.passages
            self._note(event.result.notice)
        elif isinstance(event, Rewritten):
            self._dim(f"searching for: {event.question}")
        elif isinstance(event, ToolStep):
            self._dim(event.summary)
        elif isinstance(event, ReasoningDelta):
            self.stream.reasoning(event.text)
        elif isinstance(event, ContentDelta):
            if not self.quiet:
                self.stream.content(event.text)
        elif isinstance(event, Answer):
            self.answer = event

    def _dim(self, text: str) -> None:
        if not self.quiet:
            self.err.print(f"[dim]{shown(text)}[/]")

    def _note(self, text: str) -> None:
        if text and not self.quiet:
            self.err.print(f"[yellow]note:[/] {shown(text)}")
