"""CPU readings shared by the benchmark scripts (Linux /proc and getrusage)."""

from __future__ import annotations

import resource
from pathlib import Path


def own_cpu_seconds() -> float:
    """This process's user + system CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot (/proc/stat), for how busy the machine was."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of all cores' time that was busy between two `machine_jiffies` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else float("nan")
