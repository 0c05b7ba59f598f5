"""``datamill probe context``: how much context a model takes, and what it costs (seed 002).

Embedded: for each context size, a fresh process loads the model with that ``n_ctx`` and runs a
prompt filling 90% of it; its peak RSS gives memory per context token (the slope over sizes),
the largest size that runs is the limit, and 80% of it is the recommended ``context_limit``.
Served (OpenAI-compatible): prompts of doubling length until the server refuses one; the token
counts come from the server's usage numbers (memory is the server's business and is not shown).
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from datamill.forked import in_fork

SAFE_SHARE = 0.8


def _embedded_one(n_ctx: int, fill: float) -> dict[str, Any]:
    from llama_cpp import Llama

    from datamill.llm.backends.embedded import default_model_path

    t0 = time.perf_counter()
    try:
        llm = Llama(model_path=str(default_model_path()), n_ctx=n_ctx, verbose=False)
        unit = llm.tokenize(b" hello", add_bos=False)
        want = int(n_ctx * fill)
        prompt = llm.detokenize(unit * max(1, want // len(unit))).decode("utf-8", "replace")
        out = llm.create_completion(prompt=prompt, max_tokens=1, temperature=0.0)
        used = int(out["usage"]["prompt_tokens"])  # type: ignore[index]
        ok, error = True, None
    except Exception as exc:  # out of memory or a context llama.cpp refuses
        used, ok, error = 0, False, f"{type(exc).__name__}: {exc}"[:200]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"n_ctx": n_ctx, "ok": ok, "prompt_tokens": used, "peak_rss_mb": round(rss, 1),
            "seconds": round(time.perf_counter() - t0, 2), "error": error}  # fmt: skip


def _trained_context() -> dict[str, Any]:
    from llama_cpp import Llama

    from datamill.llm.backends.embedded import default_model_path

    llm = Llama(model_path=str(default_model_path()), n_ctx=256, verbose=False)
    return {"n_ctx_train": int(llm._model.n_ctx_train())}


def _slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


def probe_embedded(sizes: list[int], fill: float = 0.9) -> dict[str, Any]:
    """Run the embedded model at each context size; stop at the first that fails."""
    from datamill.llm.backends.embedded import DEFAULT_MODEL

    # llama.cpp must never be loaded in this process: its state does not survive the forks below.
    trained = int(in_fork(_trained_context)["n_ctx_train"])
    rows: list[dict[str, Any]] = []
    for n in sorted(sizes):
        if n > trained:
            rows.append({"n_ctx": n, "ok": False, "error": f"beyond the model's trained context ({trained})"})
            break
        try:
            row = in_fork(_embedded_one, n, fill)
        except RuntimeError as exc:  # the child died: out of memory, or llama.cpp aborted
            row = {"n_ctx": n, "ok": False, "error": str(exc)}
        rows.append(row)
        if not row["ok"]:
            break
    good = [r for r in rows if r["ok"]]
    slope = _slope([(r["n_ctx"], r["peak_rss_mb"]) for r in good])
    largest = max((r["n_ctx"] for r in good), default=0)
    return {
        "backend": "embedded",
        "model": DEFAULT_MODEL,
        "trained_context": trained,
        "sizes": rows,
        "memory_per_context_token_kb": None if slope is None else round(slope * 1024, 3),
        "largest_context": largest,
        "recommended_limit": int(largest * SAFE_SHARE),
        "trim_policy": "prompts over the limit keep their first 2/3 and last 1/3 with ' [...] ' between; "
        "each trim is logged as trimmed_tokens in logs/attempts.jsonl",
    }


def probe_served(
    base_url: str, model: str, api_key: str | None, max_words: int, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Doubling prompts against an OpenAI-compatible server until one is refused."""
    from datamill.llm.backends.openai import OpenAIBackend
    from datamill.llm.types import BackendError, parse_completion

    async def main() -> list[dict[str, Any]]:
        backend = OpenAIBackend(base_url, model, api_key, timeout_s, 1)
        rows: list[dict[str, Any]] = []
        words = 256
        try:
            while words <= max_words:
                payload = {"model": model, "max_tokens": 1, "temperature": 0.0,
                           "messages": [{"role": "user", "content": "hello " * words}]}  # fmt: skip
                t0 = time.perf_counter()
                try:
                    resp = parse_completion(await backend.complete(payload))
                    rows.append({"words": words, "ok": True, "prompt_tokens": resp.prompt_tokens,
                                 "seconds": round(time.perf_counter() - t0, 3)})  # fmt: skip
                except BackendError as exc:
                    rows.append({"words": words, "ok": False, "error": f"{exc.kind}: {exc}"[:200]})
                    break
                words *= 2
        finally:
            await backend.aclose()
        return rows

    rows = asyncio.run(main())
    good = [r for r in rows if r["ok"]]
    largest = max((r["prompt_tokens"] for r in good), default=0)
    return {
        "backend": "openai",
        "model": model,
        "sizes": rows,
        "memory_per_context_token_kb": None,
        "largest_context": largest,
        "recommended_limit": int(largest * SAFE_SHARE),
        "note": "largest prompt the server accepted (its own usage counts); "
        "the true limit lies below the first refused size",
    }


