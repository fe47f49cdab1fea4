"""Agentic retrieval: gpt-oss searches the documents itself (native tool calls), then answers.

The model gets two tools, ``search_docs(query, k)`` and ``open_source(source, start_line,
end_line)`` (stored chunks of one file around a line range, read-only), and may call them
several times. Passages are numbered globally across tool results, so ``[n]`` in the answer
points at ``Answer.passages[n-1]``. The loop is bounded by a number of tool calls and a time
limit; after that the model must answer from what it has. The model's reasoning goes back with
each tool-call message (``reasoning``: vLLM, Ollama, OpenRouter; ``reasoning_content``: LM Studio,
llama.cpp) so its chain of thought survives across tool calls, as harmony requires.

Servers without tool calling (HTTP 400 mentioning tools, or the call written as JSON text in
``content``, a vLLM quirk without ``--tool-call-parser``) get the single-shot path with a notice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from ossrag.choices import Mode
from ossrag.errors import LLMError, StoreError, setting
from ossrag.generate.answer import Answer, Retrieved, stream_answer
from ossrag.generate.budget import Budget, prompt_tokens
from ossrag.generate.llm import (
    ContentDelta,
    EmptyAnswerError,
    Finished,
    LLMClient,
    ReasoningDelta,
    ToolCall,
)
from ossrag.generate.prompts import AGENT_PROMPT, format_passage, with_instructions
from ossrag.generate.servers import reasoning_field
from ossrag.records import Passage
from ossrag.retrieve.retriever import Retriever, SearchResult, passage_from_row
from ossrag.store.filters import Filter
from ossrag.store.milvus import Store

MAX_K = 10
MAX_OPEN_CHUNKS = 8


FINAL_NOTE = "The tool budget is used up: answer now from the passages above, without tools."
# gpt-oss may say what it is about to do before calling a tool (a harmony "preamble"), and servers
# send that as content. A turn that may still call tools holds back this much text before it
# streams it as the answer; a shorter text followed by tool calls was a preamble.
PREAMBLE_CHARS = 280

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the user's documents; returns numbered passages.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "what to look for"},
                    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 5},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "open_source",
            "description": "Read the stored text of one document between two lines.",
            "parameters": {
                "type": "object",
                "properties": {
                    "source": {"type": "string", "description": "a passage's source path"},
                    "start_line": {"type": "integer", "minimum": 1},
                    "end_line": {"type": "integer", "minimum": 1},
                },
                "required": ["source", "start_line", "end_line"],
            },
        },
    },
]
TOOL_NAMES = frozenset(t["function"]["name"] for t in TOOLS)


@dataclass(frozen=True)
class ToolStep:
    """Progress: one tool call the agent made and what it got (``numbers`` of the passages)."""

    name: str
    arguments: dict[str, Any]
    summary: str  # "searching: …" / "opening: …", for the user
    numbers: tuple[int, ...] = ()
    error: str = ""


AgentEvent: TypeAlias = Retrieved | ToolStep | ReasoningDelta | ContentDelta | Answer


class AgentError(LLMError):
    """The agent could not produce an answer; the message says what to change."""


def tools_unsupported(exc: LLMError) -> bool:
    """An HTTP 400 that is about tool calling (vLLM without a parser, Ollama model, ...)."""
    text = str(exc).lower()
    return exc.status_code == 400 and ("tool" in text or "function" in text)


def json_tool_call(text: str) -> bool:
    """Is this answer really a tool call written as JSON text (servers without a parser)?"""
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(body)
    except ValueError:
        return False
    calls = value if isinstance(value, list) else [value]
    return bool(calls) and all(
        isinstance(c, dict) and (c.get("name") in TOOL_NAMES or c.get("tool") in TOOL_NAMES)
        for c in calls
    )


def _add_usage(total: dict[str, Any] | None, usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if usage is None:
        return total
    merged = dict(total or {})
    for key, value in usage.items():
        if isinstance(value, int):
            merged[key] = merged.get(key, 0) + value
    return merged


class Agent:
    """The tool loop over one index's retriever and store."""

    def __init__(
        self,
        retriever: Retriever,
        store: Store,
        llm: LLMClient,
        budget: Budget,
        *,
        k: int = 5,
        mode: Mode = "hybrid",
        max_calls: int = 6,
        timeout: float = 120.0,
        where: Filter | None = None,
    ) -> None:
        self.where = where  # search_docs keeps to these files
        self.retriever = retriever
        self.store = store
        self.llm = llm
        self.budget = budget
        self.k = k
        self.mode: Mode = mode
        self.max_calls = max_calls
        self.timeout = timeout

    def stream(
        self,
        question: str,
        *,
        effort: str | None = None,
        history: Sequence[dict[str, Any]] = (),
        instructions: str = "",
    ) -> Iterator[AgentEvent]:
        """Yield ToolStep / reasoning / answer events, then the Answer (see the module doc);
        ``instructions`` (the client's own) follow the agent's system prompt."""
        run = _Run(self, question, effort, history, instructions)
        yield from run.events()


