"""Chat: a conversation over the index, with follow-ups rewritten into standalone questions.

The engine (Index.ask_stream) rewrites each follow-up through the LLM (one short completion, low
effort) into a question that stands alone, which is then retrieved for and answered with the
earlier turns as history.
History keeps questions and answers only: earlier reasoning is dropped, as harmony expects.
Commands: ``/effort low|medium|high``, ``/sources``, ``/reasoning on|off``, ``/reset``,
``/help``, ``/quit``. Lines come from prompt_toolkit when installed and on a terminal, else
from ``input()`` (or plain stdin lines, for scripting).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from ossrag.cli.render import EventPrinter
from ossrag.cli.words import cli_message
from ossrag.console import shown, terminal_safe
from ossrag.engine.index import Index
from ossrag.errors import LLMError
from ossrag.generate.answer import Answer, AskEvent, Retrieved
from ossrag.generate.claims import report_lines
from ossrag.generate.llm import EFFORTS
from ossrag.records import Passage
from ossrag.store.filters import Filter

MAX_TURNS = 6  # earlier question/answer pairs kept as history
HELP = (
    "/effort low|medium|high · /sources · /reasoning on|off · /reset · /quit — "
    "anything else is a question"
)


@dataclass
class ChatSession:
    """The state of one conversation: history, effort, last sources, reasoning display."""

    index: Index
    effort: str | None = None
    show_reasoning: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    sources: list[Passage] = field(default_factory=list)
    where: Filter | None = None  # every question searches only these files

    def ask(self, question: str) -> Iterator[AskEvent]:
        """Rewrite, retrieve and answer (see Index.ask_stream); the turn joins the history once
        answered."""
        events = self.index.ask_stream(
            question, effort=self.effort, history=self.history, where=self.where
        )
        for event in events:
            if isinstance(event, Retrieved):
                self.sources = event.result.passages
            if isinstance(event, Answer):
                self.history += [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": event.text},
                ]
                del self.history[: -2 * MAX_TURNS]
            yield event

    def command(self, line: str) -> str | None:
        """Run a slash command; the reply to print, or None to quit."""
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip().lower()
        if name in ("quit", "exit"):
            return None
        if name == "effort" and arg in EFFORTS:
            self.effort = arg
            return f"reasoning effort: {arg}"
        if name == "reasoning" and arg in ("on", "off"):
            self.show_reasoning = arg == "on"
            return f"reasoning display: {arg}"
        if name == "reset":
            self.history.clear()
            self.sources = []
            return "history cleared"
        if name == "sources":
            return "\n".join(_source_line(n, p) for n, p in enumerate(self.sources, 1)) or (
                "no sources yet"
            )
        return HELP


def _source_line(n: int, p: Passage) -> str:
    return f"[{n}] {p.location}"


def input_lines(prompt: str = "› ") -> Iterable[str]:
    """Lines typed by the user: prompt_toolkit or input() on a terminal, stdin otherwise."""
    if not sys.stdin.isatty():
        yield from (line.rstrip("\n") for line in sys.stdin)
        return
    read: Callable[[str], str] = input
    try:
        from prompt_toolkit import PromptSession

        read = PromptSession().prompt
    except ImportError:
        pass
    while True:
        try:
            yield read(prompt)
        except EOFError:
            return


def run(session: ChatSession, lines: Iterable[str], out: Console, err: Console) -> None:
    """The conversation loop: questions are answered, errors shown, commands run."""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/"):
            reply = session.command(line)
            if reply is None:
                return
            err.print(f"[dim]{shown(reply)}[/]")
            continue
        try:
            _answer(session, line, out, err)
        except LLMError as exc:
            err.print(f"[bold red]error:[/] {shown(cli_message(exc))}")


def _answer(session: ChatSession, question: str, out: Console, err: Console) -> None:
    printer = EventPrinter(out, err, session.show_reasoning)
    for event in session.ask(question):
        printer(event)
    if (answer := printer.answer) is not None:
        cited = ", ".join(f"[{n}] {answer.passages[n - 1].source}" for n in answer.cited)
        out.print()
        if cited:
            err.print(f"[dim]sources: {shown(cited)}[/]")
        for line, style in report_lines(answer.claims):
            err.print(terminal_safe(line), style=style, markup=False)
