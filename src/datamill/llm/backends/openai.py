"""Any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, Ollama, hosted APIs).

Built on aiohttp: one session and connection pool per process, reused across requests; the body
is encoded once with orjson. Every failure is translated into a BackendError whose message has
the API key removed, even when the server echoes it back.
"""

from __future__ import annotations

from typing import Any

import orjson

from datamill.errors import UsageError
from datamill.llm.types import BackendError

_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "grammar", "schema")
# Servers refuse a response_format they do not know with 400 (OpenAI, vLLM), 422 (FastAPI's
# validation) or 500 (llama-cpp-python's server wraps its validation error in a 500).
_FORMAT_STATUSES = (400, 422, 500)


def refuses_format(payload: dict[str, Any], status: int, body: str) -> bool:
    """True when a reply names the request's response_format as what it could not accept.

    A 500 must name ``response_format`` itself: an honest server error that mentions only a
    schema word is a transient failure, retried, not a reason to step down the format ladder.
    """
    if "response_format" not in payload or status not in _FORMAT_STATUSES:
        return False
    text = body.lower()
    if status == 500:
        return "response_format" in text
    return any(w in text for w in _FORMAT_WORDS)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from model servers; fall back to backoff


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float, max_connections: int) -> None:
        try:
            import aiohttp
        except ImportError:
            raise UsageError("the openai backend needs aiohttp: pip install 'datamill[llm]'") from None
        self._aiohttp = aiohttp
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._key = api_key
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: Any = None

    @property
    def identity(self) -> str:
        return f"openai:{self._model}"

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _session_get(self) -> Any:
        if self._session is None:
            connector = self._aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = self._aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def complete(self, payload: dict[str, Any]) -> bytes:
        aiohttp = self._aiohttp
        try:
            async with self._session_get().post(self._url, data=orjson.dumps(payload), headers=self._headers) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except TimeoutError:
            raise BackendError("timeout", f"no response within {self._timeout.total}s") from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise BackendError("connection", self.redact(f"connection dropped: {type(exc).__name__}")) from None
        except aiohttp.ClientError as exc:
            raise BackendError("connection", self.redact(f"{type(exc).__name__}: {exc}")) from None
        if status == 200:
            return body
        detail = self.redact(body[:300].decode("utf-8", "replace")).replace("\n", " ")
        if refuses_format(payload, status, body[:4096].decode("utf-8", "replace")):
            raise BackendError("unsupported_response_format", f"HTTP {status}: {detail}", status)
        if status == 429:
            raise BackendError("rate_limited", f"HTTP 429: {detail}", status, retry_after)
        if status in (503, 529):
            raise BackendError("overloaded", f"HTTP {status}: {detail}", status, retry_after)
        if status >= 500:
            raise BackendError("server_error", f"HTTP {status}: {detail}", status, retry_after)
        if status in (401, 403):
            raise BackendError("auth", f"HTTP {status}: {detail}", status)
        raise BackendError("bad_request", f"HTTP {status}: {detail}", status)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
