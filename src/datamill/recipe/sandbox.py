"""Templates and expressions render in Jinja2's immutable sandbox (issue 20).

A recipe is data: shared between teams, it must not run code it does not declare. Every
template, expression and prompt compiles in :data:`JINJA`, an ``ImmutableSandboxedEnvironment``
without the globals that known escapes start from (``cycler``, ``joiner``, ``lipsum``) and without
the ``attr`` filter. :func:`unsafe_reason` refuses at load time what can be seen in the source
(underscore attributes and keys, ``self``, dunder strings, the removed names); whatever is built
at render time is refused there by the sandbox, and :class:`UnsafeTemplate` carries it out of
the run as bad input (exit 2), never as a failed slot.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from datamill.errors import InputError

# Globals that only ever served as a way into the interpreter from a data recipe.
REMOVED_GLOBALS = frozenset({"cycler", "joiner", "lipsum"})
# ``self`` is the template reference (``self._TemplateReference__context`` leaks the context).
REFUSED_NAMES = REMOVED_GLOBALS | {"self"}
REFUSED_FILTERS = frozenset({"attr"})  # getattr by a computed name: static checks cannot see through it


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    for name in REMOVED_GLOBALS:
        env.globals.pop(name, None)
    for name in REFUSED_FILTERS:
        env.filters.pop(name, None)
    return env


JINJA = _environment()


class UnsafeTemplate(InputError):
    """A template or expression that reached for the interpreter at render time."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process pools intact
        return (type(self), (self.column, self.message))


def unsafe_reason(ast: nodes.Template) -> str | None:
    """Why a parsed template is unsafe to render, or None: what a reader of its source can see."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter, nodes.Const, nodes.Test)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            return f"attribute {node.attr!r} is not allowed (no names starting with '_')"
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            key = node.arg.value
            if isinstance(key, str) and key.startswith("_"):
                return f"key {key!r} is not allowed (no names starting with '_')"
        if isinstance(node, nodes.Name) and node.name in REFUSED_NAMES:
            return f"{node.name!r} is not available in recipe templates"
        if isinstance(node, nodes.Filter) and node.name in REFUSED_FILTERS:
            return f"the {node.name!r} filter is not available in recipe templates"
        if isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
            return f"string {node.value[:40]!r} names a dunder attribute"
    return None


def check_source(src: str) -> str | None:
    """``unsafe_reason`` of template source (None when it does not parse: that is reported elsewhere)."""
    try:
        return unsafe_reason(JINJA.parse(src))
    except jinja2.TemplateSyntaxError:
        return None


def render_guard(column: str, exc: SecurityError) -> UnsafeTemplate:
    return UnsafeTemplate(column, f"unsafe template: {exc}")
