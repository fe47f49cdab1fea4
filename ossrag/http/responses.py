"""OpenAI's Responses API (``POST /v1/responses``): request body, memory and wire shapes.

Codex CLI, the Agents SDK and gpt-oss's own servers speak it. ``ossrag.http.app`` answers it with
the same engine turn as chat completions; this module only translates. Input is text or input
items (messages; other items, such as reasoning or tool outputs sent back, are ignored);
``instructions`` follow ossrag's system prompt; reasoning comes back as a reasoning item, never
in the output text; ``previous_response_id`` continues a conversation remembered in memory (the
last ``MAX_REMEMBERED`` responses stored, at most ``MAX_REMEMBERED_BYTES`` of them; a restart
forgets them).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ossrag.choices import Effort
from ossrag.generate.usage import responses_usage

MAX_REMEMBERED = 1000
# Each remembered response holds its whole conversation, so long conversations grow the memory
# with the square of their turns: the oldest go first once their text passes this.
MAX_REMEMBERED_BYTES = 64 * 1024 * 1024
TEXT_PARTS = ("input_text", "output_text", "text")


# --------------------------------------------------------------------------- request body


class InputItem(BaseModel):
    """One input item; only messages (typed or not) are read."""

    model_config = ConfigDict(extra="allow")

    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _message_has_a_role(self) -> InputItem:
        if self.type == "message" and self.role is None:
            raise ValueError("a message item needs a role (user, assistant, system, developer)")
        return self

    @property
    def text(self) -> str:
        """The message's text; parts other than text (images, files) are ignored."""
        if isinstance(self.content, list):
            return "".join(
                str(p.get("text", "")) for p in self.content if p.get("type") in TEXT_PARTS
            )
        return self.content or ""


class TextFormat(BaseModel):
    """``text.format``: prose, ossrag's JSON answer, or the client's schema."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat = Field(default_factory=lambda: TextFormat.model_validate({}))


class ReasoningConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    effort: Effort | None = None


class ResponsesRequest(BaseModel):
    """The Responses API body; fields ossrag does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = "ossrag"
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool = False
    store: bool = True
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    top_k: int | None = Field(None, ge=1, le=100, description="ossrag: passages to retrieve")
    footnotes: bool = Field(True, description="ossrag: append a Sources list to the answer")

    def messages(self, earlier: list[dict[str, str]]) -> list[dict[str, str]]:
        """The conversation as chat messages: instructions, the remembered turns, the input."""
        items = (
            [InputItem(role="user", content=self.input)]
            if isinstance(self.input, str)
            else self.input
        )
        return [
            *([{"role": "system", "content": self.instructions}] if self.instructions else []),
            *earlier,
            *({"role": i.role, "content": i.text} for i in items if i.type == "message" and i.role),
        ]


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Remembered:
    """A stored response and the conversation up to and including it."""

    response: dict[str, Any]
    turns: list[dict[str, str]]


class ResponseMemory:
    """The last `size` stored responses, for ``previous_response_id`` and GET by id, the
    oldest forgotten first once they hold more than `max_bytes` of text (the newest is kept
    whatever its size)."""

    def __init__(self, size: int = MAX_REMEMBERED, max_bytes: int = MAX_REMEMBERED_BYTES) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0  # the text held: each response's JSON and its turns' contents
        self._items: OrderedDict[str, tuple[Remembered, int]] = OrderedDict()
        self._lock = threading.Lock()  # requests remember from worker threads

    def remember(self, response: dict[str, Any], turns: list[dict[str, str]]) -> None:
        held = len(json.dumps(response, ensure_ascii=False)) + sum(
            len(turn.get("content") or "") for turn in turns
        )
        with self._lock:
            if (previous := self._items.pop(response["id"], None)) is not None:
                self.bytes -= previous[1]
            self._items[response["id"]] = (Remembered(response, turns), held)
            self.bytes += held
            while len(self._items) > self.size or (
                self.bytes > self.max_bytes and len(self._items) > 1
            ):
                self.bytes -= self._items.popitem(last=False)[1][1]

    def get(self, response_id: str) -> Remembered | None:
        with self._lock:
            found = self._items.get(response_id)
        return found[0] if found is not None else None


# --------------------------------------------------------------------------- wire shapes


