"""The built-in ``evalset`` recipe (seed 001): planner -> worker cases in batches -> dedup -> judge.

The recipe is ``recipe.yaml``; shipped plans are in ``plans/`` (``--plan customer-service``).
"""
