"""LLM columns: a Jinja2 prompt over earlier columns, answered by a model, parsed after the cache.

A batch of slots is answered concurrently on one event loop per process (the adaptive limiter
in the client keeps in-flight requests under the model's ``concurrency``). Each slot's request
carries a ``seed`` derived from the slot seed, so two slots with the same prompt are two samples.
With a schema, the answer is JSON validated against it: local repairs first, then up to
``max_repairs`` repair prompts; a slot that still fails is failed with the reason, never dropped
or half-written. With ``pack: k``, k items share one request and one system prompt; items whose
answer does not parse fall back to single requests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamill.columns.base import Column, SlotState
from datamill.llm.backends.base import Backend
from datamill.llm.cache import ResponseCache
from datamill.llm.client import LLMClient, LLMFailed
from datamill.llm.runlimits import RunLimits, model_key
from datamill.llm.structured import (
    Parsed,
    SchemaCheck,
    parse_json,
    parse_structured,
    repair_message,
    schema_instruction,
)
from datamill.llm.telemetry import AttemptLog
from datamill.llm.types import BudgetExceeded, ChatResponse
from datamill.recipe.check import JINJA
from datamill.recipe.model import LLMColumn, ModelSpec
from datamill.recipe.sandbox import SecurityError, UnsafeTemplate, render_guard
from datamill.seeds import sub_seed

PACK_INSTRUCTIONS = (
    "You will get {k} numbered items. Answer each one on its own. Reply with only a JSON object "
    '{{"answers": [{{"id": 1, "answer": ...}}, ...]}} holding exactly {k} answers, one per item id.'
)
# The structured-output ladder, top down: OpenAI's json_schema; json_object carrying the schema
# (llama.cpp's servers turn it into a grammar); plain json_object; prompt and parse.
FORMAT_FALLBACK = {"json_schema": "json_object_schema", "json_object_schema": "json_object", "json_object": "prompt"}
# The rung each model settled on in this process: a server that refused json_schema for one
# column or slot is not asked again for the rest of the run.
LEARNED_FORMAT: dict[tuple[str, str | None, str | None], str] = {}


def _model_key(model: ModelSpec) -> tuple[str, str | None, str | None]:
    return (model.backend, model.base_url, model.model)


@dataclass
class RunContext:
    """What LLM columns need from the run: where the cache and attempt log live, and usage."""

    run_dir: Path | None
    run_id: str
    use_cache: bool = True
    limits: RunLimits | None = None  # run-wide concurrency, rates and budgets (shared by workers)
    workers: int = 1  # processes sharing this machine's cores (the embedded model's thread default)
    journal: Any = None  # per-range cache and attempt log (Ray tasks: datamill.llm.journal.RangeJournal)


def preflight(spec: ModelSpec) -> None:
    """Bad input caught before a run writes anything: a missing key, a missing extra."""
    from datamill.errors import UsageError

    if spec.api_key_env and not os.environ.get(spec.api_key_env):
        raise UsageError(f"model.api_key_env: environment variable {spec.api_key_env} is not set")
    if spec.backend == "openai":
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            raise UsageError("the openai backend needs aiohttp: pip install 'datamill[llm]'") from None
    else:
        from datamill.llm.backends.embedded import default_model_path

        if not (spec.model or "").endswith(".gguf"):
            default_model_path()
        if importlib.util.find_spec("llama_cpp") is None:
            raise UsageError("the embedded backend needs llama-cpp-python: pip install 'datamill[local]'")


def make_backend(spec: ModelSpec, workers: int = 1) -> tuple[Backend, str | None]:
    """The backend a model block names, and the secret to keep out of everything it writes."""
    if spec.backend == "openai":
        from datamill.errors import UsageError
        from datamill.llm.backends.openai import OpenAIBackend

        key = None
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise UsageError(f"model.api_key_env: environment variable {spec.api_key_env} is not set")
        assert spec.base_url is not None and spec.model is not None
        return OpenAIBackend(spec.base_url, spec.model, key, spec.timeout_s, spec.concurrency), key
    from datamill.llm.backends.embedded import EmbeddedBackend, default_threads

    return EmbeddedBackend(spec.model, n_ctx=spec.n_ctx, threads=spec.threads or default_threads(workers)), None


def model_specs(recipe: Any) -> dict[str, ModelSpec]:
    """The model block of each distinct model among a recipe's LLM columns, in column order."""
    from datamill.recipe.check import column_model

    specs: dict[str, ModelSpec] = {}
    for col in recipe.columns.values():
        if isinstance(col, LLMColumn):
            spec = column_model(recipe, col)
            specs.setdefault(model_key(spec), spec)
    return specs


