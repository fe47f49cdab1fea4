"""Query rewriting through the configured LLM: translation and multi-query expansion.

The offline embedder reads English; a question in another language, or worded unlike the docs,
is turned into a few English search queries whose results are fused with the original's.
"""

from __future__ import annotations

from ossrag.llm import LLMClient

EXPAND_PROMPT = """\
You turn a user's question into search queries for English technical documentation.
Reply with 1 to 3 queries, one per line, nothing else: first the question in English \
(translated if it is in another language), then short keyword queries using terms the \
documentation would use."""
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
