"""A fake OpenAI-compatible chat-completions server, for tests and benchmarks (loopback only).

``datamill bench serve-fake --latency-ms L --fault-rate F``. Answers are a pure function of the
request (messages and seed), so a retried request gets the same answer and runs are
reproducible. Faults are injected at rate F, spread over: 429 with Retry-After, 500, a timeout
(the reply comes after ``--timeout-sleep-s``), a truncated body, and invalid JSON content.
With a schema (``response_format`` json_schema, or the schema instruction in the prompt) the
answer is a minimal instance of it; a packed request gets one answer per numbered item.
``GET /stats`` reports requests, statuses, in-flight counts and prompt tokens; ``POST /reset``
zeroes them. With ``--echo-auth`` every body echoes the Authorization header back (to prove
datamill never writes it anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson

_VOCAB = (
    "market",
    "river",
    "morning",
    "bread",
    "school",
    "garden",
    "letter",
    "winter",
    "bicycle",
    "kitchen",
    "window",
    "teacher",
    "harvest",
    "village",
    "station",
    "neighbour",
    "evening",
    "coffee",
    "workshop",
    "orchard",
    "walks",
    "reads",
    "builds",
    "repairs",
    "visits",
    "cooks",
    "paints",
    "counts",
    "carries",
    "remembers",
    "quiet",
    "busy",
    "careful",
    "early",
    "patient",
    "small",
    "old",
    "bright",
    "steady",
    "green",
)
FAULTS = ("rate_limited", "server_error", "timeout", "truncated", "invalid_json")
_PACK = re.compile(r"You will get (\d+) numbered items")
_ITEM = re.compile(r"^Item (\d+):\n", re.M)


def schema_instance(schema: dict[str, Any], h: str) -> Any:
    """A small value that satisfies ``schema`` (the subset of JSON schema recipes use)."""
    if "enum" in schema:
        return schema["enum"][int(h[:4], 16) % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type", "object")
    if isinstance(t, list):
        t = t[0]
    if t == "object":
        props = schema.get("properties", {})
        return {k: schema_instance(v, hashlib.sha256((h + k).encode()).hexdigest()) for k, v in props.items()}
    if t == "array":
        n = max(int(schema.get("minItems", 1)), 1)
        return [schema_instance(schema.get("items", {"type": "string"}), h) for _ in range(n)]
    if t == "integer":
        lo = int(schema.get("minimum", 0))
        hi = int(schema.get("maximum", lo + 100))
        return lo + int(h[:6], 16) % (hi - lo + 1)
    if t == "number":
        low = float(schema.get("minimum", 0.0))
        return low + (int(h[:6], 16) % 1000) / 1000.0
    if t == "boolean":
        return int(h[0], 16) % 2 == 0
    if t == "null":
        return None
    n = int(schema.get("minLength", 0))
    word = f"w{h[:6]}"
    if n < 5:
        return word + "x" * max(0, n - len(word))
    # Text of 5 characters or more is words of a small vocabulary picked by the hash, so text metrics (trigrams,
    # type-token ratios, sentence starters) have something to measure.
    words: list[str] = []
    k = 0
    while len(" ".join(words)) < n:
        d = hashlib.sha256(f"{h}:{k}".encode()).digest()
        words.extend(_VOCAB[b % len(_VOCAB)] for b in d[:4])
        k += 1
    text = " ".join(words)
    top = schema.get("maxLength")
    return text[: int(top)].rstrip() if top is not None and len(text) > int(top) else text + "."


def _schema_from(payload: dict[str, Any]) -> dict[str, Any] | None:
    fmt = payload.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return dict(fmt["json_schema"]["schema"])
    for m in payload.get("messages", []):
        text = m.get("content") or ""
        for marker in ("matches this JSON schema:\n", "match this JSON schema:\n"):
            if marker in text:
                tail = text.split(marker, 1)[1].split("\n", 1)[0]
                try:
                    return dict(orjson.loads(tail))
                except orjson.JSONDecodeError:
                    return None
    return None


def answer_for(payload: dict[str, Any]) -> str:
    """The deterministic content of the reply to ``payload``."""
    messages = payload.get("messages", [])
    h = hashlib.sha256(orjson.dumps([messages, payload.get("seed")])).hexdigest()
    schema = _schema_from(payload)
    system = " ".join(m.get("content") or "" for m in messages if m.get("role") == "system")
    user = messages[-1].get("content", "") if messages else ""
    pack = _PACK.search(system)
    if pack:
        k = int(pack.group(1))
        if schema is not None and "answers" in schema.get("properties", {}):  # the pack's envelope: one answer's
            schema = schema["properties"]["answers"]["items"]["properties"]["answer"]
        bodies = _ITEM.split(user)[1:]  # [id, text, id, text, ...]
        texts = {int(bodies[i]): bodies[i + 1].strip() for i in range(0, len(bodies) - 1, 2)}
        answers = []
        for i in range(1, k + 1):
            hi = hashlib.sha256((h + str(i)).encode()).hexdigest()
            ans = schema_instance(schema, hi) if schema else f"answer {hi[:8]} about: {texts.get(i, '')[:60]}"
            answers.append({"id": i, "answer": ans})
        return orjson.dumps({"answers": answers}).decode()
    if schema is not None:
        return orjson.dumps(schema_instance(schema, h)).decode()
    return f"answer {h[:8]} about: {user[:60]}"


class FakeServer:
    def __init__(
        self,
        latency_ms: float = 0.0,
        fault_rate: float = 0.0,
        seed: int = 0,
        timeout_sleep_s: float = 5.0,
        echo_auth: bool = False,
        reject_formats: tuple[str, ...] = (),
        max_context: int | None = None,
        reject_status: int = 400,
        reject_body: str | None = None,
    ) -> None:
        self.reject_formats = reject_formats
        self.reject_status = reject_status
        self.reject_body = reject_body
        self.max_context = max_context
        self.latency = latency_ms / 1000.0
        self.fault_rate = fault_rate
        self.rng = random.Random(seed)
        self.timeout_sleep_s = timeout_sleep_s
        self.echo_auth = echo_auth
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.statuses: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.request_hashes: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "statuses": dict(self.statuses),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "distinct_requests": len(self.request_hashes),
            "repeated_requests": sum(n - 1 for n in self.request_hashes.values() if n > 1),
        }

    def _refusal(self, fmt: str) -> bytes:
        if self.reject_body is not None:
            return orjson.dumps({"error": {"message": self.reject_body}})
        if self.reject_status == 422:  # FastAPI's validation error, as a pydantic server sends it
            loc = ["body", "response_format", "type"]
            msg = "Input should be 'text' or 'json_object'"
            return orjson.dumps({"detail": [{"type": "literal_error", "loc": loc, "msg": msg, "input": fmt}]})
        if self.reject_status == 500:  # llama-cpp-python's server: the validation error inside a 500
            detail = (f"[{{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                      f"'msg': \"Input should be 'text' or 'json_object'\", 'input': '{fmt}'}}]")  # fmt: skip
            return orjson.dumps({"error": {"message": detail, "type": "internal_server_error"}})
        return orjson.dumps({"error": {"message": f"response_format type {fmt} is not supported"}})

    def app(self) -> Any:
        from aiohttp import web

        async def completions(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                raw = await request.read()
                payload = orjson.loads(raw)
                auth = request.headers.get("Authorization", "")
                echo = {"echo": auth} if self.echo_auth else {}
                fmt = (payload.get("response_format") or {}).get("type")
                if fmt in self.reject_formats:  # like llama.cpp's server refusing json_schema
                    self.statuses["rejected_format"] += 1
                    return web.Response(status=self.reject_status, body=self._refusal(fmt))
                words = sum(len((m.get("content") or "").split()) for m in payload.get("messages", []))
                if self.max_context is not None and words > self.max_context:
                    self.statuses["context_exceeded"] += 1
                    msg = {"error": {"message": f"context length exceeded: {words} > {self.max_context} tokens"}}
                    return web.Response(status=400, body=orjson.dumps(msg))
                if self.latency:
                    await asyncio.sleep(self.latency)
                fault = self.rng.choice(FAULTS) if self.fault_rate and self.rng.random() < self.fault_rate else None
                self.statuses[fault or "ok"] += 1
                if fault == "rate_limited":
                    body = {"error": {"message": f"slow down {auth}" if self.echo_auth else "slow down"}}
                    return web.Response(status=429, body=orjson.dumps(body), headers={"Retry-After": "0.05"})
                if fault == "server_error":
                    body = {"error": {"message": f"boom for {auth}" if self.echo_auth else "boom"}}
                    return web.Response(status=500, body=orjson.dumps(body))
                if fault == "timeout":
                    await asyncio.sleep(self.timeout_sleep_s)
                messages = payload.get("messages", [])
                self.request_hashes[hashlib.sha256(raw).hexdigest()] += 1
                prompt_tokens = sum(len((m.get("content") or "").split()) for m in messages)
                self.prompt_tokens += prompt_tokens
                content = answer_for(payload)
                if fault == "invalid_json":
                    content = "Sure! Here is " + content[: len(content) // 2]
                self.completion_tokens += len(content.split())  # what its usage fields bill
                reply = orjson.dumps(
                    {
                        "id": "cmpl-fake",
                        "object": "chat.completion",
                        "model": payload.get("model", "fake"),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": len(content.split()),
                            "total_tokens": prompt_tokens + len(content.split()),
                        },
                        **echo,
                    }
                )
                if fault == "truncated":
                    reply = reply[: len(reply) // 2]
                return web.Response(status=200, body=reply, content_type="application/json")
            finally:
                self.in_flight -= 1

        async def stats(request: web.Request) -> web.Response:
            return web.Response(body=orjson.dumps(self.stats()), content_type="application/json")

        async def reset(request: web.Request) -> web.Response:
            self.reset()
            return web.Response(body=b"{}", content_type="application/json")

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", completions)
        app.router.add_get("/stats", stats)
        app.router.add_post("/reset", reset)
        return app


@contextlib.contextmanager
def running(*args: str) -> Iterator[str]:
    """``datamill bench serve-fake ARGS`` in its own process on a free loopback port; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "datamill", "bench", "serve-fake", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def serve(host: str, port: int, server: FakeServer) -> None:
    """Serve until killed; prints ``listening on http://HOST:PORT/v1`` once bound."""
    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://{host}:{bound}/v1", flush=True)
        sys.stdout.flush()
        await asyncio.Event().wait()

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
