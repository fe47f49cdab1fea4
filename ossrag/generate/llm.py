"""Generation client: gpt-oss through any OpenAI-compatible server (vLLM, Ollama, LM Studio, ...).

Servers disagree on where gpt-oss's reasoning goes and how to ask for a reasoning effort; this
module hides that. Reasoning is read from the ``reasoning`` or ``reasoning_content`` fields or
split out of inline harmony / ``<think>`` markup, so answer text never contains reasoning or
markup. Every failure becomes an ``LLMError`` whose message is one line naming the URL and the
setting to change.

A ``finish_reason`` of ``"length"`` with an empty answer (the model spent its whole budget on
reasoning) is *reported, not raised*: ``stream()`` ends with ``Finished(finish_reason="length")``
and ``complete()`` returns it. Callers that need an answer raise ``EmptyAnswerError(max_tokens)``,
whose message is ``explain_length(max_tokens)``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from ossrag.errors import LLMError, one_line, setting, worded
from ossrag.generate import servers

if TYPE_CHECKING:
    import openai  # imported when a client is made: it is most of a CLI command's start-up

# Settings named in error messages (environment variable / CLI option).
BASE_URL_SETTING = setting("base_url")
API_KEY_SETTING = setting("api_key")
MODEL_SETTING = setting("model")
TIMEOUT_SETTING = setting("timeout")

EFFORTS = ("low", "medium", "high")
EFFORT_STYLES = (
    "auto", "reasoning_effort", "openrouter", "chat_template_kwargs", "system", "none",
)  # fmt: skip
_PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key; never fall back to OPENAI_API_KEY


@cache
def _transport_errors() -> tuple[type[BaseException], ...]:
    """HTTP-layer exceptions: openai 3 runs on httpx2, earlier versions on httpx."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found += [module.HTTPError, module.StreamError]
    return tuple(found)


@cache
def _failures() -> tuple[type[BaseException], ...]:
    """What a request can fail with: openai's errors, the HTTP layer's, sockets, bad JSON."""
    import openai

    return (openai.OpenAIError, *_transport_errors(), OSError, ValueError)


# --------------------------------------------------------------------------- config and results


@dataclass
class LLMConfig:
    """Where the model is served and how to talk to it."""

    base_url: str
    model: str
    api_key: str = ""
    effort: str | None = None  # "low" | "medium" | "high"; None: the server's default
    effort_style: str = "auto"  # one of EFFORT_STYLES
    preset: str = ""  # the server preset (LLM_PRESETS) the settings came from, if any
    max_tokens: int | None = None
    timeout: float = 120.0  # seconds; for streams, the longest silence between chunks
    max_retries: int = 2  # openai's own retries on connection errors, 408/409/429/5xx
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every chat request


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning."""

    text: str


@dataclass(frozen=True)
class ContentDelta:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for; ``arguments`` is the raw JSON text."""

    id: str
    name: str
    arguments: str

    def parse_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; ValueError when the model wrote invalid JSON."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError as exc:
            raise ValueError(f"tool call {self.name!r} has invalid JSON arguments: {exc}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r} arguments are not a JSON object")
        return value


@dataclass(frozen=True)
class Finished:
    """The last event of a stream: why it stopped, token usage and any tool calls."""

    finish_reason: str | None
    usage: dict[str, Any] | None
    tool_calls: tuple[ToolCall, ...] = ()


LLMEvent: TypeAlias = ReasoningDelta | ContentDelta | Finished


@dataclass(frozen=True)
class Completion:
    """A whole (non-streamed) answer."""

    content: str
    reasoning: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    tool_calls: tuple[ToolCall, ...] = ()


def explain_length(max_tokens: int | None) -> str:
    """Why an answer came back empty with finish_reason "length", and what to do."""
    budget = f"max_tokens={max_tokens}" if max_tokens else "the server's default max_tokens"
    return (
        f"the model used its whole token budget ({budget}) on reasoning before answering: "
        f"raise {setting('max_tokens')} or lower {setting('effort')}"
    )


class EmptyAnswerError(LLMError):
    """Raised by callers when the budget ran out before any answer text."""

    def __init__(self, max_tokens: int | None) -> None:
        super().__init__(explain_length(max_tokens))
        self.max_tokens = max_tokens


