"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, and which HTTP
status each library error becomes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import (
    JSONResponse,
)

from ossrag.embed.encoders import EmbedderError
from ossrag.generate.budget import ContextBudgetError
from ossrag.generate.llm import LLMError
from ossrag.store.milvus import StoreError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_response(status: int, message: str, kind: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(message, kind), status_code=status, headers=headers)


def api_error(exc: Exception) -> ApiError:
    """A library error as the HTTP error a client should see."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextBudgetError):
        return ApiError(400, str(exc))
    if isinstance(exc, LLMError):
        return ApiError(502, str(exc), "llm_error")
    if isinstance(exc, (StoreError, EmbedderError)):
        return ApiError(503, str(exc), "server_error")
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the request took longer than OSSRAG_REQUEST_TIMEOUT", "timeout")
    log.error("unexpected error", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