class ResponseShapes:
    """The response object and its stream events for one answer, as OpenAI sends them."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.id = f"resp_{uuid.uuid4().hex}"
        self.created_at = int(time.time())
        self.reasoning_id = f"rs_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self._sequence = 0

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The response object (``usage`` in chat-completions shape, as the engine has it)."""
        r = self.request
        text_format: dict[str, Any] = {"type": r.text.format.type} if r.text else {"type": "text"}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": None,
            "instructions": r.instructions,
            "max_output_tokens": None,
            "model": r.model,
            "output": output,
            "parallel_tool_calls": False,
            "previous_response_id": r.previous_response_id,
            "reasoning": {"effort": r.reasoning.effort if r.reasoning else None, "summary": None},
            "store": r.store,
            "temperature": None,
            "text": {"format": text_format},
            "tool_choice": "none",
            "tools": [],
            "top_p": None,
            "truncation": "disabled",
            "usage": responses_usage(usage) if usage else None,
            "user": None,
            "metadata": {},
            **extra,
        }

    def reasoning_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [{"type": "reasoning_text", "text": text}] if status == "completed" else []
        return {
            "id": self.reasoning_id,
            "type": "reasoning",
            "summary": [],
            "content": content,
            "status": status,
        }

    def message_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [self.text_part(text)] if status == "completed" else []
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    @staticmethod
    def text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def output(self, reasoning: str, text: str) -> list[dict[str, Any]]:
        """The finished output items: reasoning (when there was any), then the message."""
        items = [self.reasoning_item(reasoning)] if reasoning else []
        return [*items, self.message_item(text)]

    def event(self, kind: str, **fields: Any) -> bytes:
        """One SSE event, numbered in sending order."""
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


class ResponseStream:
    """The Responses API's event sequence, fed the engine's deltas as they come:
    response.created, response.in_progress, then a reasoning item (output_item.added,
    content_part.added, reasoning_text.delta..., .done) and the message item (the same with
    output_text), then response.completed with the whole response."""

    def __init__(self, shapes: ResponseShapes) -> None:
        self.shapes = shapes
        self.reasoning: list[str] = []
        self.text: list[str] = []
        self.open: str | None = None  # "reasoning" | "message": the item being streamed
        self.items: list[dict[str, Any]] = []  # finished output items
        self.started = False

    def start(self, **extra: Any) -> list[bytes]:
        self.started = True
        response = self.shapes.response("in_progress", [], **extra)
        return [
            self.shapes.event("response.created", response=response),
            self.shapes.event("response.in_progress", response=response),
        ]

    def reasoning_delta(self, delta: str) -> list[bytes]:
        if self.open == "message":  # reasoning comes first; none is shown after the answer
            return []
        events = [] if self.open == "reasoning" else self._open("reasoning")
        self.reasoning.append(delta)
        return [*events, self._delta("response.reasoning_text.delta", delta)]

    def text_delta(self, delta: str) -> list[bytes]:
        events = [] if self.open == "message" else self._open("message")
        self.text.append(delta)
        return [*events, self._delta("response.output_text.delta", delta, logprobs=[])]

    def finish(self, usage: dict[str, Any], **extra: Any) -> tuple[list[bytes], dict[str, Any]]:
        """The closing events and the finished response object."""
        events = [] if self.open == "message" else self._open("message")
        events += self._close()
        response = self.shapes.response("completed", self.items, usage, **extra)
        return [*events, self.shapes.event("response.completed", response=response)], response

    def failed(self, message: str, code: str) -> list[bytes]:
        error = {"code": code, "message": message}
        response = self.shapes.response("failed", self.items, error=error)
        return [
            self.shapes.event("error", code=code, message=message, param=None),
            self.shapes.event("response.failed", response=response),
        ]

    def _index(self) -> int:
        return len(self.items)

    def _delta(self, kind: str, delta: str, **fields: Any) -> bytes:
        item_id = self.shapes.reasoning_id if self.open == "reasoning" else self.shapes.message_id
        return self.shapes.event(
            kind, item_id=item_id, output_index=self._index(), content_index=0, delta=delta,
            **fields,
        )  # fmt: skip

    def _open(self, kind: str) -> list[bytes]:
        events = self._close()
        self.open = kind
        if kind == "reasoning":
            item = self.shapes.reasoning_item("", "in_progress")
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item, part = self.shapes.message_item("", "in_progress"), self.shapes.text_part("")
        where = {"output_index": self._index()}
        return [
            *events,
            self.shapes.event("response.output_item.added", item=item, **where),
            self.shapes.event(
                "response.content_part.added",
                item_id=item["id"],
                content_index=0,
                part=part,
                **where,
            ),
        ]

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        where = {"output_index": self._index(), "content_index": 0}
        if self.open == "reasoning":
            text = "".join(self.reasoning)
            item = self.shapes.reasoning_item(text)
            done = self.shapes.event(
                "response.reasoning_text.done", item_id=item["id"], text=text, **where
            )
            part = item["content"][0]
        else:
            text = "".join(self.text)
            item = self.shapes.message_item(text)
            done = self.shapes.event(
                "response.output_text.done", item_id=item["id"], text=text, logprobs=[], **where
            )
            part = item["content"][0]
        self.open = None
        events = [
            done,
            self.shapes.event("response.content_part.done", item_id=item["id"], part=part, **where),
            self.shapes.event(
                "response.output_item.done", item=item, output_index=where["output_index"]
            ),
        ]
        self.items.append(item)
        return events
