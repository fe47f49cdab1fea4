"""The answer pipeline: retrieve → prompt → stream from the LLM → cited Answer."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from ossrag.generate.budget import Budget
from ossrag.generate.claims import Claim
from ossrag.generate.llm import ContentDelta, EmptyAnswerError, Finished, LLMClient, ReasoningDelta
from ossrag.generate.prompts import SYSTEM_PROMPT, build_messages, with_instructions
from ossrag.generate.usage import complete_usage
from ossrag.records import Passage
from ossrag.retrieve.retriever import SearchResult

_CITATION = re.compile(r"\[(\d{1,3})\]")


def cited_numbers(text: str, passages: int) -> list[int]:
    """The [n] citations in `text` of passages 1..`passages`, in order of first use."""
    numbers: list[int] = []
    for match in _CITATION.finditer(text):
        n = int(match.group(1))
        if 1 <= n <= passages and n not in numbers:
            numbers.append(n)
    return numbers


@dataclass(frozen=True)
class Rewritten:
    """A follow-up was rewritten into this standalone question before retrieval."""

    question: str


@dataclass(frozen=True)
class Retrieved:
    """First event of an answer: the passages the model is given."""

    result: SearchResult


@dataclass
class Answer:
    """A finished answer with its sources and measurements."""

    question: str
    text: str
    reasoning: str
    passages: list[Passage]
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notice: str = ""
    steps: list[str] = field(default_factory=list)  # the agent's tool calls, as shown to the user
    claims: list[Claim] = field(default_factory=list)  # cited claims, checked (Index.verify)

    @property
    def cited(self) -> list[int]:
        """Passage numbers cited in the answer that exist, in order of first use."""
        return cited_numbers(self.text, len(self.passages))

    def to_dict(self) -> dict[str, Any]:
        cited = set(self.cited)
        return {
            "answer": self.text,
            "reasoning": self.reasoning,
            "citations": [
                {
                    "n": n,
                    "source": p.source,
                    "heading": p.heading,
                    "start_line": p.start_line,
                    "end_line": p.end_line,
                    "score": round(p.score, 6),
                    "cited": n in cited,
                    **({"page": p.meta["page"]} if "page" in p.meta else {}),
                }
                for n, p in enumerate(self.passages, 1)
            ],
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "timings": {key: round(value, 2) for key, value in self.timings.items()},
            **({"notice": self.notice} if self.notice else {}),
            **({"steps": self.steps} if self.steps else {}),
            "claims": [claim.to_dict() for claim in self.claims],
        }


AnswerEvent: TypeAlias = Retrieved | ReasoningDelta | ContentDelta | Answer
AskEvent: TypeAlias = Rewritten | AnswerEvent  # a follow-up is rewritten before retrieval


def stream_answer(
    question: str,
    result: SearchResult,
    llm: LLMClient,
    *,
    effort: str | None = None,
    history: Sequence[dict[str, Any]] = (),
    retrieve_ms: float = 0.0,
    budget: Budget | None = None,
    instructions: str = "",
) -> Iterator[AnswerEvent]:
    """Yield Retrieved, then reasoning/answer deltas, then the final Answer.

    With a ``budget``, the lowest-ranked passages that do not fit the context window are left
    out (Retrieved then holds only those sent, and a notice says so) and ``max_tokens`` is sent
    explicitly; ContextBudgetError when not even the question fits.
    ``instructions`` (the client's own) follow ossrag's system prompt. The Answer's usage is
    the server's, or counted (see ``ossrag.generate.usage``) when it reports none.
    Raises LLMError (after Retrieved, so callers can still show the sources) and
    EmptyAnswerError when the token budget ran out before any answer text.
    """
    max_tokens = llm.config.max_tokens
    system = with_instructions(SYSTEM_PROMPT, instructions)
    if budget is None:
        messages = build_messages(question, result.passages, history, system)
    else:
        fitted = budget.fit(question, result.passages, history, system)
        messages, max_tokens = fitted.messages, budget.answer_tokens
        if fitted.dropped:
            notice = "; ".join(filter(None, [result.notice, fitted.notice]))
            result = replace(result, passages=fitted.passages, notice=notice)
    yield Retrieved(result)
    started = time.perf_counter()
    first_token: float | None = None
    text: list[str] = []
    reasoning: list[str] = []
    finished: Finished | None = None
    for event in llm.stream(messages, effort=effort, max_tokens=max_tokens):
        if isinstance(event, Finished):
            finished = event
            continue
        if first_token is None:
            first_token = time.perf_counter()
        (reasoning if isinstance(event, ReasoningDelta) else text).append(event.text)
        yield event
    total = time.perf_counter() - started
    answer_text, reasoning_text = "".join(text).strip(), "".join(reasoning).strip()
    if finished is not None and finished.finish_reason == "length" and not answer_text:
        raise EmptyAnswerError(max_tokens)
    yield Answer(
        question=question,
        text=answer_text,
        reasoning=reasoning_text,
        passages=result.passages,
        finish_reason=finished.finish_reason if finished else None,
        usage=complete_usage(
            finished.usage if finished else None, messages, reasoning_text, answer_text
        ),
        timings={
            "retrieve_ms": retrieve_ms,
            "ttft_ms": ((first_token or time.perf_counter()) - started) * 1000,
            "total_ms": retrieve_ms + total * 1000,
        },
        notice=result.notice,
    )
