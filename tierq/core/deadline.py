"""A job's deadline: by when its result must exist (tierq's own job field, never sent).

A caller gives it as seconds from now, a `timedelta`, an aware `datetime`, or a string holding
either seconds or an RFC 3339 time (`2026-12-02T09:00:00Z`), the forms the drop-in route's
`Tierq-Deadline` header and the CLI take. It is stored as a UTC time on the job. What it
decides is the service level the job's call asks for (tierq/core/spend.py): a job with time to
spare runs at `flex`, billed at half price; one without a deadline runs as it always has.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from tierq.core.errors import InvalidJobError

# The furthest a deadline may be: past the provider's longest batch window, a deadline says
# nothing a job without one would not.
MAX_DEADLINE = timedelta(days=30)

DeadlineLike = datetime | timedelta | float | int | str


def parse_deadline(
    value: DeadlineLike | None, *, now: datetime | None = None, field: str = "deadline"
) -> datetime | None:
    """`value` as an aware UTC time after `now` (None stays None); `InvalidJobError` naming
    `field` for one in the past, too far ahead, or in no form it knows."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    moment = _moment(value, now, field)
    if moment <= now:
        raise _invalid(field, f"{value!r} has passed; give a time in the future")
    if moment - now > MAX_DEADLINE:
        raise _invalid(field, f"{value!r} is more than {MAX_DEADLINE.days} days away")
    return moment


def _moment(value: DeadlineLike, now: datetime, field: str) -> datetime:
    if isinstance(value, bool):
        raise _invalid(field, "must be seconds from now or an RFC 3339 time, not a boolean")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _invalid(field, f"{value!r} has no time zone; give an aware datetime")
        return value.astimezone(UTC)
    if isinstance(value, timedelta):
        return now + value
    if isinstance(value, int | float):
        return _after(now, float(value), value, field)
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _after(now, seconds, value, field)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise _invalid(
            field, f"{value!r} is neither seconds from now nor an RFC 3339 time"
        ) from None
    if moment.tzinfo is None:
        raise _invalid(field, f"{value!r} has no UTC offset; RFC 3339 needs one (Z or +hh:mm)")
    return moment.astimezone(UTC)


def _after(now: datetime, seconds: float, given: object, field: str) -> datetime:
    if not math.isfinite(seconds) or abs(seconds) > MAX_DEADLINE.total_seconds() * 2:
        raise _invalid(field, f"{given!r} is not a number of seconds within reach")
    return now + timedelta(seconds=seconds)


def _invalid(field: str, message: str) -> InvalidJobError:
    return InvalidJobError(
        f"invalid job request: {field}: {message}", [{"field": field, "message": message}]
    )
