"""A fast yes/no check of records against the common subset of JSON Schema.

``jsonschema`` walks a schema for every record it validates; an export checks every record, so
for schemas made only of the keywords below, :func:`compile_schema` turns the schema into nested
closures once. It answers only valid or not: ``jsonschema`` still writes the message of a record
that fails (and decides alone for any schema using another keyword). The semantics are those of
drafts 6 to 2020-12 (an integer may be written ``1.0``; ``format`` is an annotation), checked
against ``jsonschema`` itself in ``tests/quality/test_export.py``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples", "format",
                         "deprecated", "readOnly", "writeOnly"})  # fmt: skip
KEYWORDS = frozenset({"type", "enum", "const", "required", "properties", "additionalProperties", "items", "minLength",
                      "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems",
                      "maxItems", "pattern", "minProperties", "maxProperties"})  # fmt: skip
DRAFTS = ("Draft6Validator", "Draft7Validator", "Draft201909Validator", "Draft202012Validator")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema means it: 1 equals 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def fast_check(schema: Any) -> Check | None:
    """The compiled check of a whole schema, or None where ``jsonschema`` must decide: a draft
    before 6 (other integer and bound rules), or a keyword outside the subset."""
    import jsonschema

    if jsonschema.validators.validator_for(schema).__name__ not in DRAFTS:
        return None
    return compile_schema(schema)


def compile_schema(schema: Any) -> Check | None:
    """A check equivalent to ``jsonschema``'s ``is_valid`` for ``schema``, or None if it uses a
    keyword (``$ref``, ``anyOf``, ``patternProperties``, ...) outside the subset."""
    if schema is True:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, dict) or set(schema) - KEYWORDS - ANNOTATIONS:
        return None
    checks: list[Check] = []
    t = schema.get("type")
    if t is not None:
        names = t if isinstance(t, list) else [t]
        if not all(isinstance(n, str) and n in TYPES for n in names):
            return None
        tests = [TYPES[n] for n in names]
        checks.append(tests[0] if len(tests) == 1 else (lambda v: any(f(v) for f in tests)))
    if "enum" in schema:
        options = schema["enum"]
        if not isinstance(options, list):
            return None
        if options and all(isinstance(o, str) for o in options):
            strings = frozenset(options)
            checks.append(lambda v: isinstance(v, str) and v in strings)
        else:
            checks.append(lambda v: any(json_equal(v, o) for o in options))
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda v: json_equal(v, const))
    if not _add_object(schema, checks) or not _add_array(schema, checks) or not _add_bounds(schema, checks):
        return None
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(c(v) for c in checks)


def _same(v: Any) -> Any:
    return v


def _bound(applies: Check, measure: Callable[[Any], Any], op: Callable[[Any, Any], Any], bound: Any) -> Check:
    """``op(measure(v), bound)`` for the values the keyword applies to; true for every other value."""

    def check(v: Any) -> bool:
        return not applies(v) or bool(op(measure(v), bound))

    return check


def _add_object(schema: dict[str, Any], checks: list[Check]) -> bool:
    required = schema.get("required")
    if required is not None:
        if not isinstance(required, list):
            return False
        keys = list(required)
        checks.append(lambda v: not isinstance(v, dict) or all(k in v for k in keys))
    props: dict[str, Check] = {}
    for name, sub in (schema.get("properties") or {}).items():
        c = compile_schema(sub)
        if c is None:
            return False
        props[name] = c
    if props:
        items = list(props.items())
        checks.append(lambda v: not isinstance(v, dict) or all(c(v[k]) for k, c in items if k in v))
    if "additionalProperties" in schema:
        extra = compile_schema(schema["additionalProperties"])
        if extra is None:
            return False
        known = frozenset(schema.get("properties") or ())
        checks.append(lambda v: not isinstance(v, dict) or all(extra(x) for k, x in v.items() if k not in known))
    for key, op in (("minProperties", operator.ge), ("maxProperties", operator.le)):
        if key in schema:
            checks.append(_bound(TYPES["object"], len, op, schema[key]))
    return True


def _add_array(schema: dict[str, Any], checks: list[Check]) -> bool:
    if "items" in schema:
        each = compile_schema(schema["items"])  # a list of schemas (tuple form) is None: not compiled
        if each is None:
            return False
        checks.append(lambda v: not isinstance(v, list) or all(each(x) for x in v))
    for key, op in (("minItems", operator.ge), ("maxItems", operator.le)):
        if key in schema:
            checks.append(_bound(TYPES["array"], len, op, schema[key]))
    return True


def _add_bounds(schema: dict[str, Any], checks: list[Check]) -> bool:
    for key, op in (("minLength", operator.ge), ("maxLength", operator.le)):
        if key in schema:
            checks.append(_bound(TYPES["string"], len, op, schema[key]))
    if "pattern" in schema:
        pattern = re.compile(schema["pattern"])
        checks.append(lambda v: not isinstance(v, str) or pattern.search(v) is not None)
    numeric = (("minimum", operator.ge), ("maximum", operator.le), ("exclusiveMinimum", operator.gt),
               ("exclusiveMaximum", operator.lt))  # fmt: skip
    for key, op in numeric:
        if key in schema:
            bound = schema[key]
            if not _is_number(bound):
                return False  # draft 4's boolean exclusive bounds: jsonschema decides
            checks.append(_bound(_is_number, _same, op, bound))
    return True