class _Run:
    """One question's tool loop: its messages, numbered passages and limits."""

    def __init__(
        self,
        agent: Agent,
        question: str,
        effort: str | None,
        history: Sequence[dict[str, Any]],
        instructions: str = "",
    ) -> None:
        self.agent = agent
        self.question = question
        self.effort = effort
        self.history = history
        self.instructions = instructions
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": with_instructions(AGENT_PROMPT, instructions)},
            *history,
            {"role": "user", "content": question.strip()},
        ]
        self.passages: list[Passage] = []
        self.numbers: dict[str, int] = {}  # chunk id -> passage number
        self.steps: list[str] = []
        self.calls = 0
        self.tool_ms = 0.0
        self.started = time.perf_counter()
        self.full = False  # the context window has no room for more tool results

    # -- the loop

    def events(self) -> Iterator[AgentEvent]:
        agent = self.agent
        reasoning_all: list[str] = []
        usage: dict[str, Any] | None = None
        first_token: float | None = None
        while True:
            out_of_budget = (
                self.full
                or self.calls >= agent.max_calls
                or time.perf_counter() - self.started > agent.timeout
            )
            options: dict[str, Any] = {}
            if out_of_budget:
                self.messages.append({"role": "user", "content": FINAL_NOTE})
            else:
                options = {"tools": TOOLS, "tool_choice": "auto"}
            agent.budget.check(self.messages, options.get("tools", ()))
            text: list[str] = []
            reasoning: list[str] = []
            held: list[str] = []  # text not streamed yet: maybe a preamble or a JSON tool call
            streaming = False  # this turn's text is going out as answer text
            finished: Finished | None = None
            try:
                for event in agent.llm.stream(
                    self.messages,
                    effort=self.effort,
                    max_tokens=agent.budget.answer_tokens,
                    **options,
                ):
                    if isinstance(event, Finished):
                        finished = event
                    elif isinstance(event, ReasoningDelta):
                        reasoning.append(event.text)
                        yield event
                    elif streaming:
                        text.append(event.text)
                        yield event
                    else:
                        text.append(event.text)
                        held.append(event.text)
                        so_far = "".join(held)
                        if so_far.lstrip().startswith("{") or (
                            options and len(so_far) <= PREAMBLE_CHARS
                        ):
                            continue
                        streaming = True
                        held.clear()
                        first_token = first_token or time.perf_counter()
                        yield ContentDelta(so_far)
            except LLMError as exc:
                if not self.calls and tools_unsupported(exc):
                    yield from self._fallback(f"the LLM server rejected tool calling ({exc})")
                    return
                raise
            assert finished is not None  # stream() always ends with Finished or raises
            usage = _add_usage(usage, finished.usage)
            reasoning_all.append("".join(reasoning))
            answer = "".join(text).strip()
            if finished.tool_calls and not out_of_budget:
                if held and (preamble := "".join(held).strip()):  # not answer text: shown apart
                    reasoning_all.append(preamble)
                    yield ReasoningDelta(f"\n{preamble}\n")
                self._record_calls(finished.tool_calls, answer, "".join(reasoning))
                for call in finished.tool_calls:
                    yield self._run_tool(call)
                continue
            if held and json_tool_call(answer):
                yield from self._fallback(
                    "the LLM server returned a tool call as text (no tool-call parser)"
                )
                return
            if held:
                first_token = first_token or time.perf_counter()
                yield ContentDelta(answer)
            if not answer:
                if finished.finish_reason == "length":
                    raise EmptyAnswerError(agent.budget.answer_tokens)
                if finished.tool_calls:
                    raise AgentError(
                        f"the model kept calling tools after {self.calls} tool calls: raise "
                        f"{setting('agent_max_calls')} or {setting('agent_timeout')}"
                    )
            now = time.perf_counter()
            yield Answer(
                question=self.question,
                text=answer,
                reasoning="\n\n".join(r.strip() for r in reasoning_all if r.strip()),
                passages=list(self.passages),
                finish_reason=finished.finish_reason,
                usage=usage,
                timings={
                    "retrieve_ms": self.tool_ms,
                    "ttft_ms": ((first_token or now) - self.started) * 1000,
                    "total_ms": (now - self.started) * 1000,
                },
                notice=self._limit_notice() if out_of_budget else "",
                steps=self.steps,
            )
            return

    def _limit_notice(self) -> str:
        if self.full:
            return "the context window filled up: the agent answered from what it had found"
        if self.calls >= self.agent.max_calls:
            return (
                f"the agent reached its limit of {self.agent.max_calls} tool calls "
                "(agent_max_calls) and answered from what it had found"
            )
        return (
            f"the agent ran out of time ({self.agent.timeout:g} s, agent_timeout) and "
            "answered from what it had found"
        )

    def _fallback(self, reason: str) -> Iterator[AgentEvent]:
        agent = self.agent
        started = time.perf_counter()
        result = agent.retriever.search(self.question, agent.k, agent.mode)
        notice = (
            f"{reason}: answered from a single search instead (for vLLM start it with "
            "--tool-call-parser openai --enable-auto-tool-choice)"
        )
        result = replace(result, notice="; ".join(filter(None, [notice, result.notice])))
        yield from stream_answer(
            self.question,
            result,
            agent.llm,
            effort=self.effort,
            history=self.history,
            retrieve_ms=(time.perf_counter() - started) * 1000,
            budget=agent.budget,
            instructions=self.instructions,
        )

    # -- tools

    def _record_calls(self, calls: Sequence[ToolCall], content: str, reasoning: str) -> None:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ],
        }
        if reasoning:
            config = self.agent.llm.config
            message[reasoning_field(config.base_url, config.preset)] = reasoning
        self.messages.append(message)

    def _run_tool(self, call: ToolCall) -> ToolStep:
        """Run one tool call (bounded, never raising for the model's mistakes) and record it."""
        started = time.perf_counter()
        self.calls += 1
        args: dict[str, Any] = {}
        found: list[Passage] = []
        error = ""
        try:
            if self.calls > self.agent.max_calls:
                raise ValueError("tool-call limit reached: answer now")
            args = call.parse_arguments()
            if call.name == "search_docs":
                summary, found = self._search(args)
            elif call.name == "open_source":
                summary, found = self._open(args)
            else:
                raise ValueError(f"unknown tool {call.name!r}: use {', '.join(sorted(TOOL_NAMES))}")
        except (ValueError, TypeError, KeyError, StoreError) as exc:
            # The model's mistakes, and a store that refuses one request, become a tool error
            # the model can read and work around; they never abort the answer.
            error = str(exc) if not isinstance(exc, KeyError) else f"missing argument {exc}"
            summary = f"{call.name}: {error}"
        content, numbers = self._result_text(call, found, error)
        self.messages.append(
            {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}
        )
        self.tool_ms += (time.perf_counter() - started) * 1000
        if numbers:
            summary += " → " + " ".join(f"[{n}]" for n in numbers)
        self.steps.append(summary)
        return ToolStep(call.name, args, summary, tuple(numbers), error)

    def _search(self, args: dict[str, Any]) -> tuple[str, list[Passage]]:
        query = str(args["query"]).strip()
        if not query:
            raise ValueError("query is empty")
        k = max(1, min(MAX_K, int(args.get("k") or self.agent.k)))
        agent = self.agent
        result: SearchResult = agent.retriever.search(query, k, agent.mode, agent.where)
        return f"searching: {query}", result.passages

    def _open(self, args: dict[str, Any]) -> tuple[str, list[Passage]]:
        source = str(args["source"])
        start, end = int(args["start_line"]), int(args["end_line"])
        if end < start:
            start, end = end, start
        store = self.agent.store
        found: list[Passage] = []
        if store.info() is not None:
            rows = store.chunks_in_range(source, start, end, MAX_OPEN_CHUNKS)
            found = [passage_from_row(i, 0.0, row) for i, row in enumerate(rows, 1)]
        return f"opening: {source} lines {start}-{end}", found

    def _result_text(
        self, call: ToolCall, found: list[Passage], error: str
    ) -> tuple[str, list[int]]:
        """The tool message: numbered passages that fit the context window, or the error."""
        if error:
            example = (
                '{"query": "...", "k": 5}'
                if call.name == "search_docs"
                else ('{"source": "...", "start_line": 1, "end_line": 40}')
            )
            return f"error: {error}. Call the tool again with arguments like {example}.", []
        if not found:
            return "no passages found", []
        budget = self.agent.budget
        kept, numbers, text = list(found), [], ""
        while kept:
            numbers = self._renumber(kept)
            text = "\n\n".join(format_passage(n, p) for n, p in zip(numbers, kept, strict=True))
            probe = [*self.messages, {"role": "tool", "content": text}]
            if prompt_tokens(probe, TOOLS) <= budget.prompt_limit:
                break
            kept.pop()
            self.full = True
        if not kept:
            return "no room left in the context window for more passages: answer now", []
        for n, p in zip(numbers, kept, strict=True):
            if p.chunk_id not in self.numbers:
                self.numbers[p.chunk_id] = n
                self.passages.append(replace(p, rank=n))
        omitted = len(found) - len(kept)
        if omitted:
            text += f"\n\n({omitted} more passages omitted: the context window is full)"
        return text, numbers

    def _renumber(self, passages: Sequence[Passage]) -> list[int]:
        """Existing numbers for passages seen before, the next free ones for new passages."""
        numbers, next_free = [], len(self.passages) + 1
        for p in passages:
            if p.chunk_id in self.numbers:
                numbers.append(self.numbers[p.chunk_id])
            else:
                numbers.append(next_free)
                next_free += 1
        return numbers
