"""CPU and memory readings shared by the benchmark scripts (Linux /proc, getrusage, psutil),
and the description of the machine a results file records."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

import psutil


def own_cpu_seconds() -> float:
    """This process's user + system CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def own_peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb(pid: int) -> float:
    """Another live process's peak resident memory so far (VmHWM; psutil has no peak on Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot (/proc/stat), for how busy the machine was."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of all cores' time that was busy between two `machine_jiffies` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else float("nan")


def describe() -> dict[str, Any]:
    """What a results file records of the machine: the figures are only this machine's."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "cpu": model,
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        # How busy the machine already was when the run began (other work shares the cores).
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