# --------------------------------------------------------------------------- reasoning markup

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# Harmony special tokens (<|start|>, <|channel|>, <|message|>, <|end|>, <|return|>, <|call|>,
# <|constrain|>, ...) and think tags.
_MARKER = re.compile(r"<think>|</think>|<\|[A-Za-z0-9_]{1,32}\|>")
_MARKER_PREFIX = re.compile(r"<(\|[A-Za-z0-9_]{0,32}\|?)?")
_END_TOKENS = frozenset({"<|end|>", "<|return|>", "<|call|>", "<|endoftext|>"})


def _partial_marker_start(text: str) -> int:
    """Index where ``text`` ends in an incomplete marker, else ``len(text)``."""
    start = text.rfind("<")  # markers hold no other "<", so only the last one can be partial
    if start == -1:
        return len(text)
    tail = text[start:]
    if _MARKER_PREFIX.fullmatch(tail) or _THINK_OPEN.startswith(tail):
        return start
    if _THINK_CLOSE.startswith(tail):
        return start
    return len(text)


class ReasoningSplitter:
    """Splits streamed ``content`` into (reasoning, answer), removing inline reasoning markup.

    Understands raw harmony (``<|channel|>analysis<|message|>…<|end|><|start|>assistant
    <|channel|>final<|message|>…<|return|>``; every channel but ``final`` counts as reasoning)
    and ``<think>…</think>``. Plain text passes through as answer. Markers split across chunk
    boundaries are handled by holding back only a possible marker prefix until the next feed.
    Leading whitespace of the answer is dropped.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._mode = "answer"  # "answer" | "reasoning" | "header" | "skip"
        self._header = ""  # channel header text of the harmony message being read
        self._answer_started = False

    def feed(self, text: str) -> tuple[str, str]:
        """Take the next piece of content; return the (reasoning, answer) text it completes."""
        self._buf += text
        reasoning: list[str] = []
        answer: list[str] = []
        while True:
            match = _MARKER.search(self._buf)
            if match is None:
                cut = _partial_marker_start(self._buf)
                self._emit(self._buf[:cut], reasoning, answer)
                self._buf = self._buf[cut:]
                break
            self._emit(self._buf[: match.start()], reasoning, answer)
            self._buf = self._buf[match.end() :]
            self._on_marker(match.group())
        return "".join(reasoning), "".join(answer)

    def flush(self) -> tuple[str, str]:
        """End of content: release held-back text (a dangling ``<|…`` fragment is dropped)."""
        rest, self._buf = self._buf, ""
        reasoning: list[str] = []
        answer: list[str] = []
        if not rest.startswith("<|"):
            self._emit(rest, reasoning, answer)
        return "".join(reasoning), "".join(answer)

    def _emit(self, text: str, reasoning: list[str], answer: list[str]) -> None:
        if not text:
            return
        if self._mode == "header":
            self._header += text
        elif self._mode == "reasoning":
            reasoning.append(text)
        elif self._mode == "answer":
            if not self._answer_started:
                text = text.lstrip()
                self._answer_started = bool(text)
            if text:
                answer.append(text)
        # "skip": role names and text between harmony messages are dropped

    def _on_marker(self, marker: str) -> None:
        if marker == _THINK_OPEN:
            self._mode = "reasoning"
        elif marker == _THINK_CLOSE:
            self._mode = "answer"
        elif marker == "<|channel|>":
            self._mode, self._header = "header", ""
        elif marker == "<|message|>":
            channel = self._header.split()[0] if self._header.split() else "final"
            self._mode = "answer" if channel == "final" else "reasoning"
            self._header = ""
        elif marker == "<|start|>" or marker in _END_TOKENS:
            self._mode = "skip"
        # other special tokens (<|constrain|>, ...) are dropped without changing mode


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a whole content string into (reasoning, answer).

    Also handles a ``</think>`` without its ``<think>`` (templates that pre-fill the opening tag).
    """
    close = text.find(_THINK_CLOSE)
    if close != -1 and _THINK_OPEN not in text[:close] and "<|" not in text[:close]:
        text = _THINK_OPEN + text
    splitter = ReasoningSplitter()
    r1, a1 = splitter.feed(text)
    r2, a2 = splitter.flush()
    return r1 + r2, a1 + a2


def _extra_text(obj: Any, name: str) -> str:
    """A non-standard string field (``reasoning``, ``reasoning_content``) of an openai model."""
    extra = getattr(obj, "model_extra", None) or {}
    value = extra.get(name, getattr(obj, name, None))
    return value if isinstance(value, str) else ""


