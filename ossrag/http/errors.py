"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, and which HTTP
status each library error becomes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse

from ossrag.errors import EmbedderError, LLMError, OssragError, StoreError
from ossrag.generate.budget import ContextBudgetError

log = logging.getLogger(__name__)


# Settings a request can set itself, by the request field that sets them.
REQUEST_FIELDS = {"effort": "reasoning_effort", "top_k": "top_k"}


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.param = param


def error_body(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(message, kind, param=param), status_code=status, headers=headers)


def http_word(name: str) -> str:
    """A setting as an HTTP client can change it: its request field, else the server's
    environment variable (which only the server's operator can set)."""
    return REQUEST_FIELDS.get(name) or f"the server's OSSRAG_{name.upper()}"


def http_message(exc: Exception) -> str:
    """A library error's message in HTTP's words."""
    return exc.worded(http_word) if isinstance(exc, OssragError) else str(exc)


def _param(exc: Exception) -> str | None:
    """The first request field the error asks to change."""
    settings = exc.settings if isinstance(exc, OssragError) else []
    return next((REQUEST_FIELDS[s] for s in settings if s in REQUEST_FIELDS), None)


def api_error(exc: Exception) -> ApiError:
    """A library error as the HTTP error a client should see."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextBudgetError):
        return ApiError(400, http_message(exc), param=_param(exc))
    if isinstance(exc, LLMError):
        return ApiError(502, http_message(exc), "llm_error", _param(exc))
    if isinstance(exc, (StoreError, EmbedderError)):
        return ApiError(503, http_message(exc), "server_error")
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the request took longer than OSSRAG_REQUEST_TIMEOUT", "timeout")
    log.error("unexpected error", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
