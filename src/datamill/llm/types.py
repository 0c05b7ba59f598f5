"""Requests, responses and errors shared by every backend.

A request is the OpenAI chat-completions payload as a plain dict, built once; its canonical JSON
is what the cache key hashes. A response keeps the raw body (what the cache stores) beside the
fields parsed from it, so parsing can always be redone from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from datamill.errors import DatamillError


@dataclass(frozen=True)
class ChatResponse:
    """A completed request: the raw body and what was read from it."""

    raw: bytes
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


class BackendError(DatamillError):
    """A failed attempt, translated at the backend boundary.

    ``kind`` is the short type the attempt log records: ``rate_limited``, ``overloaded``,
    ``server_error``, ``timeout``, ``connection``, ``invalid_response``, ``bad_request``,
    ``unsupported_response_format``, ``auth``.
    """

    RETRYABLE = frozenset({"rate_limited", "overloaded", "server_error", "timeout", "connection", "invalid_response"})

    def __init__(self, kind: str, message: str, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.http_status = http_status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE


class BudgetExceeded(DatamillError):
    """The run's cost or token budget is spent: stop cleanly, resumably."""


def parse_completion(raw: bytes) -> ChatResponse:
    """Read an OpenAI-format chat completion body; raises BackendError(invalid_response)."""
    try:
        body = orjson.loads(raw)
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("message.content is not a string")
        usage: dict[str, Any] = body.get("usage") or {}
        return ChatResponse(
            raw=raw,
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
        )
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise BackendError("invalid_response", f"unreadable completion body: {type(exc).__name__}") from None
