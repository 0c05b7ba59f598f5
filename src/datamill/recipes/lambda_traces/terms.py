"""Closed lambda terms in de Bruijn notation: random generation, normal-order steps, rendering.

A term is a plain Python value, chosen for speed over ceremony:

- a variable is an ``int`` (0 = nearest binder),
- an abstraction is a 1-tuple ``(body,)``,
- an application is a 2-tuple ``(function, argument)``.

Terms are immutable, so a reduction step shares every subterm it does not touch with the term
before it. The renderer uses that: it remembers what it rendered by node identity for the length
of one trace, so each step costs roughly the size of what changed, not of the whole term.

Text grammar (the contract of the ``lambda-traces`` recipe)::

    term := '\\.' term | app
    app  := atom (' '? atom)*        -- left-associative
    atom := var | '(' term ')'
    var  := [0-9]+

An abstraction that is the function or the argument of an application is parenthesised, as is
an application that is an argument; a single space separates two adjacent variables.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

# int | tuple[Term] | tuple[Term, Term]; typed loosely because the hot loops branch on
# type() and len(), which mypy cannot narrow.
Term = Any

_LAMBDA = "\\."


def is_abs(t: Term) -> bool:
    return type(t) is tuple and len(t) == 1


def random_term(rng: random.Random, max_depth: int, max_size: int) -> Term:
    """Draw a random closed term with height <= ``max_depth`` and at most ``max_size`` nodes.

    The target size is drawn from [max_size // 2, max_size]; it is clipped by what a tree of
    ``max_depth`` levels can hold, so shallow cycles make smaller terms.
    """
    if max_depth < 2:
        raise ValueError(f"max_depth must be >= 2 for a closed term, got {max_depth}")
    target = rng.randint(max(2, max_size // 2), max(2, max_size))
    rand = rng.random
    randrange = rng.randrange

    def gen(n: int, d: int, b: int) -> Term:
        # n: node budget, d: levels left (this node included), b: binders in scope.
        cap = (1 << d) - 1  # a tree of d levels holds at most 2^d - 1 nodes
        if n > cap:
            n = cap
        if b > 0 and (n <= 1 or d <= 1):
            return randrange(b)
        if b == 0 or n < 3 or d < 3:
            # Closedness needs a binder before any variable.
            if n < 5 or d < 3 or rand() < 0.6:
                return (gen(n - 1, d - 1, b + 1),)
        elif rand() < 0.3:
            return (gen(n - 1, d - 1, b + 1),)
        # Application: split the remaining budget; a side with no binder in scope needs 2 nodes.
        rest = n - 1
        least = 1 if b > 0 else 2
        left = least + int(rand() * (rest - 2 * least + 1))
        return (gen(left, d - 1, b), gen(rest - left, d - 1, b))

    return gen(target, max_depth, 0)


def shift(t: Term, by: int, cutoff: int = 0) -> Term:
    """Add ``by`` to every variable of ``t`` that is free above ``cutoff`` binders."""
    if type(t) is int:
        return t + by if t >= cutoff else t
    if len(t) == 1:
        return (shift(t[0], by, cutoff + 1),)
    return (shift(t[0], by, cutoff), shift(t[1], by, cutoff))


def max_free(t: Term, depth: int = 0) -> int:
    """Largest free variable index of ``t`` seen from outside it, or -1 when ``t`` is closed."""
    if type(t) is int:
        return t - depth
    if len(t) == 1:
        return max_free(t[0], depth + 1)
    a = max_free(t[0], depth)
    b = max_free(t[1], depth)
    return a if a > b else b


def beta(body: Term, arg: Term) -> Term:
    """Contract ``(\\.body) arg``: substitute ``arg`` for variable 0 and lower the others."""
    closed = max_free(arg) < 0
    shifted: dict[int, Term] = {}

    def sub(t: Term, d: int) -> Term:
        if type(t) is int:
            if t == d:
                if closed:
                    return arg
                s = shifted.get(d)
                if s is None:
                    s = shifted[d] = shift(arg, d)
                return s
            return t - 1 if t > d else t
        if len(t) == 1:
            return (sub(t[0], d + 1),)
        return (sub(t[0], d), sub(t[1], d))

    return sub(body, 0)


def step(t: Term) -> Term | None:
    """One leftmost-outermost beta step, or None when ``t`` is in normal form."""
    if type(t) is int:
        return None
    if len(t) == 1:
        b = step(t[0])
        return None if b is None else (b,)
    f, a = t
    if type(f) is tuple and len(f) == 1:
        return beta(f[0], a)
    nf = step(f)
    if nf is not None:
        return (nf, a)
    na = step(a)
    if na is not None:
        return (f, na)
    return None


class Renderer:
    """Renders terms to text and measures them, remembering subterms by identity.

    One renderer serves one trace: consecutive steps share most of their nodes, so the memo
    makes each step cost about the size of what changed. Memo entries keep their node alive,
    so an ``id`` is never reused while the renderer lives.
    """

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        # id(node) -> (node, text, size, depth, has_redex)
        self._memo: dict[int, tuple[Term, str, int, int, bool]] = {}

    def info(self, t: Term) -> tuple[str, int, int, bool]:
        """Return ``(text, size, depth, has_redex)`` of ``t`` rendered as a whole term."""
        if type(t) is int:
            return str(t), 1, 1, False
        hit = self._memo.get(id(t))
        if hit is not None:
            return hit[1], hit[2], hit[3], hit[4]
        if len(t) == 1:
            text, size, depth, red = self.info(t[0])
            out = (_LAMBDA + text, size + 1, depth + 1, red)
        else:
            f, a = t
            ftext, fsize, fdepth, fred = self.info(f)
            atext, asize, adepth, ared = self.info(a)
            f_abs = type(f) is tuple and len(f) == 1
            if f_abs:
                ftext = "(" + ftext + ")"
            if type(a) is int:
                last = f[1] if (type(f) is tuple and len(f) == 2) else f
                sep = " " if type(last) is int else ""
                text = ftext + sep + atext
            else:
                text = ftext + "(" + atext + ")"
            out = (
                text,
                fsize + asize + 1,
                (fdepth if fdepth > adepth else adepth) + 1,
                f_abs or fred or ared,
            )
        self._memo[id(t)] = (t, *out)
        return out

    def redex_span(self, t: Term) -> tuple[int, int]:
        """Character span ``[start, end)`` of the leftmost-outermost redex in ``t``'s text.

        The span covers the redex application itself, without parentheses that wrap it as an
        argument. Returns ``(0, 0)`` when ``t`` is in normal form.
        """
        pos = 0
        while True:
            if type(t) is int or not self.info(t)[3]:
                return (0, 0)
            if len(t) == 1:
                pos += 2  # "\."
                t = t[0]
                continue
            f, a = t
            if type(f) is tuple and len(f) == 1:
                return (pos, pos + len(self.info(t)[0]))
            if self.info(f)[3]:
                t = f  # an application head is never parenthesised; an abstraction head is a redex
                continue
            ftext = self.info(f)[0]
            pos += len(ftext)
            # The argument holds the redex, so it is an application: always parenthesised.
            pos += 1
            t = a

    def clear(self) -> None:
        self._memo.clear()


def render(t: Term) -> str:
    """Text of ``t`` (a fresh renderer; use :class:`Renderer` across the steps of a trace)."""
    return Renderer().info(t)[0]


TraceStep = tuple[str, tuple[int, int], int, int]


def normal_order_trace(
    t: Term, step_cap: int, size_cap: int, renderer: Renderer | None = None
) -> tuple[list[TraceStep] | None, str]:
    """Reduce ``t`` to normal form in normal order, recording every step.

    Returns ``(steps, reason)``: ``steps`` lists ``(text, redex_span, size, depth)`` from the
    start term to the normal form (so ``len(steps) - 1`` beta steps), or is None with a reason
    (``step_cap`` or ``size_cap``) when the term does not normalise within the caps.
    """
    r = renderer or Renderer()
    steps: list[TraceStep] = []
    info: Callable[[Term], tuple[str, int, int, bool]] = r.info
    while True:
        text, size, depth, has_redex = info(t)
        if size > size_cap:
            return None, "size_cap"
        if not has_redex:
            steps.append((text, (0, 0), size, depth))
            return steps, ""
        if len(steps) >= step_cap:
            return None, "step_cap"
        steps.append((text, r.redex_span(t), size, depth))
        nxt = step(t)
        assert nxt is not None  # has_redex says there is one
        t = nxt