PROBE_SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["colour", "count"],
}
# The structured-output ladder, top down, as the LLM column sends each rung.
FORMATS: dict[str, dict[str, Any]] = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "probe", "schema": PROBE_SCHEMA, "strict": True}},
    "json_object_schema": {"type": "json_object", "schema": PROBE_SCHEMA},
    "json_object": {"type": "json_object"},
}


def probe_server(
    base_url: str, model: str, api_key: str | None, max_words: int = 0, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Ask an OpenAI-compatible server once per capability: which response formats it accepts
    (and whether the answer then parses and matches the schema), whether it takes and honours a
    ``seed``, whether it accepts list-form message content, and (with ``max_words``) its context."""
    from datamill.llm.backends.openai import OpenAIBackend
    from datamill.llm.structured import SchemaCheck, parse_structured
    from datamill.llm.types import BackendError, parse_completion

    user = "Give one colour and a count from 1 to 9 as JSON with keys colour and count."
    check = SchemaCheck(PROBE_SCHEMA)

    async def ask(backend: OpenAIBackend, **extra: Any) -> tuple[str | None, str | None]:
        payload = {"model": model, "max_tokens": 48, "temperature": 0.0,
                   "messages": [{"role": "user", "content": user}], **extra}  # fmt: skip
        try:
            return parse_completion(await backend.complete(payload)).text, None
        except BackendError as exc:
            return None, f"{exc.kind}: {exc}"[:200]

    async def main() -> dict[str, Any]:
        backend = OpenAIBackend(base_url, model, api_key, timeout_s, 1)
        caps: dict[str, Any] = {}
        try:
            text, err = await ask(backend)
            caps["chat"] = {"ok": err is None, "error": err}
            for name, fmt in FORMATS.items():
                text, err = await ask(backend, response_format=fmt)
                valid = err is None and text is not None and parse_structured(text, check).ok
                caps[name] = {"ok": err is None, "valid_json": valid, "error": err}
            seeded = [await ask(backend, seed=1234, temperature=1.0) for _ in range(2)]
            err = seeded[0][1] or seeded[1][1]
            caps["seed"] = {"ok": err is None, "reproducible": err is None and seeded[0][0] == seeded[1][0],
                            "error": err}  # fmt: skip
            listed = [{"role": "user", "content": [{"type": "text", "text": user}]}]
            text, err = await ask(backend, messages=listed)
            caps["list_content"] = {"ok": err is None, "error": err}
        finally:
            await backend.aclose()
        return caps

    caps = asyncio.run(main())
    ladder = next((name for name in FORMATS if caps[name]["ok"]), "prompt")
    result: dict[str, Any] = {"base_url": base_url, "model": model, "capabilities": caps, "ladder_uses": ladder}
    if max_words:
        served = probe_served(base_url, model, api_key, max_words, timeout_s)
        result["largest_context"] = served["largest_context"]
    return result
