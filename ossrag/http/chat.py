"""Chat completions and Responses over the engine's conversation: one turn's events as
OpenAI's chunks and objects, sources and usage, streamed or whole."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi.responses import (
    StreamingResponse,
)

from ossrag.choices import Effort, Mode
from ossrag.engine.index import Index
from ossrag.generate.agent import ToolStep
from ossrag.generate.answer import Answer, AskEvent, Retrieved, Rewritten
from ossrag.generate.llm import ContentDelta, ReasoningDelta
from ossrag.generate.structured import (
    citation_numbers,
)
from ossrag.generate.usage import counted_usage
from ossrag.http.errors import ApiError, api_error, error_body
from ossrag.http.responses import ResponseMemory, ResponseShapes, ResponsesRequest, ResponseStream
from ossrag.http.schemas import (
    ChatMessage,
    ChatRequest,
    JsonSchemaFormat,
    ResponseFormat,
    parse_filter,
)
from ossrag.records import Passage
from ossrag.store.filters import Filter

# The RAG "models": the configured retrieval mode, or one forced; the agent searches by itself.
MODELS: dict[str, Mode | None] = {
    "ossrag": None,
    "ossrag-hybrid": "hybrid",
    "ossrag-dense": "dense",
    "ossrag-bm25": "bm25",
    "ossrag-agent": None,
}
AGENT_MODEL = "ossrag-agent"
T = TypeVar("T")


async def in_thread(fn: Callable[[], T], timeout: float) -> T:
    """Run a blocking call in a worker thread, giving up (TimeoutError) after `timeout` s."""
    with anyio.fail_after(timeout):
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)


def _sources(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    return [{"n": n, **p.to_dict()} for n, p in enumerate(passages, 1)]


def _footnotes(answer: Answer) -> str:
    cited = answer.cited
    if not cited:
        return ""
    lines = [f"[{n}] {answer.passages[n - 1].location}" for n in cited]
    return "\n\nSources:\n" + "\n".join(lines)


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _conversation(
    messages: Sequence[ChatMessage], field: str
) -> tuple[str, list[dict[str, str]], str]:
    """The last user message, the user/assistant turns before it, and the text of the system
    (or developer) messages: the client's instructions. Errors name `field`."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None or not messages[last].text.strip():
        raise ApiError(400, f"{field}: the last user message has no text to answer")
    history = [
        {"role": m.role, "content": m.text}
        for m in messages[:last]
        if m.role in ("user", "assistant") and m.text
    ]
    instructions = "\n\n".join(
        m.text for m in messages if m.role in ("system", "developer") and m.text.strip()
    )
    return messages[last].text, history, instructions


def _agent_events(index: Index, question: str, options: dict[str, Any]) -> Iterator[AskEvent]:
    """The agent's answer as the events of a prose one: each tool step ("searching: …") is
    streamed as reasoning, so chat UIs show it where they show the model's thinking."""
    for event in index.agent_stream(question, **options):
        yield ReasoningDelta(f"{event.summary}\n") if isinstance(event, ToolStep) else event


def _usage(answer: Answer) -> dict[str, Any]:
    """The answer's usage in OpenAI's shape (the engine counts it when the LLM sent none)."""
    return answer.usage or counted_usage((), answer.reasoning, answer.text)