def recipe_model_slots(recipe: Any) -> dict[str, int]:
    """Each distinct model of a recipe's LLM columns and its index in the run-wide limits."""
    return {key: i for i, key in enumerate(model_specs(recipe))}


def _rank(mode: str) -> int:
    """How far down the ladder a mode is (json_schema is 0)."""
    rank, m = 0, "json_schema"
    while m != mode and m in FORMAT_FALLBACK:
        m, rank = FORMAT_FALLBACK[m], rank + 1
    return rank


class LLM(Column):
    def __init__(
        self,
        name: str,
        spec: LLMColumn,
        model: ModelSpec,
        schema: dict[str, Any] | None,
        ctx: RunContext | None,
        slots: dict[str, int] | None = None,
    ) -> None:
        super().__init__(name, spec.emit)
        self.slots = slots or {model_key(model): 0}
        self.spec = spec.llm
        self.model = model
        self.schema = schema
        self.check = SchemaCheck(schema) if schema is not None else None
        self._system = JINJA.from_string(self.spec.system) if self.spec.system else None
        self._prompt = JINJA.from_string(self.spec.prompt)
        self.ctx = ctx
        top = "json_schema" if model.structured == "auto" else model.structured
        self.mode: str = LEARNED_FORMAT.get(_model_key(model), top) if schema else "prompt"
        if schema and model.structured != "auto":
            self.mode = top  # a format the recipe names is used as named
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_loop = True
        self._client: LLMClient | None = None

    # -- wiring -------------------------------------------------------------------------------

    def client(self) -> LLMClient:
        if self._client is None:
            backend, secret = make_backend(self.model, self.ctx.workers if self.ctx else 1)
            cache = log = ledger = None
            if self.ctx is not None and self.ctx.journal is not None:
                cache = self.ctx.journal.cache if self.ctx.use_cache else None
                log = self.ctx.journal.log
                assert self.ctx.run_dir is not None
                ledger = self.ctx.run_dir / "logs" / "spend.jsonl"
            elif self.ctx is not None and self.ctx.run_dir is not None:
                if self.ctx.use_cache:
                    cache = ResponseCache(self.ctx.run_dir / "cache" / "llm.sqlite")
                log = AttemptLog(self.ctx.run_dir / "logs" / "attempts.jsonl", self.ctx.run_id)
                ledger = self.ctx.run_dir / "logs" / "spend.jsonl"
            limits = None
            if self.ctx is not None:
                if self.ctx.limits is None:  # no executor made one: this process is the whole run
                    self.ctx.limits = RunLimits(len(self.slots), shared=False)
                    if ledger is not None:
                        self.ctx.limits.load_ledger(ledger, self.slots)
                limits = self.ctx.limits
            slot = self.slots[model_key(self.model)]
            self._client = LLMClient(backend, self.model, cache, log, limits, secret=secret, slot=slot, ledger=ledger)
        return self._client

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._own_loop = True
        return self._loop

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` (shared by the columns of one runner, which closes it)."""
        self._loop, self._own_loop = loop, False

    def close(self) -> None:
        if self._client is not None and self._loop is not None:
            self._loop.run_until_complete(self._client.backend.aclose())
        if self._loop is not None and self._own_loop:
            self._loop.close()
        self._client = None
        self._loop = None

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, batch: Sequence[SlotState]) -> None:
        live = [s for s in batch if s.failed is None and s.dropped is None]
        if live:
            self.loop().run_until_complete(self._evaluate(live))

    async def aevaluate(self, batch: Sequence[SlotState]) -> None:
        live = [s for s in batch if s.failed is None and s.dropped is None]
        if live:
            await self._evaluate(live)

    def evaluate_row(self, state: SlotState, row: dict[str, Any], rng: Any) -> Any:
        raise NotImplementedError("LLM columns are evaluated a batch at a time")

    async def _evaluate(self, states: list[SlotState]) -> None:
        items = [(s, row) for s in states for row in s.rows]
        k = self.spec.pack
        if k == 1:
            groups = [[item] for item in items]
        else:
            # Groups follow the global slot // k grid (shard and part bounds are aligned to k),
            # so which items share a request does not depend on how the run was split; a planner's
            # category boundary also splits a group (a batch writes one category).
            groups = []
            for item in items:
                head = groups[-1][0][0] if groups else None
                if (head is not None and head.slot // k == item[0].slot // k and len(groups[-1]) < k
                        and (head.plan or {}).get("name") == (item[0].plan or {}).get("name")):  # fmt: skip
                    groups[-1].append(item)
                else:
                    groups.append([item])
        results = await asyncio.gather(*(self._group(g) for g in groups), return_exceptions=True)
        for group, res in zip(groups, results, strict=True):
            if isinstance(res, (BudgetExceeded, UnsafeTemplate)) or (
                isinstance(res, BaseException) and not isinstance(res, Exception)
            ):
                raise res
            if isinstance(res, Exception):  # nothing is silent: the group's slots fail with the reason
                for state, _ in group:
                    state.failed = state.failed or f"{self.name}: {type(res).__name__}: {res}"

    async def _group(self, group: list[tuple[SlotState, dict[str, Any]]]) -> None:
        if len(group) > 1:
            leftovers = await self._packed(group)
        else:
            leftovers = group
        await asyncio.gather(*(self._single_into(s, row) for s, row in leftovers))

    async def _single_into(self, state: SlotState, row: dict[str, Any]) -> None:
        if state.failed is not None:
            return
        try:
            row[self.name] = await self._single(state, row)
        except LLMFailed as exc:
            state.failed = f"{self.name}: {exc.kind}: {exc}"
        except (BudgetExceeded, UnsafeTemplate):
            raise
        except SecurityError as exc:
            raise render_guard(self.name, exc) from None
        except Exception as exc:  # a template or backend bug fails this slot alone
            state.failed = f"{self.name}: {type(exc).__name__}: {exc}"

    def _render(self, state: SlotState, row: dict[str, Any]) -> tuple[str | None, str]:
        context = state.template_context(row)
        try:
            system = self._system.render(**context) if self._system else None
            return system, self._prompt.render(**context)
        except SecurityError as exc:
            raise render_guard(self.name, exc) from None

    def _system_text(self, system: str | None) -> str | None:
        if self.schema is None:
            return system
        instruction = schema_instruction(self.schema)
        return f"{system}\n\n{instruction}" if system else instruction

    def _trim(self, prompt: str) -> tuple[str, int]:
        """Cut the middle of a prompt longer than ``context_limit`` tokens (about 4 chars each)."""
        limit = self.model.context_limit
        if limit is None or len(prompt) <= limit * 4:
            return prompt, 0
        keep = limit * 4
        head, tail = prompt[: keep * 2 // 3], prompt[len(prompt) - keep // 3 :]
        return head + " [...] " + tail, (len(prompt) - keep) // 4

    def _payload(
        self, messages: list[dict[str, str]], seed: int, schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The request body; ``schema`` replaces the column's (a packed request's envelope)."""
        schema = schema or self.schema
        payload: dict[str, Any] = {
            "model": self.model.model or "default",
            "messages": messages,
            "temperature": self.spec.temperature,
            "max_tokens": self.spec.max_tokens,
        }
        if self.model.extra_body:
            payload = {**self.model.extra_body, **payload}  # what datamill sets is not overridden
        if self.model.send_seed:
            payload["seed"] = seed
        if schema is not None and self.mode == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": self.name, "schema": schema, "strict": True},
            }
        elif schema is not None and self.mode == "json_object_schema":
            payload["response_format"] = {"type": "json_object", "schema": schema}
        elif schema is not None and self.mode == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _seed(self, state: SlotState) -> int:
        return sub_seed(state.seed, "llm:" + self.name) & 0x7FFFFFFF

    async def _ask(
        self,
        messages: list[dict[str, str]],
        seed: int,
        slot: int,
        judge: Any,
        pack: int = 1,
        extra: dict[str, Any] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> ChatResponse:
        client = self.client()
        while True:
            used = self.mode
            try:
                out = await client.request(
                    self._payload(messages, seed, schema),
                    slot=slot,
                    column=self.name,
                    judge=judge,
                    pack=pack,
                    extra=extra,
                )
                return out.response
            except LLMFailed as exc:
                # A server that refuses json_schema gets json_object, then plain prompting.
                if exc.kind == "unsupported_response_format":
                    key = _model_key(self.model)
                    learned = LEARNED_FORMAT.get(key)
                    if learned is not None and _rank(learned) > _rank(used):
                        self.mode = learned  # another column or request already stepped down
                        continue
                    if self.mode != used:
                        continue
                    if used in FORMAT_FALLBACK:
                        self.mode = LEARNED_FORMAT[key] = FORMAT_FALLBACK[used]
                        client.log_step_down(slot, self.name, used, self.mode, exc.kind)
                        continue
                raise

    def request_messages(self, state: SlotState, row: dict[str, Any]) -> tuple[list[dict[str, str]], int]:
        """The messages one unpacked request for ``row`` sends, and the tokens trimmed from it."""
        system, prompt = self._render(state, row)
        prompt, trimmed = self._trim(prompt)
        messages = []
        sys_text = self._system_text(system)
        if sys_text:
            messages.append({"role": "system", "content": sys_text})
        messages.append({"role": "user", "content": prompt})
        return messages, trimmed

    def packed_system(self, state: SlotState, row: dict[str, Any]) -> str:
        """The system prompt a packed request of ``pack`` items sends (shared by its items)."""
        system = self._render(state, row)[0]
        note = self._pack_note(self.spec.pack)
        return f"{system}\n\n{note}" if system else note

    def pack_schema(self, k: int) -> dict[str, Any] | None:
        """A packed request's structured-output schema: ``{answers: [{id, answer}] * k}``, each answer
        the column's schema (so a grammar-constrained server writes k answers, not one)."""
        if self.schema is None:
            return None
        item = {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": k},
                                                 "answer": self.schema}, "required": ["id", "answer"]}  # fmt: skip
        answers = {"type": "array", "items": item, "minItems": k, "maxItems": k}
        return {"type": "object", "properties": {"answers": answers}, "required": ["answers"]}

    def _pack_note(self, k: int) -> str:
        note = PACK_INSTRUCTIONS.format(k=k)
        if self.schema is not None:
            note += " Each answer must match this JSON schema:\n" + schema_instruction(self.schema).split("\n", 1)[1]
        return note

    async def _single(self, state: SlotState, row: dict[str, Any]) -> Any:
        messages, trimmed = self.request_messages(state, row)
        extra = {"trimmed_tokens": trimmed} if trimmed else None
        seed = self._seed(state)
        last: Parsed = Parsed()
        for round_ in range(self.spec.max_repairs + 1):
            holder: dict[str, Parsed] = {}

            def judge(
                resp: ChatResponse, round_: int = round_, holder: dict[str, Parsed] = holder
            ) -> tuple[str, str | None, list[str]]:
                p = parse_structured(resp.text, self.check)
                if not p.ok and resp.finish_reason == "length":
                    p.error, p.detail = (
                        "truncated",
                        f"the reply hit max_tokens ({self.spec.max_tokens}) before it was complete",
                    )
                holder["p"] = p
                repairs = [*p.repairs, *(["reask"] if round_ else [])]
                if p.ok:
                    return ("repaired" if repairs else "ok"), None, repairs
                return ("retry" if round_ < self.spec.max_repairs else "failed"), p.error, repairs

            resp = await self._ask(messages, seed, state.slot, judge, extra=extra)
            last = holder["p"]
            if last.ok:
                return last.value
            messages = [
                *messages,
                {"role": "assistant", "content": resp.text},
                {"role": "user", "content": repair_message(last, self.schema)},
            ]
        raise LLMFailed(last.error or "invalid", f"{last.detail} (after {self.spec.max_repairs} repair prompts)")

    async def _packed(self, group: list[tuple[SlotState, dict[str, Any]]]) -> list[tuple[SlotState, dict[str, Any]]]:
        """Ask for k answers in one request; returns the items that still need a single request."""
        k = len(group)
        rendered = [self._render(s, row) for s, row in group]
        system = rendered[0][0]
        if any(r[0] != system for r in rendered):
            return group  # items with different system prompts cannot share one
        pack_note = self._pack_note(k)
        sys_text = f"{system}\n\n{pack_note}" if system else pack_note
        user = "\n\n".join(f"Item {i + 1}:\n{self._trim(p)[0]}" for i, (_, p) in enumerate(rendered))
        messages = [{"role": "system", "content": sys_text}, {"role": "user", "content": user}]
        single_sys = self._system_text(system) or ""
        unpacked_chars = sum(len(single_sys) + len(p) for _, p in rendered)
        extra = {"unpacked_ratio": round(unpacked_chars / max(1, len(sys_text) + len(user)), 4)}
        answers: dict[int, Any] = {}

        def judge(resp: ChatResponse) -> tuple[str, str | None, list[str]]:
            answers.clear()
            p = parse_json(resp.text)
            items = p.value.get("answers") if p.ok and isinstance(p.value, dict) else None
            if not isinstance(items, list):
                return "retry", "invalid_json", p.repairs
            for entry in items:
                if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or "answer" not in entry:
                    continue
                value = entry["answer"]
                if self.check is None:
                    if not isinstance(value, str):
                        continue
                elif self.check.errors(value) is not None:
                    continue
                answers[entry["id"]] = value
            if len([i for i in answers if 1 <= i <= k]) == k:
                return ("repaired" if p.repairs else "ok"), None, p.repairs
            return "repaired", "partial_pack", [*p.repairs, "unpack_fallback"]

        first = group[0][0]
        try:
            await self._ask(messages, self._seed(first), first.slot, judge, pack=k, extra=extra,
                            schema=self.pack_schema(k))  # fmt: skip
        except LLMFailed:
            return group
        leftovers = []
        for i, (state, row) in enumerate(group, start=1):
            if i in answers:
                row[self.name] = answers[i]
            else:
                leftovers.append((state, row))
        return leftovers
