"""Field references of judge and validate columns: ``name`` or ``name.key[.key...]``.

Load-time checks (:func:`datamill.recipe.check.field_root`) make sure the name is a column or a
source column; a key inside a dict-valued column (a generator's or a JSON answer's) can only be
looked up when the row exists, so a missing one is :data:`MISSING`, not an exception.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = object()


def field_value(row: dict[str, Any], ref: str) -> Any:
    """The value ``ref`` names in ``row``, or :data:`MISSING`."""
    if ref in row:
        return row[ref]
    head, *keys = ref.split(".")
    value = row.get(head, MISSING)
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value
