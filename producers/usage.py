"""`tierq usage`: tokens and cost per tenant and model over a time range, from the ledger.

The ledger (tierq/core/accounting.py) holds one Redis hash per UTC hour, written by the workers'
settle script; a report reads one hash per hour of the range, so a month is about 720 reads in
one pipeline. Hours are the resolution: a range is widened to whole hours.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import redis

from tierq.core.accounting import COST_AT, NO_TENANT, SEP, hour_of
from tierq.core.cli_output import echo_json, print_table
from tierq.core.exit_codes import ExitCode, ExitCodeCommand, fail
from tierq.core.keys import Keys, as_text
from tierq.core.redis_clients import sync_client
from tierq.core.settings import Settings, get_settings

METRICS = (
    "jobs",
    "succeeded",
    "failed",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_at_default_usd",
)
RELATIVE = re.compile(r"^(\d+)([mhd])$")


@dataclass
class UsageRow:
    tenant: str
    model: str
    amounts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))

    @property
    def saved_usd(self) -> float:
        """What running below the default service tier saved (negative: priority's premium)."""
        return self.amounts.get("cost_at_default_usd", 0.0) - self.amounts.get("cost_usd", 0.0)

    def spend_by_service_tier(self) -> dict[str, float]:
        return {
            metric.removeprefix(COST_AT): round(amount, 6)
            for metric, amount in sorted(self.amounts.items())
            if metric.startswith(COST_AT)
        }

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            m: (round(v, 6) if m.startswith("cost") else int(v))
            for m, v in self.amounts.items()
            if not m.startswith(COST_AT)
        }
        return {
            "tenant": self.tenant,
            "model": self.model,
            **values,
            "saved_usd": round(self.saved_usd, 6),
            "cost_usd_by_service_tier": self.spend_by_service_tier(),
        }


def parse_moment(text: str, now: datetime) -> datetime:
    """'24h', '30m', '7d' (ago), or an ISO 8601 time (UTC unless it says otherwise)."""
    relative = RELATIVE.match(text)
    if relative:
        amount, unit = int(relative[1]), relative[2]
        return now - timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: amount})
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def hours_between(since: datetime, until: datetime) -> list[str]:
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    while start <= until:
        hours.append(hour_of(start))
        start += timedelta(hours=1)
    return hours


def usage_report(
    client: redis.Redis,
    keys: Keys,
    since: datetime,
    until: datetime,
    tenant: str | None = None,
) -> list[UsageRow]:
    """Rows per (tenant, model) with each metric summed over the range, cost first."""
    hours = hours_between(since, until)
    pipe = client.pipeline(transaction=False)
    for hour in hours:
        pipe.hgetall(keys.usage(hour))
    rows: dict[tuple[str, str], UsageRow] = {}
    for ledger in pipe.execute():
        for raw_field, raw_amount in ledger.items():
            who, model, metric = as_text(raw_field).split(SEP)
            if tenant is not None and who != tenant:
                continue
            row = rows.setdefault((who, model), UsageRow(who, model))
            row.amounts[metric] = row.amounts.get(metric, 0.0) + float(raw_amount)
    return sorted(rows.values(), key=lambda r: (-r.amounts["cost_usd"], r.tenant, r.model))


def totals(rows: list[UsageRow]) -> dict[str, float]:
    summed: dict[str, float] = defaultdict(float)
    for row in rows:
        for metric, amount in row.amounts.items():
            summed[metric] += amount
    return dict(summed)


@click.command("usage", cls=ExitCodeCommand)
@click.option("--since", default="24h", show_default=True,
              help="Start: '30m', '24h', '7d' ago, or an ISO time (UTC by default).")  # fmt: skip
@click.option("--until", default=None, help="End (default: now); same forms as --since.")
@click.option("--tenant", default=None, help=f"One tenant ({NO_TENANT!r}: the Python client's).")
@click.option("--json", "as_json", is_flag=True, help="JSON: rows and totals.")
def usage_command(since: str, until: str | None, tenant: str | None, as_json: bool) -> None:
    """Tokens and cost per tenant and model over a time range (hourly resolution), with the
    spend per service tier and what running below the default tier saved."""
    settings: Settings = get_settings()
    now = datetime.now(UTC)
    try:
        start = parse_moment(since, now)
        end = parse_moment(until, now) if until else now
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    client = sync_client(settings, socket_timeout=5)
    try:
        rows = usage_report(client, Keys(settings.key_prefix), start, end, tenant)
    except redis.RedisError as error:
        fail(f"cannot reach Redis: {error}", ExitCode.REDIS_UNREACHABLE)
    finally:
        client.close()
    summed = totals(rows)
    if as_json:
        echo_json({
            "since": start.isoformat(), "until": end.isoformat(),
            "rows": [row.as_dict() for row in rows],
            "totals": UsageRow("*", "*", summed or dict.fromkeys(METRICS, 0.0)).as_dict(),
        })  # fmt: skip
        return
    _print_table(rows, summed, start, end)


def _print_table(
    rows: list[UsageRow], summed: dict[str, float], start: datetime, end: datetime
) -> None:
    from rich.table import Table

    start, end = start.astimezone(UTC), end.astimezone(UTC)
    table = Table(title=f"usage {start:%Y-%m-%d %H:00} to {end:%Y-%m-%d %H:%M} UTC")
    for column in ("tenant", "model", "jobs", "failed", "prompt", "cached", "completion",
                   "reasoning", "cost (USD)", "saved (USD)", "by service tier"):  # fmt: skip
        # A name folds on a narrow terminal rather than lose characters (cli_output.py).
        names = column in ("tenant", "model")
        table.add_column(column, justify="left" if names else "right", overflow="fold")
    for row in [*rows, UsageRow("total", "", summed)] if rows else []:
        a = row.amounts
        table.add_row(
            row.tenant, row.model, f"{a.get('jobs', 0):,.0f}", f"{a.get('failed', 0):,.0f}",
            f"{a.get('prompt_tokens', 0):,.0f}", f"{a.get('cached_tokens', 0):,.0f}",
            f"{a.get('completion_tokens', 0):,.0f}", f"{a.get('reasoning_tokens', 0):,.0f}",
            f"{a.get('cost_usd', 0):,.4f}", f"{row.saved_usd:,.4f}",
            ", ".join(f"{tier} {usd:,.4f}" for tier, usd in row.spend_by_service_tier().items())
            or "-",
        )  # fmt: skip
    if rows:
        print_table(table)
    else:
        click.echo("no usage in this range")
