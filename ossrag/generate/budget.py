"""Context budget: fit the prompt into gpt-oss's window, leaving room for reasoning and answer.

Tokens are counted with the real ``o200k_base`` encoding (the base of gpt-oss's
``o200k_harmony``; shipped offline by ``bpe-openai``), plus the harmony framing each message gets
on the server (``<|start|>role<|message|>…<|end|>``) and the system message the server renders
itself. Passages are dropped lowest-ranked first until the prompt fits; if even the system prompt,
history and question do not fit, ``ContextBudgetError`` says so instead of letting the server cut
the prompt silently.

Ollama's OpenAI endpoint (``/v1``) cannot set ``num_ctx`` (its docs: "The OpenAI API does not
have a way of setting the context size"), so there the window is the server's
(``OLLAMA_CONTEXT_LENGTH`` or a Modelfile's ``PARAMETER num_ctx``) and ``context_window`` must
match it; ossrag assumes 8192 for Ollama unless told.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ossrag.config import Settings
from ossrag.errors import LLMError, setting
from ossrag.generate.prompts import SYSTEM_PROMPT, build_messages, format_passage
from ossrag.generate.servers import GPT_OSS_CONTEXT, default_context
from ossrag.records import Passage

if TYPE_CHECKING:
    import bpe_openai

ENCODING = "o200k_base"
MAX_ANSWER_TOKENS = 8192
PER_MESSAGE = 4  # <|start|>{role}<|message|>{content}<|end|>
PRIMING = 3  # <|start|>assistant<|channel|> opens the model's turn
# The system message the server renders: identity, knowledge cutoff, date, reasoning effort,
# valid channels, the tool-call line (71 tokens measured) and the "# Instructions" header our
# system prompt gets as the developer message; rounded up.
HARMONY_OVERHEAD = 96
CONTEXT_SETTING = setting("context_window")
ANSWER_SETTING = setting("answer_tokens")


class ContextBudgetError(LLMError):
    """The prompt cannot fit the context window; the message names the settings to change."""


@lru_cache(maxsize=1)
def _encoding() -> bpe_openai.Encoding:
    import bpe_openai  # loads its vocabulary on import (~0.7 s): only when counting

    return bpe_openai.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """o200k tokens of ``text``; special-token lookalikes count as plain text."""
    return len(_encoding().encode_ordinary(text)) if text else 0


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def message_tokens(message: dict[str, Any]) -> int:
    """One chat message as harmony frames it: content, reasoning, tool calls, framing."""
    total = PER_MESSAGE + count_tokens(_content_text(message.get("content")))
    total += count_tokens(str(message.get("reasoning") or message.get("reasoning_content") or ""))
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        # <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>
        total += PER_MESSAGE + 6 + count_tokens(function.get("name", ""))
        total += count_tokens(function.get("arguments", ""))
    return total


def prompt_tokens(messages: Sequence[dict[str, Any]], tools: Sequence[Any] = ()) -> int:
    """Tokens the server will put before the model's first output token (a safe upper bound)."""
    total = HARMONY_OVERHEAD + PRIMING + sum(message_tokens(m) for m in messages)
    if tools:  # rendered as a TypeScript-like namespace: shorter than its JSON
        total += count_tokens(json.dumps(list(tools)))
    return total


@dataclass(frozen=True)
class Fitted:
    """The messages to send, the passages they hold, and what was left out."""

    messages: list[dict[str, Any]]
    passages: list[Passage]
    prompt_tokens: int
    dropped: int = 0
    notice: str = ""


@dataclass(frozen=True)
class Budget:
    """A context window split into prompt room and an allowance for reasoning + answer."""

    context_window: int = GPT_OSS_CONTEXT
    answer_tokens: int = MAX_ANSWER_TOKENS

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        window = settings.context_window or default_context(settings.base_url, settings.llm)
        answer = settings.answer_tokens or settings.max_tokens
        answer = answer or min(MAX_ANSWER_TOKENS, window // 4)
        if answer >= window:
            raise ContextBudgetError(
                f"the answer allowance ({answer} tokens) leaves no room for a prompt in the "
                f"{window}-token context window: lower {ANSWER_SETTING} "
                f"(or {setting('max_tokens')}) or raise {CONTEXT_SETTING}"
            )
        return cls(window, answer)

    @property
    def prompt_limit(self) -> int:
        return self.context_window - self.answer_tokens

    def check(self, messages: Sequence[dict[str, Any]], tools: Sequence[Any] = ()) -> int:
        """The prompt's token count; ContextBudgetError when it does not fit."""
        used = prompt_tokens(messages, tools)
        if used > self.prompt_limit:
            raise ContextBudgetError(
                f"the prompt needs {used} tokens but only {self.prompt_limit} fit "
                f"({self.context_window}-token context window minus {self.answer_tokens} for "
                f"the answer): shorten the question, raise {CONTEXT_SETTING} (and the LLM "
                f"server's own) or lower {ANSWER_SETTING}"
            )
        return used

    def fit(
        self,
        question: str,
        passages: Sequence[Passage],
        history: Sequence[dict[str, Any]] = (),
        system_prompt: str = SYSTEM_PROMPT,
    ) -> Fitted:
        """Messages with as many of the best-ranked passages as fit (order is kept)."""
        used = self.check(build_messages(question, [], history, system_prompt))

        def exact(n: int) -> tuple[list[dict[str, Any]], int]:
            messages = build_messages(question, list(passages[:n]), history, system_prompt)
            return messages, prompt_tokens(messages)

        # Each passage costs about its own tokens plus the blank line joining it: start from
        # that estimate, then settle it with exact counts of the whole prompt.
        n = 0
        for number, passage in enumerate(passages, 1):
            used += count_tokens(format_passage(number, passage)) + 1
            if used > self.prompt_limit:
                break
            n = number
        while n < len(passages) and exact(n + 1)[1] <= self.prompt_limit:
            n += 1
        messages, total = exact(n)
        while total > self.prompt_limit:  # n == 0 always fits: checked above
            n -= 1
            messages, total = exact(n)
        dropped = len(passages) - n
        notice = ""
        if dropped:
            notice = (
                f"{dropped} of {len(passages)} passages left out (lowest-ranked) to fit the "
                f"{self.context_window}-token context window with {self.answer_tokens} tokens "
                "kept for the answer: raise OSSRAG_CONTEXT_WINDOW or lower OSSRAG_TOP_K"
            )
        return Fitted(messages, list(passages[:n]), total, dropped, notice)
