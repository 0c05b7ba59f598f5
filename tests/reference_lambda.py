"""An independent reference for lambda-traces, sharing no code with datamill.

It parses the text grammar into a tree that keeps every node's character span, reduces with
*named* variables and capture-avoiding substitution (fresh names for every copied binder) rather
than de Bruijn shifting, and converts back to de Bruijn only to compare. Terms here are tagged
tuples: ``("v", i)``, ``("l", body)``, ``("a", fun, arg)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Parsing with spans


@dataclass
class Node:
    kind: str  # "v", "l", "a"
    start: int  # span of the node's own text, without parentheses that wrap it
    end: int
    index: int = -1
    body: Node | None = None
    fun: Node | None = None
    arg: Node | None = None
    outer: tuple[int, int] | None = None  # span including wrapping parentheses, when wrapped


class ParseError(ValueError):
    pass


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def parse(self) -> Node:
        node = self.term()
        if self.i != len(self.s):
            raise ParseError(f"trailing text at {self.i}: {self.s[self.i :]!r}")
        return node

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def term(self) -> Node:
        if self.s.startswith("\\.", self.i):
            start = self.i
            self.i += 2
            body = self.term()
            return Node("l", start, body.outer[1] if body.outer else body.end, body=body)
        return self.app()

    def app(self) -> Node:
        node = self.atom()
        while True:
            save = self.i
            if self.peek() == " ":
                self.i += 1
            if self.peek().isdigit() or self.peek() == "(":
                arg = self.atom()
                start = node.outer[0] if node.outer else node.start
                end = arg.outer[1] if arg.outer else arg.end
                node = Node("a", start, end, fun=node, arg=arg)
            else:
                self.i = save
                return node

    def atom(self) -> Node:
        c = self.peek()
        if c.isdigit():
            start = self.i
            while self.peek().isdigit():
                self.i += 1
            return Node("v", start, self.i, index=int(self.s[start : self.i]))
        if c == "(":
            open_at = self.i
            self.i += 1
            inner = self.term()
            if self.peek() != ")":
                raise ParseError(f"expected ')' at {self.i}")
            self.i += 1
            if inner.outer is None:
                inner.outer = (open_at, self.i)
            else:  # doubly wrapped: keep the outermost
                inner.outer = (open_at, self.i)
            return inner
        raise ParseError(f"expected a variable or '(' at {self.i}, got {c!r}")


def parse(text: str) -> Node:
    return _Parser(text).parse()


def to_tuple(n: Node) -> tuple:
    if n.kind == "v":
        return ("v", n.index)
    if n.kind == "l":
        assert n.body is not None
        return ("l", to_tuple(n.body))
    assert n.fun is not None and n.arg is not None
    return ("a", to_tuple(n.fun), to_tuple(n.arg))


def leftmost_outermost_redex(n: Node) -> Node | None:
    """The first application whose function is an abstraction, in pre-order."""
    if n.kind == "a":
        assert n.fun is not None and n.arg is not None
        if n.fun.kind == "l":
            return n
        return leftmost_outermost_redex(n.fun) or leftmost_outermost_redex(n.arg)
    if n.kind == "l":
        assert n.body is not None
        return leftmost_outermost_redex(n.body)
    return None


# ---------------------------------------------------------------------------------------------
# Printing (canonical text of the grammar)


def show(t: tuple) -> str:
    if t[0] == "v":
        return str(t[1])
    if t[0] == "l":
        return "\\." + show(t[1])
    parts = []
    spine = t
    while spine[0] == "a":
        parts.append(spine[2])
        spine = spine[1]
    parts.append(spine)
    parts.reverse()
    out = ""
    prev_var = False
    for k, p in enumerate(parts):
        if p[0] == "v":
            out += (" " if prev_var else "") + str(p[1])
            prev_var = True
        elif p[0] == "l" or (p[0] == "a" and k > 0):
            out += "(" + show(p) + ")"
            prev_var = False
        else:  # pragma: no cover - the head of a spine is never an application
            raise AssertionError
    return out


def size(t: tuple) -> int:
    if t[0] == "v":
        return 1
    if t[0] == "l":
        return 1 + size(t[1])
    return 1 + size(t[1]) + size(t[2])


def depth(t: tuple) -> int:
    if t[0] == "v":
        return 1
    if t[0] == "l":
        return 1 + depth(t[1])
    return 1 + max(depth(t[1]), depth(t[2]))


def is_closed(t: tuple, binders: int = 0) -> bool:
    if t[0] == "v":
        return t[1] < binders
    if t[0] == "l":
        return is_closed(t[1], binders + 1)
    return is_closed(t[1], binders) and is_closed(t[2], binders)


# ---------------------------------------------------------------------------------------------
# Named terms, capture-avoiding substitution, normal-order step

_fresh = itertools.count()


def _name() -> str:
    return f"x{next(_fresh)}"


def to_named(t: tuple, env: tuple[str, ...] = ()) -> tuple:
    if t[0] == "v":
        if t[1] >= len(env):
            raise ValueError(f"free variable {t[1]} in a closed term")
        return ("var", env[t[1]])
    if t[0] == "l":
        x = _name()
        return ("lam", x, to_named(t[1], (x, *env)))
    return ("app", to_named(t[1], env), to_named(t[2], env))


def from_named(t: tuple, env: tuple[str, ...] = ()) -> tuple:
    if t[0] == "var":
        return ("v", env.index(t[1]))
    if t[0] == "lam":
        return ("l", from_named(t[2], (t[1], *env)))
    return ("a", from_named(t[1], env), from_named(t[2], env))


def _freshen(t: tuple, ren: dict[str, str]) -> tuple:
    """A copy of ``t`` whose binders all get new names (so no copy can capture anything)."""
    if t[0] == "var":
        return ("var", ren.get(t[1], t[1]))
    if t[0] == "lam":
        y = _name()
        return ("lam", y, _freshen(t[2], {**ren, t[1]: y}))
    return ("app", _freshen(t[1], ren), _freshen(t[2], ren))


def _subst(t: tuple, x: str, n: tuple) -> tuple:
    if t[0] == "var":
        return _freshen(n, {}) if t[1] == x else t
    if t[0] == "lam":
        if t[1] == x:
            return t
        return ("lam", t[1], _subst(t[2], x, n))
    return ("app", _subst(t[1], x, n), _subst(t[2], x, n))


def _step_named(t: tuple) -> tuple | None:
    if t[0] == "var":
        return None
    if t[0] == "lam":
        b = _step_named(t[2])
        return None if b is None else ("lam", t[1], b)
    f, a = t[1], t[2]
    if f[0] == "lam":
        return _subst(f[2], f[1], a)
    nf = _step_named(f)
    if nf is not None:
        return ("app", nf, a)
    na = _step_named(a)
    return None if na is None else ("app", f, na)


def step(t: tuple) -> tuple | None:
    """One normal-order step of a closed de Bruijn term, done with names."""
    nxt = _step_named(to_named(t))
    return None if nxt is None else from_named(nxt)


def normalize(t: tuple, max_steps: int) -> tuple[tuple, int] | None:
    """(normal form, steps taken) or None if not reached in ``max_steps``."""
    n = 0
    while True:
        nxt = step(t)
        if nxt is None:
            return t, n
        n += 1
        if n > max_steps:
            return None
        t = nxt
