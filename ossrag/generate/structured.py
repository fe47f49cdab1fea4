"""Structured answers: a JSON object that matches a schema, validated on our side every time.

The base schema is ``{answer, citations: [n...], confidence, follow_up_questions}``; a user's JSON
schema file adds properties (and required names) to it; an API client's own schema (the chat
endpoint's ``response_format``) is used as given. The schema is requested with
``response_format: json_schema`` (vLLM, Ollama, LM Studio, llama.cpp honour it; a server that
rejects it gets the schema in the prompt only), then checked with ``jsonschema``, citation numbers
against the passages given. A failing answer is retried once with the validation error; a second
failure raises ``StructuredAnswerError``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ossrag.choices import Mode
from ossrag.errors import LLMError
from ossrag.generate.answer import Answer, AnswerEvent, Retrieved
from ossrag.generate.budget import Budget
from ossrag.generate.claims import Claim
from ossrag.generate.llm import (
    Completion,
    ContentDelta,
    EmptyAnswerError,
    LLMClient,
    ReasoningDelta,
)
from ossrag.generate.prompts import JSON_ANSWER, SYSTEM_PROMPT, with_instructions
from ossrag.generate.usage import complete_usage
from ossrag.records import Passage
from ossrag.retrieve.retriever import SearchResult

BASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "description": "the answer, citing passages like [1]"},
        "citations": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "description": "numbers of the passages the answer uses",
        },
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "follow_up_questions": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["answer", "citations", "confidence", "follow_up_questions"],
    "additionalProperties": False,
}


class StructuredAnswerError(LLMError):
    """No valid JSON answer after the retry, or an unusable schema; one line naming the cause."""


def load_schema(path: Path | str) -> dict[str, Any]:
    """A user's JSON schema file; a clear error naming the file when it is not usable."""
    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StructuredAnswerError(f"cannot read JSON schema {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise StructuredAnswerError(f"JSON schema {path} is not valid JSON: {exc}") from None
    try:
        return extend_schema(schema)
    except StructuredAnswerError as exc:
        raise StructuredAnswerError(f"JSON schema {path}: {exc}") from None


def extend_schema(extra: dict[str, Any] | None) -> dict[str, Any]:
    """The base schema plus the properties and required names of ``extra``."""
    if extra is None:
        return BASE_SCHEMA
    properties = _object_schema(extra).get("properties", {})
    if not isinstance(properties, dict):
        raise StructuredAnswerError('"properties" must be an object')
    return check_schema(
        {
            **BASE_SCHEMA,
            "properties": {**BASE_SCHEMA["properties"], **properties},
            "required": list(dict.fromkeys([*BASE_SCHEMA["required"], *extra.get("required", [])])),
        }
    )


def check_schema(schema: Any) -> dict[str, Any]:
    """A schema used as given (an API client's own): an object schema valid as JSON Schema."""
    import jsonschema  # imported when used: a search process needs none (0.03 s)

    schema = _object_schema(schema)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise StructuredAnswerError(f"not a valid JSON schema: {exc.message}") from None
    return dict(schema)


def _object_schema(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise StructuredAnswerError('must be an object schema ({"type": "object", ...})')
    return schema


def validate(text: str, schema: dict[str, Any], n_passages: int) -> dict[str, Any]:
    """The answer as a dict, or ValueError with a one-line reason the model can act on."""
    import jsonschema
    from jsonschema.exceptions import best_match

    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc})") from None
    error = best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the object"
        raise ValueError(f"{where}: {error.message}")
    if not isinstance(data, dict):
        raise ValueError("the reply must be one JSON object")
    bad = [n for n in citation_numbers(data) if not 1 <= n <= n_passages]
    if bad:
        raise ValueError(
            f"citations {bad} do not exist: cite only passages 1 to {n_passages}"
            if n_passages
            else f"citations {bad} do not exist: there are no passages, cite none"
        )
    return dict(data)


def citation_numbers(data: dict[str, Any]) -> list[int]:
    """The passage numbers in an answer's `citations`, wherever its schema has them (a client's
    may not)."""
    cited = data.get("citations")
    if not isinstance(cited, list):
        return []
    return [n for n in cited if isinstance(n, int) and not isinstance(n, bool)]  # true is not 1