def _reasoning_field(obj: Any) -> str:
    # vLLM 0.10-0.11 sent both fields with the same text: take one, never both.
    return _extra_text(obj, "reasoning") or _extra_text(obj, "reasoning_content")


# --------------------------------------------------------------------------- client


@cache
def _create_params() -> frozenset[str]:
    """The keyword arguments the openai client takes for a chat completion."""
    import openai

    parameters = inspect.signature(openai.resources.chat.Completions.create).parameters
    return frozenset(parameters) - {"self", "extra_body"}


class LLMClient:
    """Chat completions against one OpenAI-compatible server and model."""

    def __init__(self, config: LLMConfig) -> None:
        scheme = urlsplit(config.base_url).scheme
        if scheme not in ("http", "https"):
            raise LLMError(
                f"the LLM base URL must start with http:// or https:// "
                f"(got {config.base_url!r}): set {BASE_URL_SETTING}"
            )
        if config.effort_style not in EFFORT_STYLES:
            raise LLMError(f"effort_style must be one of {', '.join(EFFORT_STYLES)}")
        import openai

        self.config = config
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key or _PLACEHOLDER_KEY,
            timeout=openai.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
            max_retries=config.max_retries,
        )

    # -- public API

    def close(self) -> None:
        """Release pooled connections."""
        self._client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        effort: str | None = None,
        max_tokens: int | None = None,
        **extra: Any,
    ) -> Iterator[LLMEvent]:
        """Stream the answer as ReasoningDelta / ContentDelta events, then one Finished.

        ``extra`` goes to the request: known OpenAI parameters (``tools``, ``temperature``, ...)
        as such, anything else in the JSON body. The request is sent on the first ``next()``.
        Raises LLMError, also when the connection drops mid-answer.
        """
        kwargs = self._request(messages, effort, max_tokens, extra)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        started = time.monotonic()
        try:
            response = self._client.chat.completions.create(**kwargs)
        except _failures() as exc:
            raise self._error(exc, started=started) from exc
        import openai

        if not isinstance(response, openai.Stream):
            raise LLMError(f"{self.config.base_url} did not stream: {self._not_openai_hint()}")

        splitter = ReasoningSplitter()
        finish: str | None = None
        usage: dict[str, Any] | None = None
        calls: dict[int, dict[str, str]] = {}
        try:
            with response:
                for chunk in response:
                    if chunk.usage is not None:
                        usage = chunk.usage.model_dump(exclude_none=True)
                    for choice in chunk.choices[:1]:
                        delta = choice.delta
                        if text := _reasoning_field(delta):
                            yield ReasoningDelta(text)
                        if delta.content:
                            yield from _events(*splitter.feed(delta.content))
                        for tc in delta.tool_calls or []:
                            _add_tool_call_delta(calls, tc)
                        if choice.finish_reason:
                            finish = choice.finish_reason
        except _failures() as exc:
            raise self._error(exc, streaming=True) from exc
        yield from _events(*splitter.flush())
        if finish is None:
            raise LLMError(
                f"the stream from the LLM at {self.config.base_url} ended before the model "
                "finished (no finish_reason): the connection dropped or the server is not "
                "OpenAI-compatible; check the server's logs"
            )
        tool_calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in calls.values())
        yield Finished(finish, usage, tool_calls)

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        effort: str | None = None,
        max_tokens: int | None = None,
        **extra: Any,
    ) -> Completion:
        """One non-streamed answer, reasoning split out the same way as ``stream()``.

        Note: ``timeout`` then bounds the whole generation, not the silence between chunks.
        """
        kwargs = self._request(messages, effort, max_tokens, extra)
        started = time.monotonic()
        try:
            response = self._client.chat.completions.create(**kwargs)
        except _failures() as exc:
            raise self._error(exc, started=started) from exc
        from openai.types.chat import ChatCompletion

        if not isinstance(response, ChatCompletion) or not response.choices:
            raise LLMError(f"{self.config.base_url} returned no answer: {self._not_openai_hint()}")
        choice = response.choices[0]
        message = choice.message
        inline_reasoning, content = split_reasoning(message.content or "")
        tool_calls = tuple(
            ToolCall(tc.id, fn.name, fn.arguments or "")
            for tc in message.tool_calls or []
            if (fn := getattr(tc, "function", None)) is not None  # skip "custom" tool calls
        )
        usage = response.usage.model_dump(exclude_none=True) if response.usage else None
        return Completion(
            content=content,
            reasoning=_reasoning_field(message) + inline_reasoning,
            finish_reason=choice.finish_reason,
            usage=usage,
            tool_calls=tool_calls,
        )

    def check(self) -> tuple[bool, str]:
        """Is the server up? ``(True, "N models")`` or ``(False, reason)``; never raises."""
        try:
            client = self._client.with_options(
                max_retries=0, timeout=min(self.config.timeout, 10.0)
            )
            ids = [m.id for m in client.models.list().data]
        except Exception as exc:
            return False, str(self._error(exc, retries=0))
        message = f"{len(ids)} model{'' if len(ids) == 1 else 's'}"
        if ids and self.config.model not in ids:
            setting_name = worded(MODEL_SETTING)
            message += f"; {self.config.model!r} is not among them (set the {setting_name} setting)"
        return True, message

    # -- request building

    def _request(
        self,
        messages: list[dict[str, Any]],
        effort: str | None,
        max_tokens: int | None,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        config = self.config
        effort = effort or config.effort
        if effort is not None and effort not in EFFORTS:
            raise LLMError(
                f"unknown reasoning effort {effort!r}: set {setting('effort')} to low, medium "
                "or high"
            )
        messages = [dict(m) for m in messages]
        body: dict[str, Any] = dict(config.extra_body)
        kwargs: dict[str, Any] = {"model": config.model, "messages": messages}
        if max_tokens or config.max_tokens:
            kwargs["max_tokens"] = max_tokens or config.max_tokens
        style = self.effort_style()
        if effort and style == "reasoning_effort":
            kwargs["reasoning_effort"] = effort
        elif effort and style == "openrouter":
            body["reasoning"] = {**body.get("reasoning", {}), "effort": effort}
        elif effort and style == "chat_template_kwargs":
            kwargs["reasoning_effort"] = effort
            template = body.get("chat_template_kwargs", {})
            body["chat_template_kwargs"] = {**template, "reasoning_effort": effort}
        elif effort and style == "system":
            kwargs["messages"] = _with_reasoning_line(messages, effort)
        for key, value in extra.items():
            if key in _create_params():
                kwargs[key] = value
            else:
                body[key] = value  # non-standard: the openai client would reject it as a kwarg
        if body:
            kwargs["extra_body"] = body
        return kwargs

    def effort_style(self) -> str:
        """The effort style in use, "auto" resolved by the server (see generate.servers)."""
        if self.config.effort_style != "auto":
            return self.config.effort_style
        return servers.effort_style(self.config.base_url, self.config.preset)

    # -- errors

    def _not_openai_hint(self) -> str:
        return f"is it an OpenAI-compatible server (URL ending in /v1)? set {BASE_URL_SETTING}"

    def _error(
        self,
        exc: BaseException,
        *,
        streaming: bool = False,
        started: float | None = None,
        retries: int | None = None,
    ) -> LLMError:
        """One-line LLMError for any failure of the openai client or the HTTP layer.

        `started` (time.monotonic() before the request) and `retries` (the client's retries,
        default the configured ones) let a timeout say how long it was waited for in all.
        """
        import openai

        if isinstance(exc, LLMError):
            return exc
        url, timeout = self.config.base_url, self.config.timeout
        timed_out = isinstance(exc, openai.APITimeoutError) or (
            isinstance(exc, _transport_errors()) and "Timeout" in type(exc).__name__
        )
        if timed_out:
            tries = 1 + (self.config.max_retries if retries is None else retries)
            if streaming:
                what = f"went silent mid-answer for {timeout:g} s"
            elif tries > 1:
                waited = f", {time.monotonic() - started:.0f} s in all" if started else ""
                what = f"did not answer within {timeout:g} s on any of {tries} tries{waited}"
            else:
                what = f"did not answer within {timeout:g} s"
            return LLMError(
                f"the LLM at {url} {what}: raise the timeout ({TIMEOUT_SETTING}), "
                "lower the reasoning effort, or check the server"
            )
        if isinstance(exc, (openai.APIConnectionError, *_transport_errors(), OSError)):
            reason = _connection_reason(exc)
            if streaming:
                return LLMError(
                    f"the LLM at {url} dropped the connection mid-answer ({reason}): "
                    "check the server's logs and retry"
                )
            return LLMError(
                f"cannot reach the LLM at {url} ({reason}): start the server or set "
                f"{BASE_URL_SETTING}"
            )
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, openai.APIError):  # e.g. an error event inside a stream
            return LLMError(f"the LLM at {url} reported an error: {one_line(exc.message)}")
        return LLMError(f"talking to the LLM at {url} failed: {one_line(_describe(exc))}")

    def _status_error(self, exc: openai.APIStatusError) -> LLMError:
        url, status = self.config.base_url, exc.status_code
        detail = f"HTTP {status}: {_status_detail(exc)}"
        retried = status == 429 or status >= 500
        if retried and self.config.max_retries:
            n = self.config.max_retries
            detail = (
                f"HTTP {status} after {n} retr{'y' if n == 1 else 'ies'}: {_status_detail(exc)}"
            )
        if status in (401, 403):
            message = f"the LLM at {url} refused the API key ({detail}): set {API_KEY_SETTING}"
        elif status == 404:
            message = (
                f"model {self.config.model!r} not found at {url} ({detail}): set "
                f"{MODEL_SETTING} to a model the server lists (and check {BASE_URL_SETTING} "
                "ends in /v1)"
            )
        elif status == 429:
            message = f"the LLM at {url} is rate-limiting requests ({detail}): wait and try again"
        elif status >= 500:
            message = f"the LLM at {url} failed ({detail}): check the server's logs"
        elif status == 400 and "context" in detail.lower():
            message = (
                f"the LLM at {url} rejected the request ({detail}): the prompt is too long for "
                "the model's context; retrieve fewer passages or lower "
                f"{setting('max_tokens')}"
            )
        else:
            message = f"the LLM at {url} rejected the request ({detail})"
        return LLMError(message, status_code=status)