class _Turn:
    """One answer through the engine, as every OpenAI endpoint serves it: ask_stream's events
    (or a JSON answer as such events), pulled in worker threads within the request timeout."""

    def __init__(
        self,
        index: Index,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        fields: tuple[str, str],
        timeout: float,
        effort: Effort | None = None,
        top_k: int | None = None,
        schema: dict[str, Any] | None = None,
        footnotes: bool = True,
        where: Filter | None = None,
    ) -> None:
        """`model` is one of MODELS (a collection's model name resolved by Collections)."""
        input_field, format_field = fields  # named in errors: ("messages", "response_format")
        self.question, self.history, instructions = _conversation(messages, input_field)
        options: dict[str, Any] = {
            "k": top_k,
            "mode": MODELS[model],
            "effort": effort,
            "history": self.history,
            "instructions": instructions,
            "where": where,
        }
        self.events: Iterator[AskEvent]
        if model == AGENT_MODEL:
            if schema is not None:
                raise ApiError(400, f"{format_field}: not available with {AGENT_MODEL}")
            self.events = _agent_events(index, self.question, options)
        elif schema is None:
            self.events = index.ask_stream(self.question, **options)
        else:
            self.events = self._structured(index, self.question, schema, options)
        # A JSON answer is sent as the JSON alone: no footnotes, citations from its own field.
        self.footnotes = footnotes and schema is None
        self.json_cited: list[int] | None = None
        self.deadline = time.monotonic() + timeout

    def _structured(
        self, index: Index, question: str, schema: dict[str, Any], options: dict[str, Any]
    ) -> Iterator[AskEvent]:
        """A validated JSON answer (see ossrag.generate.structured) as the events of a prose one."""
        answer = index.ask_structured(question, schema, **options)
        self.json_cited = citation_numbers(answer.data)
        yield from answer.events(question, options["mode"] or index.settings.mode)

    def cited(self, answer: Answer) -> list[int]:
        return answer.cited if self.json_cited is None else self.json_cited

    def footnote(self, answer: Answer) -> str:
        """The "Sources:" text appended to the answer, if any."""
        return _footnotes(answer) if self.footnotes else ""

    def sources(self, answer: Answer) -> list[dict[str, Any]]:
        cited = self.cited(answer)
        return [{**s, "cited": s["n"] in cited} for s in _sources(answer.passages)]

    async def next_event(self) -> AskEvent | None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return await in_thread(lambda: next(self.events, None), remaining)

    async def finish(self) -> Answer:
        """The whole answer (for a non-streamed response); errors as ApiError."""
        answer: Answer | None = None
        try:
            while (event := await self.next_event()) is not None:
                if isinstance(event, Answer):
                    answer = event
        except Exception as exc:
            raise api_error(exc) from None
        finally:
            self.close()
        assert answer is not None, "stream_answer always ends with an Answer"
        return answer

    async def start(self) -> list[AskEvent]:
        """The events up to the first from the LLM, so that a dead LLM is an HTTP error rather
        than a broken stream."""
        first: list[AskEvent] = []
        try:
            while not first or isinstance(first[-1], (Rewritten, Retrieved)):
                event = await self.next_event()
                if event is None:
                    break
                first.append(event)
        except Exception as exc:
            self.close()
            raise api_error(exc) from None
        return first

    async def rest(self, first: list[AskEvent]) -> AsyncIterator[AskEvent]:
        """`first`, then the remaining events (the caller closes the turn when done)."""
        for event in first:
            yield event
        while (later := await self.next_event()) is not None:
            yield later

    def close(self) -> None:
        """Close the generator, and with it the LLM stream (unless a worker still runs it:
        then it is closed when that worker returns and the generator is collected)."""
        close = getattr(self.events, "close", None)
        if close is not None:
            with suppress(ValueError):
                close()


def event_stream(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class Chat:
    """One chat completion: the pieces of an OpenAI response around a _Turn."""

    def __init__(self, index: Index, request: ChatRequest, timeout: float, base: str) -> None:
        """`base`: the model of MODELS that request.model stands for (see Collections)."""
        self.request = request
        self.turn = _Turn(
            index,
            model=base,
            messages=request.messages,
            fields=("messages", "response_format"),
            timeout=timeout,
            effort=request.reasoning_effort,
            top_k=request.top_k,
            schema=request.response_format.answer_schema() if request.response_format else None,
            footnotes=request.footnotes,
            where=parse_filter(request.filter),
        )
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.include_usage = bool((request.stream_options or {}).get("include_usage"))

    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        """One SSE chunk; `delta=None` makes the usage-only chunk (no choices). With
        `include_usage`, the other chunks carry `"usage": null`, as OpenAI's do."""
        choices = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.request.model,
                "system_fingerprint": None,
                "choices": choices,
                **({"usage": None} if self.include_usage else {}),
                **extra,
            }
        )

    def completion(self, answer: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text + self.turn.footnote(answer),
            "refusal": None,
            "annotations": [],
            "reasoning": answer.reasoning or None,
        }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason or "stop",
                }
            ],
            "usage": _usage(answer),
            "sources": self.turn.sources(answer),
            "claims": [claim.to_dict() for claim in answer.claims],
            **({"notice": answer.notice} if answer.notice else {}),
        }

    async def stream(self, first: list[AskEvent]) -> AsyncIterator[bytes]:
        """SSE chunks shaped like OpenAI's; `first` are the events already pulled."""
        sources_sent = False
        try:
            async for event in self.turn.rest(first):
                if isinstance(event, Retrieved):
                    sources_sent = True
                    notice = {"notice": event.result.notice} if event.result.notice else {}
                    yield self.chunk(
                        {"role": "assistant", "content": ""},
                        sources=_sources(event.result.passages),
                        **notice,
                    )
                elif isinstance(event, ReasoningDelta):
                    yield self.chunk({"reasoning": event.text})
                elif isinstance(event, ContentDelta):
                    yield self.chunk({"content": event.text})
                elif isinstance(event, Answer):
                    if notes := self.turn.footnote(event):
                        yield self.chunk({"content": notes})
                    # The agent finds its passages as it goes: they are listed at the end.
                    late = {} if sources_sent else {"sources": _sources(event.passages)}
                    cited = self.turn.cited(event)
                    claims = [claim.to_dict() for claim in event.claims]
                    yield self.chunk(
                        {}, event.finish_reason or "stop", cited=cited, **late, claims=claims
                    )
                    if self.include_usage:
                        yield self.chunk(None, usage=_usage(event))
            yield b"data: [DONE]\n\n"
        except Exception as exc:  # headers are sent: the error travels as an SSE event
            error = api_error(exc)
            yield _sse(error_body(str(error), error.kind, param=error.param))
        finally:
            self.turn.close()


