"""Query rewriting through the configured LLM: follow-ups, translation, multi-query expansion.

A follow-up ("and why is none of it kept?") is rewritten into a question that stands alone
before it is searched for. The offline embedder reads English; a question in another language,
or worded unlike the docs, is turned into a few English search queries whose results are fused
with the original's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ossrag.generate.llm import LLMClient
from ossrag.generate.prompts import EXPAND_PROMPT, FOLLOW_UP_PROMPT

FOLLOW_UP_TOKENS = 512

EXPAND_TOKENS = 400
MAX_QUERIES = 4
REWRITE_OFF = "query rewriting is off"  # how a search's notice starts when the LLM failed


def expand_query(llm: LLMClient, question: str) -> list[str]:
    """The question followed by up to three LLM-written English queries, without duplicates."""
    messages = [
        {"role": "system", "content": EXPAND_PROMPT},
        {"role": "user", "content": question},
    ]
    completion = llm.complete(messages, effort="low", max_tokens=EXPAND_TOKENS)
    queries = [question]
    for line in completion.content.splitlines():
        query = line.strip().lstrip("-*•0123456789.) ").strip().strip('"')
        if query and query.lower() not in {q.lower() for q in queries}:
            queries.append(query)
    return queries[:MAX_QUERIES]


def standalone_question(llm: LLMClient, question: str, history: Sequence[dict[str, Any]]) -> str:
    """The last question rewritten to stand alone, given the earlier turns (one short, low-effort
    completion); the question itself when there is no history or the model returns nothing."""
    if not history:
        return question
    transcript = "\n".join(f"{m['role']}: {m['content']}" for m in history)
    messages = [
        {"role": "system", "content": FOLLOW_UP_PROMPT},
        {"role": "user", "content": f"{transcript}\n\nLast question: {question}"},
    ]
    completion = llm.complete(messages, effort="low", max_tokens=FOLLOW_UP_TOKENS)
    return completion.content.strip() or question
