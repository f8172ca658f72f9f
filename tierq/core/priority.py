"""A job's priority class: `interactive`, `default` or `bulk` (these names, everywhere).

tierq's own job field, never sent to the API. On a tier with fair dispatch
(`TIERQ_TIERS__<TIER>__FAIR_DISPATCH`, tierq/core/dispatch.py) it decides how soon the job
leaves its backlog: each class gets a share of the tier's dispatches in proportion to its
weight (`TIERQ_FAIR_SHARE__PRIORITY_WEIGHTS`), counted in tokens, so a higher class goes
first while a lower one still moves. Batches run as `bulk` unless told otherwise.
"""

from __future__ import annotations

from typing import Literal, get_args

Priority = Literal["interactive", "default", "bulk"]
# Highest first: the order a tie between classes is broken in.
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
PRIORITY_DEFAULT: Priority = "default"
BATCH_PRIORITY: Priority = "bulk"


def parse_priority(value: str | None, *, field: str = "priority") -> Priority:
    """`value` as a priority (None: the default); `ValueError` naming `field` and the choices."""
    if value is None:
        return PRIORITY_DEFAULT
    for priority in PRIORITIES:
        if value == priority:
            return priority
    choices = ", ".join(map(repr, PRIORITIES))
    raise ValueError(f"{field}: {value!r} is not a priority; use one of {choices}")
