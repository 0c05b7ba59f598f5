"""``datamill bench templates``: the template sandbox's cost on a template-heavy recipe.

The same recipe (expressions and templates only: arithmetic, filters, loops, method calls, dict
and attribute access) runs through the whole engine twice per round, in fresh forked processes:
``datamill`` with the sandboxed environment every recipe gets, ``plain`` with the columns'
environment swapped for a plain ``jinja2.Environment`` of the same settings (what datamill used
before issue 20). The ratio is the sandbox's cost on the engine, not on rendering alone.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from datamill.forked import in_fork

RECIPE = """
name: bench-templates
seed: 3
size: {size}
params: {{word: hello}}
columns:
  topic: {{sampler: categorical, values: [math, art, music, law]}}
  n: {{sampler: integer, low: 1, high: 6}}
  a: {{expr: "n * 3 + 1"}}
  b: {{expr: "[n, a]|max"}}
  greeting: {{template: "{{{{ params.word|upper }}}} {{{{ topic }}}} #{{{{ slot }}}} {{{{ '%05d'|format(n) }}}}"}}
  items: {{template: "{{% for i in range(n) %}}{{{{ topic }}}}-{{{{ i }}}},{{% endfor %}}"}}
  meta: {{expr: "{{'t': topic, 'n': n}}"}}
  t2: {{template: "{{{{ meta.t }}}}:{{{{ meta['n'] }}}} {{{{ greeting.lower().split()|join('_') }}}}"}}
output: {{part_size: 10000}}
"""


def _run(size: int, sandboxed: bool, workdir: str) -> dict[str, Any]:
    if not sandboxed:
        import jinja2

        import datamill.columns.expressions as expressions
        import datamill.columns.llm as llm_columns

        plain = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
        expressions.JINJA = plain  # type: ignore[assignment]
        llm_columns.JINJA = plain  # type: ignore[assignment]
    from datamill.engine import LocalExecutor, execute
    from datamill.recipe import load_text

    text = RECIPE.format(size=size)
    loaded = load_text(text, "bench.yaml", Path(workdir))
    t0 = time.perf_counter()
    summary = execute(loaded, text, Path(workdir) / "run", executor=LocalExecutor(1))
    return {"records": summary.records, "seconds": time.perf_counter() - t0}


def run_template_bench(size: int, repeat: int = 3) -> dict[str, Any]:
    import datamill.engine  # noqa: F401 - imported before forking, so neither side pays for it

    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeat):
        for label, sandboxed in (("datamill", True), ("plain", False)):
            with tempfile.TemporaryDirectory(prefix="datamill-bench-tpl-") as tmp:
                r = in_fork(_run, size, sandboxed, tmp)
            if label not in best or r["seconds"] < best[label]["seconds"]:
                best[label] = r
    for r in best.values():
        r["records_per_s"] = r["records"] / r["seconds"]
    return {"size": size, "repeat": repeat, **best, "ratio": best["datamill"]["seconds"] / best["plain"]["seconds"]}
