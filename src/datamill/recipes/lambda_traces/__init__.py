"""Built-in recipe ``lambda-traces``: normal-order reduction traces of random closed lambda terms.

One slot draws one term under its cycle's ``max_depth``/``max_size`` and reduces it
leftmost-outermost; each step is one record, and the steps of one term share a ``trace_id``.
A term that does not reach normal form within ``step_cap`` beta steps, or grows past
``size_cap`` nodes, is dropped whole (counted as ``step_cap`` or ``size_cap``), never emitted
half-done.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from datamill.columns import GeneratorContext
from datamill.recipes.lambda_traces.terms import normal_order_trace, random_term


def generate(ctx: GeneratorContext) -> Iterator[dict[str, Any]]:
    """Yield the records of one trace, or drop the slot when the term does not normalise."""
    max_depth = int(ctx.cycle_params.get("max_depth", ctx.params.get("max_depth", 10)))
    max_size = int(ctx.cycle_params.get("max_size", ctx.params.get("max_size", 120)))
    term = random_term(ctx.rng, max_depth, max_size)
    steps, why = normal_order_trace(term, int(ctx.params["step_cap"]), int(ctx.params["size_cap"]))
    if steps is None:
        ctx.drop(why)
        return
    last = len(steps) - 1
    normal_form = steps[-1][0]
    for k, (text, span, size, depth) in enumerate(steps):
        yield {
            "trace_id": ctx.slot_id,
            "step_k": k,
            "steps_total": last,
            "term": text,
            "next_term": steps[k + 1][0] if k < last else None,
            "target_span": [span[0], span[1]],
            "normal_form": normal_form,
            "meta": {"depth": depth, "size": size, "cycle": ctx.cycle, "seed": ctx.seed},
        }
