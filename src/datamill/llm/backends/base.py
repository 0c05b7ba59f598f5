"""The backend interface: one coroutine per request, and ``aclose``.

A backend turns an OpenAI-format payload into raw response bytes, or raises
:class:`~datamill.llm.types.BackendError`. Everything else — cache, retries, limits, logging,
parsing — lives in :mod:`datamill.llm.client`, once, around any backend. A test backend is a
function (see :class:`FunctionBackend`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Backend(Protocol):
    name: str  # "openai", "embedded", ...

    @property
    def identity(self) -> str:
        """The model identity that goes into cache keys (backend kind and model name)."""

    async def complete(self, payload: dict[str, Any]) -> bytes:
        """Send one chat-completions payload; return the raw response body."""

    async def aclose(self) -> None: ...


class FunctionBackend:
    """A backend made of one async function: the test seam."""

    name = "function"

    def __init__(self, fn: Callable[[dict[str, Any]], Awaitable[bytes]], model: str = "fn") -> None:
        self._fn = fn
        self._model = model

    @property
    def identity(self) -> str:
        return f"function:{self._model}"

    async def complete(self, payload: dict[str, Any]) -> bytes:
        return await self._fn(payload)

    async def aclose(self) -> None:
        pass
