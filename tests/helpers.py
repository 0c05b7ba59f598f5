"""Helpers shared by test modules (importable as `helpers`)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DATAMILL_PROGRESS_INTERVAL"] = "3600"
    return env


class ScriptedServer:
    """A loopback OpenAI-compatible chat server whose reply is ``reply(last user message)``.

    For tests whose model follows a rule of the test's own (a judge, a teacher); ``asked`` keeps
    every message it got. Runs in a thread; ``close()`` stops it.
    """

    def __init__(self, reply: Callable[[str], str]) -> None:
        import http.server
        import threading

        asked = self.asked = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                asked.append(text)
                out = orjson.dumps({"id": "s", "object": "chat.completion", "model": "scripted",
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": reply(text)}}],
                                    "usage": {"prompt_tokens": 10, "completion_tokens": 2}})  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeServerProc:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datamill", "bench", "serve-fake", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=cli_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.base_url = line.removeprefix("listening on ")
        self.root = self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.root + "/stats", timeout=10) as r:
            return dict(orjson.loads(r.read()))

    def reset(self) -> None:
        req = urllib.request.Request(self.root + "/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def llm_recipe(
    base_url: str, size: int = 200, model: dict[str, Any] | None = None, column: str = "", part_size: int = 50
) -> str:
    """The issue's contract recipe, with the model block's settings overridable."""
    column = column or '{llm: {prompt: "Write one sentence about topic {{ topic }}", max_tokens: 64, temperature: 0.7}}'
    block = {
        "backend": "openai", "base_url": base_url, "model": "stub-model", "api_key_env": "DATAMILL_API_KEY",
        "concurrency": 64, "max_retries": 3, "timeout_s": 60, **(model or {}),
    }  # fmt: skip
    return f"""
name: topics
version: 0.1.0
seed: 7
size: {size}
model: {orjson.dumps(block).decode()}
columns:
  topic: {{sampler: integer, low: 0, high: 1000000}}
  answer: {column}
output: {{part_size: {part_size}}}
"""


def reseal(part: Any) -> None:
    """Make ``part``'s meta match its (edited) file, as a buggy writer would have committed it:
    for tests of what readers do with content that is whole but wrong (a planted duplicate)."""
    from pathlib import Path

    from datamill.store.integrity import HASH_FIELD, hash_file, seal

    path = Path(part)
    stem = path.name.split(".", 1)[0]
    meta_path = path.with_name(stem + ".meta.json")
    meta = orjson.loads(meta_path.read_bytes())
    meta.update({"bytes": path.stat().st_size, HASH_FIELD: hash_file(path)})
    if path.name.endswith(".jsonl"):
        meta["records"] = len(path.read_bytes().splitlines())
    meta_path.write_bytes(orjson.dumps(seal(meta)))
