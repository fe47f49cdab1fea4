"""The request bodies of the API, validated by pydantic: a bad field is a 400 naming it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ossrag.choices import Effort, Mode
from ossrag.errors import FilterError
from ossrag.generate.structured import (
    BASE_SCHEMA,
    StructuredAnswerError,
    check_schema,
)
from ossrag.http.errors import ApiError
from ossrag.store.filters import Filter, filter_from_json

FILTER_DOC = (
    'ossrag: only passages of these files, e.g. {"path": ["guide/*"], "type": ["md"], '
    '"since": "2026-01-31"}'
)


def parse_filter(value: dict[str, Any] | None) -> Filter:
    """The request's `filter` object, or ApiError(400) naming the bad field."""
    try:
        return filter_from_json(value)
    except FilterError as exc:
        raise ApiError(400, str(exc)) from None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_have_text(
        cls, content: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        if isinstance(content, list):
            for i, part in enumerate(content):
                if part.get("type") == "text" and not isinstance(part.get("text"), str):
                    raise ValueError(f"part {i} is of type text but has no string 'text'")
        return content

    @property
    def text(self) -> str:
        """The message's text; content parts other than text are ignored."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class JsonSchemaFormat(BaseModel):
    """`response_format.json_schema`; its name, description and strict flag are not needed."""

    model_config = ConfigDict(extra="allow")

    schema_: dict[str, Any] = Field(alias="schema")


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: prose, a JSON answer (ossrag's), or the client's schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def answer_schema(self, field: str = "response_format.json_schema") -> dict[str, Any] | None:
        """The schema the answer must match, or None for prose; errors name `field`."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return BASE_SCHEMA
        if self.json_schema is None:
            raise ApiError(400, f"{field}: required when type is json_schema")
        try:
            return check_schema(self.json_schema.schema_)
        except StructuredAnswerError as exc:
            raise ApiError(400, f"{field}.schema: {exc}") from None


class ChatRequest(BaseModel):
    """OpenAI's chat-completions body; fields ossrag does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = "ossrag"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    reasoning_effort: Effort | None = None
    response_format: ResponseFormat | None = None
    top_k: int | None = Field(None, ge=1, le=100, description="ossrag: passages to retrieve")
    footnotes: bool = Field(True, description="ossrag: append a Sources list to the answer")
    filter: dict[str, Any] | None = Field(None, description=FILTER_DOC)


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    top_k: int | None = Field(None, ge=1, le=100)
    mode: Mode | None = None
    filter: dict[str, Any] | None = Field(None, description=FILTER_DOC)
    collection: str | None = Field(None, description="ossrag: collection (default: the first)")
    explain: bool = Field(False, description="add each passage's ranks and scores per route")

    @field_validator("query")
    @classmethod
    def _has_words(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is only whitespace")
        return query


class IngestRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description="absolute paths under an allowed root")
    include: list[str] = []
    exclude: list[str] = []
    prune: bool = Field(True, description="remove files that disappeared from the directories")
    collection: str | None = Field(default=None, description="collection (default: the first)")
