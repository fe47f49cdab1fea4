"""Token usage in OpenAI's shape, always: counted with o200k when the LLM server reports none.

OpenAI clients read ``usage`` unconditionally (simonw/llm calls ``usage.model_dump()`` on every
non-streamed answer; LangChain fills ``usage_metadata`` from it), but some OpenAI-compatible
servers send no usage, or only part of it. Then ossrag counts: the prompt as harmony frames it
(see ``ossrag.generate.budget.prompt_tokens``, an upper bound) and the reasoning and answer
text with the o200k encoding gpt-oss's tokenizer is built on. A count is close, not exact;
numbers the server reports are passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ossrag.generate.budget import count_tokens, prompt_tokens

TOTALS = ("prompt_tokens", "completion_tokens", "total_tokens")


def counted_usage(messages: Sequence[dict[str, Any]], reasoning: str, text: str) -> dict[str, Any]:
    """Usage of one LLM call counted with o200k: ``messages`` sent, reasoning and text back."""
    prompt = prompt_tokens(messages) if messages else 0
    reasoning_tokens = count_tokens(reasoning)
    completion = reasoning_tokens + count_tokens(text)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def complete_usage(
    usage: dict[str, Any] | None,
    messages: Sequence[dict[str, Any]],
    reasoning: str,
    text: str,
) -> dict[str, Any]:
    """The server's usage with ``total_tokens`` filled in; counted when it lacks a count."""
    if not usage or not all(isinstance(usage.get(key), int) for key in TOTALS[:2]):
        return counted_usage(messages, reasoning, text)
    if isinstance(usage.get("total_tokens"), int):
        return usage
    return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Chat-completions usage in the Responses API's shape (``input_tokens``, ...)."""
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {
            "cached_tokens": prompt_details.get("cached_tokens") or 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {
            "reasoning_tokens": completion_details.get("reasoning_tokens") or 0
        },
        "total_tokens": usage["total_tokens"],
    }
