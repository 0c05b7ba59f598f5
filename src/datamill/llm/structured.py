"""Structured output that works on small models: local repairs, schema validation, repair prompts.

``parse_json`` tries the text as it is, then applies cheap local repairs in a fixed order and
records which ones it needed: ``strip_fences`` (a ```json block), ``extract_object`` (prose
around the first {...} or [...]), ``trailing_comma``, ``single_quotes``. What still fails goes
back to the model with :func:`repair_message`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


@dataclass
class Parsed:
    value: Any = None
    ok: bool = False
    error: str | None = None  # invalid_json | schema_mismatch
    detail: str = ""
    repairs: list[str] = field(default_factory=list)


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(text)
    except orjson.JSONDecodeError:
        return False, None


def _outermost(text: str) -> str | None:
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    close = "}" if text[start] == "{" else "]"
    end = text.rfind(close)
    return text[start : end + 1] if end > start else None


def parse_json(text: str) -> Parsed:
    """JSON from model text, with the local repairs it took (no schema check)."""
    ok, value = _loads(text.strip())
    if ok:
        return Parsed(value, True)
    repairs: list[str] = []
    candidate = text
    m = _FENCE.search(candidate)
    if m:
        candidate = m.group(1)
        repairs.append("strip_fences")
        ok, value = _loads(candidate.strip())
        if ok:
            return Parsed(value, True, repairs=repairs)
    inner = _outermost(candidate)
    if inner is not None and inner != candidate.strip():
        candidate = inner
        repairs.append("extract_object")
        ok, value = _loads(candidate)
        if ok:
            return Parsed(value, True, repairs=repairs)
    fixed = _TRAILING_COMMA.sub(r"\1", candidate)
    if fixed != candidate:
        candidate = fixed
        repairs.append("trailing_comma")
        ok, value = _loads(candidate)
        if ok:
            return Parsed(value, True, repairs=repairs)
    try:  # raw newlines and tabs inside strings (small models under a grammar write them)
        value = json.loads(candidate, strict=False)
        return Parsed(value, True, repairs=[*repairs, "control_chars"])
    except ValueError:
        pass
    if "'" in candidate and '"' not in candidate:
        ok, value = _loads(candidate.replace("'", '"'))
        if ok:
            return Parsed(value, True, repairs=[*repairs, "single_quotes"])
    return Parsed(None, False, "invalid_json", "the reply is not JSON", repairs)


class SchemaCheck:
    """Validates values against one JSON schema (compiled once)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema)
        self._validator = cls(schema)
        self.schema = schema

    def errors(self, value: Any) -> str | None:
        err = next(iter(self._validator.iter_errors(value)), None)
        if err is None:
            return None
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        return f"{where}: {err.message}"[:300]


def parse_structured(text: str, check: SchemaCheck | None) -> Parsed:
    """Parse ``text`` as JSON and validate it; without a schema the text is the value."""
    if check is None:
        return Parsed(text, True)
    parsed = parse_json(text)
    if not parsed.ok:
        return parsed
    problem = check.errors(parsed.value)
    if problem is not None:
        return Parsed(parsed.value, False, "schema_mismatch", problem, parsed.repairs)
    return parsed


def schema_instruction(schema: dict[str, Any]) -> str:
    """The prompt-and-parse fallback: tell the model the shape it must answer in."""
    return (
        "Reply with only a JSON value (no prose, no code fences) that matches this JSON schema:\n"
        + orjson.dumps(schema).decode()
    )


def repair_message(parsed: Parsed, schema: dict[str, Any] | None) -> str:
    what = "was not valid JSON" if parsed.error == "invalid_json" else f"did not match the schema ({parsed.detail})"
    shape = f" matching this JSON schema: {orjson.dumps(schema).decode()}" if schema else ""
    return f"Your reply {what}. Reply again with only the corrected JSON{shape}, and nothing else."
