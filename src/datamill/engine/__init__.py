"""The engine: plans, slot execution, executors, commit and resume.

Public API (what recipes, quality and the CLI may use):

- :class:`Plan` — slots, strata, cycles and ranges of a recipe.
- :class:`SlotRunner` — run given slots at a given attempt, returning their records.
- :func:`execute` — run or resume one shard of a recipe into a run dir.
- :func:`run_status` — what a run dir holds, with rate and ETA.
"""

from datamill.engine.executors import Executor, LocalExecutor, RangeJob
from datamill.engine.plan import Plan, SlotRange, largest_remainder
from datamill.engine.run import RunSummary, execute
from datamill.engine.slots import SlotOutcome, SlotRunner
from datamill.engine.status import Status, run_status

__all__ = [
    "Executor",
    "LocalExecutor",
    "Plan",
    "RangeJob",
    "RunSummary",
    "SlotOutcome",
    "SlotRange",
    "SlotRunner",
    "Status",
    "execute",
    "largest_remainder",
    "run_status",
]