@dataclass
class StructuredAnswer:
    """A validated JSON answer with the passages it may cite and how it was obtained."""

    question: str
    data: dict[str, Any]
    passages: list[Passage]
    reasoning: str = ""
    attempts: int = 1
    usage: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notice: str = ""
    claims: list[Claim] = field(default_factory=list)  # of its "answer" text (Index.verify)

    def events(self, question: str, mode: Mode) -> Iterator[AnswerEvent]:
        """This answer as the events of a prose one, its JSON as the content (what a door that
        streams sends)."""
        text = json.dumps(self.data, ensure_ascii=False)
        yield Retrieved(SearchResult(self.passages, mode, self.notice))
        if self.reasoning:
            yield ReasoningDelta(self.reasoning)
        yield ContentDelta(text)
        yield Answer(
            question,
            text,
            self.reasoning,
            self.passages,
            "stop",
            self.usage,
            self.timings,
            self.notice,
            claims=self.claims,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.data,
            "sources": [
                {"n": n, "source": p.source, "lines": [p.start_line, p.end_line]}
                for n, p in enumerate(self.passages, 1)
            ],
            "attempts": self.attempts,
            "usage": self.usage,
            "timings": {key: round(value, 2) for key, value in self.timings.items()},
            **({"notice": self.notice} if self.notice else {}),
            "claims": [claim.to_dict() for claim in self.claims],
        }


def system_prompt(schema: dict[str, Any], instructions: str = "") -> str:
    return f"{with_instructions(SYSTEM_PROMPT, instructions)}\n" + JSON_ANSWER.format(
        schema=json.dumps(schema)
    )


def answer_structured(
    question: str,
    result: SearchResult,
    llm: LLMClient,
    budget: Budget,
    *,
    schema: dict[str, Any] = BASE_SCHEMA,
    effort: str | None = None,
    history: Sequence[dict[str, Any]] = (),
    retrieve_ms: float = 0.0,
    instructions: str = "",
) -> StructuredAnswer:
    """Ask for a JSON answer over ``result``'s passages; retry once with the validation error.

    ``instructions`` (the client's own) follow ossrag's system prompt; usage is summed over the
    attempts, each counted when the server reports none."""
    started = time.perf_counter()
    fitted = budget.fit(question, result.passages, history, system_prompt(schema, instructions))
    messages = fitted.messages
    notices = [result.notice, fitted.notice]
    response_format: dict[str, Any] | None = {
        "type": "json_schema",
        "json_schema": {"name": "ossrag_answer", "schema": schema, "strict": False},
    }
    usage: dict[str, Any] = {}
    error = ""
    for attempt in (1, 2):
        completion = _complete(llm, messages, budget, effort, response_format)
        if completion is None:  # the server rejects response_format: schema in the prompt only
            response_format = None
            notices.append("the LLM server does not accept response_format: schema in prompt")
            completion = _complete(llm, messages, budget, effort, None)
        assert completion is not None
        counted = complete_usage(
            completion.usage, messages, completion.reasoning, completion.content
        )
        for key, value in counted.items():
            if isinstance(value, int):
                usage[key] = usage.get(key, 0) + value
        if completion.finish_reason == "length" and not completion.content:
            raise EmptyAnswerError(budget.answer_tokens)
        try:
            data = validate(completion.content, schema, len(fitted.passages))
        except ValueError as exc:
            error = str(exc)
            messages = [
                *messages,
                {"role": "assistant", "content": completion.content},
                {
                    "role": "user",
                    "content": f"That reply is invalid: {error}. Reply again with only the "
                    "corrected JSON object.",
                },
            ]
            budget.check(messages)
            continue
        return StructuredAnswer(
            question=question,
            data=data,
            passages=fitted.passages,
            reasoning=completion.reasoning.strip(),
            attempts=attempt,
            usage=usage,
            timings={
                "retrieve_ms": retrieve_ms,
                "total_ms": retrieve_ms + (time.perf_counter() - started) * 1000,
            },
            notice="; ".join(filter(None, notices)),
        )
    raise StructuredAnswerError(
        f"the model's answer did not match the JSON schema after a retry: {error}"
    )


def _complete(
    llm: LLMClient,
    messages: list[dict[str, Any]],
    budget: Budget,
    effort: str | None,
    response_format: dict[str, Any] | None,
) -> Completion | None:
    """One completion; None when the server rejected ``response_format`` itself."""
    options = {"response_format": response_format} if response_format else {}
    try:
        return llm.complete(messages, effort=effort, max_tokens=budget.answer_tokens, **options)
    except LLMError as exc:
        text = str(exc).lower()
        unsupported = "response_format" in text or "json_schema" in text
        if response_format and exc.status_code == 400 and unsupported:
            return None
        raise