# --------------------------------------------------------------------------- helpers


def _events(reasoning: str, answer: str) -> Iterator[LLMEvent]:
    if reasoning:
        yield ReasoningDelta(reasoning)
    if answer:
        yield ContentDelta(answer)


def _add_tool_call_delta(calls: dict[int, dict[str, str]], delta: Any) -> None:
    """Accumulate a streamed tool call piece: id and name come first, arguments in pieces."""
    call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
    if delta.id:
        call["id"] = delta.id
    function = delta.function
    if function is not None:
        if function.name:
            call["name"] += function.name
        if function.arguments:
            call["arguments"] += function.arguments


def _with_reasoning_line(messages: list[dict[str, Any]], effort: str) -> list[dict[str, Any]]:
    """Harmony's own way: a ``Reasoning: <effort>`` line in the system message."""
    line = f"Reasoning: {effort}"
    if messages and messages[0].get("role") in ("system", "developer"):
        first = dict(messages[0])
        content = first.get("content")
        if isinstance(content, str):
            first["content"] = f"{line}\n\n{content}" if content else line
        elif isinstance(content, list):
            first["content"] = [{"type": "text", "text": line}, *content]
        else:
            first["content"] = line
        return [first, *messages[1:]]
    return [{"role": "system", "content": line}, *messages]


def _status_detail(exc: openai.APIStatusError) -> str:
    """The server's own error message, from any of the usual error body shapes."""
    body: Any = exc.body
    if isinstance(body, dict):
        body = body.get("error", body)
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail")
    if not body:
        body = exc.response.reason_phrase if exc.response is not None else exc.message
    return one_line(str(body))


def _connection_reason(exc: BaseException) -> str:
    """A short reason from the innermost cause of a connection error."""
    root: BaseException = exc
    seen = {id(root)}
    while True:
        nxt = root.__cause__ or root.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    text = f"{type(root).__name__} {root}".lower()
    if isinstance(root, ConnectionRefusedError) or "refused" in text:
        return "connection refused"
    if "name or service" in text or "nodename" in text or "getaddrinfo" in text:
        return "host name not found"
    if "name resolution" in text:
        return "host name not found"
    if "ssl" in text or "certificate" in text:
        return f"TLS error: {one_line(str(root), 120)}"
    if "incomplete" in text or "peer closed" in text:
        return "the server closed the connection before the response was complete"
    if "disconnected" in text:
        return "the server closed the connection without answering"
    return one_line(_describe(root), 120)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