def _responses_turn(
    index: Index, request: ResponsesRequest, memory: ResponseMemory, timeout: float, base: str
) -> _Turn:
    """The engine turn for a Responses API request, after the remembered conversation."""
    earlier: list[dict[str, str]] = []
    if request.previous_response_id is not None:
        previous = memory.get(request.previous_response_id)
        if previous is None:
            raise ApiError(
                404,
                f"previous_response_id: no stored response {request.previous_response_id!r} "
                f"(the server remembers its last {memory.size}, until it restarts)",
                "not_found",
            )
        earlier = previous.turns
    schema = None
    if request.text is not None and request.text.format.type != "text":
        text_format = request.text.format
        if text_format.type == "json_schema" and text_format.schema_ is None:
            raise ApiError(400, "text.format.schema: required when type is json_schema")
        json_schema = (
            None if text_format.schema_ is None else JsonSchemaFormat(schema=text_format.schema_)
        )
        schema = ResponseFormat(type=text_format.type, json_schema=json_schema).answer_schema(
            "text.format"
        )
    return _Turn(
        index,
        model=base,
        messages=[ChatMessage(**m) for m in request.messages(earlier)],
        fields=("input", "text.format"),
        timeout=timeout,
        effort=request.reasoning.effort if request.reasoning else None,
        top_k=request.top_k,
        schema=schema,
        footnotes=request.footnotes,
    )


class Responses:
    """One Responses API answer: the response object or its event stream around a _Turn."""

    def __init__(
        self,
        index: Index,
        request: ResponsesRequest,
        memory: ResponseMemory,
        timeout: float,
        base: str,
    ) -> None:
        self.request, self.memory = request, memory
        self.turn = _responses_turn(index, request, memory, timeout, base)
        self.shapes = ResponseShapes(request)

    def remember(self, answer: Answer, response: dict[str, Any]) -> None:
        """Store the response and its conversation for previous_response_id (unless
        `store` is false)."""
        if self.request.store:
            turn = [
                {"role": "user", "content": self.turn.question},
                {"role": "assistant", "content": answer.text},
            ]
            self.memory.remember(response, [*self.turn.history, *turn])

    def extra(self, answer: Answer) -> dict[str, Any]:
        notice = {"notice": answer.notice} if answer.notice else {}
        return {"sources": self.turn.sources(answer), **notice}

    def completed(self, answer: Answer) -> dict[str, Any]:
        text = answer.text + self.turn.footnote(answer)
        output = self.shapes.output(answer.reasoning, text)
        response = self.shapes.response("completed", output, _usage(answer), **self.extra(answer))
        self.remember(answer, response)
        return response

    async def stream(self, first: list[AskEvent]) -> AsyncIterator[bytes]:
        """The Responses API's events; `first` are the engine events already pulled."""
        stream = ResponseStream(self.shapes)
        try:
            async for event in self.turn.rest(first):
                chunks: list[bytes] = []
                if isinstance(event, Retrieved) and not stream.started:
                    notice = {"notice": event.result.notice} if event.result.notice else {}
                    chunks = stream.start(sources=_sources(event.result.passages), **notice)
                elif not stream.started and not isinstance(event, Rewritten):
                    chunks = stream.start()  # the agent finds its sources as it goes
                if isinstance(event, ReasoningDelta):
                    chunks += stream.reasoning_delta(event.text)
                elif isinstance(event, ContentDelta):
                    chunks += stream.text_delta(event.text)
                elif isinstance(event, Answer):
                    if notes := self.turn.footnote(event):
                        chunks += stream.text_delta(notes)
                    closing, response = stream.finish(_usage(event), **self.extra(event))
                    chunks += closing
                    self.remember(event, response)
                for chunk in chunks:
                    yield chunk
        except Exception as exc:  # headers are sent: the error travels as events
            for chunk in stream.failed(str(api_error(exc)), "server_error"):
                yield chunk
        finally:
            self.turn.close()
